"""Benchmark (2): the collapse sweep over every length n = 1..N (R4-R6 measurements).

- fast: `analysis.collapse.collapse_sweep`: one prefill of the longest prefix into the KV
  cache, then `Decoder.branch` for all n in chunks of 64 (2 compilations whatever N is);
- slow: `analysis.collapse.collapse_sweep_slow`: a full forward of s_n and s*_n for every
  n, all right-padded to ONE width (one compilation);
- bucketed: the same forwards, each padded only to the next multiple of 128 (one
  compilation per bucket, less padding): the fairer per-length baseline.

Each is timed cold (jax caches cleared: compile + run) and warm (median of repeats, run
only). The three must give the same states (max |difference| reported).

Run: python benchmarks/bench_sweep.py [--smoke] [--N 512] [--out DIR]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import median_time, parse_common, table, write_json


def bench_config(smoke: bool):
    from transformer.config import TransformerConfig

    if smoke:
        return TransformerConfig.tiny(dtype="float32", param_dtype="float32",
                                      softmax_dtype="float32")
    return TransformerConfig(
        vocab_size=512, d_model=256, n_layers=4, n_heads=8, n_kv_heads=4, d_mlp=704,
        max_len=4096, pos_encoding="rope", norm="rmsnorm", activation="silu", gated=True,
        dtype="float32", param_dtype="float32", softmax_dtype="float32",
    )


def bucketed_sweep(model, family, lengths, quantum: int = 128) -> np.ndarray:
    """States of s_n [N, L + 1, m] by one full forward per n, padded to a multiple of quantum."""
    from analysis.collapse import _forward_states

    graphdef, state = nnx.split(model)
    out = []
    for n in lengths:
        a, b = family.pair(n)
        width = -(-len(b) // quantum) * quantum
        rows = [r + [family.filler_id] * (width - len(r)) for r in (a, b)]
        last = jnp.asarray([len(a) - 1, len(b) - 1])
        out.append(np.asarray(_forward_states(graphdef, state, jnp.asarray(rows, jnp.int32), last)))
    return np.stack(out)[:, :, 0].astype(np.float64)  # [N, L + 1, m] (s_n only)


def main(argv=None):
    parser = parse_common(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--N", type=int, default=512)
    parser.add_argument("--slow-repeats", type=int, default=1,
                        help="warm repeats of the two per-length baselines (each is slow)")
    args = parser.parse_args(argv)
    from analysis.collapse import SequenceFamily, collapse_sweep, collapse_sweep_slow
    from transformer.model import Decoder

    N = 24 if args.smoke else args.N
    model = Decoder(bench_config(args.smoke), rngs=nnx.Rngs(0))
    seq = np.random.default_rng(0).integers(0, model.config.vocab_size, N + 1)
    family = SequenceFamily(tuple(int(t) for t in seq))
    lengths = list(range(1, N + 1))
    runs = {
        "fast (collapse_sweep)": lambda: collapse_sweep(model, family, lengths).states,
        "slow (collapse_sweep_slow)": lambda: collapse_sweep_slow(model, family, lengths).states,
        "bucketed (per-n forward, pad to 128)": lambda: bucketed_sweep(model, family, lengths),
    }
    results, states = {}, {}
    for name, fn in runs.items():
        jax.clear_caches()
        t0 = time.perf_counter()
        states[name] = np.asarray(fn())
        cold = time.perf_counter() - t0
        reps = args.repeats if name.startswith("fast") else args.slow_repeats
        warm = median_time(fn, repeats=reps, warmup=0)
        results[name] = dict(cold_s=cold, warm_median_s=warm["median_s"], warm_times_s=warm["times_s"],
                             compile_s_est=cold - warm["median_s"])
        print(f"{name}: cold {cold:.3g} s, warm {warm['median_s']:.3g} s", flush=True)
    ref = states["slow (collapse_sweep_slow)"]
    fast = results["fast (collapse_sweep)"]
    rows = []
    for name, r in results.items():
        s = states[name].reshape(ref.shape)  # bucketed returns [N, L + 1, m]
        r["max_abs_diff_vs_slow"] = float(np.abs(s - ref).max())
        r["speedup_warm"] = r["warm_median_s"] / fast["warm_median_s"]
        r["speedup_cold"] = r["cold_s"] / fast["cold_s"]
        rows.append(dict(method=name, cold_s=r["cold_s"], warm_s=r["warm_median_s"],
                         compile_s=r["compile_s_est"],
                         fast_speedup_warm=r["speedup_warm"], fast_speedup_cold=r["speedup_cold"],
                         max_abs_diff=r["max_abs_diff_vs_slow"]))
    print(f"collapse sweep over n = 1..{N} (SequenceFamily, float32, {model.config.n_layers} "
          f"layers, d_model {model.config.d_model})")
    print(table(rows, list(rows[0])))
    path = write_json(
        "sweep_smoke" if args.smoke else "sweep",
        dict(N=N, config=str(model.config), results=results,
             note=("cold = first call after jax.clear_caches() (compile + run); warm = median "
                   "of repeats (run only); fast_speedup = method time / collapse_sweep time")),
        args.out,
    )
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
