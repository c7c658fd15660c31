"""No silent wrong answers (issue 23), each mistake made as a user would make it: a
non-finite setting, a NaN weight reaching the collapse pipeline, a fit over degenerate data.
Each must be an error (or a named warning) that says what is wrong, never a number."""

import dataclasses
import math
import types

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from analysis import (
    PairFamily,
    collapse_lengths,
    collapse_sweep,
    fit_decay,
    geometric_rate,
    loglog_slope,
    pair_distance,
    token_spread,
)
from analysis.collapse import CollapseSweep
from transformer import Decoder, TransformerConfig

F64 = dict(dtype="float64", param_dtype="float64", softmax_dtype="float64")

# ---- settings ------------------------------------------------------------------------------

FLOAT_FIELDS = [f.name for f in dataclasses.fields(TransformerConfig)
                if str(f.type) in ("float", "float | None")]


def test_the_float_fields_are_found():
    """The loop below covers every float setting, including ones added later."""
    assert {"norm_eps", "rope_theta", "query_scale", "init_std", "norm_beta"} <= set(FLOAT_FIELDS)


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_float_setting_refuses_non_finite_values(name, value):
    with pytest.raises(ValueError, match=f"{name} must be finite, got {value}"):
        TransformerConfig.tiny(**{name: value})


@pytest.mark.parametrize("overrides, message", [
    (dict(norm="constant", norm_beta=math.inf), "norm_beta must be finite"),
    (dict(norm="constant", norm_beta=0.0), "norm_beta must be positive"),
    (dict(init_std=0.0), "init_std must be positive"),  # every weight zero: every logit 0
    (dict(query_scale=0.0), "query_scale must be positive"),
    (dict(norm_eps=-1e-5), "norm_eps must be non-negative"),
    (dict(rope_fraction=1.5), "rope_fraction must be at most 1"),
    (dict(rope_theta=-1.0, pos_encoding="none"), "rope_theta must be positive"),
    (dict(embedding_scale="2"), "embedding_scale must be a number"),
    (dict(norm_eps=True), "norm_eps must be a number"),
])
def test_out_of_range_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig.tiny(**overrides)


def test_valid_presets_still_build():
    for preset in (TransformerConfig.tiny, TransformerConfig.gpt2_small,
                   TransformerConfig.smollm2_135m, TransformerConfig.gemma2_2b):
        preset()
    TransformerConfig.tiny(norm_eps=0.0, rope_theta_local=None, query_scale=np.float32(0.5))


# ---- NaN weights through the collapse pipeline ---------------------------------------------


@pytest.fixture(scope="module")
def nan_row_model():
    """A float64 model whose embedding row of token 3 is NaN (a corrupted checkpoint)."""
    m = Decoder(TransformerConfig.tiny(n_layers=1, d_model=8, n_heads=1, n_kv_heads=1,
                                       d_head=8, d_mlp=16, **F64), rngs=nnx.Rngs(0))
    m.embedding[...] = m.embedding[...].at[3].set(jnp.nan)
    return m


FAMILY = PairFamily(repeat_id=3, prompt_ids=(1, 2))


def test_a_nan_embedding_row_is_named_by_pair_distance(nan_row_model):
    with pytest.raises(ValueError, match="last-token states.*hold NaN at level 0.*weights"):
        pair_distance(nan_row_model, [1, 2, 3], [1, 2, 3, 3])


def test_a_nan_embedding_row_is_named_by_the_sweep(nan_row_model):
    """collapse_sweep (and collapse_sweep_slow, pair_sweep: all build a CollapseSweep,
    which checks its states, tested below)."""
    with pytest.raises(ValueError, match="sweep's states hold NaN at float64, n=1, level 0"):
        collapse_sweep(nan_row_model, FAMILY, [1, 2, 4], dtypes=("float64",), chunk_size=4)


def test_a_nan_embedding_row_is_named_by_token_spread(nan_row_model):
    with pytest.raises(ValueError, match=r"states of sequences\[0\] hold NaN"):
        token_spread(nan_row_model, [[1, 3, 2], [3, 1, 2]])


def _states(d=2, n=4, m=3):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(d, n, 1, m))
    star = base + np.geomspace(1e-2, 1e-5, n)[None, :, None, None]
    return base, star


def test_a_sweep_with_nan_states_cannot_be_built():
    """A fit over a partly NaN float64 reference dropped those lengths silently."""
    states, star = _states()
    states[0, 2, 0, 1] = np.nan
    with pytest.raises(ValueError, match="states hold NaN at float64, n=4, level 0"):
        CollapseSweep(lengths=(1, 2, 4, 8), seq_lengths=(2, 3, 5, 9),
                      dtypes=("float64", "float32"), states=states, states_star=star)


