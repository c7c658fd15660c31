"""Long contexts (R11 at scale): sensitivity profiles of the SmolLM2-135M config (random
weights) at n = 8192 and beyond on one device, and the peak memory per n.

- estimate: `analysis.sharding.sharded_estimate_sensitivity` (Hutchinson, k probes, the
  automatic long-context plan: query blocks, layer-by-layer remat) at each n of --n, with
  the process's peak memory after it;
- exact: the exact Frobenius profile `sharded_sensitivity_profile` (d_model VJPs, rows
  reduced as produced) at the smallest n, compared with the estimate;
- memory: peak memory of the estimate (2 probes, chunk 1) per n of --memory-n, each in a
  fresh subprocess (bench_memory's worker), the growth exponent p of peak ~ n^p, and the
  largest n that fits a memory size extrapolated from the measured points.

Run: python benchmarks/bench_long_context.py [--smoke] [--n 2048 8192] [--memory-n ...]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.bench_memory import _peak_bytes, fit_exponent, run_case
from benchmarks.common import parse_common, table, write_json


def model_135m(smoke: bool, max_len: int):
    from transformer.config import TransformerConfig
    from transformer.model import Decoder

    cfg = TransformerConfig.smollm2_135m(dtype="float32", param_dtype="float32",
                                         softmax_dtype="float32", max_len=max(max_len, 8192))
    if smoke:
        cfg = cfg.replace(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_head=16, d_mlp=96,
                          vocab_size=256)
    return Decoder(cfg, rngs=nnx.Rngs(0))


def largest_n(ns, peaks, budget_bytes: float) -> float | None:
    """n where the power law fitted to (n, peak) reaches budget_bytes (extrapolated)."""
    pts = [(n, p) for n, p in zip(ns, peaks) if p and p > 0]
    if len(pts) < 2:
        return None
    slope, icpt = np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)
    if slope <= 0.05:  # flat (fixed costs dominate, e.g. smoke sizes): no extrapolation
        return None
    return float(np.exp((np.log(budget_bytes) - icpt) / slope))


def main(argv=None):
    parser = parse_common(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--n", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=None, help="estimate chunk (None: auto)")
    parser.add_argument("--exact-chunk", type=int, default=None)
    parser.add_argument("--no-exact", action="store_true",
                        help="skip the exact profile (d_model VJPs) at the smallest n")
    parser.add_argument("--memory-n", type=int, nargs="*", default=None,
                        help="n for the peak-memory points (default: --n)")
    args = parser.parse_args(argv)
    from analysis.validation import states_at_layer
    from analysis.sharding import (
        device_mesh,
        sharded_estimate_sensitivity,
        sharded_sensitivity_profile,
    )

    ns = [64] if args.smoke else args.n
    mem_ns = [64, 96] if args.smoke else (args.memory_n if args.memory_n is not None else ns)
    probes = 4 if args.smoke else args.probes
    model = model_135m(args.smoke, max(ns + mem_ns))
    mesh = device_mesh(jax.devices()[:1])
    rows, records = [], []
    for i, n in enumerate(ns):
        tokens = jnp.asarray(np.random.default_rng(n).integers(0, model.config.vocab_size, n),
                             jnp.int32)
        v0 = jax.block_until_ready(states_at_layer(model, tokens, 0))
        t0 = time.perf_counter()
        est, err = jax.block_until_ready(sharded_estimate_sensitivity(
            model, v0, n_probes=probes, mesh=mesh, chunk_size=args.chunk))
        rec = dict(n=n, kind=f"estimate k={probes}", seconds_incl_compile=time.perf_counter() - t0,
                   process_peak_GiB=_peak_bytes() / 2**30,
                   finite=bool(np.isfinite(np.asarray(est)).all()),
                   first=float(est[0]), last=float(est[-1]), median=float(jnp.median(est)))
        records.append(rec)
        rows.append(rec)
        print(table(rows[-1:], list(rec)), flush=True)
        if i == 0 and not args.no_exact:  # the exact profile at the smallest n, vs the estimate
            t0 = time.perf_counter()
            exact = jax.block_until_ready(sharded_sensitivity_profile(
                model, v0, mesh=mesh, chunk_size=args.exact_chunk))
            sq = np.asarray(exact) ** 2
            z = np.abs(np.asarray(est) - sq) / np.maximum(np.asarray(err), 1e-30)
            rec = dict(n=n, kind="exact fro", seconds_incl_compile=time.perf_counter() - t0,
                       process_peak_GiB=_peak_bytes() / 2**30,
                       finite=bool(np.isfinite(sq).all()), first=float(sq[0]),
                       last=float(sq[-1]), median=float(np.median(sq)),
                       estimate_within_3_stderr=float((z < 3).mean()))
            records.append(rec)
            rows.append(rec)
            print(table(rows[-1:], list(rec)), flush=True)
    print(table(rows, list(rows[-1])))

    mem = [run_case("estimate-135m", n, 1, args.smoke) for n in mem_ns]
    ok = [r for r in mem if "error" not in r]
    peaks = [r["peak_bytes"] for r in ok]
    on_gpu = jax.default_backend() == "gpu"
    budget = 80e9 if on_gpu else 24e9
    fit = dict(
        exponent_peak=fit_exponent([r["n"] for r in ok], peaks),
        exponent_delta=fit_exponent([r["n"] for r in ok], [r["delta_bytes"] for r in ok]),
        budget_bytes=budget,
        largest_n_extrapolated=largest_n([r["n"] for r in ok], peaks, budget),
    )
    mrows = [dict(n=r["n"], peak_GiB=r.get("peak_bytes", 0) / 2**30,
                  xla_temp_GiB=r.get("xla_temp_bytes", 0) / 2**30,
                  seconds=r.get("seconds_incl_compile"), error=(r.get("error") or "")[-80:])
             for r in mem]
    if mrows:
        print(table(mrows, list(mrows[0])))
        print("memory fit:", fit)
    path = write_json(
        "long_context_smoke" if args.smoke else "long_context",
        dict(config=str(model.config), profiles=records, memory=mem, memory_fit=fit,
             note=("estimate: Hutchinson with k probes, remat; memory: peak of a fresh process "
                   "running the 2-probe estimate at chunk 1 (ru_maxrss on CPU, "
                   "peak_bytes_in_use on GPU); largest_n: power-law extrapolation")),
        args.out,
    )
    print(f"wrote {path}")
    return records, fit


if __name__ == "__main__":
    main()
