"""Benchmark (3): peak memory of the last-token Jacobian / sensitivity profile against n.

Each measurement runs in a fresh subprocess and reports its peak resident memory
(resource.getrusage(RUSAGE_SELF).ru_maxrss on CPU; jax's peak_bytes_in_use on a GPU) minus
the peak before the computation (model, inputs and jax runtime). Cases:

- jac-chunked:   full Jacobian [d_out, n, d_model], chunk_size fixed (default 16 rows);
- jac-unchunked: full Jacobian, all d_out cotangents in one vmap (chunk_size = d_out);
- profile-remat: Frobenius profile only (`analysis.sharding.sharded_sensitivity_profile`:
  rows reduced as they are produced, every layer checkpointed), the long-context path;
- estimate-135m: Hutchinson estimate (2 probes, chunk 1, remat) on the SmolLM2-135M config
  with random weights: the long-context memory per n, extrapolated to 24 GB / 80 GB.

The growth exponent p of (peak - base) ~ n^p is fitted in log-log per case.

Run: python benchmarks/bench_memory.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import ROOT, parse_common, table, write_json

CASES = ("jac-chunked", "jac-unchunked", "profile-remat", "estimate-135m")


def _peak_bytes() -> int:
    import jax

    dev = jax.devices()[0]
    if dev.platform != "cpu":
        stats = dev.memory_stats() or {}
        return int(stats.get("peak_bytes_in_use", 0))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def worker(case: str, n: int, chunk: int, smoke: bool) -> dict:
    """Run one case in this process; return its memory and time."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from analysis.jacobian import last_token_jacobian, states_at_layer
    from analysis.sharding import (
        device_mesh,
        sharded_estimate_sensitivity,
        sharded_sensitivity_profile,
    )
    from benchmarks.bench_sweep import bench_config
    from transformer.config import TransformerConfig
    from transformer.model import Decoder

    if case == "estimate-135m":
        cfg = TransformerConfig.smollm2_135m(dtype="float32", param_dtype="float32",
                                             softmax_dtype="float32", max_len=max(n, 8192))
        if smoke:
            cfg = cfg.replace(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_head=16,
                              d_mlp=96, vocab_size=256)
    else:
        cfg = bench_config(smoke)
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(np.random.default_rng(n).integers(0, cfg.vocab_size, n), jnp.int32)
    v0 = jax.block_until_ready(states_at_layer(model, tokens, 0))
    mesh = device_mesh(jax.devices()[:1])
    base = _peak_bytes()
    t0 = time.perf_counter()
    if case == "jac-chunked":
        out = last_token_jacobian(model, v0, chunk_size=chunk, mode="reverse")
    elif case == "jac-unchunked":
        out = last_token_jacobian(model, v0, chunk_size=cfg.d_model, mode="reverse")
    elif case == "profile-remat":
        out = sharded_sensitivity_profile(model, v0, mesh=mesh, chunk_size=chunk, remat=True)
    else:
        out = sharded_estimate_sensitivity(model, v0, n_probes=2, mesh=mesh, chunk_size=1,
                                           remat=True)
    jax.block_until_ready(out)
    seconds = time.perf_counter() - t0
    peak = _peak_bytes()
    return dict(case=case, n=n, chunk=chunk, base_bytes=base, peak_bytes=peak,
                delta_bytes=peak - base, seconds_incl_compile=seconds,
                platform=jax.devices()[0].platform)


def run_case(case: str, n: int, chunk: int, smoke: bool, timeout: float = 1200) -> dict:
    """One case in a fresh subprocess (its own peak memory)."""
    cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--worker", case, str(n), str(chunk)]
    if smoke:
        cmd.append("--smoke")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        return dict(case=case, n=n, chunk=chunk, error=proc.stderr[-500:])
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def fit_exponent(ns, values) -> float | None:
    """Slope of log(values) against log(ns) (None with fewer than two positive points)."""
    pts = [(n, v) for n, v in zip(ns, values) if v and v > 0]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


DEFAULT_PLAN = {
    "jac-chunked": [256, 512, 1024, 2048],
    "jac-unchunked": [256, 512, 1024],  # 2048 unchunked needs ~25 GB: more than this host
    "profile-remat": [256, 512, 1024, 2048],
    "estimate-135m": [256, 512, 1024],
}
SMOKE_PLAN = {case: [32, 64] for case in CASES}


def main(argv=None):
    parser = parse_common(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--worker", nargs=3, metavar=("CASE", "N", "CHUNK"))
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--ns", type=int, nargs="+", default=None, help="n values (all cases)")
    parser.add_argument("--name", default=None, help="JSON file name (default memory)")
    args = parser.parse_args(argv)
    if args.worker:
        case, n, chunk = args.worker
        print("RESULT" + json.dumps(worker(case, int(n), int(chunk), args.smoke)), flush=True)
        return None
    plan = SMOKE_PLAN if args.smoke else DEFAULT_PLAN
    chunk = 4 if args.smoke else args.chunk
    records, rows, fits = [], [], {}
    for case in args.cases:
        got = [run_case(case, n, chunk, args.smoke) for n in (args.ns or plan[case])]
        records += got
        ok = [r for r in got if "error" not in r]
        fits[case] = fit_exponent([r["n"] for r in ok], [r["delta_bytes"] for r in ok])
        for r in got:
            rows.append(dict(case=case, n=r["n"], chunk=r["chunk"],
                             peak_GiB=r.get("peak_bytes", 0) / 2**30,
                             delta_GiB=r.get("delta_bytes", 0) / 2**30,
                             seconds=r.get("seconds_incl_compile"),
                             error=(r.get("error") or "")[-60:].replace("\n", " ")))
            print(table(rows[-1:], list(rows[-1])), flush=True)
    print()
    print(table(rows, list(rows[0])))
    print("fitted exponent p of (peak - base) ~ n^p:", json.dumps(fits))
    path = write_json(
        args.name or ("memory_smoke" if args.smoke else "memory"),
        dict(records=records, exponents=fits,
             note=("peak = ru_maxrss (CPU) or peak_bytes_in_use (GPU) of a fresh process; "
                   "delta = peak - peak before the computation; seconds include compile")),
        args.out,
    )
    print(f"wrote {path}")
    return records, fits


if __name__ == "__main__":
    main()
