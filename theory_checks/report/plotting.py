"""Matplotlib set-up shared by the checks (headless, labelled, saved as PNG)."""

from __future__ import annotations

import sys

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # headless, unless a notebook already chose its backend
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

matplotlib.rcParams.update({"axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8})

UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}


def new_figure(width: float = 6.4, height: float = 4.2):
    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
