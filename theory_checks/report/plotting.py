"""Matplotlib set-up shared by the checks (headless, labelled, saved as PNG)."""

from __future__ import annotations

import sys

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # headless, unless a notebook already chose its backend
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

matplotlib.rcParams.update({"axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8})

# One name and one colour per positional encoding in every table, figure and text.
ENCODING_NAMES = {"none": "NoPE", "rope": "RoPE", "alibi": "ALiBi", "sinusoidal": "APE"}
ENCODING_COLORS = {"NoPE": "C0", "RoPE": "C1", "ALiBi": "C2", "APE": "C3"}
ENCODING_STYLES = {"NoPE": ("o", "-"), "RoPE": ("s", "--"), "ALiBi": ("^", "-."),
                   "APE": ("v", ":")}
FORMAT_COLORS = {"float64": "k", "float32": "C0", "float16": "C1", "bfloat16": "C3",
                 "float8_e4m3fn": "C4", "float8_e5m2": "C5"}

UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
UNIT_ROUNDOFF.update({"float8_e4m3fn": 2.0**-4, "float8_e5m2": 2.0**-3})  # fake-quantised


def new_figure(width: float = 6.4, height: float = 4.2):
    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
