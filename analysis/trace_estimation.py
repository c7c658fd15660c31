"""Per-position Frobenius norms ||J_i||_F^2 of a last-token Jacobian from products with J
(R11): the Hutchinson estimate and a variance-reduced one after XTrace.

J = d y_n / d v^(l) is [d_out, n, d_in] with blocks J_i [d_out, d_in]; the quantity is
t_i = ||J_i||_F^2 = tr(B_i), B_i = J_i J_i^T [d_out, d_out], for every i at once. Two
products reach J: a VJP u -> u^T J gives the row u^T J_i [d_in] of every position at once;
a JVP w -> J w = sum_i J_i w_i [d_out] mixes all positions. Costs are counted in products
(VJPs plus JVPs): each is one pass through the model.

Hutchinson (Girard 1989, Hutchinson 1990): t_i ~ mean_j ||omega_j^T J_i||^2 over k
Gaussian probes; variance 2 ||B_i||_F^2 / k, so the relative error falls like
sqrt(2 / (k r_i)) with r_i = tr(B_i)^2 / ||B_i||_F^2 (B_i's effective rank): slowly.

Variance reduction (Hutch++, Meyer, Musco, Musco & Woodruff 2021; XTrace, Epperly, Tropp &
Webber 2024). For any orthonormal Q [d_out, r],
    tr(B_i) = ||Q^T J_i||_F^2 + tr(P B_i P),  P = I - Q Q^T:
the first term is exact from r VJPs (the rows q^T J for the columns q of Q, every position
at once) and only the second is estimated, by Hutchinson probes P omega. When Q captures
B_i's dominant directions, tr(P B_i P) is small and so is its estimate's error: ~1/k
rather than 1/sqrt(k) when the spectrum decays. The positions differ but their output
space is shared, so ONE Q serves them all: a range sketch of
    M = sum_i B_i = J J^T  [d_out, d_out],
Y = M Omega = J (J^T Omega): s VJPs (J^T omega_j, the rows of every position) and s JVPs
(J applied to those rows as tangents). M weights the positions by their size; a position
whose B_i points elsewhere than the large ones gains less (measured on SmolLM2-135M,
benchmarks/README.md).

XTrace's exchangeability principle makes every probe serve both roles (Epperly et al.,
Section 2): with Y = M Omega = Q R, let Q_(j) = orth(Y without column j), which does not
depend on omega_j. Then
    T_ij = tr(Q_(j)^T B_i Q_(j)) + z_j^T B_i z_j,   z_j = P_(j) omega_j * sqrt(d_out - s + 1)
                                                          / ||P_(j) omega_j||
is an unbiased estimate of t_i for each j (given Omega_(-j), z_j is uniform on the sphere of
radius sqrt(d_out - s + 1) in range(P_(j)), so E z_j z_j^T = P_(j); the normalisation is
XTrace's: it removes the variance a Gaussian norm adds, exactly for a flat residual). The
estimate is mean_j T_ij; its standard error is std_j(T_ij) / sqrt(s) (the paper's error
estimate: the T_ij are exchangeable, not independent, so it is a heuristic; its coverage
is measured in tests/test_trace_estimation.py and benchmarks/README.md).

Every T_ij is computed from the 3s products alone (rank-one downdates, no more products):
the direction of span(Q) orthogonal to Y_(-j) is Q s_j, s_j = R^-T e_j / ||R^-T e_j||, so
Q_(j) Q_(j)^T = Q (I - s_j s_j^T) Q^T and, with K_i = J_i^T Q [d_in, s] (the exact part's
VJPs), A_i = J_i^T Omega [d_in, s] (the sketch's VJPs) and b_j = Q^T omega_j,
    tr(Q_(j)^T B_i Q_(j)) = ||K_i||_F^2 - ||K_i s_j||^2,
    J_i^T P_(j) omega_j   = A_i e_j - K_i (b_j - (s_j^T b_j) s_j),
    ||P_(j) omega_j||^2   = ||omega_j||^2 - ||b_j||^2 + (s_j^T b_j)^2.
Budget k products: s = k // 3 probes (s VJPs + s JVPs + s VJPs).

Weighted sketch ("xtrace-weighted"). M = sum_i B_i is owned by the largest blocks: in an LLM
the first and last positions are ~10^4 times the middle (benchmarks/README.md, table (5)), so
Q spans their directions and the middle keeps most of its trace in the estimated residual.
A pilot Hutchinson estimate p_i from a few extra VJPs (p = max(2, k // 12) probes, drawn
independently of Omega) sets weights w_i = 1 / p_i, and the sketch ranges over
    M_w = sum_i w_i B_i = J W J^T,   Y = M_w Omega = J (W (J^T Omega)),
in which every position holds about the same trace: the JVPs take the sketch's VJP rows
scaled per position, at no extra products. The rest is XTrace unchanged: Q_(j) depends on
Omega_(-j) and on the pilot, not on omega_j, so T_ij stays unbiased for t_i whatever the
weights are; only which directions are captured changes. Budget k products: p pilot VJPs
and s = (k - p) // 3 probes.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ("hutchinson", "xtrace", "xtrace-weighted")

# Products (VJPs + JVPs) per probe of each method (the weighted one's pilot aside).
PRODUCTS_PER_PROBE = {"hutchinson": 1, "xtrace": 3, "xtrace-weighted": 3}


def pilot_count(method: str, n_products: int) -> int:
    """The pilot VJPs of a budget: max(2, k // 12) for "xtrace-weighted" (the weights need
    only the order of magnitude of t_i), else 0."""
    return max(2, n_products // 12) if method == "xtrace-weighted" else 0


def check_budget(method: str, n_products: int, d_out: int) -> int:
    """The number of probes a budget of `n_products` products buys, validated.

    Raises:
        ValueError: an unknown method, a budget below two probes (the standard error
            needs two), or XTrace probes beyond d_out (its sketch has rank <= d_out; the
            exact profile, d_out VJPs, is then cheaper anyway).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(map(repr, METHODS))}")
    per = PRODUCTS_PER_PROBE[method]
    valid = isinstance(n_products, int) and not isinstance(n_products, bool)
    least = 2 * per + (pilot_count(method, 2 * per) if valid else 0)
    if not valid or n_products < least:
        raise ValueError(
            f"n_probes must be an integer >= {least} for method={method!r} (the budget in "
            f"products, {per} per probe, and two probes for the standard error"
            f"{', plus the pilot' if method == 'xtrace-weighted' else ''}), "
            f"got {n_products!r}"
        )
    probes = (n_products - pilot_count(method, n_products)) // per
    if method != "hutchinson" and probes > d_out:
        raise ValueError(
            f"method={method!r} with n_probes={n_products} wants {probes} sketch vectors but the "
            f"output has d_out={d_out} dimensions; use at most {3 * d_out} products (or the "
            "exact analysis.sensitivity_profile, d_out VJPs)"
        )
    return probes


