"""R1, R2, R3 (softmax lemmas) and R8, R9 (spectra, deep limit) against independent
float64 references: closed forms, hand-written NumPy, LAPACK eigenvalues."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from analysis import softmax as sm
from analysis import spectral as sp
from transformer import Decoder, TransformerConfig

jax.config.update("jax_enable_x64", True)


def ref_softmax(x):
    # Written separately from analysis.softmax: plain exp / sum in float64 (small logits).
    e = np.exp(np.asarray(x, np.float64))
    return e / e.sum()


def ref_tv(p, q):
    return float(sum(abs(a - b) for a, b in zip(p, q)))


# ---- R3 -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 4, 10, 100, 1000, 100_000])
def test_alternating_tv_is_the_analytic_constant(n):
    expected = 2 * (math.e - 1) / (math.e + 1)
    assert abs(sm.alternating_tv(n) - expected) < 1e-12
    assert abs(sm.ALTERNATING_TV - 0.924234) < 1e-6


def test_alternating_tv_rejects_odd_and_small_n():
    for bad in (0, 1, 3, -2, 2.0, True):
        with pytest.raises(ValueError):
            sm.alternating_tv(bad)


# ---- TV --------------------------------------------------------------------------------


def test_total_variation_matches_reference():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 50):
        p, q = rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n))
        assert abs(sm.total_variation(p, q) - ref_tv(p, q)) < 1e-14
        assert sm.total_variation(p, p) == 0.0
    # No factor 1/2: disjoint supports give 2.
    assert sm.total_variation([1.0, 0.0], [0.0, 1.0]) == 2.0
    batched = sm.total_variation(np.eye(3), np.roll(np.eye(3), 1, axis=0))
    np.testing.assert_array_equal(batched, [2.0, 2.0, 2.0])


def test_softmax_tv_matches_reference():
    rng = np.random.default_rng(1)
    for n in (1, 3, 40):
        x, y = rng.normal(size=n), rng.normal(size=n)
        assert abs(sm.softmax_tv(x, y) - ref_tv(ref_softmax(x), ref_softmax(y))) < 1e-13
    # Softmax is shift invariant; the stable softmax must survive huge logits.
    assert sm.softmax_tv([1000.0, 0.0], [1.0, -999.0]) < 1e-12


@pytest.mark.parametrize(
    "p, q",
    [
        ([0.5, 0.5], [1.0]),  # lengths differ
        ([1.5, -0.5], [0.5, 0.5]),  # negative entry
        ([np.nan, 1.0], [0.5, 0.5]),
        ([], []),
    ],
)
def test_total_variation_bad_inputs(p, q):
    with pytest.raises(ValueError):
        sm.total_variation(p, q)


def test_softmax_tv_bad_inputs():
    with pytest.raises(ValueError):
        sm.softmax_tv([0.0, 1.0], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError):
        sm.softmax_tv([[0.0, 1.0]], [[0.0, 1.0]])
    with pytest.raises(ValueError):
        sm.softmax_tv([0.0, np.inf], [0.0, 1.0])


# ---- R1 --------------------------------------------------------------------------------


def test_last_weight_gap_positive_shrinking_and_closed_form():
    rng = np.random.default_rng(2)
    a_all = rng.uniform(-1, 1, 5000)
    b, c = 0.3, -0.7
    gaps = []
    for n in (2, 10, 100, 1000, 5000):
        a = a_all[: n - 1]
        r = sm.last_weight_gap(a, b, c)
        assert r.n == n
        assert r.w > r.w_star and r.gap > 0
        s = np.exp(a).sum()
        closed = math.exp(b + c) / ((s + math.exp(c)) * (s + math.exp(b) + math.exp(c)))
        assert abs(r.gap - closed) <= 1e-12 * closed
        assert abs(r.w - ref_softmax(np.append(a, c))[-1]) < 1e-15
        gaps.append(r.gap)
    assert all(g1 > g2 for g1, g2 in zip(gaps, gaps[1:]))
    assert gaps[-1] < 1e-5 * gaps[0]  # ~1/n^2
    for bad in ((a_all[:3], np.nan, 0.0), ([np.inf], 0.0, 0.0)):
        with pytest.raises(ValueError):
            sm.last_weight_gap(*bad)


# ---- R2 --------------------------------------------------------------------------------


def test_tv_decay_experiment_falls_with_n():
    lengths = (200, 1000, 5000, 20000)
    r = sm.tv_decay_experiment(lengths, k=200, noise=0.1, seeds=range(5))
    assert r.tv.shape == (5, 4)
    mean = r.tv.mean(axis=0)
    assert all(m1 > m2 for m1, m2 in zip(mean, mean[1:]))
    assert r.tv_max[-1] < 0.1 * r.tv_min[0]
    # Without noise the sequences agree: TV is exactly zero.
    assert np.all(sm.tv_decay_experiment(lengths, noise=0.0, seeds=[0]).tv == 0)
    with pytest.raises(ValueError):
        sm.tv_decay_experiment([0, 10])
    with pytest.raises(ValueError):
        sm.tv_decay_experiment([10], noise=-1.0)
    with pytest.raises(ValueError):
        sm.tv_decay_experiment([10], seeds=[])


# ---- R9 --------------------------------------------------------------------------------


def random_causal_attention(n, rng, diag=None):
    """Lower-triangular row-stochastic, every row but the first with >= 2 non-zeros."""
    lam = np.tril(rng.uniform(0.1, 1.0, (n, n)))
    lam /= lam.sum(axis=1, keepdims=True)
    if diag is not None:  # set the diagonal, spread the rest of each row below it
        for i in range(1, n):
            lam[i, :i] *= (1.0 - diag[i]) / lam[i, :i].sum()
            lam[i, i] = diag[i]
    return lam


def test_row_stochastic_and_triangular_checks():
    rng = np.random.default_rng(3)
    lam = random_causal_attention(6, rng)
    assert sp.is_row_stochastic(lam) and sp.is_lower_triangular(lam)
    assert sp.is_row_stochastic(np.stack([lam, lam]))
    assert not sp.is_row_stochastic(lam * 1.01)
    assert not sp.is_row_stochastic(np.where(np.eye(6, dtype=bool), -0.1, lam))
    assert not sp.is_lower_triangular(lam.T)
    assert sp.is_lower_triangular(lam + np.triu(np.full((6, 6), 1e-9), 1), atol=1e-8)
    for bad in (np.ones(3), np.ones((2, 3)), np.full((2, 2), np.nan)):
        with pytest.raises(ValueError):
            sp.is_lower_triangular(bad)


def test_triangular_eigenvalues_against_lapack():
    rng = np.random.default_rng(4)
    lam = random_causal_attention(8, rng)
    diag = sp.eigenvalues_of_triangular(lam)
    lapack = np.sort(np.linalg.eigvals(lam).real)[::-1]
    np.testing.assert_allclose(diag, lapack, atol=1e-10)
    check = sp.spectrum_check(lam)
    assert check.largest == 1.0  # row 1 of a causal pattern is e_1
    assert check.multiplicity_of_one == 1 and check.min_nonzeros_below_first >= 2
    assert check.ones_residual < 1e-14 and check.max_mismatch < 1e-10
    assert np.all((diag >= 0) & (diag <= 1))
    assert sp.second_eigenvalue(lam) == pytest.approx(lapack[1], abs=1e-10)
    # A second row with one non-zero gives a repeated eigenvalue 1.
    lam2 = lam.copy()
    lam2[1] = [0, 1, 0, 0, 0, 0, 0, 0]
    assert sp.spectrum_check(lam2).multiplicity_of_one == 2
    with pytest.raises(ValueError):
        sp.eigenvalues_of_triangular(lam.T)


def test_products_of_row_stochastic_are_row_stochastic():
    rng = np.random.default_rng(5)
    mats = np.stack([random_causal_attention(7, rng) for _ in range(5)])
    prod = sp.ordered_product(mats)
    ref = mats[4] @ mats[3] @ mats[2] @ mats[1] @ mats[0]
    np.testing.assert_allclose(prod, ref, rtol=1e-13, atol=1e-15)
    assert sp.is_row_stochastic(prod, atol=1e-12) and sp.is_lower_triangular(prod)
    with pytest.raises(ValueError):
        sp.ordered_product(mats[0])


# ---- R8 --------------------------------------------------------------------------------


def test_deep_limit_matches_repeated_multiplication_and_tends_to_first_column():
    rng = np.random.default_rng(6)
    lam = random_causal_attention(10, rng)
    half = 0.5 * (lam + np.eye(10))
    ref = np.eye(10)
    for _ in range(37):
        ref = ref @ half
    np.testing.assert_allclose(sp.deep_limit(lam, 37), ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(sp.deep_limit(lam, 0), np.eye(10))
    dists = [sp.distance_to_first_column(sp.deep_limit(lam, d)) for d in (1, 10, 100, 1000)]
    assert all(d1 > d2 for d1, d2 in zip(dists, dists[1:]))
    deep = sp.deep_limit(lam, 2000)
    np.testing.assert_allclose(deep[:, 0], 1.0, atol=1e-9)  # y_n sees only token 1
    assert np.abs(deep[:, 1:]).max() < 1e-9
    rows = sp.distance_to_first_column(deep, per_row=True)
    assert rows.shape == (10,) and rows[0] == 0.0
    with pytest.raises(ValueError):
        sp.deep_limit(lam, -1)
    with pytest.raises(ValueError):
        sp.deep_limit(lam[:, :5], 3)


def test_convergence_rate_matches_second_eigenvalue():
    rng = np.random.default_rng(7)
    diag = [1.0, 0.7, 0.5, 0.4, 0.3, 0.2]
    lam = random_causal_attention(6, rng, diag=diag)
    assert sp.is_row_stochastic(lam, atol=1e-12)
    fit = sp.convergence_rate(lam, depths=range(40, 121, 10))
    assert fit.lambda_2 == pytest.approx(0.7, abs=1e-14)
    assert fit.predicted_rate == pytest.approx(0.85, abs=1e-14)
    assert abs(fit.fitted_rate / fit.predicted_rate - 1) < 1e-3
    # A random pattern: lambda_2 from LAPACK, depths chosen where r^L is in [1e-9, 1e-3].
    lam = random_causal_attention(9, rng)
    lam2 = np.sort(np.linalg.eigvals(lam).real)[-2]
    r = (1 + lam2) / 2
    depths = np.linspace(math.log(1e-3) / math.log(r), math.log(1e-9) / math.log(r), 8)
    fit = sp.convergence_rate(lam, depths=[int(d) for d in depths])
    assert abs(fit.fitted_rate / r - 1) < 2e-2
    with pytest.raises(ValueError):
        sp.convergence_rate(lam, depths=[5])
    with pytest.raises(ValueError):
        sp.convergence_rate(lam.T, depths=[5, 10])
    with pytest.raises(ValueError):  # distances all below the float64 floor
        sp.convergence_rate(lam, depths=[100_000, 200_000])


# ---- rank collapse -------------------------------------------------------------------


def test_stable_and_numerical_rank():
    rng = np.random.default_rng(8)
    u, v = rng.normal(size=(6, 1)), rng.normal(size=(1, 4))
    assert sp.stable_rank(u @ v) == pytest.approx(1.0, abs=1e-12)
    assert sp.stable_rank(np.eye(5)) == pytest.approx(5.0, abs=1e-12)
    x = rng.normal(size=(10, 3)) @ rng.normal(size=(3, 8))
    assert sp.numerical_rank(x) == 3
    s = np.linalg.svd(x, compute_uv=False)
    assert sp.stable_rank(x) == pytest.approx((s**2).sum() / s[0] ** 2, rel=1e-12)
    rows = np.tile(rng.normal(size=(1, 5)), (4, 1))
    assert sp.residual_from_uniform(rows) < 1e-15 and sp.numerical_rank(rows) == 1
    assert sp.stable_rank(np.zeros((3, 3))) == 0.0
    with pytest.raises(ValueError):
        sp.stable_rank(np.ones(4))


# ---- captured attention (R9 on a real model) ------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
def test_captured_attention_patterns(causal):
    config = TransformerConfig.tiny(n_layers=1, causal=causal, init_std=0.3)
    model = Decoder(config, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    tokens = jnp.arange(12) % config.vocab_size
    pattern = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t, capture=True)[1].attn_pattern)(
        state, tokens
    )  # [L, h, n, n]
    assert pattern.dtype == jnp.float32
    assert sp.is_row_stochastic(pattern)
    assert sp.is_lower_triangular(pattern) == causal
    if causal:  # masked keys are exactly zero, so R9 holds for every head
        for head in np.asarray(pattern[0], np.float64):
            check = sp.spectrum_check(head, tol=1e-6)
            assert abs(check.largest - 1.0) < 1e-6 and check.multiplicity_of_one == 1
