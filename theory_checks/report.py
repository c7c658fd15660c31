"""Writing the report: a table on the terminal, report.md, results.json, all atomic."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from theory_checks.result import CheckResult, dumps, to_jsonable

FIGURE_DIR = "figures"


def table(results: list[CheckResult]) -> str:
    """A fixed-width summary: id, paper reference, verdict, key number."""
    rows = [("id", "paper ref", "verdict", "key number", "time")]
    rows += [(r.id, r.paper_ref, r.verdict, r.key_number, f"{r.runtime_s:.1f}s") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


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


def markdown(results: list[CheckResult], meta: dict) -> str:
    """The whole report.md text: a summary table, then one section per result."""
    out = ["# Theory checks: Transformers need glasses! (Barbero et al., NeurIPS 2024)", ""]
    out += [f"- {k}: {v}" for k, v in meta.items()]
    out += ["", "| id | paper ref | title | verdict | key number |", "|---|---|---|---|---|"]
    out += [
        f"| [{r.id}](#{r.id.lower()}) | {r.paper_ref} | {r.title} | **{r.verdict}** | "
        f"{r.key_number} |"
        for r in results
    ]
    out.append("")
    for r in results:
        out += [f"## {r.id}", "", f"### {r.title} ({r.paper_ref})", ""]
        out += [f"**Claim.** {r.claim}", "", f"**Setup.** {r.setup}", ""]
        out += [f"**Criterion.** {r.criterion}", "", f"**Verdict: {r.verdict}**", ""]
        out += ["| quantity | value |", "|---|---|"]
        out += [f"| {k} | {_format_value(v)} |" for k, v in to_jsonable(r.measured).items()]
        out.append("")
        if r.notes:
            out += [f"**Notes.** {r.notes}", ""]
        for fig in r.figures:
            out += [f"![{r.id}: {Path(fig).stem}]({fig})", ""]
        out += [
            f"_seeds {list(r.seeds)}, dtypes {list(r.dtypes)}, device {r.device}, "
            f"{r.runtime_s:.1f} s_",
            "",
        ]
    return "\n".join(out)


@contextlib.contextmanager
def staging_folder(out: Path):
    """A temporary folder beside `out` that replaces `out` only if the block completes.

    An interrupted run (exception, Ctrl-C) removes the staging folder and leaves any
    previous report at `out` untouched: never a half-written report in place.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
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
    (stage / "results.json").write_text(dumps(results) + "\n")
    (stage / "report.md").write_text(markdown(results, meta) + "\n")
