"""Spectra and powers of causal attention matrices (R8, R9) and rank collapse of states.

Lambda is a lower-triangular row-stochastic matrix (one head's `attn_pattern` [n, n]).
    R9 (Lemmas B.6, B.7): its eigenvalues are its diagonal, all in [0, 1], the largest is 1
        (eigenvector: all ones) and is simple when every row but the first has at least two
        non-zero entries; products of (triangular) row-stochastic matrices stay so.
    R8 (Prop. B.8): ((Lambda + I)/2)^L -> 1 e_1^T (every row tends to e_1) as L grows.
        The eigenvalues of (Lambda + I)/2 are (lambda + 1)/2, so the distance to the limit
        falls geometrically with rate (1 + lambda_2)/2, lambda_2 the second largest
        eigenvalue of Lambda (the largest diagonal entry below the first row).

Everything here runs in float64 NumPy on host copies: these are checks, not model code.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import ml_dtypes
import numpy as np


def _as_matrix(name: str, a, *, square: bool = True, batched: bool = True) -> np.ndarray:
    try:
        arr = np.asarray(a).astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a real array") from err
    if arr.ndim < 2 or (not batched and arr.ndim != 2):
        want = "[..., n, k]" if batched else "[n, k]"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if arr.shape[-1] == 0 or arr.shape[-2] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    if square and arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"{name} must be square in its last two axes, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite entries")
    return arr


def _default_atol(a) -> float:
    # Row sums of a softmax in a given format are exact up to ~sqrt(n) roundings of it.
    dtype = np.asarray(a).dtype
    try:
        eps = float(ml_dtypes.finfo(dtype).eps)  # knows bfloat16 too
    except (TypeError, ValueError):
        eps = float(np.finfo(np.float32).eps)
    n = max(np.asarray(a).shape[-1], 1)
    return 4.0 * eps * np.sqrt(n)


def is_row_stochastic(a, atol: float | None = None) -> bool:
    """Whether every row is a probability vector (entries >= -atol, sums within atol of 1).

    Args:
        a: [..., n, k] (e.g. an `attn_pattern` stack [L, h, n, n]); every matrix is checked.
        atol: tolerance (default: 4 eps sqrt(k) of the input's dtype).
    Returns:
        True when every row of every matrix passes.
    """
    atol = _default_atol(a) if atol is None else float(atol)
    m = _as_matrix("a", a, square=False)
    return bool((m >= -atol).all() and (np.abs(m.sum(axis=-1) - 1.0) <= atol).all())


def is_lower_triangular(a, atol: float = 0.0) -> bool:
    """Whether every entry above the diagonal is within atol of 0 (a causal pattern).

    Args:
        a: [..., n, n].
    Returns:
        True when all matrices are lower-triangular.
    """
    m = _as_matrix("a", a)
    upper = np.triu(np.ones(m.shape[-2:], bool), k=1)
    return bool((np.abs(m[..., upper]) <= atol).all())


def eigenvalues_of_triangular(a, atol: float = 0.0) -> np.ndarray:
    """R9: the eigenvalues of a lower-triangular matrix are its diagonal entries.

    Args:
        a: [..., n, n] lower-triangular (within atol).
    Returns:
        [..., n] the diagonals, sorted in decreasing order.
    """
    m = _as_matrix("a", a)
    if not is_lower_triangular(m, atol):
        raise ValueError("a is not lower-triangular; use `eigenvalues` for a general matrix")
    return -np.sort(-np.diagonal(m, axis1=-2, axis2=-1), axis=-1)


def eigenvalues(a) -> np.ndarray:
    """Eigenvalues of a general square matrix (LAPACK), sorted by decreasing real part.

    Args:
        a: [n, n].
    Returns:
        [n] complex128.
    """
    m = _as_matrix("a", a, batched=False)
    ev = np.linalg.eigvals(m)
    return ev[np.argsort(-ev.real, kind="stable")]


@dataclasses.dataclass(frozen=True)
class SpectrumCheck:
    """R9 on one matrix.

    diagonal: [n] sorted diagonal; general: [n] LAPACK eigenvalues sorted by real part;
    max_mismatch: max |diagonal - general| (both sorted); largest: largest eigenvalue;
    ones_residual: ||Lambda 1 - 1||_inf (the all-ones eigenvector of eigenvalue 1);
    multiplicity_of_one: diagonal entries within tol of 1 (1 when every row but the first
    has >= 2 non-zeros); min_nonzeros_below_first: fewest entries > tol in rows 2..n.
    """

    diagonal: np.ndarray
    general: np.ndarray
    max_mismatch: float
    largest: float
    ones_residual: float
    multiplicity_of_one: int
    min_nonzeros_below_first: int


def spectrum_check(a, tol: float = 1e-12) -> SpectrumCheck:
    """Checks R9 on one causal attention matrix against a general eigensolver.

    Args:
        a: [n, n] lower-triangular row-stochastic matrix (n >= 2).
        tol: what counts as 1 and as a non-zero.
    Returns:
        `SpectrumCheck`.
    """
    m = _as_matrix("a", a, batched=False)
    if m.shape[0] < 2:
        raise ValueError("a must be at least 2 x 2")
    diag = eigenvalues_of_triangular(m)
    general = eigenvalues(m)
    mismatch = float(np.abs(diag - general).max())
    return SpectrumCheck(
        diagonal=diag,
        general=general,
        max_mismatch=mismatch,
        largest=float(diag[0]),
        ones_residual=float(np.abs(m.sum(axis=1) - 1.0).max()),
        multiplicity_of_one=int((np.abs(diag - 1.0) <= tol).sum()),
        min_nonzeros_below_first=int((np.abs(m[1:]) > tol).sum(axis=1).min()),
    )


def second_eigenvalue(a) -> float:
    """lambda_2, the second largest eigenvalue of Lambda (R8).

    For a lower-triangular matrix it is the second largest diagonal entry; otherwise the
    second largest real part from a general eigensolver.

    Args:
        a: [n, n] with n >= 2.
    Returns:
        lambda_2 (float).
    """
    m = _as_matrix("a", a, batched=False)
    if m.shape[0] < 2:
        raise ValueError("a must be at least 2 x 2 to have a second eigenvalue")
    if is_lower_triangular(m):
        return float(eigenvalues_of_triangular(m)[1])
    return float(eigenvalues(m)[1].real)


def deep_limit(lam, depth: int) -> np.ndarray:
    """((Lambda + I)/2)^L, the R8 bound for L identical layers (beta = 1, sigma_psi = 1).

    Computed by repeated squaring (`np.linalg.matrix_power`), O(n^3 log L).

    Args:
        lam: [n, n] Lambda.
        depth: L >= 0.
    Returns:
        [n, n] float64.
    """
    m = _as_matrix("lam", lam, batched=False)
    if not isinstance(depth, (int, np.integer)) or isinstance(depth, bool) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer, got {depth!r}")
    half = 0.5 * (m + np.eye(m.shape[0]))
    return np.linalg.matrix_power(half, int(depth))


def distance_to_first_column(m, *, per_row: bool = False) -> float | np.ndarray:
    """How far the rows of M are from e_1 (the R8 limit 1 e_1^T).

    d_i = |M_i1 - 1| + sum_(j >= 2) |M_ij| = ||M_(i,:) - e_1||_1. For row-stochastic M the
    second term alone carries half the distance and is computed to relative accuracy, so
    values down to ~1e-15 are meaningful.

    Args:
        m: [n, k] matrix.
        per_row: return every d_i instead of the maximum.
    Returns:
        max_i d_i (float), or [n] when per_row.
    """
    m = _as_matrix("m", m, square=False, batched=False)
    d = np.abs(m[:, 0] - 1.0) + np.abs(m[:, 1:]).sum(axis=1)
    return d if per_row else float(d.max())


@dataclasses.dataclass(frozen=True)
class RateFit:
    """R8: distance_to_first_column(((Lambda + I)/2)^L) against L.

    depths [D], distances [D]; fitted_rate = exp(slope of log distance vs L) over the
    depths used (distance above min_distance); predicted_rate = (1 + lambda_2)/2.
    """

    depths: tuple[int, ...]
    distances: np.ndarray
    fitted_rate: float
    predicted_rate: float
    lambda_2: float


def convergence_rate(lam, depths: Sequence[int], min_distance: float = 1e-12) -> RateFit:
    """Fit the geometric rate at which ((Lambda + I)/2)^L approaches 1 e_1^T (R8).

    The distance behaves like C L^p r^L with r = (1 + lambda_2)/2 (p > 0 only for repeated
    eigenvalues), so fit at large depths: the log-linear least-squares slope is
    log r + O(p / L).

    Args:
        lam: [n, n] lower-triangular row-stochastic Lambda.
        depths: at least two depths L.
        min_distance: depths whose distance falls below this (float64 noise) are not fitted.
    Returns:
        `RateFit`.
    """
    depths = tuple(int(d) for d in depths)
    if len(depths) < 2 or len(set(depths)) < 2:
        raise ValueError(f"need at least two distinct depths, got {depths}")
    m = _as_matrix("lam", lam, batched=False)
    if not is_row_stochastic(m, atol=1e-9) or not is_lower_triangular(m, atol=1e-12):
        raise ValueError("lam must be lower-triangular and row-stochastic")
    dist = np.array([distance_to_first_column(deep_limit(m, d)) for d in depths])
    use = dist > min_distance
    if use.sum() < 2:
        raise ValueError(
            f"fewer than two depths have distance > min_distance={min_distance}; use smaller depths"
        )
    slope = np.polyfit(np.asarray(depths, float)[use], np.log(dist[use]), 1)[0]
    lam2 = second_eigenvalue(m)
    return RateFit(
        depths=depths,
        distances=dist,
        fitted_rate=float(np.exp(slope)),
        predicted_rate=0.5 * (1.0 + lam2),
        lambda_2=lam2,
    )


def ordered_product(matrices) -> np.ndarray:
    """M^(L-1) ... M^(1) M^(0): the order in which layers compose (R7, R9).

    Args:
        matrices: [L, n, n] (index 0 is the first layer).
    Returns:
        [n, n] float64.
    """
    ms = _as_matrix("matrices", matrices)
    if ms.ndim != 3:
        raise ValueError(f"matrices must have shape [L, n, n], got {ms.shape}")
    out = np.eye(ms.shape[-1])
    for m in ms:
        out = m @ out
    return out


def _states(x) -> np.ndarray:
    return _as_matrix("x", x, square=False, batched=False)


def stable_rank(x) -> float:
    """||X||_F^2 / ||X||_2^2 of layer states X [n, m]: 1 when the rows are collinear.

    Args:
        x: [n, m] states (e.g. `resid_post[l]`).
    Returns:
        The stable rank in [1, min(n, m)] (0 for X = 0).
    """
    s = np.linalg.svd(_states(x), compute_uv=False)
    return 0.0 if s[0] == 0 else float((s**2).sum() / s[0] ** 2)


def numerical_rank(x, rtol: float | None = None) -> int:
    """Singular values of X [n, m] above rtol * s_max (default rtol: max(n, m) * eps64).

    Args:
        x: [n, m] states.
        rtol: relative threshold.
    Returns:
        The count (int).
    """
    xm = _states(x)
    s = np.linalg.svd(xm, compute_uv=False)
    if rtol is None:
        rtol = max(xm.shape) * np.finfo(np.float64).eps
    if s[0] == 0:
        return 0
    return int((s > rtol * s[0]).sum())


def residual_from_uniform(x) -> float:
    """||X - 1 mean(X)^T||_F / ||X||_F: distance of the states from all-rows-equal.

    Rank collapse (every token with the same state) sends it to 0.

    Args:
        x: [n, m] states.
    Returns:
        The relative residual (0 for X = 0).
    """
    xm = _states(x)
    norm = np.linalg.norm(xm)
    return 0.0 if norm == 0 else float(np.linalg.norm(xm - xm.mean(axis=0)) / norm)
