"""The measured sensitivity against Theorem 5.1's bound, position by position (R7, R11):
violations, tightness and rank agreement. Pure numpy."""

from __future__ import annotations

import math

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    # Average the ranks of ties.
    values, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def spearman(a, b) -> float:
    """Spearman rank correlation (ties get average ranks); nan if either side is constant."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def bound_report(measured, bound, *, rtol: float = 1e-9) -> dict:
    """How a measured sensitivity profile compares with its bound (R7).

    Args:
        measured: [n] measured ||d y_n / d v_i||.
        bound: [n] the bound (same norm).
        rtol: relative slack before a position counts as a violation (rounding).
    Returns:
        dict: n_positions; n_compared (positions with bound > 0, where the ratio is
        defined); ratio_min / ratio_median / ratio_max of measured / bound over those
        (tightness: 1 = tight); spearman (rank correlation of measured and bound over all
        positions); n_violations (measured > bound * (1 + rtol), plus measured > 0 where
        bound = 0).
    """
    m = np.asarray(measured, float)
    b = np.asarray(bound, float)
    if m.ndim != 1 or m.shape != b.shape:
        raise ValueError(f"measured and bound must be equal-length 1-D, got {m.shape}, {b.shape}")
    if m.size == 0:
        raise ValueError("measured and bound are empty")
    if not (np.isfinite(m).all() and np.isfinite(b).all()):
        raise ValueError("measured and bound must be finite")
    positive = b > 0
    ratio = m[positive] / b[positive]
    nan = float("nan")
    return {
        "n_positions": int(m.size),
        "n_compared": int(positive.sum()),
        "ratio_min": float(ratio.min()) if ratio.size else nan,
        "ratio_median": float(np.median(ratio)) if ratio.size else nan,
        "ratio_max": float(ratio.max()) if ratio.size else nan,
        "spearman": spearman(m, b),
        "n_violations": int((m > b * (1 + rtol)).sum()),
    }
