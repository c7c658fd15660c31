"""Benchmark (3): peak memory of the last-token Jacobian / sensitivity profile against n.

Each measurement runs in a fresh subprocess and reports two numbers:
- peak resident memory (resource.getrusage(RUSAGE_SELF).ru_maxrss on CPU; jax's
  peak_bytes_in_use on a GPU) minus the peak before the computation (model, inputs, jax
  runtime): what the run really used;
- XLA's buffer assignment for the compiled kernel (`compiled.memory_analysis()`: temporaries
  and output): what the program allocates, deterministic and independent of the allocator.

Cases (benchmark model: 4 layers, d_model 256; the cotangent chunk is fixed, default 16):
- jac-chunked:   full Jacobian [d_out, n, d_model] with the long-context plan (queries in
  blocks of 256, layer-by-layer rematerialisation; `analysis.memory.MemoryPlan`);
- jac-plain:     full Jacobian, the same chunk, whole-matrix attention, no remat (the
  quadratic baseline);
- jac-unchunked: full Jacobian, all d_out cotangents in one vmap (chunk = d_out), plain;
- profile-chunked: Frobenius profile (rows reduced as produced, never the Jacobian), the
  long-context plan;
- estimate-135m: Hutchinson estimate (2 probes, chunk 1, automatic plan) on the
  SmolLM2-135M config with random weights: the long-context memory per n.

The growth exponent p of (peak - base) ~ n^p is fitted in log-log per case. `--xla-only`
compiles without running (fast: any n) and reports XLA's bytes only.

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

CASES = ("jac-chunked", "jac-plain", "jac-unchunked", "profile-chunked", "estimate-135m")


def _peak_bytes() -> int:
    import jax

    dev = jax.devices()[0]
    if dev.platform != "cpu":
        stats = dev.memory_stats() or {}
        return int(stats.get("peak_bytes_in_use", 0))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _setup(case: str, n: int, smoke: bool):
    """(model, v0 [n, d_model]) of the case's model with random tokens."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from analysis.validation import states_at_layer
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
        cfg = bench_config(smoke).replace(max_len=max(n, 4096))
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(np.random.default_rng(n).integers(0, cfg.vocab_size, n), jnp.int32)
    return model, jax.block_until_ready(states_at_layer(model, tokens, 0))


