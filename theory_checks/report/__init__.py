"""Writing the report: a table on the terminal, report.md, results.json, all atomic."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from theory_checks.result import VERDICT_MEANINGS, CheckResult, dumps, to_jsonable

FIGURE_DIR = "figures"


def _has_models(results: list[CheckResult]) -> bool:
    return any(r.model for r in results)


def table(results: list[CheckResult]) -> str:
    """A fixed-width summary: id, (model,) paper reference, verdict, key number; with models,
    the side-by-side verdict table after it."""
    with_model = _has_models(results)
    rows = [("id", *(("model",) if with_model else ()), "paper ref", "verdict", "key number",
             "time")]
    rows += [
        (r.id, *((r.model,) if with_model else ()), r.paper_ref, r.verdict, r.key_number,
         f"{r.runtime_s:.1f}s")
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if with_model:
        from theory_checks.llm.compare import terminal_table

        lines += ["", terminal_table(results)]
    used = [v for v in VERDICT_MEANINGS if any(r.verdict == v for r in results)]
    lines += [""] + [f"{v}: {VERDICT_MEANINGS[v]}" for v in used]
    return "\n".join(lines)


def anchor(r: CheckResult) -> str:
    """The report section's anchor: the id, then the model's slug in a multi-model run."""
    if not r.model:
        return r.id.lower()
    return f"{r.id.lower()}-" + re.sub(r"[^a-z0-9]+", "-", r.model.lower()).strip("-")


def model_meta(results: list[CheckResult], unavailable: list[dict] = ()) -> dict:
    """The report header's model lines (empty outside the llm profile)."""
    from theory_checks.llm.compare import models_of

    out = {}
    if models_of(results):
        out["models"] = ", ".join(models_of(results))
    if unavailable:
        out["models not run"] = "; ".join(
            f"{u['model']} ({u['origin']}): {u['reason']}" for u in unavailable
        )
    return out


def _reproduction_lines(entries) -> list[str]:
    """A markdown table of `reproduction` entries: the paper's values beside ours."""
    from theory_checks.report.reproduction import FACTOR, FROM_N

    out = [
        f"**Reproduction** (ours within a factor of {FACTOR:g} of the paper's value at every "
        f"listed n >= {FROM_N}; reported beside the verdict, not part of it):",
        "",
        "| figure | reading | series | n | paper | ours | reproduced |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        ours = ", ".join("-" if o is None else f"{o:.3g}" for o in e["ours"])
        paper = ", ".join(f"{p:.3g}" for p in e["paper"])
        n = ", ".join(str(k) for k in e["n"])
        out.append(
            f"| {e['figure']} | {e['reading']} | {e['series']} | {n} | {paper} | {ours} | "
            f"{'yes' if e['reproduced'] else 'no'} |"
        )
    return out + [""]


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)) and len(value) > 12:
        head = ", ".join(_format_value(v) for v in value[:6])
        return f"[{head}, ... ({len(value)} values)]"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def markdown(results: list[CheckResult], meta: dict, side_by_side: list[str] = ()) -> str:
    """The whole report.md text: a summary table, (the models side by side,) then one
    section per result."""
    out = ["# Theory checks: Transformers need glasses! (Barbero et al., NeurIPS 2024)", ""]
    out += [f"- {k}: {v}" for k, v in meta.items()]
    with_model = _has_models(results)
    model_head = "model | " if with_model else ""
    out += ["", f"| id | {model_head}paper ref | title | verdict | key number |",
            "|---|" + "---|" * (5 if with_model else 4)]
    out += [
        f"| [{r.id}](#{anchor(r)}) | {r.model + ' | ' if with_model else ''}{r.paper_ref} | "
        f"{r.title} | **{r.verdict}** | {r.key_number} |"
        for r in results
    ]
    out.append("")
    out += ["Verdicts:", ""] + [f"- **{v}**: {m}." for v, m in VERDICT_MEANINGS.items()]
    out.append("")
    out += list(side_by_side)
    for r in results:
        if r.model:
            out += [f'<a id="{anchor(r)}"></a>', "", f"## {r.id} on {r.model}", ""]
        else:
            out += [f"## {r.id}", ""]
        out += [f"### {r.title} ({r.paper_ref})", ""]
        out += [f"**Claim.** {r.claim}", "", f"**Setup.** {r.setup}", ""]
        if r.premise:
            reached = "reached" if r.premise_reached else "**not reached**"
            out += [f"**Premise** ({reached}). {r.premise}", ""]
            if not r.premise_reached:
                out += [f"**What would reach it.** {r.to_reach_premise}", ""]
        out += [f"**Criterion.** {r.criterion}", "", f"**Verdict: {r.verdict}**", ""]
        out += ["| quantity | value |", "|---|---|"]
        out += [f"| {k} | {_format_value(v)} |" for k, v in to_jsonable(r.measured).items()]
        out.append("")
        if r.reproduction:
            out += _reproduction_lines(r.reproduction)
        if r.notes:
            out += [f"**Notes.** {r.notes}", ""]
        for fig in r.figures:
            out += [f"![{r.id}: {Path(fig).stem}]({fig})", ""]
        where = "; ".join(f"{k} on {v}" for k, v in r.placement.items())
        out += [
            f"_seeds {list(r.seeds)}, dtypes {list(r.dtypes)}, device {r.device}"
            + (f" ({where})" if where else "") + f", {r.runtime_s:.1f} s_",
            "",
        ]
    return "\n".join(out)


def check_writable(out: Path) -> None:
    """Raise ValueError, naming the problem, unless a report can be written at `out`: its
    parent folder exists or can be created and is writable, and `out` is not a file.

    Called before any check runs, so that a bad --out costs nothing and writes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    parent = out.parent if str(out.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise ValueError(f"--out {out}: {existing} is not a folder, so {parent} cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: no permission to write in {existing}")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=parent))
        probe.rmdir()
    except OSError as err:
        raise ValueError(f"--out {out}: cannot write a report there ({err.strerror})") from None


@contextlib.contextmanager
def sigterm_as_exit():
    """Within the block, SIGTERM raises SystemExit(143) as Ctrl-C raises KeyboardInterrupt:
    Python's default for SIGTERM ends the process at once, without the cleanup that keeps a
    report atomic (an empty .partial- folder was left). Main thread only (where signal
    handlers live); elsewhere the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextlib.contextmanager
def staging_folder(out: Path):
    """A temporary folder beside `out` that replaces `out` only if the block completes.

    An interrupted run (exception, Ctrl-C, SIGTERM) removes the staging folder and leaves any
    previous report at `out` untouched: never a half-written report in place.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with sigterm_as_exit():
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        try:
            yield stage
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write(stage: Path, results: list[CheckResult], meta: dict) -> None:
    """Write report.md and results.json into the staging folder."""
    side = []
    if _has_models(results):
        from theory_checks.llm.compare import section

        side = section(results, stage / FIGURE_DIR)
    (stage / "results.json").write_text(dumps(results) + "\n")
    (stage / "report.md").write_text(markdown(results, meta, side) + "\n")
