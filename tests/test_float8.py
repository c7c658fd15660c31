"""Float8 fake quantisation (`activation_format`, `kv_format`): the rounding against a
reference built from the formats' bit layouts, and where the decoder applies it."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from tests.helpers import make_model
from tests.reference_softmax import ref_float8_values, ref_round_float8
from transformer import TransformerConfig
from transformer.layers import round_to_format

jax.config.update("jax_enable_x64", True)
FORMATS = ("float8_e4m3fn", "float8_e5m2")


@pytest.mark.parametrize("fmt", FORMATS)
def test_value_table_matches_ml_dtypes(fmt):
    table = ref_float8_values(fmt)
    assert table[-1] == float(ml_dtypes.finfo(getattr(ml_dtypes, fmt)).max)
    codes = np.arange(256, dtype=np.uint8).view(getattr(ml_dtypes, fmt)).astype(np.float64)
    finite = np.sort(np.unique(codes[np.isfinite(codes) & (codes >= 0)]))
    np.testing.assert_array_equal(finite, table)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_rounding_matches_the_bit_layout_reference(fmt, dtype):
    rng = np.random.default_rng(1)
    table = ref_float8_values(fmt)
    mids = (table[1:] + table[:-1]) / 2  # exact ties: to the even code
    x = np.concatenate([
        rng.normal(size=400) * 10.0 ** rng.uniform(-5, 5, 400),  # subnormals to overflow
        mids, -mids, table, [0.0, -0.0, 1e30, -1e30],
    ]).astype(dtype)
    got = np.asarray(round_to_format(jnp.asarray(x), fmt), np.float64)
    np.testing.assert_array_equal(got, ref_round_float8(x.astype(np.float64), fmt))
    assert round_to_format(jnp.asarray(x), fmt).dtype == dtype
    assert round_to_format(jnp.asarray(x), None) is not None


_forward = nnx.jit(lambda m, t: m.forward_from_embeddings(m.embed(t), capture=True))
_logits = nnx.jit(lambda m, t: m(t))  # one compilation each, not one per eager op


def _rounded_everywhere(model, tokens, fmt):
    """Every tapped activation of a fake-quantised model lies on the float8 grid."""
    inter = _forward(model, tokens).intermediates
    for name in ("resid_pre", "resid_mid", "resid_post", "y"):
        a = np.asarray(getattr(inter, name), np.float64)
        np.testing.assert_array_equal(a, ref_round_float8(a, fmt), err_msg=name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_decoder_rounds_its_stored_activations_and_keeps_float32_arithmetic(fmt):
    model = make_model(seed=2, activation_format=fmt)
    tokens = jnp.arange(9)
    _rounded_everywhere(model, tokens, fmt)
    out = _forward(model, tokens)
    for kv in (out.new_keys, out.new_values):
        a = np.asarray(kv, np.float64)
        np.testing.assert_array_equal(a, ref_round_float8(a, fmt))
    plain = make_model(seed=2)
    assert plain.config.activation_format is None
    diff = np.abs(np.asarray(_logits(model, tokens)) - np.asarray(_logits(plain, tokens))).max()
    assert 0 < diff  # float8 changes the logits; the weights are shared (float32)
    assert _logits(model, tokens).dtype == jnp.float32


def test_kv_format_rounds_keys_and_values_only():
    fmt = "float8_e5m2"
    model = make_model(seed=4, kv_format=fmt)
    tokens = jnp.arange(7)
    out = _forward(model, tokens)
    for kv in (out.new_keys, out.new_values):
        a = np.asarray(kv, np.float64)
        np.testing.assert_array_equal(a, ref_round_float8(a, fmt))
    resid = np.asarray(out.intermediates.resid_post, np.float64)
    assert np.any(resid != ref_round_float8(resid, fmt))  # the residual stream is not rounded
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    plain = make_model(seed=4)
    nnx.update(plain, params)
    assert np.abs(np.asarray(_logits(model, tokens)) - np.asarray(_logits(plain, tokens))).max() > 0


@pytest.mark.parametrize("bad", [dict(activation_format="float8_e3m4"),
                                 dict(kv_format="int8"),
                                 dict(activation_format="float8_e4m3fn", dtype="bfloat16")],
                         ids=["format", "kv", "dtype"])
def test_bad_formats_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="activation_format|kv_format"):
        TransformerConfig.tiny(**bad)


def test_collapse_sweep_runs_float8_as_fake_quantisation():
    # R6's float8 rows: the fast branching sweep equals one full forward per sequence, and
    # its final states lie on the float8 grid.
    from analysis.collapse import PairFamily, collapse_sweep, collapse_sweep_slow

    model = make_model(seed=6, pos_encoding="none")
    family = PairFamily(repeat_id=7, prompt_ids=(1, 2, 3))
    fmt = "float8_e4m3fn"  # one format: each costs two compilations per path
    fast = collapse_sweep(model, family, [1, 4, 9], dtypes=(fmt,))
    slow = collapse_sweep_slow(model, family, [1, 4, 9], dtypes=(fmt,))
    np.testing.assert_array_equal(fast.states[:, :, -1], slow.states[:, :, -1])
    y = fast.states[0, :, -1]
    np.testing.assert_array_equal(y, ref_round_float8(y, fmt))
    with pytest.raises(ValueError, match="not one of"):
        collapse_sweep(model, family, [1], dtypes=("float8_e3m4",))
