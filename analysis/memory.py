"""How a batch of VJPs/JVPs trades compute for memory: the plan and the chunk (R7, R11).

The bottom of the analysis stack (with `analysis.kernels` and `analysis.validation`).

Memory. A plain VJP keeps every layer's residuals while it runs: the explicit attention
path's [h, n, n] tensors per layer, and, per cotangent of a chunk, [h, n, n] temporaries in
each layer's backward pass: quadratic in n. `MemoryPlan` controls the two ways out:

- query_block: the layers attend `query_block` queries at a time, each block
  rematerialised (`transformer.layers.Attention`): every attention tensor, saved or
  temporary, is then [h, query_block, n] per cotangent: linear in n.
- remat: rematerialise layer by layer. The forward pass keeps only each layer's input
  [n, d_model]; the backward pass re-linearises layer l only once the cotangent of its
  output exists, so one layer's residuals are live at a time (`analysis.runners.vjp_rows`).

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

import jax
import jax.numpy as jnp

# Memory allowed for the batched cotangents/tangents of one chunk when chunk_size is None.
_CHUNK_BUDGET_BYTES = 1 << 30

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


def chunk_budget() -> int:
    """Bytes for one chunk's temporaries: the CPU budget, or a quarter of an accelerator's
    memory (a GPU's memory is the computation's own; host memory is shared)."""
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return _CHUNK_BUDGET_BYTES
    stats = dev.memory_stats() or {}
    return max(_CHUNK_BUDGET_BYTES, int(stats.get("bytes_limit", 0)) // 4)


def plan_and_chunk(model, n: int, depth: int, count: int, *, chunk_size=None,
                   query_block="auto", remat=None) -> tuple[MemoryPlan, int]:
    """The memory plan for n positions through `depth` layers and the chunk (products per
    compiled step) for `count` products: `chunk_size` or the automatic one within
    `chunk_budget()`, made even (`even_chunk`).

    Returns:
        (`MemoryPlan`, chunk).
    """
    plan = memory_plan(model, n, depth, query_block=query_block, remat=remat)
    chunk = chunk_size or auto_chunk(model, n, depth, count, plan, chunk_budget())
    return plan, even_chunk(min(chunk, count), count)
