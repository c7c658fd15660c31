"""Benchmark (4): achieved FLOP rate of the last-token Jacobian against the machine's
measured float32 matmul rate (a large jnp.dot timed in the same process).

The Jacobian's FLOPs are counted explicitly by `jacobian_flops` (formula in
benchmarks/README.md): one forward linearisation plus d_out VJPs with respect to the
activations only (no weight gradients), attention counted as the full n x n product the
explicit attention path computes, the last layer on its last query row only.

Run: python benchmarks/bench_flops.py [--smoke] [--n 128 256] [--chunks 16 32 64 128 256]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import median_time, parse_common, table, write_json
from transformer.layers import causal_block_bounds


def attended_pairs(n: int, queries: int, causal_blocks: int = 1) -> int:
    """(query, key) pairs whose score the attention computes: every key for each of the last
    `queries` queries, or, with causal query blocks (queries = n), each block's queries
    against the keys up to the block's end (`transformer.layers.Attention`)."""
    if queries != n:
        return queries * n
    return sum((end - start) * end for start, end in causal_block_bounds(n, causal_blocks))


def layer_forward_flops(c, n: int, queries: int, causal_blocks: int = 1) -> float:
    """Multiply-add FLOPs (2 per MAC) of one layer: n keys/values, `queries` query rows."""
    m, h, g, d, f = c.d_model, c.n_heads, c.n_kv_heads or c.n_heads, c.d_head, c.d_mlp
    mlp_mats = 3 if c.gated else 2
    pairs = attended_pairs(n, queries, causal_blocks)
    return (
        2 * queries * m * h * d  # Q projection
        + 2 * n * m * 2 * g * d  # K, V projections
        + 2 * 2 * h * pairs * d  # scores Q K^T and mix P V
        + 2 * queries * h * d * m  # output projection
        + 2 * queries * m * f * mlp_mats  # MLP
    )


def layer_vjp_flops(c, n: int, queries: int, causal_blocks: int = 1) -> float:
    """FLOPs of one VJP through one layer, w.r.t. its input only: every linear map once
    (g W^T), each attention product twice (both of its operands depend on the input)."""
    m, h, g, d, f = c.d_model, c.n_heads, c.n_kv_heads or c.n_heads, c.d_head, c.d_mlp
    mlp_mats = 3 if c.gated else 2
    linear = 2 * queries * m * h * d + 2 * n * m * 2 * g * d + 2 * queries * h * d * m
    linear += 2 * queries * m * f * mlp_mats
    attention = 2 * (2 * 2 * h * attended_pairs(n, queries, causal_blocks) * d)
    return linear + attention


def jacobian_flops(c, n: int, d_out: int | None = None, causal_blocks: int = 1) -> dict:
    """FLOPs of `last_token_jacobian` (reverse mode, wrt_layer 0, to y_n): forward + d_out VJPs.

    causal_blocks: the plan's causal query blocks (`analysis.memory.memory_plan`): the
    attention products of the layers before the last are counted over the pairs computed.
    Returns:
        {"forward", "per_vjp", "total"}.
    """
    d_out = c.d_model if d_out is None else d_out
    L, cb = c.n_layers, causal_blocks
    fwd = (L - 1) * layer_forward_flops(c, n, n, cb) + layer_forward_flops(c, n, 1)
    vjp = (L - 1) * layer_vjp_flops(c, n, n, cb) + layer_vjp_flops(c, n, 1)
    return dict(forward=float(fwd), per_vjp=float(vjp), total=float(fwd + d_out * vjp))


def matmul_rate(size: int, repeats: int) -> dict:
    """Measured float32 matmul FLOP/s: a size x size x size jnp.dot at highest precision."""
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, (size, size), jnp.float32)
    b = jax.random.normal(k2, (size, size), jnp.float32)
    dot = jax.jit(lambda a, b: jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST))
    t = median_time(lambda: dot(a, b), repeats=repeats, warmup=1)
    return dict(size=size, median_s=t["median_s"], flops_per_s=2 * size**3 / t["median_s"])


def main(argv=None):
    parser = parse_common(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--n", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 16, 32, 64, 128, 256],
                        help="chunk sizes to try (0: automatic)")
    parser.add_argument("--matmul", type=int, default=2048)
    args = parser.parse_args(argv)
    from analysis.jacobian import last_token_jacobian
    from analysis.memory import memory_plan
    from analysis.validation import states_at_layer
    from benchmarks.bench_sweep import bench_config
    from transformer.model import Decoder

    c = bench_config(args.smoke)
    ns = [16] if args.smoke else args.n
    chunks = [0, 8] if args.smoke else args.chunks
    model = Decoder(c, rngs=nnx.Rngs(0))
    peak = matmul_rate(256 if args.smoke else args.matmul, args.repeats)
    rows, records = [], []
    for n in ns:
        tokens = jnp.asarray(np.random.default_rng(n).integers(0, c.vocab_size, n), jnp.int32)
        v0 = jax.block_until_ready(states_at_layer(model, tokens, 0))
        plan = memory_plan(model, n, c.n_layers)  # what last_token_jacobian will run
        flops = jacobian_flops(c, n, causal_blocks=plan.causal_blocks)
        for chunk in chunks:
            t = median_time(
                lambda: last_token_jacobian(model, v0, chunk_size=chunk or None, mode="reverse"),
                repeats=args.repeats, warmup=1,
            )
            # The matmul again, right after: the machine is shared and its speed drifts, so
            # each case is also compared with the matmul rate measured beside it.
            near = matmul_rate(256 if args.smoke else args.matmul, args.repeats)
            rate = flops["total"] / t["median_s"]
            rec = dict(n=n, chunk=chunk or "auto", seconds=t["median_s"], gflop=flops["total"] / 1e9,
                       gflops_per_s=rate / 1e9, fraction_of_matmul=rate / peak["flops_per_s"],
                       fraction_of_matmul_beside=rate / near["flops_per_s"])
            records.append(dict(rec, flops=flops, times_s=t["times_s"], matmul_beside=near,
                                causal_blocks=plan.causal_blocks))
            rows.append(rec)
            print(table(rows[-1:], list(rec)), flush=True)
    print(f"\nmeasured float32 matmul rate ({peak['size']}^3 jnp.dot, HIGHEST): "
          f"{peak['flops_per_s'] / 1e9:.1f} GFLOP/s")
    print(table(rows, list(rows[0])))
    path = write_json(
        "flops_smoke" if args.smoke else "flops",
        dict(config=str(c), matmul=peak, results=records,
             note="fraction_of_matmul = (counted Jacobian FLOPs / median time) / matmul FLOP/s "
                  "measured at the start; fraction_of_matmul_beside uses the matmul measured "
                  "right after the case"),
        args.out,
    )
    print(f"wrote {path}")
    return records


if __name__ == "__main__":
    main()
