"""README's "Does the paper reproduce?" table, generated from `reproduction` entries.

`python -m theory_checks.report.reproduction_table RESULTS.json [RESULTS.json ...]` reads the
`reproduction` entries of one or more reports (e.g. the quick and the llm profile), writes
them with the run's metadata to `docs/reproduction_snapshot.json`, and rewrites the table
between the README's markers, so the README always says what a recorded run measured. A
test checks that the README table is the rendering of the snapshot and that the snapshot's
verdicts recompute from its numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from theory_checks.report.reproduction import FACTOR, FROM_N, readings_that_reproduce

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "docs" / "reproduction_snapshot.json"
README = ROOT / "README.md"
START, END = "<!-- reproduction-table:start -->", "<!-- reproduction-table:end -->"

# The paper's claim per figure, in one line (docs/paper_protocols.md has the protocols).
FIGURE_CLAIMS = {
    "Figure 10": "one random layer: the repeated-last pair's L1 distance falls like ~1/n "
    "for RoPE, ALiBi, APE and NoPE alike (0.065 at n = 100, ~1.4e-3 to 3.5e-3 at 5000)",
    "Figure 8": "sinusoidal APE, variance 1/d: the distance crosses the bf16 line near n = 500",
    "Figure 9": "TV of softmaxes of x and x + noise on the first 200 entries falls with n "
    "(0.026 at 500, 0.002 at 10,000)",
    "Figure 5a": "Gemma 7B, 'How many ones...' + n vs n + 1 ones: L-inf distance ~0.04 at "
    "n = 51, touching the bf16 line near n = 2001",
    "Figure 5b": "the same question with random digits ending in '1' vs '11': still ~0.07 at "
    "n = 2001",
    "Figure 5d": "copying ones with a comma after every third: the pair stays apart (0.4 -> "
    "1.45)",
}
FIGURE_ORDER = ("Figure 10", "Figure 8", "Figure 9", "Figure 5a", "Figure 5b", "Figure 5d")


def _log_gap(entry) -> float:
    """The largest |log(ours / paper)| over the judged lengths (inf when one is missing)."""
    gaps = [
        abs(math.log(o / p)) if (o is not None and o > 0) else math.inf
        for n, p, o in zip(entry["n"], entry["paper"], entry["ours"]) if n >= FROM_N
    ]
    return max(gaps) if gaps else math.inf


def _worst(entries) -> str:
    """The series and length where ours is furthest from the paper."""
    best = None
    for e in entries:
        for n, p, o in zip(e["n"], e["paper"], e["ours"]):
            if n < FROM_N or o is None or o <= 0:
                continue
            gap = abs(math.log(o / p))
            if best is None or gap > best[0]:
                best = (gap, e["series"], n, o, p)
    if best is None:
        return "no judged value"
    _, series, n, o, p = best
    return f"{series} {o:.2g} vs {p:.2g} at n = {n} ({max(o / p, p / o):.1f}x)"


def _closest_reading(entries, figure: str) -> str:
    readings = list(dict.fromkeys(e["reading"] for e in entries if e["figure"] == figure))
    return min(readings, key=lambda r: max(
        _log_gap(e) for e in entries if e["figure"] == figure and e["reading"] == r))


def _measured(entries, figure: str, reading: str) -> str:
    parts = []
    for e in entries:
        if e["figure"] != figure or e["reading"] != reading:
            continue
        pairs = [f"{o:.2g}" if o is not None else "-"
                 for n, o in zip(e["n"], e["ours"]) if n >= FROM_N]
        ns = [str(n) for n in e["n"] if n >= FROM_N]
        if pairs:
            parts.append(f"{e['series']} {', '.join(pairs)}")
    ns_text = f" at n = {', '.join(ns)}" if parts else ""
    return "; ".join(parts) + ns_text + f" ({reading})"


def summary_rows(entries: Sequence[dict]) -> list[tuple[str, str, str, str, str]]:
    """(figure, the paper's claim, what we measured, readings that reproduce, verdict)."""
    rows = []
    figures = [f for f in FIGURE_ORDER if any(e["figure"] == f for e in entries)]
    figures += sorted({e["figure"] for e in entries} - set(figures))
    for figure in figures:
        ok = readings_that_reproduce(entries, figure)
        closest = ok[0] if ok else _closest_reading(entries, figure)
        fig_entries = [e for e in entries if e["figure"] == figure]
        series = list(dict.fromkeys(e["series"] for e in fig_entries))
        partly = [s for s in series
                  if any(e["reproduced"] for e in fig_entries if e["series"] == s)]
        gap = _worst([e for e in fig_entries if e["reading"] == closest])
        if ok:
            verdict = "reproduces"
        elif partly:
            missing = [s for s in series if s not in partly]
            verdict = (f"partly: {', '.join(partly)} reproduce; {', '.join(missing)} under no "
                       f"reading (closest: {gap})")
        else:
            verdict = f"does not reproduce under any reading (closest: {gap})"
        rows.append((figure, FIGURE_CLAIMS.get(figure, ""), _measured(entries, figure, closest),
                     "; ".join(ok) if ok else "none", verdict))
    return rows


def render(snapshot: dict) -> str:
    """The README table (markdown) for a snapshot {"meta": {...}, "entries": [...]}."""
    meta = snapshot["meta"]
    return "\n".join(table_lines(snapshot["entries"], f" Recorded run: {meta['runs']}."))


def table_lines(entries: Sequence[dict], recorded: str = "") -> list[str]:
    """The "Does the paper reproduce?" table of `entries` (the README's and the report's)."""
    lines = [
        f"Criterion (fixed before measuring): ours within a factor of {FACTOR:g} of the "
        f"paper's value at every listed n >= {FROM_N}, for every series of the figure."
        + recorded,
        "",
        "| figure | the paper's claim | what we measured | readings that reproduce | verdict |",
        "|---|---|---|---|---|",
    ]
    for row in summary_rows(entries):
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    return lines


def snapshot_from(results_files: Sequence[Path]) -> dict:
    """The entries of several results.json files, with where each came from."""
    entries, runs = [], []
    for path in results_files:
        results = json.loads(Path(path).read_text())
        rows = [e for r in results for e in r.get("reproduction", [])]
        if not rows:
            continue
        entries += rows
        devices = sorted({r["device"] for r in results})
        ids = [r["id"] for r in results if r.get("reproduction")]
        runs.append(f"{', '.join(ids)} ({Path(path).parent.name}: seeds "
                    f"{sorted({s for r in results for s in r['seeds']})[:3]}..., "
                    f"device {', '.join(devices)})")
    if not entries:
        raise ValueError(f"no reproduction entries in {[str(p) for p in results_files]}")
    return {"meta": {"runs": "; ".join(runs)}, "entries": entries}


def readme_table(readme_text: str) -> str:
    """The text between the README's markers."""
    if START not in readme_text or END not in readme_text:
        raise ValueError(f"README has no {START} ... {END} markers")
    return readme_text.split(START, 1)[1].split(END, 1)[0].strip()


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m theory_checks.report.reproduction_table")
    parser.add_argument("results", nargs="+", type=Path, help="results.json files")
    parser.add_argument("--snapshot", type=Path, default=SNAPSHOT)
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    snap = snapshot_from(args.results)
    text = args.readme.read_text()
    readme_table(text)  # markers present
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    _write_atomic(args.snapshot, json.dumps(snap, indent=1) + "\n")
    _write_atomic(args.readme, f"{head}{START}\n{render(snap)}\n{END}{tail}")
    print(render(snap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
