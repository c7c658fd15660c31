"""Collapse lengths (R5, R6): when a pair becomes indistinguishable in a float format,
measured on a sweep and predicted from its fitted decay and the format's unit round-off."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from analysis.checks import check_computed_finite, fit_points

# Unit round-off u = 2^-p of each format (p significant bits, R6).
UNIT_ROUNDOFF = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
    # Fake-quantised float8 (activations stored in it, float32 arithmetic): 4 and 3 bits.
    "float8_e4m3fn": 2.0**-4,
    "float8_e5m2": 2.0**-3,
}


def pair_norm(x: np.ndarray, norm: str) -> np.ndarray:
    """Norm over the last axis: "l1" or "linf"."""
    if norm == "l1":
        return np.abs(x).sum(-1)
    if norm == "linf":
        return np.abs(x).max(-1)
    raise ValueError(f"norm must be 'l1' or 'linf', got {norm!r}")



def check_sweep_finite(sweep) -> None:
    """ValueError naming the format, n and level of the first NaN / inf state of a sweep
    (any object with dtypes, lengths, states, states_star [D, N, L + 1, m])."""
    for name in ("states", "states_star"):
        check_computed_finite(
            getattr(sweep, name), f"the sweep's {name}",
            lambda i: f"{sweep.dtypes[i[0]]}, n={sweep.lengths[i[1]]}, level {i[2]}",
        )


@dataclasses.dataclass(frozen=True)
class DecayFit:
    """distance(n) ~ C n^slope, least squares in log-log on the reference format."""

    dtype: str
    slope: float
    log_c: float

    def __call__(self, n) -> np.ndarray:
        return np.exp(self.log_c + self.slope * np.log(np.asarray(n, float)))


def fit_decay(sweep, dtype: str, norm: str = "linf", level: int = -1) -> DecayFit:
    """Log-log least-squares fit of the pair distance against n (R4's decay).

    Args:
        sweep: a `CollapseSweep`; dtype: the format to fit (float64 or float32: above the
            rounding floor); norm: "l1" / "linf"; level: which level (-1: y).
    Returns:
        `DecayFit` (uses the n > 0 with a non-zero distance; needs at least two).
    Raises:
        ValueError: non-finite states in the sweep, fewer than two usable lengths, or
            lengths without spread (`analysis.fitting.fit_points`).
    """
    check_sweep_finite(sweep)
    d = sweep.distance(norm)[sweep.index(dtype), :, level]
    n, d = fit_points(sweep.lengths, d, log_x=True, what=f"the {dtype} decay fit")
    slope, log_c = np.polyfit(np.log(n), np.log(d), 1)
    return DecayFit(dtype=dtype, slope=float(slope), log_c=float(log_c))


@dataclasses.dataclass(frozen=True)
class CollapseLength:
    """When the pair becomes indistinguishable in one format (R5, R6); arrays are [N] over
    the sweep's lengths in increasing order.

    distance: the pair's distance computed in this format;
    reference_distance: the same in the reference format (the true difference);
    noise: ||state_format(s_n) - state_reference(s_n)||, the rounding error of one run;
    noise_floor: median of `noise` over n;
    identical: bit-identical pair states in this format;
    indistinguishable: identical, or reference_distance <= noise_floor;
    first_identical: smallest n with bit-identical states (None: never);
    collapse_length: smallest n from which every later pair is indistinguishable (None: not
        within the sweep);
    threshold: u * scale; predicted_length: n where the fitted decay reaches the threshold.
    """

    dtype: str
    lengths: np.ndarray
    unit_roundoff: float
    distance: np.ndarray
    reference_distance: np.ndarray
    noise: np.ndarray
    noise_floor: float
    identical: np.ndarray
    indistinguishable: np.ndarray
    first_identical: int | None
    collapse_length: int | None
    threshold: float
    predicted_length: float | None


@dataclasses.dataclass(frozen=True)
class CollapseReport:
    """`collapse_lengths` result: the decay fit, the state scale M, and per-format lengths
    (per_dtype: format name -> `CollapseLength`)."""

    norm: str
    level: int
    fit: DecayFit
    scale: float
    per_dtype: dict


def collapse_lengths(
    sweep,
    *,
    norm: str = "linf",
    level: int = -1,
    reference: str = "float64",
    fit_dtype: str | None = None,
) -> CollapseReport:
    """Collapse length of every format in a sweep, measured and predicted (R5, R6).

    Measured: the pair is indistinguishable in format f at n when its states in f are
    bit-identical, or when its true distance (the reference format's) is at most f's
    rounding-noise floor: the median over n of the distance between f's state of s_n and
    the reference state of the same s_n. Below that floor f's two states differ by
    rounding, not by content. The collapse length is the smallest n of the sweep from which
    this holds for every later n.

    Predicted: with the fit distance(n) ~ C n^s (s < 0) on `fit_dtype` and the typical
    state magnitude M = median_n ||state_reference(s_n)|| (same norm and level), the pair
    drops below the format's resolution u * M (u = 2^-53, 2^-24, 2^-11, 2^-8) at

        n_pred = (u * M / C)^(1 / s) = exp((log(u M) - log C) / s).

    One rounding of the output is the least error a forward pass commits; the measured
    floor is the accumulated error of a whole pass (a small multiple of u M), so the
    measured length comes somewhat before n_pred.

    Args:
        sweep: a `CollapseSweep` that includes `reference`.
        norm: "l1" or "linf"; level: state level (-1: y; 0..L-1: resid_post of a layer).
        reference: the format whose run counts as exact (float64).
        fit_dtype: where to fit the decay (default: the reference).
    Returns:
        `CollapseReport`.
    """
    check_sweep_finite(sweep)
    ref = sweep.index(reference)
    n_levels = sweep.states.shape[2]
    if not -n_levels <= level < n_levels:
        raise ValueError(f"level must be in [{-n_levels}, {n_levels}), got {level}")
    fit = fit_decay(sweep, fit_dtype or reference, norm, level)
    order = np.argsort(sweep.lengths, kind="stable")
    lengths = np.asarray(sweep.lengths)[order]
    states = sweep.states[:, order, level]  # [D, N, m]
    stars = sweep.states_star[:, order, level]
    scale = float(np.median(pair_norm(states[ref], norm)))
    ref_dist = pair_norm(states[ref] - stars[ref], norm)
    per_dtype = {}
    for i, dtype in enumerate(sweep.dtypes):
        noise = pair_norm(states[i] - states[ref], norm)
        floor = float(np.median(noise))
        identical = (states[i] == stars[i]).all(-1)
        ok = identical | (ref_dist <= floor)
        # ok at every index from j on: reverse cumulative AND.
        tail_ok = np.flip(np.logical_and.accumulate(np.flip(ok)))
        u = UNIT_ROUNDOFF[dtype]
        threshold = u * scale
        predicted = None
        if fit.slope < 0 and threshold > 0:
            exponent = (math.log(threshold) - fit.log_c) / fit.slope
            # A nearly flat decay predicts no collapse at any representable length.
            predicted = float(math.exp(exponent)) if exponent < 700 else math.inf
        per_dtype[dtype] = CollapseLength(
            dtype=dtype,
            lengths=lengths,
            unit_roundoff=u,
            distance=pair_norm(states[i] - stars[i], norm),
            reference_distance=ref_dist,
            noise=noise,
            noise_floor=floor,
            identical=identical,
            indistinguishable=ok,
            first_identical=int(lengths[identical.argmax()]) if identical.any() else None,
            collapse_length=int(lengths[tail_ok.argmax()]) if tail_ok.any() else None,
            threshold=threshold,
            predicted_length=predicted,
        )
    return CollapseReport(norm=norm, level=level, fit=fit, scale=scale, per_dtype=per_dtype)
