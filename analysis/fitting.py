"""Small fits used to turn measured curves into single numbers (R1, R2, R4, R6, R8)."""

from __future__ import annotations

import numpy as np

from analysis.checks import fit_points


def loglog_slope(x, y) -> float:
    """Least-squares slope of log(y) against log(x): y ~ C x^slope.

    Args:
        x, y: [N] finite values (entries with y <= 0 or x <= 0 are dropped: a distance that
            is exactly zero has left the power law).
    Returns:
        The fitted exponent (float).
    Raises:
        ValueError: NaN or inf in x or y, fewer than two usable points, or x without spread.
    """
    x, y = fit_points(x, y, log_x=True, what="loglog_slope")
    slope, _ = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope)


def geometric_rate(x, y) -> float:
    """Fitted ratio r of y ~ C r^x (log-linear least squares), for y > 0.

    Args:
        x: [N] steps (e.g. depths); y: [N] finite values (y <= 0 dropped).
    Returns:
        r (float).
    Raises:
        ValueError: as `loglog_slope`.
    """
    x, y = fit_points(x, y, log_x=False, what="geometric_rate")
    slope, _ = np.polyfit(x, np.log(y), 1)
    return float(np.exp(slope))
