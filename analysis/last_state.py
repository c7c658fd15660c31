"""The function every last-token derivative differentiates (R7, R11): the last position's
state after a slice of layers, written so the last layer does only the last position's work.

J = d y_n / d v^(l) is [d_out, n, d_in]: `analysis.runners` batches its VJPs (rows u^T J)
and JVPs (J w) through `last_state`; `analysis.jacobian`, `analysis.sensitivity` and
`analysis.sharding` build their quantities from those products.

Structure exploited: the last layer only has to produce the last position. Layers before it
run on every position (attending as the `MemoryPlan` says); the last layer computes keys and
values for every position but the query, attention row and MLP for position n only (the
KV-context path of the model's attention), which removes about one layer of work from
every product.
"""

from __future__ import annotations

import jax.numpy as jnp

from analysis.memory import MemoryPlan


def full_layer(model, layer: int, positions, freeze_attention: bool, plan: MemoryPlan):
    """Layer `layer` on every position: [1, n, m] -> [1, n, m] (positions = arange(n)),
    attending as `plan` says (query blocks or causal blocks)."""
    block = model.blocks[layer]
    pos_vectors = model.score_positions(positions)  # None unless positions enter the scores

    def run(h):
        return block(h, positions, freeze_attention=freeze_attention,
                     query_block=plan.query_block, causal_blocks=plan.causal_blocks,
                     pos_vectors=pos_vectors).resid_post

    return run


def last_layer_last_query(model, layer: int, v, positions, freeze_attention: bool):
    """Layer `layer` for the last position only. v: [1, n, m] -> v_n^(layer+1) [1, 1, m].

    Keys/values of positions < n come from the same projections the block uses and enter as
    attention context; the block itself then runs on the last position alone.
    """
    block = model.blocks[layer]
    prev = v[:, :-1]
    attn_in = block.attn_input(prev)  # what the block's attention reads: [1, n-1, m]
    pos_vectors = model.score_positions(positions)  # [1, n, m] or None
    keys, values = block.attn.project_kv(
        attn_in, positions[:, :-1], None if pos_vectors is None else pos_vectors[:, :-1]
    )  # [1, n-1, g, d]
    valid = jnp.ones(prev.shape[:2], bool)  # [1, n-1]
    out = block(
        v[:, -1:], positions[:, -1:], (keys, values, valid), freeze_attention=freeze_attention,
        pos_vectors=None if pos_vectors is None else pos_vectors[:, -1:],
    )
    return out.resid_post


def finish_state(model, h, final_norm: bool):
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
            h = full_layer(model, layer, positions, freeze_attention, plan)(h)
        else:
            h = last_layer_last_query(model, layer, h, positions, freeze_attention)
    if deltas is not None:
        h = h.at[0, -1].add(deltas[-1][-1])
    return finish_state(model, h, final_norm)