def test_collapse_lengths_and_fit_decay_check_any_sweep_they_are_given():
    """A sweep-like object built by hand (no CollapseSweep check) is checked again."""
    states, star = _states()
    star[1, 0, 0, 0] = np.inf
    sweep = types.SimpleNamespace(
        lengths=(1, 2, 4, 8), dtypes=("float64", "float32"), states=states, states_star=star,
        index=lambda dt: ("float64", "float32").index(dt),
        distance=lambda norm: np.abs(states - star).max(-1),
    )
    for call in (lambda: collapse_lengths(sweep), lambda: fit_decay(sweep, "float64")):
        with pytest.raises(ValueError, match="states_star hold inf at float32, n=1"):
            call()


def test_collapse_lengths_still_fit_a_finite_sweep():
    states, star = _states()
    sweep = CollapseSweep(lengths=(1, 2, 4, 8), seq_lengths=(2, 3, 5, 9),
                          dtypes=("float64", "float32"), states=states, states_star=star)
    fit = fit_decay(sweep, "float64")
    np.testing.assert_allclose(fit.slope, math.log(1e-3) / math.log(8), rtol=1e-9)
    assert collapse_lengths(sweep).fit == fit


# ---- fits refuse degenerate data ------------------------------------------------------------


@pytest.mark.parametrize("fit", [loglog_slope, geometric_rate])
def test_fits_refuse_x_without_spread(fit):
    with pytest.raises(ValueError, match="every usable x equals 5: no spread"):
        fit([5, 5, 5], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("fit", [loglog_slope, geometric_rate])
@pytest.mark.parametrize("bad", ["x", "y"])
def test_fits_refuse_nan_instead_of_dropping_it(fit, bad):
    x, y = [1.0, 2.0, 4.0, 8.0], [1.0, 0.5, 0.25, 0.125]
    (x if bad == "x" else y)[2] = math.nan
    with pytest.raises(ValueError, match=f"{bad} holds NaN at index 2"):
        fit(x, y)


def test_fits_still_recover_known_exponents():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    assert loglog_slope(x, 3 * x**-1.5) == pytest.approx(-1.5, rel=1e-12)
    assert geometric_rate(x, 2 * 0.7**x) == pytest.approx(0.7, rel=1e-12)
    # zeros have left the power law: dropped, as documented
    assert loglog_slope([1, 2, 4, 8], [1, 0.5, 0.0, 0.125]) == pytest.approx(-1.0)


# ---- every analysis entry point that takes states checks them as the forward does ----------


def _state_entry_points():
    """Every public function of an analysis module whose first two parameters are
    (model, inputs): the Jacobian, sensitivity, estimator, path-bound and sharded paths,
    and any added later (a required `layer` gets 0: `states_at_layer` itself)."""
    import functools
    import importlib
    import inspect
    import pkgutil

    import analysis

    found = {}
    for info in pkgutil.iter_modules(analysis.__path__):
        module = importlib.import_module(f"analysis.{info.name}")
        for name, fn in vars(module).items():
            if name.startswith("_") or not inspect.isfunction(fn):
                continue
            if fn.__module__ != module.__name__:
                continue
            params = inspect.signature(fn).parameters
            if list(params)[:2] == ["model", "inputs"]:
                layer = params.get("layer")
                needs_layer = layer is not None and layer.default is inspect.Parameter.empty
                found[name] = functools.partial(fn, layer=0) if needs_layer else fn
    return found


STATE_ENTRY_POINTS = _state_entry_points()


def test_the_state_entry_points_are_found():
    assert {"last_token_jacobian", "sensitivity_profile", "estimate_sensitivity",
            "path_bound", "path_bounds", "log_path_terms", "layer_position_map",
            "states_at_layer", "sharded_sensitivity_profile"} <= set(STATE_ENTRY_POINTS)


@pytest.mark.parametrize("name", sorted(STATE_ENTRY_POINTS))
def test_every_entry_point_refuses_positions_beyond_a_learned_table_in_the_scores(name):
    m = Decoder(TransformerConfig.tiny(pos_encoding="learned", abs_pos_placement="scores",
                                       max_len=8), rngs=nnx.Rngs(0))
    states = jnp.zeros((12, m.config.d_model), jnp.float32)
    with pytest.raises(ValueError, match="exceeds max_len=8"):
        STATE_ENTRY_POINTS[name](m, states)
    with pytest.raises(ValueError, match="exceeds max_len=8"):  # as the forward does
        m.forward_from_embeddings(states)


@pytest.mark.parametrize("name", sorted(STATE_ENTRY_POINTS))
def test_every_entry_point_checks_states_after_the_cast_to_the_model_dtype(name):
    m = Decoder(TransformerConfig.tiny(), rngs=nnx.Rngs(0))
    states = jnp.full((5, m.config.d_model), 1e39, jnp.float64)  # finite; inf in float32
    with pytest.raises(ValueError, match="compute dtype float32.*inf at position 0"):
        STATE_ENTRY_POINTS[name](m, states)
