"""Sensitivity profiles: how strongly y_n depends on each input position (R7, R11).

The sensitivity of the last token's final state y_n to position i is a norm of the block
J_i = d y_n / d v_i^(l) (a [d_out, d_in] matrix). Theorem 5.1 (R7) bounds it by attention
paths; the U-shape (R11) is a statement about its profile over i.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from analysis.jacobian import last_token_jacobian
from analysis.kernels import kernel_variants, pick_kernel
from analysis.last_state import last_state
from analysis.memory import MemoryPlan, auto_chunk, chunk_budget
from analysis.runners import batched_map, run_columns, run_rows
from analysis.trace_estimation import (
    check_budget,
    hutchinson_norms,
    pilot_count,
    weighted_xtrace_norms,
    xtrace_norms,
)
from analysis.validation import (
    check_choice,
    check_chunk,
    check_layer,
    check_result,
    states_at_layer,
)
from transformer.shapes import Array, ArrayLike, Float, Int, shape_checked

NORMS = ("fro", "spectral", "l1", "linf")


def check_norm(norm: str) -> None:
    """ValueError unless `norm` is one of NORMS."""
    check_choice("norm", norm, NORMS)


@shape_checked
def block_norms(jacobian: Float[Array, "o n i"], norm: str) -> Float[Array, "n"]:
    """Per-position norms of the blocks of a last-token Jacobian.

    Args:
        jacobian: [d_out, n, d_in], block [:, i, :] = d y_n / d v_i.
        norm: "fro" (Frobenius), "spectral" (largest singular value), "l1" (induced
            1-norm: largest column abs-sum), "linf" (induced inf-norm: largest row abs-sum).
    Returns:
        [n] norms.
    """
    check_norm(norm)
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


@shape_checked
def sensitivity_profile(
    model,
    inputs: Int[ArrayLike, "n"] | Float[ArrayLike, "n m"],
    *,
    norm: str = "fro",
    wrt_layer: int = 0,
    freeze_attention: bool = False,
    chunk_size: int | None = None,
    query_block: int | str | None = "auto",
    remat: bool | None = None,
) -> Float[Array, "n"]:
    """||d y_n / d v_i^(wrt_layer)|| for every position i (R7, R11).

    "fro" and "linf" are reduced row by row as the VJPs produce them (memory O(d_out * n),
    never the [d_out, n, d_in] Jacobian: the long-context path); "l1" and "spectral" need
    whole blocks and go through `last_token_jacobian`.

    Args:
        model: a `transformer.Decoder` (not modified).
        inputs: token ids [n] or states v^(wrt_layer) [n, d_model].
        norm: "fro", "spectral", "l1" or "linf" (see `block_norms`).
        wrt_layer: residual stream differentiated against.
        freeze_attention: hold attention patterns constant (Theorem 5.1's setting).
        chunk_size: VJPs batched together (None: automatic).
        query_block, remat: memory switches, as in `last_token_jacobian`.
    Returns:
        [n] sensitivities.
    """
    check_norm(norm)
    check_chunk(chunk_size)
    if norm in ("l1", "spectral"):
        jac = last_token_jacobian(
            model, inputs, wrt_layer=wrt_layer, freeze_attention=freeze_attention,
            chunk_size=chunk_size, mode="reverse", query_block=query_block, remat=remat,
        )
        return block_norms(jac, norm)
    c = model.config
    check_layer("wrt_layer", wrt_layer, 0, c.n_layers)
    v = states_at_layer(model, inputs, wrt_layer)
    eye = jnp.eye(c.d_model, dtype=v.dtype)  # row k of J_i is e_k^T J_i
    rows = run_rows(model, v, eye, wrt_layer=wrt_layer, freeze_attention=freeze_attention,
                    chunk_size=chunk_size, reduce="sq" if norm == "fro" else "abs",
                    query_block=query_block, remat=remat)  # [d_out, n]
    # Frobenius^2 sums the rows' squares; the inf-norm is the largest row abs-sum.
    profile = jnp.sqrt(rows.sum(0)) if norm == "fro" else rows.max(0)
    return check_result(model, profile, "the sensitivity profile")


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


_LAYER_MAP = kernel_variants(_layer_map_kernel, ("graphdef", "freeze_attention", "chunk"))


@shape_checked
def layer_position_map(
    model,
    inputs: Int[ArrayLike, "n"] | Float[ArrayLike, "n m"],
    *,
    norm: str = "fro",
    freeze_attention: bool = False,
    chunk_size: int | None = None,
) -> Float[Array, "l n"]:
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
    check_norm(norm)
    check_chunk(chunk_size)
    c = model.config
    v0 = states_at_layer(model, inputs, 0)
    n = v0.shape[0]
    chunk = chunk_size or auto_chunk(model, n, c.n_layers + 1, c.d_model, MemoryPlan(),
                                     chunk_budget())
    graphdef, state = nnx.split(model)
    jac = pick_kernel(_LAYER_MAP, model, n, v0)(
        graphdef, state, v0, freeze_attention=bool(freeze_attention),
        chunk=min(chunk, c.d_model),
    )
    check_result(model, jac, "the layer-position Jacobians")
    return jnp.stack([block_norms(jac[:, layer], norm) for layer in range(c.n_layers + 1)])


@shape_checked
def estimate_sensitivity(
    model,
    inputs: Int[ArrayLike, "n"] | Float[ArrayLike, "n m"],
    *,
    n_probes: int = 32,
    seed: int = 0,
    squared: bool = True,
    method: str = "hutchinson",
    wrt_layer: int = 0,
    freeze_attention: bool = False,
    chunk_size: int | None = None,
    query_block: int | str | None = "auto",
    remat: bool | None = None,
) -> tuple[Float[Array, "n"], Float[Array, "n"]]:
    """Estimate of ||d y_n / d v_i||_F^2 for every position i from random probes (R11).

    "hutchinson": for u ~ N(0, I_{d_out}), E ||u^T J_i||^2 = trace(J_i J_i^T) = ||J_i||_F^2,
    so k VJPs (instead of d_out) give an unbiased estimate for every position at once;
    relative error ~ sqrt(2 / (k r_i)), r_i the effective rank of J_i J_i^T.
    "xtrace": a rank-(k/3) sketch of the output space shared by all positions, exact on
    it, Hutchinson on the rest, every probe used for both (XTrace; unbiased; error ~ 1/k
    when the spectrum of J J^T decays): `analysis.trace_estimation`.
    "xtrace-weighted": XTrace whose sketch weights position i by 1 / (a pilot Hutchinson
    estimate of t_i from max(2, k // 12) VJPs), so that the largest positions (in LLMs the
    first and last, ~10^4 times the middle) stop owning the sketch; still unbiased.

    Args:
        model: a `transformer.Decoder` (not modified).
        inputs: token ids [n] or states v^(wrt_layer) [n, d_model].
        n_probes: the budget k in products (VJPs + JVPs). Hutchinson: k probes, one VJP
            each (k >= 2). XTrace: k // 3 probes, each a VJP, a JVP and a VJP (6 <= k,
            k // 3 <= d_model). "xtrace-weighted": max(2, k // 12) pilot VJPs and
            (k - pilot) // 3 probes (k >= 8). `trace_estimation.products_used` gives the
            count.
        seed: PRNG seed of the probes (N(0, I) rows from jax.random.key(seed)).
        squared: estimate ||J_i||_F^2 (unbiased); False: its square root, with the
            delta-method standard error (slightly biased low).
        method: "hutchinson" (the default, as before), "xtrace" or "xtrace-weighted".
        wrt_layer, freeze_attention, chunk_size, query_block, remat: as in
            `last_token_jacobian`.
    Returns:
        (estimate [n], standard error [n]).
    """
    check_chunk(chunk_size)
    c = model.config
    count = check_budget(method, n_probes, c.d_model)
    check_layer("wrt_layer", wrt_layer, 0, c.n_layers)
    v = states_at_layer(model, inputs, wrt_layer)
    probes = jax.random.normal(jax.random.key(seed), (count, c.d_model), v.dtype)
    switches = dict(wrt_layer=wrt_layer, freeze_attention=freeze_attention,
                    chunk_size=chunk_size, query_block=query_block, remat=remat)
    if method == "hutchinson":
        mean, stderr = hutchinson_norms(run_rows(model, v, probes, reduce="sq", **switches))
    else:
        products = (lambda us: run_rows(model, v, us, reduce="none", **switches),
                    lambda ws: run_columns(model, v, ws, **switches))
        if method == "xtrace":
            mean, stderr = xtrace_norms(*products, probes)
        else:  # the pilot's probes from a key of their own, independent of the sketch's
            pilot = jax.random.normal(jax.random.fold_in(jax.random.key(seed), 1),
                                      (pilot_count(method, n_probes), c.d_model), v.dtype)
            mean, stderr = weighted_xtrace_norms(*products, pilot, probes)
    check_result(model, mean, f"the {method} sensitivity estimate")
    if squared:
        return mean, stderr
    root = jnp.sqrt(mean)
    return root, stderr / (2 * jnp.maximum(root, jnp.finfo(root.dtype).tiny))
