"""Sensitivity profiles: how strongly y_n depends on each input position (R7, R11).

The sensitivity of the last token's final state y_n to position i is a norm of the block
J_i = d y_n / d v_i^(l) (a [d_out, d_in] matrix). Theorem 5.1 (R7) bounds it by attention
paths; the U-shape (R11) is a statement about its profile over i.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from analysis.jacobian import (
    _auto_chunk,
    _check_chunk,
    _even_chunk,
    batched_map,
    kernel_pair,
    last_state,
    last_token_jacobian,
    pick_kernel,
    states_at_layer,
)

NORMS = ("fro", "spectral", "l1", "linf")


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not one of {', '.join(map(repr, NORMS))}")


def block_norms(jacobian: jax.Array, norm: str) -> jax.Array:
    """Per-position norms of the blocks of a last-token Jacobian.

    Args:
        jacobian: [d_out, n, d_in], block [:, i, :] = d y_n / d v_i.
        norm: "fro" (Frobenius), "spectral" (largest singular value), "l1" (induced
            1-norm: largest column abs-sum), "linf" (induced inf-norm: largest row abs-sum).
    Returns:
        [n] norms.
    """
    _check_norm(norm)
    if jacobian.ndim != 3:
        raise ValueError(f"jacobian must have shape [d_out, n, d_in], got {jacobian.shape}")
    if norm == "fro":
        return jnp.sqrt(jnp.sum(jacobian * jacobian, axis=(0, 2)))
    if norm == "l1":
        return jnp.abs(jacobian).sum(0).max(-1)  # column sums over d_out, max over d_in
    if norm == "linf":
        return jnp.abs(jacobian).sum(2).max(0)  # row sums over d_in, max over d_out
    blocks = jnp.transpose(jacobian, (1, 0, 2))  # [n, d_out, d_in]
    return jnp.linalg.svd(blocks, compute_uv=False)[:, 0]


def sensitivity_profile(
    model,
    inputs,
    *,
    norm: str = "fro",
    wrt_layer: int = 0,
    freeze_attention: bool = False,
    chunk_size: int | None = None,
) -> jax.Array:
    """||d y_n / d v_i^(wrt_layer)|| for every position i (R7, R11).

    Args:
        model: a `transformer.Decoder` (not modified).
        inputs: token ids [n] or states v^(wrt_layer) [n, d_model].
        norm: "fro", "spectral", "l1" or "linf" (see `block_norms`).
        wrt_layer: residual stream differentiated against.
        freeze_attention: hold attention patterns constant (Theorem 5.1's setting).
        chunk_size: VJPs batched together (None: automatic).
    Returns:
        [n] sensitivities.
    """
    _check_norm(norm)
    jac = last_token_jacobian(
        model, inputs, wrt_layer=wrt_layer, freeze_attention=freeze_attention,
        chunk_size=chunk_size, mode="reverse",
    )
    return block_norms(jac, norm)


def _layer_map_kernel(graphdef, state, v0, *, freeze_attention, chunk):
    model = nnx.merge(graphdef, state)
    n_layers = model.config.n_layers
    n, m = v0.shape
    deltas = jnp.zeros((n_layers + 1, n, m), v0.dtype)

    def f(d):
        return last_state(
            model, v0, start_layer=0, stop_layer=n_layers, final_norm=True,
            freeze_attention=freeze_attention, deltas=d,
        )

    y, vjp = jax.vjp(f, deltas)
    eye = jnp.eye(y.shape[0], dtype=y.dtype)
    return batched_map(lambda u: vjp(u)[0], eye, chunk)  # [d_out, L+1, n, m]


_LAYER_MAP = kernel_pair(_layer_map_kernel, ("graphdef", "freeze_attention", "chunk"))


def layer_position_map(
    model,
    inputs,
    *,
    norm: str = "fro",
    freeze_attention: bool = False,
    chunk_size: int | None = None,
) -> jax.Array:
    """||d y_n / d v_i^(l)|| for every layer l = 0..L and position i (R7, R11).

    Cost: one linearisation and d_out VJPs through all layers (the same as one
    `last_token_jacobian` at wrt_layer=0): a zero perturbation is added to every residual
    stream and the VJPs return the gradients with respect to all of them at once. Memory:
    the (L+1) Jacobians, (L+1) * d_out * n * d_model numbers, before reduction.
    Row L is zero except at i = n (y_n reads v_n^(L) only).

    Args:
        model: a `transformer.Decoder` (not modified).
        inputs: token ids [n] or embeddings v^(0) [n, d_model].
        norm: "fro", "spectral", "l1" or "linf".
        freeze_attention: hold attention patterns constant.
        chunk_size: VJPs batched together (None: automatic).
    Returns:
        [L+1, n] sensitivities, row l against v^(l).
    """
    _check_norm(norm)
    _check_chunk(chunk_size)
    c = model.config
    v0 = states_at_layer(model, inputs, 0)
    n = v0.shape[0]
    chunk = chunk_size or _auto_chunk(model, n, c.n_layers + 1, c.d_model)
    graphdef, state = nnx.split(model)
    jac = pick_kernel(_LAYER_MAP, model, n)(
        graphdef, state, v0, freeze_attention=bool(freeze_attention),
        chunk=min(chunk, c.d_model),
    )
    return jnp.stack([block_norms(jac[:, layer], norm) for layer in range(c.n_layers + 1)])


def _probe_kernel(graphdef, state, v, probes, *, wrt_layer, freeze_attention, chunk):
    model = nnx.merge(graphdef, state)

    def f(x):
        return last_state(
            model, x, start_layer=wrt_layer, stop_layer=model.config.n_layers,
            final_norm=True, freeze_attention=freeze_attention,
        )

    _, vjp = jax.vjp(f, v)

    def sq_norms(u):
        g = vjp(u)[0]  # [n, d_in] = u^T J_i for every i
        return jnp.sum(g * g, axis=-1)  # [n]

    return batched_map(sq_norms, probes, chunk)  # [k, n]


_PROBES = kernel_pair(_probe_kernel, ("graphdef", "wrt_layer", "freeze_attention", "chunk"))


def estimate_sensitivity(
    model,
    inputs,
    *,
    n_probes: int = 32,
    seed: int = 0,
    squared: bool = True,
    wrt_layer: int = 0,
    freeze_attention: bool = False,
    chunk_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Hutchinson estimate of ||d y_n / d v_i||_F^2 from k random output probes (R11).

    For u ~ N(0, I_{d_out}), E ||u^T J_i||^2 = trace(J_i J_i^T) = ||J_i||_F^2, so k VJPs
    (instead of d_out) give an unbiased estimate for every position at once.

    Args:
        model: a `transformer.Decoder` (not modified).
        inputs: token ids [n] or states v^(wrt_layer) [n, d_model].
        n_probes: number of Gaussian probes k (>= 2, for the standard error).
        seed: PRNG seed of the probes.
        squared: estimate ||J_i||_F^2 (unbiased); False: its square root, with the
            delta-method standard error (slightly biased low).
        wrt_layer, freeze_attention, chunk_size: as in `last_token_jacobian`.
    Returns:
        (estimate [n], standard error [n]).
    """
    if not isinstance(n_probes, int) or isinstance(n_probes, bool) or n_probes < 2:
        raise ValueError(f"n_probes must be an integer >= 2, got {n_probes!r}")
    _check_chunk(chunk_size)
    c = model.config
    if not isinstance(wrt_layer, int) or not 0 <= wrt_layer <= c.n_layers:
        raise ValueError(f"wrt_layer must be an integer in [0, {c.n_layers}], got {wrt_layer!r}")
    v = states_at_layer(model, inputs, wrt_layer)
    probes = jax.random.normal(jax.random.key(seed), (n_probes, c.d_model), v.dtype)
    chunk = chunk_size or _auto_chunk(model, v.shape[0], c.n_layers - wrt_layer, n_probes)
    chunk = _even_chunk(min(chunk, n_probes), n_probes)
    graphdef, state = nnx.split(model)
    samples = pick_kernel(_PROBES, model, v.shape[0])(
        graphdef, state, v, probes, wrt_layer=wrt_layer,
        freeze_attention=bool(freeze_attention), chunk=chunk,
    )
    mean = samples.mean(0)
    stderr = samples.std(0, ddof=1) / jnp.sqrt(n_probes)
    if squared:
        return mean, stderr
    root = jnp.sqrt(mean)
    return root, stderr / (2 * jnp.maximum(root, jnp.finfo(root.dtype).tiny))
