"""Every benchmark script runs end to end in a tiny setting and writes its JSON.

No timing is asserted (the machine is shared); what is asserted are the correctness checks
each benchmark makes before timing: the three Jacobians agree, the three sweeps agree, the
FLOP count matches an independent hand count, and the JSON holds the machine description.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_estimators, bench_flops, bench_memory, bench_sweep
from transformer.config import TransformerConfig

ROOT = Path(__file__).resolve().parent.parent


def _load(out: Path, name: str) -> dict:
    data = json.loads((out / f"{name}.json").read_text())
    assert data["machine"]["n_devices"] >= 1
    return data


@pytest.fixture(scope="module")
def gpu_run_out(tmp_path_factory) -> Path:
    """benchmarks/gpu_run.sh in its CPU smoke mode (GPU_RUN_SMOKE=1), run once: it runs the
    jacobian, flops, long-context, XLA-memory benchmarks and the S1 study at chosen lengths
    (theory_checks.studies.long_context) in their smoke settings, whose
    JSON the tests below check (one run instead of one per script)."""
    out = tmp_path_factory.mktemp("gpu_run")
    env = dict(os.environ, GPU_RUN_SMOKE="1", OUT=str(out), PYTHON=sys.executable,
               JAX_PLATFORMS="cpu")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_run.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return out


def test_bench_jacobian_smoke(gpu_run_out):
    (rec,) = _load(gpu_run_out, "jacobian_smoke")["results"]
    assert rec["rel_diff_torch"] < 1e-5  # ours vs torch.func.jacrev on the same weights
    assert rec["rel_diff_naive"] < 1e-5  # ours vs a loop of single VJPs
    assert rec["ours"]["median_s"] > 0 and rec["torch_jacrev"]["median_s"] > 0


def test_bench_sweep_smoke(tmp_path):
    bench_sweep.main(["--smoke", "--out", str(tmp_path), "--repeats", "1"])
    results = _load(tmp_path, "sweep_smoke")["results"]
    assert len(results) == 3
    for r in results.values():
        assert r["max_abs_diff_vs_slow"] < 1e-5


def test_bench_flops_smoke(gpu_run_out):
    data = _load(gpu_run_out, "flops_smoke")
    assert data["matmul"]["flops_per_s"] > 0
    assert all(r["fraction_of_matmul"] > 0 for r in data["results"])
    assert all(r["matmul_beside"]["flops_per_s"] > 0 for r in data["results"])


def test_flop_count_by_hand():
    """One layer, MHA (d_head 2), ungated, n = 2, queries = 2: counted term by term."""
    c = TransformerConfig(vocab_size=8, d_model=4, n_layers=1, n_heads=2, d_mlp=6,
                          gated=False, activation="gelu")
    # Q 2*q*m*h*d = 2*2*4*2*2, KV 2*n*m*2*g*d = 2*2*4*2*2*2, QK^T + PV 2*2*h*q*n*d =
    # 4*2*2*2*2, out 2*q*h*d*m = 2*2*2*2*4, MLP (two matrices) 2*q*m*f*2 = 2*2*4*6*2.
    assert bench_flops.layer_forward_flops(c, 2, 2) == 64 + 128 + 64 + 64 + 192
    # The VJP: linear maps once, the two attention products twice.
    assert bench_flops.layer_vjp_flops(c, 2, 2) == 64 + 128 + 64 + 192 + 2 * 64
    flops = bench_flops.jacobian_flops(c, 2)
    assert flops["total"] == flops["forward"] + 4 * flops["per_vjp"]


def test_causal_blocks_count_only_the_pairs_computed():
    """n = 8 in 4 causal blocks of 2 queries: keys 2, 4, 6, 8 per block -> 2 * 20 pairs."""
    assert bench_flops.attended_pairs(8, 8, 4) == 2 * (2 + 4 + 6 + 8)
    assert bench_flops.attended_pairs(8, 8, 1) == 64
    assert bench_flops.attended_pairs(8, 1, 4) == 8  # the last layer's single query
    assert bench_flops.attended_pairs(10, 10, 4) == 3 * 3 + 3 * 6 + 3 * 9 + 1 * 10
    c = TransformerConfig(vocab_size=8, d_model=4, n_layers=2, n_heads=2, d_mlp=6)
    full, blocked = bench_flops.jacobian_flops(c, 8), bench_flops.jacobian_flops(c, 8, causal_blocks=4)
    # Only the first layer's attention changes: forward 2 products, VJP 4, per pair 2*h*d.
    saved_pairs = 64 - 40
    assert full["forward"] - blocked["forward"] == 2 * 2 * c.n_heads * saved_pairs * c.d_head
    assert full["per_vjp"] - blocked["per_vjp"] == 4 * 2 * c.n_heads * saved_pairs * c.d_head


def test_bench_memory_smoke(tmp_path):
    records, fits = bench_memory.main(
        ["--smoke", "--out", str(tmp_path), "--cases", "profile-chunked", "jac-plain"]
    )
    assert all("error" not in r for r in records), records
    assert all(r["peak_bytes"] > 0 and r["xla_temp_bytes"] > 0 for r in records)
    assert set(fits) == {"profile-chunked", "jac-plain"}
    # The same compiled program twice gives the same buffer assignment (deterministic).
    again = bench_memory.worker("jac-plain", 32, 4, smoke=True, xla_only=True)
    first = [r for r in records if r["case"] == "jac-plain" and r["n"] == 32][0]
    assert again["xla_temp_bytes"] == first["xla_temp_bytes"]


def test_bench_long_context_smoke(gpu_run_out):
    records = _load(gpu_run_out, "long_context_smoke")["profiles"]
    assert records and all(r["finite"] for r in records)
    exact = [r for r in records if r["kind"] == "exact fro"][0]
    assert exact["estimate_within_3_stderr"] > 0.5  # estimate consistent with exact profile


def test_bench_memory_fit_exponent():
    assert bench_memory.fit_exponent([10, 20, 40], [3e2, 12e2, 48e2]) == pytest.approx(2.0)
    assert bench_memory.fit_exponent([10], [1.0]) is None


def test_gpu_run_script_smoke(gpu_run_out):
    """Every step of the script wrote its JSON (the steps' contents are checked above)."""
    for name in ("jacobian_smoke", "flops_smoke", "long_context_smoke", "memory_xla_smoke",
                 "study_smoke"):
        assert (gpu_run_out / f"{name}.json").is_file(), name


def test_bench_estimators_smoke(tmp_path):
    out = bench_estimators.main(["--smoke", "--out", str(tmp_path)])
    data = _load(tmp_path, "estimators_smoke")
    assert out["exact_agreement"] < 1e-5  # the Jacobian's norms vs the reduced profile
    assert all(r["finite"] for r in data["records"])
    assert {r["method"] for r in data["summary"]} == {"hutchinson", "xtrace"}
    # XTrace whose sketch spans the output (3 d_model products) is exact.
    full = [r for r in data["summary"] if r["method"] == "xtrace" and r["products"] == 48]
    assert full and full[0]["worst_rel_error"] < 1e-4, full
    assert data["spectrum"]["eigenvalues_over_largest"][0] == 1.0


def test_bench_study_smoke(gpu_run_out):
    data = _load(gpu_run_out, "study_smoke")
    assert data["rows"] and all(r["finite"] for r in data["rows"])
    assert {r["kind"] for r in data["rows"]} == {"ones", "digits", "passage"}
