"""Batches of products with the last-token Jacobian J = d y_n / d v^(l) (R7, R11): rows
u^T J for a batch of cotangents u (VJPs) and outputs J w for a batch of tangents w (JVPs),
chunked, with the memory plan applied; traceable versions and compiled entry points.

J is [d_out, n, d_in]; for a cotangent u [d_out] one VJP gives the row u^T J [n, d_in] for
every position at once. `last_token_jacobian` (u = the d_out unit vectors), the
sensitivity profiles and their trace estimates (u Gaussian) and the sharded versions of all
of these are batches of such rows; `jvp_outputs` gives J w [d_out] for tangents w [n, d_in]
(the range sketch of the XTrace estimator, `analysis.trace_estimation`).

Layer by layer rematerialisation (`MemoryPlan.remat`, `analysis.memory`): the backward
pass re-linearises layer l only once the cotangent of its output exists, so one layer's
residuals are live at a time. The ordering is forced with a data dependency (`_after`):
`jax.checkpoint`'s optimisation barrier does not constrain XLA:CPU's scheduler, which
computed every layer's recomputation early (measured: no memory saved on the CPU).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from analysis.kernels import kernel_variants, pick_kernel
from analysis.last_state import finish_state, full_layer, last_layer_last_query, last_state
from analysis.memory import MemoryPlan, plan_and_chunk

REDUCTIONS = ("none", "sq", "abs")


# ---- maps over rows in chunks --------------------------------------------------------------


def _pad_to_chunks(xs: jax.Array, chunk: int) -> tuple[jax.Array, int]:
    count = xs.shape[0]
    n_chunks = -(-count // chunk)
    pad = n_chunks * chunk - count
    if pad:
        xs = jnp.concatenate([xs, jnp.zeros((pad, *xs.shape[1:]), xs.dtype)])
    return xs.reshape(n_chunks, chunk, *xs.shape[1:]), count


def batched_map(fn, xs: jax.Array, chunk: int) -> jax.Array:
    """vmap `fn` over the rows of xs, `chunk` rows at a time (a scan over chunks).

    The rows are zero-padded to a multiple of `chunk` so the scan has one body (lax.map's
    own remainder handling compiles a second copy); the padded results are dropped.
    """
    if chunk >= xs.shape[0]:
        return jax.vmap(fn)(xs)
    return batched_map_chunks(jax.vmap(fn), xs, chunk)


def batched_map_chunks(fn, xs: jax.Array, chunk: int) -> jax.Array:
    """fn over xs [R, ...] in chunks of `chunk` rows (fn takes and returns a chunk), a scan
    over zero-padded chunks; the padded rows' results are dropped."""
    chunks, count = _pad_to_chunks(xs, chunk)
    out = jax.lax.map(fn, chunks)
    return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:])[:count], out)


# ---- batches of VJPs ---------------------------------------------------------------------


def _after(x: jax.Array, g: jax.Array) -> jax.Array:
    """x, exactly, but computed only once g is: x - |g_0| * 0 with g_0 the first entry of g
    (taken as +0 when g_0 is not finite). XLA does not fold a float multiply by zero, so
    everything computed from the result waits for g; x - (+0) = x for every x."""
    first = g.reshape(-1)[0]
    zero = jnp.where(jnp.isfinite(first), jnp.abs(first) * 0, 0).astype(x.dtype)
    return x - zero


def _reduce_row(g: jax.Array, reduce: str) -> jax.Array:
    """A row u^T J [n, m] -> itself, its squared norms [n] ("sq") or abs sums [n] ("abs")."""
    if reduce == "sq":
        return jnp.sum(g * g, axis=-1)
    if reduce == "abs":
        return jnp.sum(jnp.abs(g), axis=-1)
    return g


