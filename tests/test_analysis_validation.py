"""Every analysis entry point checks its inputs as the forward pass does and never hands
back a NaN or an all-zero result without saying why (analysis.validation), written as a
user would make each mistake."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from analysis import (
    UnderflowWarning,
    estimate_sensitivity,
    last_token_jacobian,
    layer_position_map,
    log_path_terms,
    path_bound,
    sensitivity_profile,
)
from transformer import Decoder, TransformerConfig

F64 = dict(dtype="float64", param_dtype="float64", softmax_dtype="float64")

ENTRY_POINTS = {
    "last_token_jacobian": last_token_jacobian,
    "sensitivity_profile": sensitivity_profile,
    "sensitivity_profile(linf)": lambda m, x: sensitivity_profile(m, x, norm="linf"),
    "estimate_sensitivity": lambda m, x: estimate_sensitivity(m, x, n_probes=4),
    "estimate_sensitivity(xtrace)": lambda m, x: estimate_sensitivity(m, x, n_probes=6,
                                                                      method="xtrace"),
    "layer_position_map": layer_position_map,
    "path_bound": path_bound,
    "log_path_terms": log_path_terms,
}


def model(**overrides):
    return Decoder(TransformerConfig.tiny(**overrides), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_learned_positions_in_the_scores_refuse_states_longer_than_the_table(name):
    """The forward refuses 12 positions with a learned table of 8; so must every analysis
    path that is given states instead of token ids (it returned NaN before)."""
    m = model(pos_encoding="learned", abs_pos_placement="scores", max_len=8)
    states = jnp.zeros((12, m.config.d_model), jnp.float32)
    with pytest.raises(ValueError, match="exceeds max_len=8"):
        ENTRY_POINTS[name](m, states)
    with pytest.raises(ValueError, match="exceeds max_len=8"):
        m.forward_from_embeddings(states)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_float64_states_that_overflow_a_float32_model_are_refused(name):
    """Finite in float64, inf once cast to the model's float32: named, not differentiated
    into NaN."""
    m = model()
    states = np.full((5, m.config.d_model), 1e39)  # float32's largest is 3.4e38
    with pytest.raises(ValueError, match="compute dtype float32.*inf at position 0"):
        ENTRY_POINTS[name](m, jnp.asarray(states, jnp.float64))


def test_huge_finite_states_warn_that_float32_gradients_underflow():
    """float32: every gradient underflows to exactly zero; float64 resolves 1e-63..1e-30."""
    states = np.random.default_rng(0).normal(size=(6, 32)) * 1e30
    with pytest.warns(UnderflowWarning, match="exactly zero everywhere.*underflow in float32"):
        profile = sensitivity_profile(model(), jnp.asarray(states, jnp.float32))
    assert not np.asarray(profile).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnderflowWarning)
        profile64 = sensitivity_profile(model(**F64), jnp.asarray(states))
    assert (np.asarray(profile64) > 0).all()


@pytest.mark.parametrize("name", ["last_token_jacobian", "sensitivity_profile",
                                  "estimate_sensitivity", "path_bound", "log_path_terms"])
def test_non_finite_weights_are_named_for_state_inputs(name):
    """States given directly bypass the token-id path's check of the computed states: a
    NaN weight must still not come back as a NaN result."""
    m = model(**F64)
    m.blocks[0].mlp.w_up[...] = m.blocks[0].mlp.w_up[...].at[0, 0].set(jnp.nan)
    states = jnp.asarray(np.random.default_rng(1).normal(size=(5, 32)))
    with pytest.raises(ValueError, match="NaN"):
        ENTRY_POINTS[name](m, states)


def test_the_shared_result_check_names_nan_inf_and_all_zero_results():
    """analysis.validation.check_result, which every entry point calls on its result: NaN
    is an error; inf is an error unless the quantity is a true-but-useless bound (then a
    warning with the way out); an all-zero result warns unless zeros are legitimate."""
    from analysis.validation import check_result

    m = model()
    good = jnp.asarray([1.0, 2.0], jnp.float32)
    assert check_result(m, good, "x") is good
    with pytest.raises(ValueError, match="the thing holds NaN.*overflowed in float32"):
        check_result(m, jnp.asarray([1.0, jnp.nan]), "the thing")
    with pytest.raises(ValueError, match="the thing holds inf"):
        check_result(m, jnp.asarray([1.0, jnp.inf]), "the thing")
    with pytest.warns(RuntimeWarning, match="the bound overflowed to inf in float32: use logs"):
        check_result(m, jnp.asarray([1.0, jnp.inf]), "the bound", overflow_hint="use logs")
    with pytest.raises(ValueError, match="NaN"):  # NaN stays an error with a hint too
        check_result(m, jnp.asarray([jnp.inf, jnp.nan]), "the bound", overflow_hint="use logs")
    with pytest.warns(UnderflowWarning):
        check_result(m, jnp.zeros(3), "the profile")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_result(m, jnp.zeros(3), "the map", zeros_possible=True)


def test_checks_are_skipped_under_the_callers_jit():
    """Traced values cannot be inspected: the entry points stay traceable."""
    m = model(**F64)
    v0 = m.embed(jnp.arange(5))
    jitted = jax.jit(lambda v: sensitivity_profile(m, v))(v0)
    np.testing.assert_allclose(jitted, sensitivity_profile(m, v0), rtol=1e-12)
