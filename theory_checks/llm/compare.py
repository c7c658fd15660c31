"""The `llm` profile's models side by side (issue 15): one table with a column per model (each
check's verdict and key number) and figures with a curve per model, drawn from the results'
measured numbers (nothing is measured here).

results.json keeps one result per check and model (`CheckResult.model` names the model);
this module only regroups them. Each panel reads its check's numbers through a typed record
(`theory_checks.llm.records`), never by entry names of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from theory_checks.llm.records import (
    CollapseCurves,
    CommaCurves,
    PrecisionCurves,
    TaskAccuracy,
    WindowCurves,
)
from theory_checks.report.plotting import save
from theory_checks.report.reproduction import draw_paper_markers
from theory_checks.result import CheckResult


def models_of(results: Sequence[CheckResult]) -> list[str]:
    """The models of a run, in the order they ran."""
    return list(dict.fromkeys(r.model for r in results if r.model))


def by_check(results: Sequence[CheckResult]) -> dict[str, dict[str, CheckResult]]:
    """{check id: {model: result}}, checks in the order they ran."""
    out: dict[str, dict[str, CheckResult]] = {}
    for r in results:
        if r.model:
            out.setdefault(r.id, {})[r.model] = r
    return out


def _cells(results) -> tuple[list[str], list[list[str]]]:
    models = models_of(results)
    rows = []
    for cid, per_model in by_check(results).items():
        title = next(iter(per_model.values())).title
        cells = [
            f"{per_model[m].verdict}: {per_model[m].key_number}" if m in per_model else "not run"
            for m in models
        ]
        rows.append([cid, title, *cells])
    return models, rows


def markdown_table(results: Sequence[CheckResult]) -> list[str]:
    """| check | title | model 1 | model 2 | ... with "verdict: key number" cells."""
    models, rows = _cells(results)
    out = ["| check | title | " + " | ".join(models) + " |",
           "|---|---|" + "---|" * len(models)]
    for cid, title, *cells in rows:
        bold = [f"**{c.split(':', 1)[0]}**:{c.split(':', 1)[1]}" if ":" in c else c
                for c in cells]
        out.append(f"| {cid} | {title} | " + " | ".join(bold) + " |")
    return out


def terminal_table(results: Sequence[CheckResult]) -> str:
    """The same table in fixed width (verdicts only, the key numbers are in the main table)."""
    models, rows = _cells(results)
    grid = [["check", *models]] + [[cid, *(c.split(":", 1)[0] for c in cells)]
                                   for cid, _, *cells in rows]
    widths = [max(len(row[i]) for row in grid) for i in range(len(grid[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _positive(y) -> np.ndarray:
    y = np.asarray(y, float)
    return np.where(y > 0, y, np.nan)


def _fig5a(ax, records: dict[str, CollapseCurves]):
    for model, c in records.items():
        line = ax.loglog(c.lengths, c.heads_mean["ones"]["float32"], "o-", ms=2, lw=1,
                         label=f"{model}: per-head mean")[0]
        ax.loglog(c.lengths, _positive(c.y_linf["ones"]["float32"]), "--", lw=1,
                  color=line.get_color(), label=f"{model}: y")
    draw_paper_markers(ax, "Figure 5a", "ones")
    ax.set_xlabel("n (ones)")
    ax.set_ylabel("pair distance, L-inf, float32")
    ax.set_title("R4 / Figure 5a: n vs n + 1 ones")


def _fig5cd(ax, records: dict[str, CommaCurves]):
    for model, c in records.items():
        line = ax.loglog(c.lengths, _positive(c.y_linf["plain"]["float32"]), "-", lw=1,
                         label=f"{model}: plain")[0]
        ax.loglog(c.lengths, _positive(c.y_linf["commas"]["float32"]), "--", lw=1,
                  color=line.get_color(), label=f"{model}: commas")
    ax.set_xlabel("n (ones)")
    ax.set_ylabel("pair distance of y, L-inf, float32")
    ax.set_title("R12 / Figure 5c-d: copying a run, without / with commas")


def _precision(ax, records: dict[str, PrecisionCurves]):
    for model, c in records.items():
        line = ax.loglog(c.lengths, c.float64, "-", lw=1, label=f"{model}: float64")[0]
        ax.loglog(c.lengths, _positive(c.bfloat16), ":", lw=1, color=line.get_color(),
                  label=f"{model}: bfloat16")
    ax.set_xlabel("n (ones)")
    ax.set_ylabel("pair distance of y, L-inf")
    ax.set_title("R6: the same weights in float64 and bfloat16")


def _tasks(ax, records: dict[str, TaskAccuracy]):
    styles = {"count_ones": "o-", "sum": "s--", "copy_last": "^:", "copy_first": "v-."}
    for i, (model, c) in enumerate(records.items()):
        for task, style in styles.items():
            ax.semilogx(c.lengths, np.asarray(c.accuracy[task], float) + 0.02 * i, style,
                        ms=3, lw=1, color=f"C{i}", label=f"{model}: {task}")
    ax.set_ylim(-0.05, 1.1)
    ax.set_xlabel("n")
    ax.set_ylabel("greedy answer correct (offset per model)")
    ax.set_title("R5 / Figures 2-3 prompts")


def _windows(ax, records: dict[str, WindowCurves]):
    for model, c in records.items():
        for variant, y in c.y_linf.items():
            ax.loglog(c.lengths, _positive(y), "-", lw=1, label=f"{model}: {variant}")
    if not records:
        ax.text(0.5, 0.5, "does not apply: no model here has sliding windows", ha="center",
                va="center", transform=ax.transAxes, fontsize=8)
    ax.set_xlabel("n (ones)")
    ax.set_ylabel("pair distance of y, L-inf, float32")
    ax.set_title("R12b: windowed vs every layer global (models with windows only)")


# check id -> (the record its panel reads, the panel)
PANELS = {
    "R4": (CollapseCurves, _fig5a),
    "R6": (PrecisionCurves, _precision),
    "R12": (CommaCurves, _fig5cd),
    "R5": (TaskAccuracy, _tasks),
    "R12b": (WindowCurves, _windows),
}


def panel_records(cid: str, per_model: dict[str, CheckResult]) -> dict:
    """{model: the check's record} for the models its panel draws (R12b: those with
    sliding windows; a model without them has nothing to compare).

    Raises:
        MissingEntry: a result lacks an entry its panel needs.
    """
    record, _ = PANELS[cid]
    applies = {m: r for m, r in per_model.items() if cid != "R12b" or r.premise_reached}
    return {m: record.read(r.measured) for m, r in applies.items()}


def draw_panel(ax, cid: str, per_model: dict[str, CheckResult]) -> None:
    """Check `cid`'s panel, a curve per model.

    Raises:
        KeyError (MissingEntry among them): a result lacks what the panel draws.
    """
    PANELS[cid][1](ax, panel_records(cid, per_model))


def figure(results: Sequence[CheckResult], figure_dir: Path) -> str | None:
    """One figure, a panel per check that ran, a curve per model; its path relative to the
    report folder (None when no llm result has curves)."""
    groups = by_check(results)
    panels = [cid for cid in PANELS if cid in groups]
    if not panels:
        return None
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), dpi=110,
                             squeeze=False)
    for ax, cid in zip(axes.flat, panels):
        try:
            draw_panel(ax, cid, groups[cid])
        except KeyError as err:  # drawn as a note: a finished run still gets its report
            ax.text(0.5, 0.5, f"missing data: {err}", ha="center", va="center", wrap=True,
                    transform=ax.transAxes, fontsize=7, color="red")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("The llm profile's models side by side", fontsize=10)
    figure_dir.mkdir(parents=True, exist_ok=True)
    save(fig, figure_dir / "llm_models_side_by_side.png")
    return f"{figure_dir.name}/llm_models_side_by_side.png"


def section(results: Sequence[CheckResult], figure_dir: Path) -> list[str]:
    """The report's "Models side by side" section (markdown lines), with its figure."""
    if not models_of(results):
        return []
    out = ["## Models side by side", "",
           ("Each cell: the check's verdict on that model and its key number (details in the "
            "sections below, one per check and model)."), ""]
    out += markdown_table(results) + [""]
    rel = figure(results, figure_dir)
    if rel:
        out += [f"![models side by side]({rel})", ""]
    return out
