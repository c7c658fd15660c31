"""The per-position norm estimators (R11) against exact profiles: XTrace is unbiased for a
decaying and for a flat spectrum, its error estimate covers its error, it is exact once
the sketch spans the output, and through a model (VJPs and JVPs, every memory plan) it
gives the same numbers as explicit products with the model's exact Jacobian."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from analysis.jacobian import last_token_jacobian
from analysis.memory import MemoryPlan
from analysis.runners import jvp_outputs
from analysis.validation import states_at_layer
from analysis.sensitivity import estimate_sensitivity
from analysis.trace_estimation import (
    check_budget,
    hutchinson_norms,
    products_used,
    xtrace_norms,
)
from tests.helpers import randomized
from transformer import Decoder, TransformerConfig

jax.config.update("jax_enable_x64", True)

F64 = dict(dtype="float64", param_dtype="float64", softmax_dtype="float64")
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
TOKENS = jnp.array([4, 2, 0, 1, 7, 3, 5, 9, 1, 2])


def decaying_model(seed=0):
    """A tiny model whose output side has a decaying spectrum: the final RMSNorm's scale
    falls geometrically over the d_model coordinates (0.6^k), so the singular values of
    J = d y_n / d v carry that decay (J J^T spans ~7 orders of magnitude)."""
    config = TransformerConfig(vocab_size=16, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1,
                               d_head=8, d_mlp=24, max_len=64, norm="rmsnorm", **F64)
    model = randomized(Decoder(config, rngs=nnx.Rngs(seed)), seed, scale=0.5)
    model.final_norm.scale[...] = 0.6 ** jnp.arange(config.d_model, dtype=jnp.float64)
    return model


def matrix_products(jac):
    """vjp and jvp closures of an explicit [d_out, n, d_in] Jacobian."""
    d, n, m = jac.shape
    flat = jnp.asarray(jac).reshape(d, n * m)
    vjp = jax.jit(lambda u: (u @ flat).reshape(-1, n, m))
    jvp = jax.jit(lambda w: w.reshape(w.shape[0], n * m) @ flat.T)
    return vjp, jvp


def seeds_of(jac, n_probes, n_seeds, method):
    """Estimates and standard errors [n_seeds, n] from explicit products."""
    vjp, jvp = matrix_products(jac)
    d = jac.shape[0]
    count = check_budget(method, n_probes, d)
    ests, errs = [], []
    for seed in range(n_seeds):
        probes = jax.random.normal(jax.random.key(seed), (count, d), jnp.float64)
        if method == "xtrace":
            est, err = xtrace_norms(vjp, jvp, probes)
        else:
            est, err = hutchinson_norms(jnp.sum(vjp(probes) ** 2, axis=-1))
        ests.append(np.asarray(est))
        errs.append(np.asarray(err))
    return np.array(ests), np.array(errs)


@pytest.fixture(scope="module")
def decaying():
    model = decaying_model()
    jac = np.asarray(last_token_jacobian(model, TOKENS))
    return model, jac, (jac**2).sum(axis=(0, 2))


def flat_map(seed=0, d_out=16, n=10, d_in=16):
    """A synthetic linear map with a flat spectrum: i.i.d. Gaussian blocks J_i of random
    sizes, so J J^T ~ (sum of sizes) I has no dominant directions to sketch."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((d_out, n, d_in)) * rng.uniform(0.2, 2.0, (1, n, 1))


def _bias_z(ests, exact):
    """Per-position bias over seeds in units of its standard error: ~N(0, 1) if unbiased."""
    mean, sd = ests.mean(0), ests.std(0, ddof=1) / np.sqrt(len(ests))
    return (mean - exact) / sd


def test_decaying_spectrum_really_decays(decaying):
    _, jac, _ = decaying
    flat = jac.reshape(jac.shape[0], -1)
    ev = np.linalg.eigvalsh(flat @ flat.T)[::-1]
    assert ev[4] / ev[0] < 0.05 and ev[-1] / ev[0] < 1e-5, ev / ev[0]


@pytest.mark.parametrize("spectrum", ["decaying", "flat"])
def test_xtrace_is_unbiased_and_its_error_estimate_covers_its_error(spectrum, decaying):
    jac = decaying[1] if spectrum == "decaying" else flat_map()
    exact = (jac**2).sum(axis=(0, 2))
    ests, errs = seeds_of(jac, 18, 300, "xtrace")  # s = 6 probes of 16 dimensions
    z = _bias_z(ests, exact)
    assert np.abs(z).max() < 4.5, z  # 10 positions, 300 seeds: unbiased (exchangeability)
    # The error estimate std_j(T_ij) / sqrt(s) (the paper's) covers the error within 2 of
    # itself for most (seed, position) pairs and at most positions in most seeds. With s = 6
    # even i.i.d. Gaussian T_ij would cover only 90% (Student t, 5 degrees of freedom); the
    # T_ij are exchangeable, not independent (measured 0.83 decaying, 0.77 flat).
    covered = np.abs(ests - exact) <= 2 * errs
    assert covered.mean() > 0.7, covered.mean()
    assert np.mean(covered.mean(1) >= 0.5) > 0.9, covered.mean(1)


