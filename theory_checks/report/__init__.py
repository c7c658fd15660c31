"""Writing the report: a table on the terminal, report.md, results.json, all atomic."""

from __future__ import annotations

import contextlib
import dataclasses
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
    """Per figure: which readings reproduce each series; every reading x series with the
    paper's values beside ours in a collapsible block."""
    from theory_checks.report.reproduction import FACTOR, FROM_N
    from theory_checks.report.tables import Column, Table, markdown as table_md

    out = [f"**Reproduction** (ours within a factor of {FACTOR:g} of the paper's value at every "
           f"listed n >= {FROM_N}; reported beside the verdict, not part of it):", ""]
    summary, full = [], []
    for figure in dict.fromkeys(e["figure"] for e in entries):
        fig = [e for e in entries if e["figure"] == figure]
        readings = list(dict.fromkeys(e["reading"] for e in fig))
        for series in dict.fromkeys(e["series"] for e in fig):
            ok = [e["reading"] for e in fig if e["series"] == series and e["reproduced"]]
            summary.append((figure, series, f"{len(ok)} of {len(readings)}",
                            "; ".join(ok) if ok else "none"))
        whole = [r for r in readings if all(e["reproduced"] for e in fig if e["reading"] == r)]
        summary.append((figure, "all series at once", f"{len(whole)} of {len(readings)}",
                        "; ".join(whole) if whole else "none"))
        full += [(figure, e["reading"], e["series"], e["n"], e["paper"], e["ours"],
                  e["reproduced"]) for e in fig]
    out += table_md(Table("Readings that reproduce, per series", (
        Column("figure"), Column("series"), Column("readings reproducing"),
        Column("which")), tuple(summary)))
    out += table_md(Table("Every reading and series: the paper's values beside ours", (
        Column("figure"), Column("reading"), Column("series"), Column("n"),
        Column("paper", fmt=".2g"), Column("ours", fmt=".2g"), Column("reproduced")),
        tuple(full), collapsed=True))
    return out


def _summary_lines(results: list[CheckResult]) -> list[str]:
    with_model = _has_models(results)
    model_head = "model | " if with_model else ""
    out = ["## Verdicts", "", f"| id | {model_head}paper ref | title | verdict | key number |",
           "|---|" + "---|" * (5 if with_model else 4)]
    out += [
        f"| [{r.id}](#{anchor(r)}) | {r.model + ' | ' if with_model else ''}{r.paper_ref} | "
        f"{r.title} | **{r.verdict}** | {r.key_number.replace('|', '/')} |"
        for r in results
    ]
    return out + [""]


def reproduction_summary(results: list[CheckResult]) -> list[str]:
    """The "Does the paper reproduce?" table of these results (the README's generator)."""
    from theory_checks.report.reproduction_table import table_lines

    entries = [e for r in results for e in to_jsonable(list(r.reproduction))]
    if not entries:
        return []
    return ["## Does the paper reproduce?", "", *table_lines(entries), ""]


def markdown(results: list[CheckResult], meta: dict, side_by_side: list[str] = ()) -> str:
    """The whole report.md text: the verdicts, the "Does the paper reproduce?" table, (the
    models side by side,) then one section per result."""
    from theory_checks.report.tables import markdown as table_md, tables_for

    out = ["# Theory checks: Transformers need glasses! (Barbero et al., NeurIPS 2024)", ""]
    out += _summary_lines(results)
    out += reproduction_summary(results)
    out += ["Verdicts:", ""] + [f"- **{v}**: {m}." for v, m in VERDICT_MEANINGS.items()]
    out += ["", "Run:", ""] + [f"- {k}: {v}" for k, v in meta.items()] + [""]
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
        for t in tables_for(r.id, to_jsonable(r.measured)):
            out += table_md(t)
        if r.reproduction:
            out += _reproduction_lines(to_jsonable(list(r.reproduction)))
        if r.notes:
            out += [f"**Notes.** {r.notes}", ""]
        for fig in r.figures:
            out += [f"![{r.id}: {Path(fig).stem}]({fig})", ""]
        where = "; ".join(f"{k} on {v}" for k, v in r.placement.items())
        out += [
            f"_seeds {_seeds(r.seeds)}, dtypes {', '.join(r.dtypes) or NONE_DTYPES}, device "
            f"{r.device}" + (f" ({where})" if where else "") + f", {r.runtime_s:.1f} s_",
            "",
        ]
    return "\n".join(out)


NONE_DTYPES = "none stated"


def _seeds(seeds) -> str:
    seeds = list(seeds)
    if len(seeds) > 6 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]} ({len(seeds)})"
    return ", ".join(str(s) for s in seeds) or "none"


def load(path) -> list[CheckResult]:
    """The results of a recorded results.json (to render its report again)."""
    import json

    fields = {f.name for f in dataclasses.fields(CheckResult)}
    out = []
    for d in json.loads(Path(path).read_text()):
        d = {k: v for k, v in d.items() if k in fields}
        for k in ("figures", "seeds", "dtypes", "reproduction"):
            d[k] = tuple(d.get(k, ()))
        out.append(CheckResult(**d))
    return out


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
