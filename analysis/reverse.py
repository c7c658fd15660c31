"""The reverse-mode engine: rows u^T J of the last-token Jacobian for a batch of u (R7, R11).

J = d y_n / d v^(l) is [d_out, n, d_in]; for a cotangent u [d_out] one VJP gives the row
u^T J [n, d_in] for every position at once. `last_token_jacobian` (u = the d_out unit
vectors), the sensitivity profiles and their Hutchinson estimates (u Gaussian) and the
sharded versions of all of these are batches of such rows; they share this engine.
Its forward-mode counterpart, `jvp_outputs`, gives J w [d_out] for a batch of tangents w
[n, d_in] (the range sketch of the XTrace estimator, `analysis.trace_estimation`).

Memory. A plain VJP keeps every layer's residuals while it runs: the explicit attention
path's [h, n, n] tensors per layer, and, per cotangent of a chunk, [h, n, n] temporaries in
each layer's backward pass: quadratic in n. `MemoryPlan` controls the two ways out:

- query_block: the layers attend `query_block` queries at a time, each block
  rematerialised (`transformer.layers.Attention`): every attention tensor, saved or
  temporary, is then [h, query_block, n] per cotangent: linear in n.
- remat: rematerialise layer by layer. The forward pass keeps only each layer's input
  [n, d_model]; the backward pass re-linearises layer l only once the cotangent of its
  output exists, so one layer's residuals are live at a time. The ordering is forced with a
  data dependency (`_after`): `jax.checkpoint`'s optimisation barrier does not constrain
  XLA:CPU's scheduler, which computed every layer's recomputation early (measured: no
  memory saved on the CPU).

With a fixed chunk of cotangents and both switches on, peak memory is O(L n d_model +
chunk * (h * query_block * n + n * d_mlp)): linear in n (benchmarks/bench_memory.py).

Speed. Shorter inputs (no query blocks) use causality instead: the layers split their
queries into `causal_blocks` blocks, each attending only to the keys up to its last query,
so the masked upper blocks of every [h, n, n] score matrix, forward and backward, are
never computed (`transformer.layers.Attention`; 4 blocks skip 3/8 of the attention work,
measured ~1.15-1.2x faster Jacobians at n = 128 and 256, benchmarks/README.md).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

REDUCTIONS = ("none", "sq", "abs")

# Automatic plan: block the queries from this many positions on, for memory; below it,
# whole-matrix attention in causal query blocks is faster (2-core CPU, 4-layer benchmark
# model, automatic chunk: 7.9 s vs 11.9 s at n = 512 and 32 s vs 48 s at n = 1024, peak RSS
# 1.40 vs 1.20 GiB at n = 1024; before causal blocks existed, query blocks were the faster
# ones from n = 512). Rematerialise layer by layer once the residuals of a plain
# linearisation would pass this many bytes.
_BLOCK_FROM_N = 2048
_DEFAULT_QUERY_BLOCK = 256
_REMAT_BYTES = 2 << 30
# Causal query blocks for inputs of at least this many positions that are not query-blocked
# (2-core CPU, benchmark model: 4 blocks 1.1-1.2x faster than none and than 2 or 8 blocks at
# n = 128, as fast as 8 at n = 256; no gain at n = 64).
_CAUSAL_FROM_N = 128
_CAUSAL_BLOCKS = 4


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """How a batch of VJPs trades compute for memory (see the module docstring).

    query_block: queries attended at a time in the layers that run on every position
        (None: all at once). remat: rematerialise layer by layer. causal_blocks: the same
        layers' queries in this many blocks that skip the causally masked keys (1: off;
        a speed switch, exclusive with query_block).
    """

    query_block: int | None = None
    remat: bool = False
    causal_blocks: int = 1


def _residual_bytes(config, n: int, n_layers: int, query_block: int | None) -> int:
    """Rough bytes a plain linearisation keeps: per layer ~12 d_model + 4 d_mlp numbers
    per position (norms, projections, mixed values, MLP activations) plus, without query
    blocks, three [h, n, n] attention tensors."""
    itemsize = jnp.dtype(config.compute_dtype).itemsize
    per_layer = n * (12 * config.d_model + 4 * config.d_mlp)
    if query_block is None:
        per_layer += 3 * config.n_heads * n * n
    return itemsize * n_layers * per_layer


def memory_plan(model, n: int, n_layers: int, *, query_block="auto", remat=None) -> MemoryPlan:
    """Resolve the user's switches into a `MemoryPlan` for n positions.

    Args:
        model: a `transformer.Decoder`.
        n: number of positions; n_layers: layers the VJPs run through.
        query_block: an int, None (never block), or "auto" (blocks of 256 queries when
            n >= 2048; shorter inputs attend whole, in causal query blocks from n = 128,
            which is faster).
        remat: True / False, or None (automatic: on when a plain linearisation would keep
            more than ~2 GiB of residuals).
    Returns:
        `MemoryPlan`.
    """
    if query_block == "auto":
        query_block = _DEFAULT_QUERY_BLOCK if n >= _BLOCK_FROM_N else None
    elif query_block is not None and (
        not isinstance(query_block, int) or isinstance(query_block, bool) or query_block < 1
    ):
        raise ValueError(f"query_block must be a positive integer, None or 'auto', "
                         f"got {query_block!r}")
    if remat is None:
        remat = _residual_bytes(model.config, n, n_layers, query_block) > _REMAT_BYTES
    elif not isinstance(remat, bool):
        raise ValueError(f"remat must be True, False or None, got {remat!r}")
    causal = query_block is None and n >= _CAUSAL_FROM_N and model.config.causal
    return MemoryPlan(query_block=query_block, remat=remat,
                      causal_blocks=_CAUSAL_BLOCKS if causal else 1)


def auto_chunk(model, n: int, n_layers: int, count: int, plan: MemoryPlan, budget: int) -> int:
    """Cotangents per chunk whose backward temporaries fit `budget` bytes (rough estimate).

    Per cotangent: the attention backward holds ~3 [h, q, n] tensors (q = the query block,
    or n), the MLP and projections ~6 [n, d_model + 2 d_mlp] ones, and a VJP without remat
    keeps the cotangent state of every layer.
    """
    c = model.config
    itemsize = jnp.dtype(c.compute_dtype).itemsize
    rows = plan.query_block or n
    per_item = itemsize * (3 * c.n_heads * rows * n + 6 * n * (c.d_model + 2 * c.d_mlp)) * 2
    if not plan.remat:
        per_item += itemsize * max(n_layers, 1) * n * c.d_model
    chunk = int(max(1, min(count, budget // per_item)))
    return even_chunk(chunk, count)


def even_chunk(chunk: int, count: int) -> int:
    """The fewest chunks of at most `chunk` rows, as equal as possible (less padding)."""
    n_chunks = -(-count // chunk)
    return -(-count // n_chunks)


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


# ---- the differentiated function ---------------------------------------------------------


def _full_layer(model, layer: int, positions, freeze_attention: bool, plan: MemoryPlan):
    """Layer `layer` on every position: [1, n, m] -> [1, n, m] (positions = arange(n)),
    attending as `plan` says (query blocks or causal blocks)."""
    block = model.blocks[layer]
    pos_vectors = model.score_positions(positions)  # None unless positions enter the scores

    def run(h):
        return block(h, positions, freeze_attention=freeze_attention,
                     query_block=plan.query_block, causal_blocks=plan.causal_blocks,
                     pos_vectors=pos_vectors)[0]

    return run


def _last_layer_last_query(model, layer: int, v, positions, freeze_attention: bool):
    """Layer `layer` for the last position only. v: [1, n, m] -> v_n^(layer+1) [1, 1, m].

    Keys/values of positions < n come from the same projections the block uses and enter as
    attention context; the block itself then runs on the last position alone.
    """
    block = model.blocks[layer]
    prev = v[:, :-1]
    attn_in = prev if block.placement == "post" else block.attn_norm(prev)
    pos_vectors = model.score_positions(positions)  # [1, n, m] or None
    keys, values = block.attn.project_kv(
        attn_in, positions[:, :-1], None if pos_vectors is None else pos_vectors[:, :-1]
    )  # [1, n-1, g, d]
    valid = jnp.ones(prev.shape[:2], bool)  # [1, n-1]
    out = block(
        v[:, -1:], positions[:, -1:], (keys, values, valid), freeze_attention=freeze_attention,
        pos_vectors=None if pos_vectors is None else pos_vectors[:, -1:],
    )
    return out[0]


def _finish(model, h, final_norm: bool):
    """[1, 1 or n, m] -> the last position's state [m], final-normed when asked."""
    out = h[0, -1]
    if final_norm and model.final_norm is not None:
        out = model.final_norm(out[None, None])[0, 0]
    return out