def vjp_rows(
    model,
    v: jax.Array,
    cotangents: jax.Array,
    *,
    start_layer: int,
    stop_layer: int,
    final_norm: bool,
    freeze_attention: bool,
    chunk: int,
    reduce: str = "none",
    plan: MemoryPlan = MemoryPlan(),
) -> jax.Array:
    """u^T d last_state / d v for every row u of `cotangents` (traceable; call under jit).

    Args:
        model: a `Decoder`; v: [n, m] states v^(start_layer).
        cotangents: [R, d_out].
        start_layer, stop_layer, final_norm, freeze_attention: as in `last_state`.
        chunk: rows per vmapped batch.
        reduce: "none" -> [R, n, m]; "sq" -> [R, n] squared row norms per position;
            "abs" -> [R, n] abs sums per position.
        plan: `MemoryPlan`.
    Returns:
        [R, n, m] or [R, n].
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce={reduce!r} is not one of {REDUCTIONS}")
    state = functools.partial(
        last_state, model, start_layer=start_layer, stop_layer=stop_layer,
        final_norm=final_norm, freeze_attention=freeze_attention, plan=plan,
    )
    if not plan.remat or stop_layer - start_layer < 2:
        _, vjp = jax.vjp(state, v)
        return batched_map(lambda u: _reduce_row(vjp(u)[0], reduce), cotangents, chunk)

    n = v.shape[0]
    positions = jnp.arange(n, dtype=jnp.int32)[None]  # [1, n]
    layers = [
        full_layer(model, layer, positions, freeze_attention, plan)
        for layer in range(start_layer, stop_layer - 1)
    ]
    inputs = [v[None]]  # the forward pass keeps the layer inputs only: [1, n, m] each
    for layer_fn in layers:
        inputs.append(layer_fn(inputs[-1]))

    def top(h):  # the last layer (last query only) and the final norm
        out = last_layer_last_query(model, stop_layer - 1, h, positions, freeze_attention)
        return finish_state(model, out, final_norm)

    def rows(us):  # [c, d_out] -> [c, ...]: one layer's linearisation live at a time
        _, vjp = jax.vjp(top, _after(inputs[-1], us))
        g = jax.vmap(lambda u: vjp(u)[0])(us)  # [c, 1, n, m]
        for layer_fn, x in zip(reversed(layers), reversed(inputs[:-1])):
            _, vjp = jax.vjp(layer_fn, _after(x, g))
            g = jax.vmap(lambda gg, vjp=vjp: vjp(gg)[0])(g)
        return jax.vmap(lambda gg: _reduce_row(gg[0], reduce))(g)

    return batched_map_chunks(rows, cotangents, chunk)


# ---- batches of JVPs ---------------------------------------------------------------------


def jvp_outputs(
    model,
    v: jax.Array,
    tangents: jax.Array,
    *,
    start_layer: int,
    stop_layer: int,
    final_norm: bool,
    freeze_attention: bool,
    chunk: int,
    plan: MemoryPlan = MemoryPlan(),
) -> jax.Array:
    """J w = sum_i (d last_state / d v_i) w_i for every tangent w of `tangents` (traceable).

    Forward mode, one `jax.jvp` per chunk of tangents: the primal pass is recomputed per
    chunk (vmap batches the tangents only) and nothing is saved for a backward pass, so
    memory is that of a forward pass with `chunk` tangents beside it, whatever the plan's
    remat says (query blocks still bound the attention tensors).

    Args:
        model: a `Decoder`; v: [n, m] states v^(start_layer).
        tangents: [R, n, m].
        start_layer, stop_layer, final_norm, freeze_attention: as in `last_state`.
        chunk: tangents per vmapped batch.
        plan: `MemoryPlan` (query_block and causal_blocks are used).
    Returns:
        [R, d_out].
    """
    state = functools.partial(
        last_state, model, start_layer=start_layer, stop_layer=stop_layer,
        final_norm=final_norm, freeze_attention=freeze_attention, plan=plan,
    )

    def outputs(ts):  # [c, n, m] -> [c, d_out]
        return jax.vmap(lambda t: jax.jvp(state, (v,), (t,))[1])(ts)

    if chunk >= tangents.shape[0]:
        return outputs(tangents)
    return batched_map_chunks(outputs, tangents, chunk)


# ---- compiled entry points: y_n against v^(wrt_layer) ------------------------------------


def _rows_kernel(graphdef, state, v, cotangents, *, wrt_layer, freeze_attention, chunk,
                 reduce, plan):
    model = nnx.merge(graphdef, state)
    return vjp_rows(
        model, v, cotangents, start_layer=wrt_layer, stop_layer=model.config.n_layers,
        final_norm=True, freeze_attention=freeze_attention, chunk=chunk, reduce=reduce,
        plan=plan,
    )


ROWS = kernel_variants(
    _rows_kernel, ("graphdef", "wrt_layer", "freeze_attention", "chunk", "reduce", "plan")
)


def run_rows(model, v, cotangents, *, wrt_layer, freeze_attention, chunk_size, reduce,
             query_block, remat) -> jax.Array:
    """u^T d y_n / d v^(wrt_layer) for every row u of cotangents [R, d_out], compiled, in
    even chunks within the memory budget (`analysis.memory.plan_and_chunk`).

    Args:
        model: a `Decoder`; v: [n, m] checked states v^(wrt_layer).
        reduce: "none" -> [R, n, m]; "sq" -> [R, n] squared row norms; "abs" -> [R, n].
        wrt_layer, freeze_attention, chunk_size, query_block, remat: as in
            `analysis.jacobian.last_token_jacobian`.
    """
    plan, chunk = plan_and_chunk(
        model, v.shape[0], model.config.n_layers - wrt_layer, cotangents.shape[0],
        chunk_size=chunk_size, query_block=query_block, remat=remat)
    graphdef, state = nnx.split(model)
    return pick_kernel(ROWS, model, v.shape[0], v, cotangents, plan=plan)(
        graphdef, state, v, cotangents, wrt_layer=wrt_layer,
        freeze_attention=bool(freeze_attention), chunk=chunk, reduce=reduce, plan=plan,
    )


def _columns_kernel(graphdef, state, v, tangents, *, wrt_layer, freeze_attention, chunk, plan):
    model = nnx.merge(graphdef, state)
    return jvp_outputs(
        model, v, tangents, start_layer=wrt_layer, stop_layer=model.config.n_layers,
        final_norm=True, freeze_attention=freeze_attention, chunk=chunk, plan=plan,
    )


COLUMNS = kernel_variants(
    _columns_kernel, ("graphdef", "wrt_layer", "freeze_attention", "chunk", "plan")
)


def run_columns(model, v, tangents, *, wrt_layer, freeze_attention, chunk_size, query_block,
                remat) -> jax.Array:
    """J w [R, d_out] of y_n against v^(wrt_layer) for tangents [R, n, d_model] (JVPs),
    compiled, in even chunks (as `run_rows`)."""
    plan, chunk = plan_and_chunk(
        model, v.shape[0], model.config.n_layers - wrt_layer, tangents.shape[0],
        chunk_size=chunk_size, query_block=query_block, remat=remat)
    graphdef, state = nnx.split(model)
    return pick_kernel(COLUMNS, model, v.shape[0], v, tangents, plan=plan)(
        graphdef, state, v, tangents, wrt_layer=wrt_layer,
        freeze_attention=bool(freeze_attention), chunk=chunk, plan=plan,
    )
