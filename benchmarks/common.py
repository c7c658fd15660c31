"""Shared pieces of the benchmarks: timing, machine description, JSON output, and one model
built twice with identical weights (Hugging Face `transformers` and our `Decoder`).

Every benchmark measures its ratios in ONE process on one machine; timings are medians of
repeats after warm-up calls (the first call of a jitted function compiles).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

# The repository root on sys.path, so `python benchmarks/bench_x.py` works from anywhere.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = Path(os.environ.get("BENCH_RESULTS", ROOT / "benchmarks" / "results"))

# The benchmark model: a small Llama (RoPE, RMSNorm, gated SiLU, GQA 8/4).
BENCH_HF = dict(
    vocab_size=512,
    hidden_size=256,
    intermediate_size=704,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=32,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    initializer_range=0.05,
)
# A tiny variant for smoke runs (tests/test_benchmarks_smoke.py).
SMOKE_HF = dict(
    BENCH_HF, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, vocab_size=64,
)


def block(x):
    """Wait for a JAX result (or a pytree of them); torch/numpy results pass through."""
    return jax.block_until_ready(x)


def median_time(fn, *, repeats: int = 3, warmup: int = 1) -> dict:
    """Median wall time of fn() over `repeats` calls after `warmup` untimed calls.

    Returns:
        {"median_s", "min_s", "times_s", "first_call_s"} (first_call_s: the first warm-up
        call, which includes compilation for a jitted fn; None when warmup == 0).
    """
    first = None
    for i in range(warmup):
        t0 = time.perf_counter()
        block(fn())
        if i == 0:
            first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    return dict(
        median_s=statistics.median(times), min_s=min(times), times_s=times, first_call_s=first
    )


def machine() -> dict:
    """What ran the benchmark: backend, devices, CPU count, load average, versions, and the
    XLA options of the analysis kernels."""
    dev = jax.devices()
    info = dict(
        backend=jax.default_backend(),
        devices=[str(d.device_kind) for d in dev],
        n_devices=len(dev),
        cpu_count=os.cpu_count(),
        platform=platform.platform(),
        python=platform.python_version(),
        jax=jax.__version__,
        analysis_cpu_options=_cpu_options(),
    )
    try:
        info["load_average_1_5_15"] = list(os.getloadavg())
    except OSError:
        info["load_average_1_5_15"] = None
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def _cpu_options():
    """The XLA options the analysis kernels compile with on this machine (plans without
    query blocks; None: none)."""
    from analysis.kernels import _CPU_OPTIONS, cpu_options_apply

    return _CPU_OPTIONS if cpu_options_apply() else None


def write_json(name: str, payload: dict, out_dir: Path | str | None = None) -> Path:
    """Write payload (plus the machine description) to <out_dir>/<name>.json."""
    out = Path(out_dir) if out_dir else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    payload = dict(payload, machine=machine())
    path.write_text(json.dumps(payload, indent=2, default=_jsonable))
    return path


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain fixed-width text table of rows (dicts) over the given columns."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def hf_llama(hf_kwargs: dict, seed: int = 0, attn: str = "eager"):
    """A float32 transformers LlamaForCausalLM with random weights (norm scales randomised,
    so a missing norm weight would show), in eval mode."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        **hf_kwargs, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}
    )
    model = transformers.LlamaForCausalLM._from_config(
        config, attn_implementation=attn, dtype=torch.float32
    )
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model.eval()


def twin_models(hf_kwargs: dict, seed: int = 0, attn: str = "eager"):
    """(hf_model, our Decoder) with identical float32 weights: the HF model is saved with
    save_pretrained and read back with `transformer.loading.load_pretrained`."""
    from transformer.loading import load_pretrained

    hf = hf_llama(hf_kwargs, seed, attn)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours, _ = load_pretrained(tmp, dtype="float32", softmax_dtype="float32")
    return hf, ours


def parse_common(parser):
    """Flags every benchmark takes: --smoke (tiny sizes, seconds) and --out (JSON folder)."""
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves it runs")
    parser.add_argument("--out", default=None, help="folder for the JSON (default results/)")
    parser.add_argument("--repeats", type=int, default=3)
    return parser