def last_state(
    model,
    v,
    *,
    start_layer: int,
    stop_layer: int,
    final_norm: bool,
    freeze_attention: bool,
    deltas=None,
    plan: MemoryPlan = MemoryPlan(),
):
    """The last position's state after layers [start_layer, stop_layer) (then norm3 if asked).

    Structure exploited: the last layer only has to produce the last position (its keys and
    values still come from every position).

    Args:
        model: a `Decoder`.
        v: [n, m] residual states v^(start_layer).
        deltas: optional [stop - start + 1, n, m] perturbations added to v^(l) before layer l
            (the last one to v^(stop_layer), only its last row matters); their gradients are
            the Jacobians with respect to every intermediate residual stream.
        plan: how the layers before the last attend (`MemoryPlan`; remat is not used here).
    Returns:
        [m]: v_n^(stop_layer), or y_n = norm3(v_n^(L)) when final_norm.
    """
    n = v.shape[0]
    positions = jnp.arange(n, dtype=jnp.int32)[None]  # [1, n]
    h = v[None]  # [1, n, m]
    for offset, layer in enumerate(range(start_layer, stop_layer)):
        if deltas is not None:
            h = h + deltas[offset][None]
        if layer < stop_layer - 1:
            h = _full_layer(model, layer, positions, freeze_attention, plan)(h)
        else:
            h = _last_layer_last_query(model, layer, h, positions, freeze_attention)
    if deltas is not None:
        h = h.at[0, -1].add(deltas[-1][-1])
    return _finish(model, h, final_norm)


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
        _full_layer(model, layer, positions, freeze_attention, plan)
        for layer in range(start_layer, stop_layer - 1)
    ]
    inputs = [v[None]]  # the forward pass keeps the layer inputs only: [1, n, m] each
    for layer_fn in layers:
        inputs.append(layer_fn(inputs[-1]))

    def top(h):  # the last layer (last query only) and the final norm
        out = _last_layer_last_query(model, stop_layer - 1, h, positions, freeze_attention)
        return _finish(model, out, final_norm)

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
