"""The log-space path term and bound (R7, R11) against `path_bound`, an explicit product of
captured attention matrices, and captured sink masses; finite where float32 overflows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from analysis.bound import path_bound
from analysis.log_bound import log_path_terms
from tests.helpers import randomized
from transformer import Decoder, TransformerConfig
from transformer.rebuild import rebuild

jax.config.update("jax_enable_x64", True)

F64 = dict(dtype="float64", param_dtype="float64", softmax_dtype="float64")
TOKENS = jnp.array([1, 5, 2, 2, 9, 0, 3])


def build(seed=0, scale=0.6, dtypes=F64, **overrides):
    base = dict(vocab_size=16, d_model=8, n_layers=3, n_heads=4, n_kv_heads=2, d_head=4,
                d_mlp=16, max_len=64, pos_encoding="rope", **dtypes)
    base.update(overrides)
    return randomized(Decoder(TransformerConfig(**base), rngs=nnx.Rngs(seed)), seed, scale)


@pytest.fixture(scope="module")
def live():
    """Live RMSNorm, gated MLP, sandwich norms, a window (local constants)."""
    model = build(2, norm="rmsnorm", gated=True, activation="silu", norm_placement="sandwich",
                  window=3)
    return model, log_path_terms(model, TOKENS, norm="fro", beta=2.0)


def test_log_bound_is_the_log_of_path_bound(live):
    model, terms = live
    assert terms.local and terms.norm == "fro"
    np.testing.assert_allclose(np.exp(terms.log_bound), path_bound(model, TOKENS, norm="fro"),
                               rtol=1e-10)


def test_log_path_is_the_product_of_head_averaged_attention_plus_identity(live):
    model, terms = live
    graphdef, state = nnx.split(model)
    capture = jax.jit(lambda state: nnx.merge(graphdef, state)(TOKENS, capture=True)[1])
    patterns = np.asarray(capture(state).attn_pattern)  # [L, h, n, n]
    n = len(TOKENS)
    # Row n of A^(L-1) ... A^(0), A^(l) = Lambda-bar^(l) / beta + I, as explicit matrices.
    product = np.eye(n)
    for layer in reversed(range(model.config.n_layers)):
        product = product @ (patterns[layer].mean(0) / 2.0 + np.eye(n))
    np.testing.assert_allclose(np.exp(terms.log_path), product[-1], rtol=1e-10)
    # Sinks: attention on position 1 from queries 2..n, and from the last query, per layer.
    np.testing.assert_allclose(terms.sink_mass, patterns[:, :, 1:, 0].mean((1, 2)), rtol=1e-12)
    np.testing.assert_allclose(terms.sink_mass_last, patterns[:, :, -1, 0].mean(1), rtol=1e-12)
    np.testing.assert_allclose(terms.sink_rate,
                               (patterns[:, :, 1:, 0].mean(2) > 0.5).mean(1), rtol=1e-12)


def test_positions_in_the_scores_reach_the_captured_patterns():
    """abs_pos_placement="scores": the positions enter every layer's q/k inputs; the log
    path and bound see the same patterns as the model's forward pass (and path_bound)."""
    model = build(3, pos_encoding="sinusoidal", abs_pos_placement="scores")
    terms = log_path_terms(model, TOKENS, norm="spectral", beta=1.0)
    graphdef, state = nnx.split(model)
    patterns = np.asarray(jax.jit(
        lambda state: nnx.merge(graphdef, state)(TOKENS, capture=True)[1])(state).attn_pattern)
    product = np.eye(len(TOKENS))
    for layer in reversed(range(model.config.n_layers)):
        product = product @ (patterns[layer].mean(0) + np.eye(len(TOKENS)))
    np.testing.assert_allclose(np.exp(terms.log_path), product[-1], rtol=1e-10)
    np.testing.assert_allclose(np.exp(terms.log_bound), path_bound(model, TOKENS), rtol=1e-10)
    plain = log_path_terms(build(3, pos_encoding="sinusoidal"), TOKENS)
    assert not np.allclose(plain.log_path, terms.log_path)  # the placement is seen


def test_log_bound_stays_finite_where_the_float32_bound_overflows():
    """Large MLP weights (x 1e4): over 4 layers the bound (float64 `path_bound`) passes
    float32's largest number, so a float32 row overflows; the log-space float32 bound
    matches it (global constants: the weights' norms and the patterns, here uniform,
    decide it, the same in both dtypes)."""
    wide = build(4, 0.6, n_layers=4, norm="constant", norm_beta=1.0, activation="relu")

    def scaled(path, x):  # zero queries: uniform causal attention, the same in both dtypes
        name = jax.tree_util.keystr(path)
        return x * 1e4 if "mlp" in name else 0 * x if "wq" in name else x

    nnx.update(wide, jax.tree_util.tree_map_with_path(scaled, nnx.state(wide, nnx.Param)))
    small = rebuild(wide, dtype="float32", param_dtype="float32",
                    softmax_dtype="float32")
    ref = np.log(np.asarray(path_bound(wide, TOKENS)))
    assert np.isfinite(ref).all() and ref.max() > np.log(np.finfo(np.float32).max)
    np.testing.assert_allclose(log_path_terms(small, TOKENS).log_bound, ref, rtol=1e-5)


def test_bad_inputs(live):
    model, _ = live
    with pytest.raises(ValueError, match="norm"):
        log_path_terms(model, TOKENS, norm="nuclear")
    with pytest.raises(ValueError, match="beta"):
        log_path_terms(model, TOKENS, beta=0.0)
    with pytest.raises(NotImplementedError, match="constants='local'"):
        log_path_terms(model, TOKENS, constants="global")