def products_used(method: str, n_probes: int) -> int:
    """Products (VJPs + JVPs) that `estimate_sensitivity(method=..., n_probes=...)` runs."""
    per = PRODUCTS_PER_PROBE[method]
    pilot = pilot_count(method, n_probes)
    return pilot + per * ((n_probes - pilot) // per)


def hutchinson_norms(squares: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and standard error over probes of squared row norms [k, n] -> ([n], [n])."""
    k = squares.shape[0]
    return squares.mean(0), squares.std(0, ddof=1) / jnp.sqrt(k)


def _leave_one_out(y: np.ndarray, omega: np.ndarray):
    """The sketch's small matrices, in float64 on the host.

    Args:
        y: [s, d_out] the sketch rows (M omega_j)^T; omega: [s, d_out] the probes.
    Returns:
        q [d_out, s] orthonormal basis of the sketch; sdir [s, s] columns s_j; mix [s, s]
        columns b_j - (s_j^T b_j) s_j; scale2 [s] the residual probes' squared
        normalisations (d_out - s + 1) / ||P_(j) omega_j||^2.
    """
    s, d_out = omega.shape
    q, r = np.linalg.qr(y.T)  # [d_out, s], [s, s]
    if np.all(np.abs(np.diag(r)) > 0):
        rinv_t = np.linalg.solve(r.T, np.eye(s))  # R^-T, triangular
    else:  # an exactly rank-deficient sketch (e.g. J = 0): s_j is then any unit vector
        rinv_t = np.linalg.pinv(r).T
    norms = np.linalg.norm(rinv_t, axis=0)
    sdir = rinv_t / np.where(norms > 0, norms, 1.0)
    b = q.T @ omega.T  # [s, s], column j = Q^T omega_j
    g = np.einsum("jl,jl->l", sdir, b)  # s_l^T b_l
    mix = b - sdir * g
    resid2 = (omega * omega).sum(1) - (b * b).sum(0) + g * g  # ||P_(j) omega_j||^2
    scale2 = (d_out - s + 1) / np.maximum(resid2, np.finfo(np.float64).tiny)
    return q, sdir, mix, scale2


@jax.jit
def _combine(a, k, sdir, mix, scale2):
    """T [s, n] from the sketch rows a = Omega^T J and exact rows k = Q^T J ([s, n, m])."""
    ks = jnp.einsum("jl,jnm->lnm", sdir, k)  # K_i s_l for every position
    resid = a - jnp.einsum("jl,jnm->lnm", mix, k)  # J_i^T P_(l) omega_l
    exact = jnp.sum(k * k, axis=(0, 2))[None] - jnp.sum(ks * ks, axis=-1)  # [s, n]
    return exact + scale2[:, None] * jnp.sum(resid * resid, axis=-1)


def xtrace_norms(
    vjp: Callable[[jax.Array], jax.Array],
    jvp: Callable[[jax.Array], jax.Array],
    probes: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """XTrace estimate of t_i = ||J_i||_F^2 for every position i (see the module docstring).

    Args:
        vjp: U [R, d_out] -> rows U J [R, n, d_in] (R VJPs).
        jvp: W [R, n, d_in] -> J w for each row w [R, d_out] (R JVPs).
        probes: Omega^T [s, d_out], i.i.d. standard Gaussian, 2 <= s <= d_out.
    Returns:
        (estimate [n], standard error [n]) in the products' dtype; 3 s products in all.
    """
    s, d_out = probes.shape
    if not 2 <= s <= d_out:
        raise ValueError(f"need 2 <= s <= d_out probes, got s={s}, d_out={d_out}")
    a = vjp(probes)  # [s, n, m]: A_i = J_i^T Omega
    y = jvp(a)  # [s, d_out]: (M Omega)^T
    q, sdir, mix, scale2 = _leave_one_out(np.asarray(y, np.float64),
                                          np.asarray(probes, np.float64))
    dt = a.dtype
    k = vjp(jnp.asarray(q.T, dt))  # [s, n, m]: K_i = J_i^T Q
    t = _combine(a, k, jnp.asarray(sdir, dt), jnp.asarray(mix, dt), jnp.asarray(scale2, dt))
    return t.mean(0), t.std(0, ddof=1) / jnp.sqrt(s)


def weighted_xtrace_norms(
    vjp: Callable[[jax.Array], jax.Array],
    jvp: Callable[[jax.Array], jax.Array],
    pilot_probes: jax.Array,
    probes: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """XTrace with the sketch weighted by a pilot estimate (see the module docstring).

    Args:
        vjp, jvp: as in `xtrace_norms`.
        pilot_probes: [p, d_out] i.i.d. standard Gaussian, p >= 1, independent of `probes`:
            the pilot Hutchinson estimate p_i whose inverse weights the sketch.
        probes: Omega^T [s, d_out], 2 <= s <= d_out.
    Returns:
        (estimate [n], standard error [n]); p + 3 s products in all.
    """
    pilot = jnp.sum(vjp(pilot_probes) ** 2, axis=-1).mean(0)  # [n]
    floor = jnp.finfo(pilot.dtype).tiny + 1e-12 * jnp.max(pilot)
    weights = 1.0 / jnp.maximum(pilot, floor)
    weights = weights / jnp.max(weights)  # scale-free: only Q = orth(Y) is used
    return xtrace_norms(vjp, lambda rows: jvp(rows * weights[None, :, None]), probes)
