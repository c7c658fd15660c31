"""Pure checks on arrays, below every other analysis module: values a model computed must
be finite before a distance, sweep or fit is reported, and a fit refuses degenerate data
(NaN, too few points, x without spread) instead of returning a number. NumPy only."""

from __future__ import annotations

import numpy as np


def check_computed_finite(values, what: str, where=None) -> None:
    """ValueError naming the first non-finite entry of values a model computed (states of a
    sweep, a pair, a spread) before any distance or fit is made of them: from finite token
    ids, a NaN or inf there means the weights are not finite or the format overflowed.

    Args:
        values: a NumPy or concrete JAX array (traced values pass unchecked).
        what: the quantity, as the message names it.
        where: index tuple of the first bad entry -> its description (default: the index).
    """
    if type(values).__name__.endswith("Tracer"):  # under the caller's jit: unchecked
        return
    host = np.asarray(values)
    if host.dtype.kind not in "fc":
        host = host.astype(np.float64)  # bfloat16 / float16 too
    bad = ~np.isfinite(host)
    if not bad.any():
        return
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    kind = "NaN" if np.isnan(host[index]) else "inf"
    place = where(index) if where is not None else f"index {index}"
    raise ValueError(
        f"{what} hold {kind} at {place} ({int(bad.sum())} non-finite entries): the weights "
        "are not finite, or the computation overflowed its float format"
    )


def fit_points(x, y, *, log_x: bool, what: str = "the fit"):
    """The (x, y) points a log-y fit can use, or ValueError on degenerate data.

    Refused: different lengths, NaN or inf anywhere in x or y (a NaN would otherwise be
    dropped silently and the fit reported as if the data were complete), fewer than two
    usable points, x without spread. Dropped (documented, not an error): y <= 0 (a distance
    that is exactly zero has left the power law) and, when `log_x`, x <= 0.

    Returns:
        (x, y) as float64 arrays of the kept points.
    """
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"{what}: x and y must have the same length, got {x.shape} and {y.shape}")
    for name, v in (("x", x), ("y", y)):
        bad = ~np.isfinite(v)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{what}: {name} holds {'NaN' if np.isnan(v[i]) else 'inf'} at index {i} "
                f"({int(bad.sum())} non-finite of {v.size}); a fit over the rest would "
                "silently drop those points"
            )
    keep = (y > 0) & (x > 0) if log_x else y > 0
    if keep.sum() < 2:
        raise ValueError(f"{what}: need at least two points with positive "
                         f"{'x and ' if log_x else ''}y, got {int(keep.sum())}")
    if np.ptp(x[keep]) == 0:
        raise ValueError(f"{what}: every usable x equals {x[keep][0]:g}: no spread to fit a slope")
    return x[keep], y[keep]
