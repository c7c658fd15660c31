"""R10: without positions and without the causal mask, same-ratio sequences give every "1"
and every "0" the same state at every layer (float64: rounding only); with the mask or
with positions, the same weights tell them apart."""

import jax
import numpy as np
import pytest
from flax import nnx

from analysis import counting as cnt
from transformer import Decoder, TransformerConfig, rebuild

jax.config.update("jax_enable_x64", True)

ONE, ZERO = 1, 0
# Large init so that attention is far from uniform (a uniform pattern would hide nothing).
CONFIG = TransformerConfig.tiny(
    pos_encoding="none", causal=False, n_layers=2, vocab_size=4, init_std=0.3,
    dtype="float64", param_dtype="float64", softmax_dtype="float64",
)


@pytest.fixture(scope="module")
def model():
    return Decoder(CONFIG, rngs=nnx.Rngs(0))


def test_scale_counts():
    assert cnt.scale_counts([1, 0], 2) == [1, 1, 0, 0]
    assert cnt.scale_counts([1, 1, 0], 3) == [1, 1, 1, 1, 1, 1, 0, 0, 0]
    with pytest.raises(ValueError):
        cnt.scale_counts([1, 0], 0)
    with pytest.raises(ValueError):
        cnt.scale_counts([], 2)


def test_same_ratio_same_states_and_contrast(model):
    # "10" and "011001": ratio 1:1, counts 1 and 3, another order.
    seqs = [[ONE, ZERO], [ZERO, ONE, ONE, ZERO, ZERO, ONE]]
    result = cnt.counting_contrast(model, seqs)
    nope = result["bidirectional_nope"]
    print({name: float(r.max_diff) for name, r in result.items()})
    assert nope.per_level.shape == (CONFIG.n_layers + 1,)
    assert nope.token_ids == (ZERO, ONE)
    assert nope.max_diff < 1e-12
    # The same weights with a causal mask or with positions do tell the counts apart.
    assert result["causal_nope"].max_diff > 1e-3
    assert result["bidirectional_sinusoidal"].max_diff > 1e-3
    assert np.all(result["causal_nope"].per_level > 1e-3)


def test_different_ratio_differs(model):
    # "110" (2:1) and "111000" (1:1) hold the same tokens in another ratio: states differ.
    spread = cnt.ratio_invariance(model, [[ONE, ONE, ZERO], cnt.scale_counts([ONE, ZERO], 3)])
    print(f"different ratio: max diff {spread.max_diff:.3g}")
    assert spread.max_diff > 1e-3
    # While "110" and "111100" (2:1) match.
    same = cnt.ratio_invariance(model, [[ONE, ONE, ZERO], cnt.scale_counts([ONE, ONE, ZERO], 2)])
    assert same.max_diff < 1e-12


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="causal"):
        cnt.ratio_invariance(rebuild(model, causal=True), [[1, 0], [1, 1, 0, 0]])
    with pytest.raises(ValueError, match="positions"):
        cnt.ratio_invariance(rebuild(model, pos_encoding="rope"), [[1, 0], [0, 1]])
    with pytest.raises(ValueError):
        cnt.token_spread(model, [[1, 0]])  # one sequence
    with pytest.raises(ValueError, match="token types"):
        cnt.token_spread(model, [[1, 0], [1, 1]])
    with pytest.raises(ValueError):
        cnt.token_spread(model, [[1, 7], [7, 1]])  # outside the vocabulary
    with pytest.raises(ValueError):
        rebuild(model, d_model=16)
    with pytest.raises(ValueError):
        rebuild(model, pos_encoding="learned")
    with pytest.raises(ValueError):
        cnt.counting_contrast(model, [[1, 0], [1, 1, 0, 0]], variants=["nope"])


def test_same_weights_keeps_parameters(model):
    causal = rebuild(model, causal=True)
    assert causal.config.causal and not model.config.causal
    a = jax.tree.leaves(nnx.state(model, nnx.Param))
    b = jax.tree.leaves(nnx.state(causal, nnx.Param))
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
