"""The decoder's softmax switches (`attn_softmax`: adaptive temperature, Scalable-Softmax)
against the float64 loop references of tests/reference_softmax.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import make_model
from tests.reference import ref_forward
from tests.reference_softmax import ref_attention_weights
from transformer import TransformerConfig
from transformer.generate import prefill
from transformer.layers import attention_mask, attention_softmax

jax.config.update("jax_enable_x64", True)

F64 = dict(dtype="float64", param_dtype="float64", softmax_dtype="float64")
KINDS = ("standard", "adaptive_temperature", "scalable")
TOKENS = np.array([3, 17, 5, 5, 30, 0, 9, 12, 12, 4, 1])


@pytest.mark.parametrize("kind", KINDS)
def test_attention_softmax_matches_the_loop_reference_row_by_row(kind):
    rng = np.random.default_rng(0)
    n = 9
    pos = jnp.arange(n)[None]
    for scale, window in ((0.05, None), (1.0, 3), (4.0, None)):  # near-uniform to sharp rows
        scores = jnp.asarray(scale * rng.normal(size=(1, 2, n, n)))
        mask = attention_mask(pos, pos, jnp.ones((1, n), bool), causal=True, window=window)
        logits, pattern = attention_softmax(scores, mask, kind=kind, ssmax_s=0.7)
        np.testing.assert_allclose(jax.nn.softmax(logits, -1), pattern, rtol=0, atol=1e-15)
        scores, pattern, mask = (np.asarray(a) for a in (scores, pattern, mask))
        for h in range(2):
            for q in range(n):
                seen = mask[0, 0, q]
                ref = ref_attention_weights(scores[0, h, q][seen], kind, 0.7)
                np.testing.assert_allclose(pattern[0, h, q][seen], ref, rtol=1e-12, atol=1e-15)
                assert np.all(pattern[0, h, q][~seen] == 0.0)


def test_the_switches_change_the_weights_where_their_papers_say():
    # Adaptive temperature: sharper for a spread row (H > 0.5), untouched for a sharp one.
    spread = jnp.asarray([[0.1, 0.0, -0.1, 0.2, 0.05]])
    sharp = jnp.asarray([[9.0, 0.0, 0.0, 0.0, 0.0]])
    mask = jnp.ones((1, 5), bool)
    for row, changed in ((spread, True), (sharp, False)):
        p0 = attention_softmax(row, mask)[1]
        p1 = attention_softmax(row, mask, kind="adaptive_temperature")[1]
        assert bool(jnp.any(jnp.abs(p1 - p0) > 1e-3)) == changed
        assert float(p1.max()) >= float(p0.max()) - 1e-15  # never flatter
    # Scalable-Softmax: with s = 1 / ln 5 and five visible keys it is the standard softmax.
    p = attention_softmax(spread, mask, kind="scalable", ssmax_s=1 / np.log(5))[1]
    np.testing.assert_allclose(p, attention_softmax(spread, mask)[1], atol=1e-15)


@pytest.mark.parametrize(("kind", "extra"), [
    ("adaptive_temperature", {}),
    ("scalable", dict(window=(3, None), n_kv_heads=1, pos_encoding="alibi")),
], ids=["adaptive-rope", "scalable-window-mqa-alibi"])
def test_decoder_with_each_switch_matches_the_float64_reference(kind, extra):
    model = make_model(seed=3, attn_softmax=kind, ssmax_s=0.8, **extra, **F64)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    ref_y, ref_logits = ref_forward(model.config, params, TOKENS)
    logits = nnx.jit(lambda m, t: m(t))(model, jnp.asarray(TOKENS))  # one compile, not per op
    np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=0, atol=1e-10)
    # ... and the switch is not a no-op on this model.
    _, standard = ref_forward(model.config.replace(attn_softmax="standard"), params, TOKENS)
    assert np.abs(standard - ref_logits).max() > 1e-4


def test_cached_decoding_counts_only_filled_slots():
    # n of Scalable-Softmax must ignore the cache's unfilled slots (the adaptive temperature
    # reads the same mask): decoding from a larger cache equals the full forward.
    model = make_model(seed=4, attn_softmax="scalable", **F64)
    tokens = jnp.asarray(TOKENS[None, :8], jnp.int32)
    cache = prefill(model, tokens, 32)
    out, _ = nnx.jit(lambda m, t, c: m.decode(t, c))(model, jnp.asarray([[7]], jnp.int32), cache)
    full = nnx.jit(lambda m, t: m(t))(
        model, jnp.concatenate([tokens, jnp.asarray([[7]], jnp.int32)], axis=1))
    np.testing.assert_allclose(out.logits[:, -1], full[:, -1], atol=1e-10)


@pytest.mark.parametrize(
    "bad", [dict(attn_softmax="sparsemax"), dict(ssmax_s=0.0), dict(ssmax_s=-1.0),
            dict(ssmax_s=float("nan")), dict(ssmax_s=float("inf")), dict(ssmax_s=True)],
    ids=lambda b: f"{next(iter(b))}={next(iter(b.values()))}")
def test_bad_switch_values_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TransformerConfig.tiny(**bad)


def test_attention_softmax_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="not one of"):
        attention_softmax(jnp.zeros((1, 3)), jnp.ones((1, 3), bool), kind="entmax")