def test_xtrace_beats_hutchinson_at_4x_fewer_products_on_a_decaying_spectrum(decaying):
    """Median relative error over 40 seeds: XTrace at k products below half of
    Hutchinson's at 4k (the 1/k against 1/sqrt(k) regime)."""
    _, jac, exact = decaying
    x, _ = seeds_of(jac, 24, 40, "xtrace")
    h, _ = seeds_of(jac, 96, 40, "hutchinson")
    ratio = np.median(np.abs(x - exact) / exact) / np.median(np.abs(h - exact) / exact)
    assert ratio < 0.5, ratio


def test_xtrace_is_exact_once_the_sketch_spans_the_output(decaying):
    _, jac, exact = decaying
    ests, errs = seeds_of(jac, 48, 2, "xtrace")  # s = d_out = 16
    np.testing.assert_allclose(ests, np.broadcast_to(exact, ests.shape), rtol=1e-9)
    assert errs.max() < 1e-9 * exact.max()


def test_estimates_through_the_model_equal_explicit_products(decaying):
    """estimate_sensitivity's VJPs and JVPs through the model against explicit products with
    the model's exact Jacobian: the same numbers for XTrace (a wrong JVP would change the
    sketch and so the estimate) and, as before, for the default Hutchinson."""
    model, jac, exact = decaying
    vjp, jvp = matrix_products(jac)
    probes = jax.random.normal(jax.random.key(3), (5, 16), jnp.float64)
    ref_est, ref_err = xtrace_norms(vjp, jvp, probes)
    est, err = estimate_sensitivity(model, TOKENS, n_probes=15, seed=3, method="xtrace")
    np.testing.assert_allclose(est, ref_est, rtol=1e-9)
    np.testing.assert_allclose(err, ref_err, rtol=1e-7, atol=1e-12 * float(exact.max()))
    root, _ = estimate_sensitivity(model, TOKENS, n_probes=15, seed=3, method="xtrace",
                                   squared=False)
    np.testing.assert_allclose(root, np.sqrt(est), rtol=1e-12)
    sq = np.asarray(jnp.sum(vjp(probes) ** 2, axis=-1))  # Hutchinson, the default
    est, err = estimate_sensitivity(model, TOKENS, n_probes=5, seed=3)
    np.testing.assert_allclose(est, sq.mean(0), rtol=1e-10)
    np.testing.assert_allclose(err, sq.std(0, ddof=1) / np.sqrt(5), rtol=1e-8)


def test_jvps_under_the_long_context_plan(decaying):
    """J w through query blocks (each rematerialised) and chunks equals explicit J w."""
    model, jac, _ = decaying
    _, jvp = matrix_products(jac)
    v = states_at_layer(model, TOKENS, 0)
    w = jax.random.normal(jax.random.key(1), (3, *v.shape), jnp.float64)
    graphdef, state = nnx.split(model)

    @functools.partial(jax.jit, compiler_options=FAST)
    def blocked(state, w):
        return jvp_outputs(nnx.merge(graphdef, state), v, w, start_layer=0, stop_layer=2,
                           final_norm=True, freeze_attention=False, chunk=2,
                           plan=MemoryPlan(query_block=4, remat=True))

    np.testing.assert_allclose(blocked(state, w), jvp(w), rtol=1e-10, atol=1e-13)


def test_budgets_and_bad_inputs(decaying):
    model = decaying[0]
    assert products_used("xtrace", 20) == 18 and products_used("hutchinson", 20) == 20
    assert check_budget("xtrace", 20, 16) == 6
    with pytest.raises(ValueError, match="method"):
        estimate_sensitivity(model, TOKENS, method="hutch++")
    with pytest.raises(ValueError, match="n_probes must be an integer >= 6"):
        estimate_sensitivity(model, TOKENS, n_probes=5, method="xtrace")
    with pytest.raises(ValueError, match="d_out=16"):
        estimate_sensitivity(model, TOKENS, n_probes=51, method="xtrace")
    with pytest.raises(ValueError, match="2 <= s <= d_out"):
        xtrace_norms(None, None, jnp.zeros((1, 4)))
