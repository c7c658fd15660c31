"""Small fits used to turn measured curves into single numbers (R1, R2, R4, R6, R8)."""

from __future__ import annotations

import numpy as np


def loglog_slope(x, y) -> float:
    """Least-squares slope of log(y) against log(x): y ~ C x^slope.

    Args:
        x, y: [N] positive values (entries with y <= 0 are dropped: a distance that is
            exactly zero has left the power law).
    Returns:
        The fitted exponent (float); ValueError with fewer than two usable points.
    """
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.shape} and {y.shape}")
    keep = (x > 0) & (y > 0) & np.isfinite(y)
    if keep.sum() < 2:
        raise ValueError("need at least two points with positive x and y to fit a slope")
    slope, _ = np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)
    return float(slope)


def geometric_rate(x, y) -> float:
    """Fitted ratio r of y ~ C r^x (log-linear least squares), for y > 0.

    Args:
        x: [N] steps (e.g. depths); y: [N] positive values.
    Returns:
        r (float).
    """
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    keep = (y > 0) & np.isfinite(y)
    if keep.sum() < 2:
        raise ValueError("need at least two positive points to fit a geometric rate")
    slope, _ = np.polyfit(x[keep], np.log(y[keep]), 1)
    return float(np.exp(slope))
