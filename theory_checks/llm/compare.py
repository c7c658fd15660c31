"""The `llm` profile's models side by side (issue 15): one table with a column per model (each
check's verdict and key number) and figures with a curve per model, drawn from the results'
measured numbers (nothing is measured here).

results.json keeps one result per check and model (`CheckResult.model` names the model);
this module only regroups them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

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


def _curve(r: CheckResult, key: str, x_key: str = "lengths"):
    m = r.measured
    if key not in m or x_key not in m:
        return None
    return np.asarray(m[x_key], float), np.asarray(m[key], float)


def _positive(y: np.ndarray) -> np.ndarray:
    return np.where(y > 0, y, np.nan)


def _fig5a(ax, per_model):
    for model, r in per_model.items():
        heads = _curve(r, "ones_heads_mean_float32")
        y = _curve(r, "ones_y_linf_float32")
        if heads is None or y is None:
            continue
        line = ax.loglog(*heads, "o-", ms=2, lw=1, label=f"{model}: per-head mean")[0]
        ax.loglog(y[0], _positive(y[1]), "--", lw=1, color=line.get_color(), label=f"{model}: y")
    draw_paper_markers(ax, "Figure 5a", "ones")
    ax.set_xlabel("n (ones)")
    ax.set_ylabel("pair distance, L-inf, float32")
    ax.set_title("R4 / Figure 5a: n vs n + 1 ones")


def _fig5cd(ax, per_model):
    for model, r in per_model.items():
        plain, commas = _curve(r, "plain_y_linf_float32"), _curve(r, "commas_y_linf_float32")
        if plain is None or commas is None:
            continue
        line = ax.loglog(plain[0], _positive(plain[1]), "-", lw=1, label=f"{model}: plain")[0]
        ax.loglog(commas[0], _positive(commas[1]), "--", lw=1, color=line.get_color(),
                  label=f"{model}: commas")
    ax.set_xlabel("n (ones)")
    ax.set_ylabel("pair distance of y, L-inf, float32")
    ax.set_title("R12 / Figure 5c-d: copying a run, without / with commas")


def _precision(ax, per_model):
    for model, r in per_model.items():
        ref, bf = _curve(r, "float64_distance"), _curve(r, "bfloat16_distance")
        if ref is None or bf is None:
            continue
        line = ax.loglog(*ref, "-", lw=1, label=f"{model}: float64")[0]
        ax.loglog(bf[0], _positive(bf[1]), ":", lw=1, color=line.get_color(),
                  label=f"{model}: bfloat16")
    ax.set_xlabel("n (ones)")
    ax.set_ylabel("pair distance of y, L-inf")
    ax.set_title("R6: the same weights in float64 and bfloat16")


def _tasks(ax, per_model):
    styles = {"count_ones": "o-", "sum": "s--", "copy_last": "^:", "copy_first": "v-."}
    for i, (model, r) in enumerate(per_model.items()):
        color = f"C{i}"
        for task, style in styles.items():
            acc = _curve(r, f"accuracy_{task}")
            if acc is not None:
                ax.semilogx(acc[0], acc[1] + 0.02 * i, style, ms=3, lw=1, color=color,
                            label=f"{model}: {task}")
    ax.set_ylim(-0.05, 1.1)
    ax.set_xlabel("n")
    ax.set_ylabel("greedy answer correct (offset per model)")
    ax.set_title("R5 / Figures 2-3 prompts")


def _windows(ax, per_model):
    drawn = False
    for model, r in per_model.items():
        for k in (k for k in r.measured if k.startswith("y_linf_")):
            x, y = _curve(r, k)
            ax.loglog(x, _positive(y), "-", lw=1, label=f"{model}: {k[len('y_linf_'):]}")
            drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "does not apply: no model here has sliding windows", ha="center",
                va="center", transform=ax.transAxes, fontsize=8)
    ax.set_xlabel("n (ones)")
    ax.set_ylabel("pair distance of y, L-inf, float32")
    ax.set_title("R12b: windowed vs every layer global (models with windows only)")


PANELS = {"R4": _fig5a, "R6": _precision, "R12": _fig5cd, "R5": _tasks, "R12b": _windows}


def figure(results: Sequence[CheckResult], figure_dir: Path) -> str | None:
    """One figure, a panel per check that ran, a curve per model; its path relative to the
    report folder (None when no llm result has curves)."""
    groups = by_check(results)
    panels = [(cid, fn) for cid, fn in PANELS.items() if cid in groups]
    if not panels:
        return None
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), dpi=110,
                             squeeze=False)
    for ax, (cid, fn) in zip(axes.flat, panels):
        fn(ax, groups[cid])
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
