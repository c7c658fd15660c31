"""Softmax lemmas of the collapse proof (R1, R2, R3), in float64 NumPy.

These are statements about softmax vectors alone, so they are computed exactly as the
paper states them, with no model involved:

    R1 (Lemma B.1):   softmax([a, c])_n > softmax([a, b, c])_(n+1), gap -> 0 as n grows.
    R2 (Lemma B.2):   TV(softmax x, softmax x*) -> 0 when x and x* agree asymptotically.
    R3 (Prop. B.4):   alternating x = (1, 0, 1, ...), x* = (0, 1, 0, ...) keep
                      TV = 2(e - 1)/(e + 1) for every even n.

TV follows docs/results.md: TV(p, q) = sum_i |p_i - q_i| (no factor 1/2).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

# R3's analytic value, 2(e - 1)/(e + 1) = 0.924234...
ALTERNATING_TV = 2.0 * (math.e - 1.0) / (math.e + 1.0)


def _as_float_vector(name: str, x, *, ndim: int | None = 1) -> np.ndarray:
    try:
        # Also takes JAX arrays and ml_dtypes (bfloat16) arrays: the cast is exact.
        arr = np.asarray(x).astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a real array") from err
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite entries")
    return arr


def softmax(x) -> np.ndarray:
    """Numerically stable float64 softmax over the last axis.

    Args:
        x: [..., n] logits.
    Returns:
        [..., n] probabilities (float64).
    """
    x = _as_float_vector("x", x, ndim=None)
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def total_variation(p, q) -> np.ndarray | float:
    """TV(p, q) = sum_i |p_i - q_i| over the last axis (docs/results.md, R2; no 1/2).

    Args:
        p, q: [..., n] probability vectors of the same shape (entries >= 0).
    Returns:
        float for 1-D inputs, else [...] float64 array.
    """
    p = _as_float_vector("p", p, ndim=None)
    q = _as_float_vector("q", q, ndim=None)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("p and q must be non-negative (probability vectors)")
    tv = np.abs(p - q).sum(axis=-1)
    return float(tv) if tv.ndim == 0 else tv


def softmax_tv(x, x_star) -> float:
    """TV(softmax x, softmax x*) for two logit vectors of equal length (R2, R3).

    Args:
        x, x_star: [n] logits.
    Returns:
        The total variation (float).
    """
    x = _as_float_vector("x", x)
    x_star = _as_float_vector("x_star", x_star)
    if x.shape != x_star.shape:
        raise ValueError(
            f"x and x_star must have equal length, got {x.shape[0]} and {x_star.shape[0]}"
        )
    return total_variation(softmax(x), softmax(x_star))


@dataclasses.dataclass(frozen=True)
class LastWeightGap:
    """R1 for one (a, b, c): w = softmax(x)_n, w_star = softmax(x*)_(n+1), gap = w - w_star."""

    n: int
    w: float
    w_star: float
    gap: float


def last_weight_gap(a, b: float, c: float) -> LastWeightGap:
    """Lemma B.1 (R1): inserting b before the last entry lowers the last softmax weight.

    x = [a, c] in R^n and x* = [a, b, c] in R^(n+1). The gap is positive for every bounded
    input and shrinks like 1/n^2 (it equals e^(b+c) / ((S + e^c)(S + e^b + e^c)) with
    S = sum_i e^(a_i)).

    Args:
        a: [n - 1] shared leading logits (may be empty: n = 1).
        b: the inserted logit; c: the last logit.
    Returns:
        `LastWeightGap` with n = len(a) + 1.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError("a has non-finite entries")
    for name, v in (("b", b), ("c", c)):
        if not np.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
    x = np.concatenate([a, [c]])
    x_star = np.concatenate([a, [b, c]])
    w = float(softmax(x)[-1])
    w_star = float(softmax(x_star)[-1])
    return LastWeightGap(n=x.shape[0], w=w, w_star=w_star, gap=w - w_star)


def _check_lengths(lengths) -> tuple[int, ...]:
    lengths = tuple(lengths)
    if not lengths:
        raise ValueError("lengths is empty")
    for n in lengths:
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ValueError(f"lengths must be positive integers, got {n!r}")
    return tuple(int(n) for n in lengths)


@dataclasses.dataclass(frozen=True)
class TVDecay:
    """R2 experiment: tv[s, j] = TV(softmax x, softmax x*) at length lengths[j], seed seeds[s]."""

    lengths: tuple[int, ...]
    seeds: tuple[int, ...]
    tv: np.ndarray  # [S, N]

    @property
    def tv_min(self) -> np.ndarray:
        """[N] minimum over seeds (the paper's shaded band)."""
        return self.tv.min(axis=0)

    @property
    def tv_max(self) -> np.ndarray:
        """[N] maximum over seeds."""
        return self.tv.max(axis=0)


def tv_decay_experiment(
    lengths: Sequence[int],
    k: int = 200,
    noise: float = 0.1,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
) -> TVDecay:
    """The paper's R2 experiment (Lemma B.2): TV of softmaxes of perturbed sequences.

    For each seed: x_i ~ U[0, 1] (i = 1..max(lengths)); x* = x with U[0, noise] added to
    the first k entries. At length n both are truncated to their first n entries, so
    the sequences differ only on the first min(k, n) positions and TV falls like k/n.

    Args:
        lengths: positive lengths n.
        k: number of perturbed leading entries.
        noise: upper end of the uniform perturbation.
        seeds: NumPy seeds (one row of the result each).
    Returns:
        `TVDecay` with tv of shape [len(seeds), len(lengths)].
    """
    lengths = _check_lengths(lengths)
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be finite and non-negative, got {noise}")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds is empty")
    n_max = max(lengths)
    tv = np.empty((len(seeds), len(lengths)))
    for s, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        x = rng.uniform(0.0, 1.0, n_max)
        x_star = x.copy()
        m = min(k, n_max)
        x_star[:m] += rng.uniform(0.0, noise, m)
        for j, n in enumerate(lengths):
            tv[s, j] = softmax_tv(x[:n], x_star[:n])
    return TVDecay(lengths=lengths, seeds=seeds, tv=tv)


def alternating_tv(n: int) -> float:
    """Proposition B.4 (R3): TV(softmax x, softmax x*) for x = (1, 0, 1, 0, ...),
    x* = (0, 1, 0, 1, ...) of length n, computed numerically.

    For even n it equals `ALTERNATING_TV` = 2(e - 1)/(e + 1) whatever n is: the
    distance never vanishes, so R4 needs positional information that decays.

    Args:
        n: even length >= 2.
    Returns:
        The total variation (float).
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 2 or n % 2:
        raise ValueError(f"n must be an even integer >= 2, got {n!r}")
    x = (np.arange(n) % 2 == 0).astype(np.float64)
    return softmax_tv(x, 1.0 - x)