def case_call(case: str, model, v0, chunk: int, smoke: bool):
    """(the analysis call of this case, its compiled-kernel thunk for XLA's memory_analysis)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from analysis.jacobian import _JACOBIAN, last_token_jacobian
    from analysis.kernels import pick_kernel
    from analysis.memory import MemoryPlan, memory_plan
    from analysis.runners import ROWS as _ROWS
    from analysis.sensitivity import estimate_sensitivity, sensitivity_profile

    c = model.config
    n = v0.shape[0]
    block = 8 if smoke else 256
    low = MemoryPlan(query_block=block if n > block else None, remat=True)
    plain = MemoryPlan(query_block=None, remat=False)
    graphdef, state = nnx.split(model)
    eye = jnp.eye(c.d_model, dtype=v0.dtype)
    probes = jax.random.normal(jax.random.key(0), (2, c.d_model), v0.dtype)

    # The jit variant the analysis call itself runs (compile options included).
    def jac_kernel(plan, rows):
        return lambda: pick_kernel(_JACOBIAN, model, n, v0, plan=plan).lower(
            graphdef, state, v0, start_layer=0, stop_layer=c.n_layers, final_norm=True,
            freeze_attention=False, mode="reverse", chunk=rows, plan=plan).compile()

    def rows_kernel(plan, cot, rows):
        return lambda: pick_kernel(_ROWS, model, n, v0, plan=plan).lower(
            graphdef, state, v0, cot, wrt_layer=0, freeze_attention=False, chunk=rows,
            reduce="sq", plan=plan).compile()

    if case == "jac-chunked":
        return (lambda: last_token_jacobian(model, v0, chunk_size=chunk, mode="reverse",
                                            query_block=low.query_block, remat=True),
                jac_kernel(low, chunk))
    if case == "jac-plain":
        return (lambda: last_token_jacobian(model, v0, chunk_size=chunk, mode="reverse",
                                            query_block=None, remat=False),
                jac_kernel(plain, chunk))
    if case == "jac-unchunked":
        return (lambda: last_token_jacobian(model, v0, chunk_size=c.d_model, mode="reverse",
                                            query_block=None, remat=False),
                jac_kernel(plain, c.d_model))
    if case == "profile-chunked":
        return (lambda: sensitivity_profile(model, v0, chunk_size=chunk,
                                            query_block=low.query_block, remat=True),
                rows_kernel(low, eye, chunk))
    auto = memory_plan(model, n, c.n_layers)
    return (lambda: estimate_sensitivity(model, v0, n_probes=2, chunk_size=1),
            rows_kernel(auto, probes, 1))


def worker(case: str, n: int, chunk: int, smoke: bool, xla_only: bool = False) -> dict:
    """Run one case in this process; return its memory (and time)."""
    import jax

    model, v0 = _setup(case, n, smoke)
    call, kernel = case_call(case, model, v0, chunk, smoke)
    analysis = kernel().memory_analysis()
    rec = dict(case=case, n=n, chunk=1 if case == "estimate-135m" else chunk,
               platform=jax.devices()[0].platform,
               xla_temp_bytes=int(analysis.temp_size_in_bytes),
               xla_output_bytes=int(analysis.output_size_in_bytes),
               xla_argument_bytes=int(analysis.argument_size_in_bytes))
    if xla_only:
        return rec
    base = _peak_bytes()
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    seconds = time.perf_counter() - t0
    peak = _peak_bytes()
    return dict(rec, base_bytes=base, peak_bytes=peak, delta_bytes=peak - base,
                seconds_incl_compile=seconds)


def run_case(case: str, n: int, chunk: int, smoke: bool, timeout: float = 1800,
             xla_only: bool = False) -> dict:
    """One case in a fresh subprocess (its own peak memory)."""
    cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--worker", case, str(n), str(chunk)]
    if smoke:
        cmd.append("--smoke")
    if xla_only:
        cmd.append("--xla-only")
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
    "jac-chunked": [512, 1024, 2048],
    "jac-plain": [512, 1024, 2048],
    "jac-unchunked": [256, 512, 1024],  # 2048 unchunked needs ~25 GB: more than this host
    "profile-chunked": [512, 1024, 2048],
    "estimate-135m": [1024, 2048, 4096],
}
SMOKE_PLAN = {case: [32, 64] for case in CASES}


def main(argv=None):
    parser = parse_common(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--worker", nargs=3, metavar=("CASE", "N", "CHUNK"))
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--ns", type=int, nargs="+", default=None, help="n values (all cases)")
    parser.add_argument("--name", default=None, help="JSON file name (default memory)")
    parser.add_argument("--xla-only", action="store_true",
                        help="compile only and report XLA's buffer assignment (no run)")
    args = parser.parse_args(argv)
    if args.worker:
        case, n, chunk = args.worker
        rec = worker(case, int(n), int(chunk), args.smoke, args.xla_only)
        print("RESULT" + json.dumps(rec), flush=True)
        return None
    plan = SMOKE_PLAN if args.smoke else DEFAULT_PLAN
    chunk = 4 if args.smoke else args.chunk
    records, rows, fits = [], [], {}
    for case in args.cases:
        got = [run_case(case, n, chunk, args.smoke, xla_only=args.xla_only)
               for n in (args.ns or plan[case])]
        records += got
        ok = [r for r in got if "error" not in r]
        ns = [r["n"] for r in ok]
        fits[case] = dict(
            xla_temp=fit_exponent(ns, [r["xla_temp_bytes"] for r in ok]),
            rss_delta=None if args.xla_only else fit_exponent(ns, [r["delta_bytes"] for r in ok]),
        )
        for r in got:
            rows.append(dict(case=case, n=r["n"], chunk=r["chunk"],
                             xla_temp_GiB=r.get("xla_temp_bytes", 0) / 2**30,
                             xla_out_GiB=r.get("xla_output_bytes", 0) / 2**30,
                             peak_GiB=r.get("peak_bytes", 0) / 2**30,
                             delta_GiB=r.get("delta_bytes", 0) / 2**30,
                             seconds=r.get("seconds_incl_compile"),
                             error=(r.get("error") or "")[-60:].replace("\n", " ")))
            print(table(rows[-1:], list(rows[-1])), flush=True)
    print()
    print(table(rows, list(rows[0])))
    print("fitted exponents p of bytes ~ n^p:", json.dumps(fits))
    path = write_json(
        args.name or ("memory_smoke" if args.smoke else "memory"),
        dict(records=records, exponents=fits,
             note=("xla_* = compiled.memory_analysis() of the kernel; peak = ru_maxrss (CPU) "
                   "or peak_bytes_in_use (GPU) of a fresh process; delta = peak - peak "
                   "before the computation; seconds include compile")),
        args.out,
    )
    print(f"wrote {path}")
    return records, fits


if __name__ == "__main__":
    main()
