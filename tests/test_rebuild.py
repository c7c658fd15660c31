"""`transformer.rebuild`: the same weights under another config, against independent
constructions (a decoder built from the new config and given the cast parameters by hand)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import make_model
from transformer import Decoder, rebuild

F32 = dict(dtype="float32", param_dtype="float32", softmax_dtype="float32")
TOKENS = jnp.asarray([3, 17, 5, 5, 30, 0, 9, 12, 12, 4, 1])


def _params(model):
    return jax.tree.leaves(nnx.state(model, nnx.Param))


def _by_hand(model, **changes):
    """A decoder of the changed config whose parameters are the model's cast with NumPy."""
    config = model.config.replace(**changes)
    target = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(123)))  # all overwritten
    state = nnx.state(model, nnx.Param)
    cast = jax.tree.map(lambda a: np.asarray(a).astype(config.params_dtype), state)
    nnx.update(target, cast)
    return target


@pytest.mark.parametrize("changes", [
    dict(dtype="bfloat16", param_dtype="bfloat16", softmax_dtype="bfloat16"),  # R6's formats
    dict(dtype="float64", param_dtype="float64", softmax_dtype="float64"),
    dict(dtype="float16"),  # compute only: the parameters stay float32
])
def test_precision_changes_cast_the_same_parameters(changes):
    model = make_model(seed=1, **F32)
    got = rebuild(model, **changes)
    ref = _by_hand(model, **changes)
    want_dtype = got.config.params_dtype
    for a, b, orig in zip(_params(got), _params(ref), _params(model)):
        assert a.dtype == want_dtype and a.shape == orig.shape
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))
    assert got.config == ref.config
    assert _params(model)[0].dtype == jnp.float32  # the original is untouched


@pytest.mark.parametrize("changes", [
    dict(causal=False),  # R10's bidirectional model
    dict(pos_encoding="rope"), dict(pos_encoding="alibi"), dict(pos_encoding="sinusoidal"),
    dict(window=(4, None)), dict(window=None, rope_theta=500.0),  # R12b's global variants
])
def test_weight_free_changes_share_the_parameters(changes):
    model = make_model(seed=2, pos_encoding="none", window=(3, 5), **F32)
    got = rebuild(model, **changes)
    for key, value in changes.items():
        assert getattr(got.config, key) == value
    # Same dtype: the very same arrays (no copy), as the former same_weights builders.
    assert all(a is b for a, b in zip(_params(got), _params(model)))
    ref = _by_hand(model, **changes)
    np.testing.assert_array_equal(np.asarray(got(TOKENS)), np.asarray(ref(TOKENS)))


@pytest.mark.parametrize("changes, named", [
    (dict(d_model=16), "changes shape"),
    (dict(n_layers=3), "is new"),
    (dict(pos_encoding="learned"), "is new"),  # learned positions need a table
    (dict(vocab_size=7), "changes shape"),
])
def test_a_change_of_the_parameters_is_refused(changes, named):
    model = make_model(seed=3, pos_encoding="none", **F32)
    with pytest.raises(ValueError, match=f"changes the model's parameters.*{named}"):
        rebuild(model, **changes)


def test_dropping_learned_positions_and_unknown_fields_are_refused():
    model = make_model(seed=4, pos_encoding="learned", **F32)
    with pytest.raises(ValueError, match="is dropped"):
        rebuild(model, pos_encoding="rope")
    with pytest.raises(ValueError, match="rebuild"):
        rebuild(model, no_such_field=1)
