"""Theorem 5.1's path term and bound for deep models at long context, in log space (R7, R11).

Two rows of products of n x n matrices, entry i for d y_n / d v_i^(0):

- the paper's path term: [ (Lambda-bar^(L-1) / beta + I) ... (Lambda-bar^(0) / beta + I) ]_(n, i),
  Lambda-bar^(l) the head-averaged attention of layer l (Theorem 5.1 with one head, the
  projections and MLP constants left out: the topology of the attention paths alone);
- the bound of `analysis.bound.path_bound` for the model as built (per-head patterns
  weighted by ||W_V W_O||, norm and MLP factors; local constants where no global ones
  exist), analysis/BOUND.md.

For a 30-layer model the products overflow float32 (each layer multiplies in its MLP and
norm factors) and `path_bound`'s single forward keeps all L [h, n, n] patterns (4.5 GB for
SmolLM2-135M at n = 2048). Here both rows are carried as logarithms,
    log(row)_k <- logaddexp(log(u)_k, log r_k + logsumexp_q(log(u * p)_q + log S_qk)),
    u = row * M * a,
and the layers are visited twice: a forward pass that keeps only each layer's input
[n, d_model], then from the last layer back, each layer re-run from its input to capture
its pattern and apply its factor. One [h, n, n] pattern is live at a time (one compiled
layer serves every layer of the same structure).

Attention sinks are read off the same patterns: the attention mass on position 1 per
layer (Barbero et al. 2025, "Why do LLMs attend to the first token?").
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from analysis.bound import BOUND_NORMS, _layer_factors, _norm_factor, use_local_constants
from analysis.kernels import kernel_variants, pick_kernel
from analysis.validation import check_choice, check_result, states_at_layer
from transformer.shapes import ArrayLike, Float, Int, shape_checked


@dataclasses.dataclass(frozen=True)
class PathTerms:
    """What `log_path_terms` returns (natural logarithms; -inf for an exact zero).

    Attributes:
        log_path: [n] log of the paper's path term [prod_l (Lambda-bar^(l)/beta + I)]_(n, i).
        log_bound: [n] log of Theorem 5.1's bound on ||d y_n / d v_i^(0)|| in `norm`, for the
            frozen-attention Jacobian (`analysis.bound.path_bound`).
        sink_mass: [L] attention on position 1, averaged over heads and over the queries
            2..n (query 1 can attend only to itself).
        sink_mass_last: [L] the last query's attention on position 1, averaged over heads.
        sink_rate: [L] share of heads whose mean attention on position 1 (over queries
            2..n) exceeds 1/2.
        beta, norm, local: the settings used.
    """

    log_path: jax.Array
    log_bound: jax.Array
    sink_mass: jax.Array
    sink_mass_last: jax.Array
    sink_rate: jax.Array
    beta: float
    norm: str
    local: bool


def _log(x):
    return jnp.where(x > 0, jnp.log(jnp.where(x > 0, x, 1)), -jnp.inf)


def _log_matvec(log_u, log_s):
    """log(u @ S) from log u [n] and log S [n, n] (-inf entries allowed)."""
    return jax.nn.logsumexp(log_u[:, None] + log_s, axis=0)


def _forward_layer(graphdef, state, v, pos_vectors):
    block = nnx.merge(graphdef, state)
    positions = jnp.arange(v.shape[1], dtype=jnp.int32)[None]
    return block(v, positions, pos_vectors=pos_vectors).resid_post


def _backward_layer(graphdef, state, v, pos_vectors, log_bound, log_path, log_beta, *,
                    op_norm, local):
    """Layer l re-run from its input v [1, n, m] (pos_vectors: `Decoder.score_positions`):
    both log rows times its factor, and its sink statistics."""
    block = nnx.merge(graphdef, state)
    n = v.shape[1]
    positions = jnp.arange(n, dtype=jnp.int32)[None]
    out = block(v, positions, pos_vectors=pos_vectors)
    pattern = out.attn.pattern[0]  # [h, n, n]
    left, post, right, mixed, diag = _layer_factors(block, out, op_norm, local, v.dtype)
    log_u = log_bound + _log(diag * left)
    log_bound = jnp.logaddexp(log_u, _log(right) + _log_matvec(log_u + _log(post), _log(mixed)))
    mean = pattern.mean(0).astype(v.dtype)  # Lambda-bar [n, n]
    log_path = jnp.logaddexp(log_path, _log_matvec(log_path, _log(mean)) - log_beta)
    to_first = pattern[:, 1:, 0]  # [h, n - 1]: queries 2..n on position 1
    if n == 1:
        to_first = pattern[:, :, 0]
    per_head = to_first.mean(1)
    sinks = (per_head.mean(), pattern[:, -1, 0].mean(), (per_head > 0.5).mean())
    return log_bound, log_path, sinks


_FORWARD = kernel_variants(_forward_layer, ("graphdef",))
_BACKWARD = kernel_variants(_backward_layer, ("graphdef", "op_norm", "local"))


@shape_checked
def log_path_terms(
    model,
    inputs: Int[ArrayLike, "n"] | Float[ArrayLike, "n m"],
    *,
    norm: str = "spectral",
    beta: float = 1.0,
    constants: str = "auto",
) -> PathTerms:
    """The paper's path term and Theorem 5.1's bound, in log space, with the sink masses
    per layer (R7, R11). exp(log_bound) equals `path_bound(model, inputs, norm=norm,
    constants=constants)` wherever that does not overflow.

    Args:
        model: a `transformer.Decoder` (not modified); any norm placement.
        inputs: token ids [n] or embeddings v^(0) [n, d_model].
        norm: the norm the bound is for: "spectral", "l1", "linf", or "fro" (sqrt(d_model)
            times the spectral bound), as in `path_bound`.
        beta: the paper's norm constant in the path term (Lambda-bar / beta + I).
        constants: "auto", "global" or "local", as in `path_bound`.
    Returns:
        `PathTerms`.
    """
    check_choice("norm", norm, BOUND_NORMS)
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a positive finite number, got {beta!r}")
    local = use_local_constants(model, constants)
    op_norm = "spectral" if norm == "fro" else norm
    v = states_at_layer(model, inputs, 0)[None]  # [1, n, m]
    n = v.shape[1]
    pos_vectors = model.score_positions(jnp.arange(n, dtype=jnp.int32)[None])  # or None
    forward = pick_kernel(_FORWARD, model, n, v)
    backward = pick_kernel(_BACKWARD, model, n, v)
    inputs_of = []
    for block in model.blocks:
        inputs_of.append(v)
        graphdef, state = nnx.split(block)
        v = forward(graphdef, state, v, pos_vectors)
    final = _norm_factor(model.final_norm, v[:, -1:], op_norm)[0]
    log_bound = jnp.full((n,), -jnp.inf, v.dtype).at[-1].set(jnp.log(final))
    log_path = jnp.full((n,), -jnp.inf, v.dtype).at[-1].set(0.0)
    sinks = []
    for block, x in zip(reversed(list(model.blocks)), reversed(inputs_of)):
        graphdef, state = nnx.split(block)
        log_bound, log_path, stats = backward(graphdef, state, x, pos_vectors, log_bound, log_path,
                                              jnp.asarray(math.log(beta), v.dtype),
                                              op_norm=op_norm, local=local)
        sinks.append(stats)
    sinks = jnp.asarray(sinks[::-1])  # [L, 3], layer order
    for name, values in (("log path term", log_path), ("log path bound", log_bound),
                         ("attention-sink masses", sinks)):
        if bool(jnp.isnan(values).any()):  # -inf is a legitimate log(0); NaN never is
            check_result(model, values, f"the {name}")
    if norm == "fro":
        log_bound = log_bound + 0.5 * math.log(model.config.d_model)
    return PathTerms(log_path=log_path, log_bound=log_bound, sink_mass=sinks[:, 0],
                     sink_mass_last=sinks[:, 1], sink_rate=sinks[:, 2], beta=float(beta),
                     norm=norm, local=local)
