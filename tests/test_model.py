"""The decoder against an independent float64 reference, and its invariants."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import make_model, randomized
from tests.reference import ref_alibi_slopes, ref_forward
from transformer.layers import ACTIVATION_FNS, gated_product
from transformer import (
    Decoder,
    TransformerConfig,
    alibi_slopes,
    apply_rope,
    count_params,
    greedy_generate,
    rebuild,
)

F64 = dict(dtype="float64", param_dtype="float64", softmax_dtype="float64")
TOKENS = np.array([3, 17, 5, 5, 30, 0, 9, 12, 12, 4, 1])


def _check_against_reference(model):
    logits = model(jnp.asarray(TOKENS))
    y = model.forward_from_embeddings(model.embed(jnp.asarray(TOKENS))).y
    ref_y, ref_logits = ref_forward(model.config, nnx.to_pure_dict(nnx.state(model, nnx.Param)), TOKENS)
    assert logits.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(y), ref_y, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=0, atol=1e-10)


@pytest.mark.parametrize("pos", ["none", "sinusoidal", "learned", "rope", "alibi"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm", "none", "constant"])
def test_matches_float64_reference_for_every_position_and_norm(pos, norm):
    extra = {"norm_beta": 3.0} if norm == "constant" else {}
    _check_against_reference(make_model(seed=1, pos_encoding=pos, norm=norm, **extra, **F64))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(norm_placement="post"),
        dict(norm_placement="sandwich", norm="rmsnorm", rmsnorm_unit_offset=True),
        dict(n_kv_heads=1),  # MQA
        dict(n_kv_heads=4),  # MHA
        dict(gated=True, activation="silu"),
        dict(gated=True, activation="gelu_tanh", mlp_bias=True),
        dict(activation="relu"),
        dict(activation="gelu"),
        dict(window=3),
        dict(window=(2, None)),
        dict(causal=False, pos_encoding="none"),
        dict(causal=False, window=4, pos_encoding="alibi"),
        dict(qkv_bias=True, out_bias=True),
        dict(attn_logit_softcap=0.5, final_logit_softcap=2.0, query_scale=0.7),
        dict(tie_embeddings=False, embedding_scale=math.sqrt(32)),
        dict(rope_fraction=0.5, rope_theta=500.0),
        dict(d_head=12),  # d_head independent of d_model / n_heads
        dict(norm="layernorm", norm_bias=False),
        dict(final_norm=False),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_matches_float64_reference_for_other_switches(overrides):
    _check_against_reference(make_model(seed=2, **{**F64, **overrides}))


@pytest.mark.parametrize("placement", ["residual", "scores"])
@pytest.mark.parametrize("pos", ["sinusoidal", "learned"])
@pytest.mark.parametrize("norm_placement", ["pre", "post", "sandwich"])
def test_absolute_positions_in_residual_or_scores_match_the_reference(
    placement, pos, norm_placement
):
    extra = dict(norm="rmsnorm", rmsnorm_unit_offset=True) if norm_placement == "sandwich" else {}
    model = make_model(seed=4, pos_encoding=pos, abs_pos_placement=placement,
                       norm_placement=norm_placement, qkv_bias=True, **extra, **F64)
    _check_against_reference(model)


def test_positions_in_the_scores_never_reach_values_or_residual():
    """With positions in the scores only, v^(0) carries no position, a permutation-free
    signal: one layer's values do not depend on p (zero Jacobian of the values)."""
    cfg = dict(seed=5, pos_encoding="sinusoidal", **F64)
    residual = make_model(**cfg, abs_pos_placement="residual")
    scores = make_model(**cfg, abs_pos_placement="scores")
    tokens = jnp.asarray(TOKENS)
    table = residual.embedding[...][TOKENS]
    np.testing.assert_array_equal(np.asarray(scores.embed(tokens)), np.asarray(table))
    assert np.abs(np.asarray(residual.embed(tokens)) - np.asarray(table)).max() > 0.1
    # keys see p, values do not
    attn = scores.blocks[0].attn
    x = jnp.zeros((1, 3, scores.config.d_model))
    pos = jnp.arange(3)[None]
    k, v = attn.project_kv(x, pos)
    assert np.abs(np.asarray(k)).max() > 0 and np.abs(np.asarray(v)).max() == 0
    q, k2, v2 = attn.project_qkv(x, pos)
    assert np.abs(np.asarray(q)).max() > 0
    np.testing.assert_allclose(np.asarray(k2), np.asarray(k), atol=1e-12)
    assert np.abs(np.asarray(v2)).max() == 0


def test_learned_positions_in_scores_need_the_decoder_vectors():
    model = make_model(seed=6, pos_encoding="learned", abs_pos_placement="scores", **F64)
    x = jnp.zeros((1, 3, model.config.d_model))
    with pytest.raises(ValueError, match="pass pos_vectors"):
        model.blocks[0].attn.project_kv(x, jnp.arange(3)[None])
    p = model.score_positions(jnp.arange(3)[None])
    np.testing.assert_array_equal(np.asarray(p[0]), np.asarray(model.pos_embedding[...][:3]))
    assert make_model(seed=6, pos_encoding="rope", abs_pos_placement="scores",
                      **F64).score_positions(jnp.arange(3)[None]) is None


def _jacobian_of_states(model, n=8):
    v0 = model.embed(jnp.arange(n) % model.config.vocab_size)
    f = lambda v: model.forward_from_embeddings(v).y  # noqa: E731
    return np.asarray(jax.jacrev(f)(v0))  # [n, m, n, m]


def test_future_positions_have_exactly_zero_influence():
    jac = _jacobian_of_states(make_model(seed=3, **F64))
    n = jac.shape[0]
    for i in range(n):
        for j in range(n):
            block = np.abs(jac[i, :, j, :]).max()
            if j > i:
                assert block == 0.0, (i, j)
            else:
                assert block > 0.0, (i, j)


@pytest.mark.parametrize("n_layers,window", [(1, 3), (2, 3), (3, 2)])
def test_window_gives_exactly_zero_blocks_beyond_its_reach(n_layers, window):
    model = make_model(seed=4, n_layers=n_layers, window=window, **F64)
    jac = _jacobian_of_states(model, n=10)
    reach = n_layers * (window - 1)  # each layer looks back window - 1 positions
    for i in range(10):
        for j in range(10):
            zero = np.abs(jac[i, :, j, :]).max() == 0.0
            assert zero == (j > i or i - j > reach), (i, j)


def test_bidirectional_nope_is_permutation_equivariant():
    model = make_model(seed=5, causal=False, pos_encoding="none", **F64)
    tokens = jnp.asarray(TOKENS)
    perm = np.random.default_rng(0).permutation(len(TOKENS))
    y = model.forward_from_embeddings(model.embed(tokens)).y
    y_perm = model.forward_from_embeddings(model.embed(tokens[perm])).y
    np.testing.assert_allclose(np.asarray(y_perm), np.asarray(y)[perm], atol=1e-12)
    # Causal NoPE is not: the mask breaks the symmetry.
    causal = make_model(seed=5, pos_encoding="none", **F64)
    yc = causal.forward_from_embeddings(causal.embed(tokens)).y
    yc_perm = causal.forward_from_embeddings(causal.embed(tokens[perm])).y
    assert np.abs(np.asarray(yc_perm) - np.asarray(yc)[perm]).max() > 1e-6


def test_rope_scores_depend_only_on_relative_position():
    model = make_model(seed=6, pos_encoding="rope", **F64)
    v0 = model.embed(jnp.asarray(TOKENS))
    n = len(TOKENS)
    scores = [
        model.forward_from_embeddings(v0, capture=True, positions=jnp.arange(n) + shift)
        .intermediates.attn_scores
        for shift in (0, 37, 1000)
    ]
    causal = np.tril(np.ones((n, n), bool))
    for s in scores[1:]:
        np.testing.assert_allclose(
            np.asarray(s)[..., causal], np.asarray(scores[0])[..., causal], atol=1e-9
        )
    # Directly: <R(p) q, R(p') k> is a function of p - p' only, and not constant in it.
    rng = np.random.default_rng(0)
    q, k = (jnp.asarray(rng.normal(size=(1, 1, 1, 16))) for _ in range(2))

    def dot(pq, pk):
        rq = apply_rope(q, jnp.array([[pq]]), 16, 10000.0)
        rk = apply_rope(k, jnp.array([[pk]]), 16, 10000.0)
        return float((rq * rk).sum())

    assert dot(5, 2) == pytest.approx(dot(105, 102), abs=1e-10)
    assert dot(5, 2) != pytest.approx(dot(5, 3), abs=1e-6)


def test_alibi_slopes_match_the_published_sequence():
    np.testing.assert_allclose(alibi_slopes(8), [2.0**-i for i in range(1, 9)], rtol=1e-15)
    np.testing.assert_allclose(alibi_slopes(4), [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8], rtol=1e-15)
    np.testing.assert_allclose(alibi_slopes(16), ref_alibi_slopes(16), rtol=1e-15)
    # Not a power of two: the 8-head slopes followed by every other 16-head slope.
    expected_12 = [2.0**-i for i in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5]
    np.testing.assert_allclose(alibi_slopes(12), expected_12, rtol=1e-15)


F32 = dict(dtype="float32", param_dtype="float32")


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(pos_encoding="learned", window=3), dict(pos_encoding="alibi", n_kv_heads=1),
     dict(pos_encoding="sinusoidal", norm_placement="sandwich", norm="rmsnorm"),
     dict(pos_encoding="learned", abs_pos_placement="scores")],
)
def test_cached_decoding_equals_full_forward(overrides):
    model = make_model(seed=7, **{**F32, **overrides})
    tokens = jnp.asarray(TOKENS)
    full = np.asarray(model(tokens))
    # One token at a time.
    cache = model.init_cache(1, 16)
    step_logits = []
    for t in range(len(TOKENS)):
        out, cache = model.decode(tokens[t : t + 1], cache)
        step_logits.append(np.asarray(out.logits))
    np.testing.assert_allclose(np.concatenate(step_logits), full, atol=1e-5, rtol=0)
    # Chunks of uneven size, batched rows.
    cache = model.init_cache(2, 16)
    batch = jnp.stack([tokens, tokens])
    parts = []
    for lo, hi in [(0, 4), (4, 5), (5, 11)]:
        out, cache = model.decode(batch[:, lo:hi], cache)
        parts.append(np.asarray(out.logits))
    np.testing.assert_allclose(np.concatenate(parts, axis=1)[1], full, atol=1e-5, rtol=0)
    assert int(cache.length[0]) == len(TOKENS)


def test_batched_branches_off_one_prefix_equal_full_forwards():
    model = make_model(seed=8, **F32)
    tokens = jnp.asarray(TOKENS)
    _, cache = model.decode(tokens, model.init_cache(1, 16))
    continuation = jnp.array([[7, 2], [1, 1], [0, 31], [5, 6]])
    prefix_lengths = jnp.array([11, 3, 1, 6])
    out = model.branch(cache, continuation, prefix_lengths)
    # Reference: one batched full forward of each branch's whole sequence, right-padded
    # (causality: padding after a position cannot change it).
    rows = []
    for b in range(4):
        seq = np.concatenate([TOKENS[: int(prefix_lengths[b])], np.asarray(continuation[b])])
        rows.append(np.pad(seq, (0, 13 - len(seq))))
    full = np.asarray(model(jnp.asarray(np.stack(rows))))
    for b in range(4):
        p = int(prefix_lengths[b])
        np.testing.assert_allclose(
            np.asarray(out.logits[b]), full[b, p : p + 2], atol=1e-5, rtol=0
        )


def test_capture_does_not_change_a_bit_and_has_the_documented_shapes():
    model = make_model(seed=9, **F32)
    tokens = jnp.asarray(TOKENS)
    plain = model(tokens)
    logits, inter = model(tokens, capture=True)
    assert np.array_equal(np.asarray(plain), np.asarray(logits))
    n, c = len(TOKENS), model.config
    assert inter.resid_pre.shape == (c.n_layers, n, c.d_model)
    assert inter.resid_mid.shape == (c.n_layers, n, c.d_model)
    assert inter.attn_pattern.shape == (c.n_layers, c.n_heads, n, n)
    np.testing.assert_allclose(np.asarray(inter.attn_pattern.sum(-1)), 1.0, atol=1e-6)
    # resid_post of layer l is resid_pre of layer l + 1; v^(0) is the embedding.
    assert np.array_equal(np.asarray(inter.resid_post[0]), np.asarray(inter.resid_pre[1]))
    assert np.array_equal(np.asarray(inter.resid_pre[0]), np.asarray(model.embed(tokens)))
    # Batched capture keeps the batch axis after the layer axis.
    _, inter_b = model(jnp.stack([tokens, tokens]), capture=True)
    assert inter_b.attn_pattern.shape == (c.n_layers, 2, c.n_heads, n, n)


def test_start_and_stop_layer_compose_to_the_full_forward():
    model = make_model(seed=10, n_layers=3, **F64)
    v0 = model.embed(jnp.asarray(TOKENS))
    full = model.forward_from_embeddings(v0)
    mid = model.forward_from_embeddings(v0, stop_layer=2)
    assert mid.logits is None
    rest = model.forward_from_embeddings(mid.y, start_layer=2)
    np.testing.assert_allclose(np.asarray(rest.logits), np.asarray(full.logits), atol=1e-12)
    _, inter = model(jnp.asarray(TOKENS), capture=True)
    np.testing.assert_allclose(np.asarray(mid.y), np.asarray(inter.resid_post[1]), atol=1e-12)


def test_frozen_attention_matches_the_analytic_jacobian_with_fixed_pattern():
    """One layer, constant norms, MLP switched off: y = (v + A (v / b1) W_VO) / b3 with A held
    fixed, so d y_n / d v_i = (delta_ni I + sum_h A^h_ni (W_V^h W_O^h)^T / b1) / b3."""
    b = 2.0
    model = make_model(seed=11, n_layers=1, norm="constant", norm_beta=b, pos_encoding="rope", **F64)
    blk = model.blocks[0]
    blk.mlp.w_down[...] = jnp.zeros_like(blk.mlp.w_down[...])
    v0 = model.embed(jnp.asarray(TOKENS))
    n, m = v0.shape
    f = lambda v, frozen: model.forward_from_embeddings(v, freeze_attention=frozen).y[-1]  # noqa
    frozen = np.asarray(jax.jacrev(f)(v0, True))  # [m, n, m]
    live = np.asarray(jax.jacrev(f)(v0, False))
    _, inter = model(jnp.asarray(TOKENS), capture=True)
    A = np.asarray(inter.attn_pattern[0])  # [h, n, n]
    wv, wo = np.asarray(blk.attn.wv[...]), np.asarray(blk.attn.wo[...])
    r = model.config.n_groups
    expected = np.zeros((m, n, m))
    for i in range(n):
        block = np.eye(m) * (i == n - 1)
        for h in range(model.config.n_heads):
            w_vo = wv[:, h // r, :] @ wo[h]  # [m_in, m_out]
            block = block + A[h, n - 1, i] * w_vo.T / b
        expected[:, i, :] = block / b
    np.testing.assert_allclose(frozen, expected, atol=1e-12)
    assert np.abs(live - frozen).max() > 1e-6  # the live pattern does depend on v


def test_freezing_attention_leaves_the_values_unchanged():
    model = make_model(seed=12, **F32)
    v0 = model.embed(jnp.asarray(TOKENS))
    a = model.forward_from_embeddings(v0).logits
    b = model.forward_from_embeddings(v0, freeze_attention=True).logits
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_same_seed_same_params_and_different_seed_different():
    c = TransformerConfig.tiny(**F32)
    s0 = jax.tree.leaves(nnx.state(Decoder(c, rngs=nnx.Rngs(0)), nnx.Param))
    s0b = jax.tree.leaves(nnx.state(Decoder(c, rngs=nnx.Rngs(0)), nnx.Param))
    s1 = jax.tree.leaves(nnx.state(Decoder(c, rngs=nnx.Rngs(1)), nnx.Param))
    assert all(np.array_equal(a, b) for a, b in zip(s0, s0b))
    assert not all(np.array_equal(a, b) for a, b in zip(s0, s1))


def test_precision_controls():
    model = make_model(seed=13, **F32)
    tokens = jnp.asarray(TOKENS)
    bf = rebuild(model, dtype="bfloat16", param_dtype="bfloat16")
    logits, inter = bf(tokens, capture=True)
    assert logits.dtype == jnp.bfloat16
    assert inter.attn_pattern.dtype == jnp.float32  # softmax kept in float32 by default
    low = rebuild(model, dtype="bfloat16", softmax_dtype="bfloat16")
    assert low(tokens, capture=True)[1].attn_pattern.dtype == jnp.bfloat16
    half = rebuild(model, dtype="float16")
    err = np.abs(np.asarray(half(tokens), np.float64) - np.asarray(model(tokens))).max()
    assert 0 < err < 0.05  # float16 rounds, but stays close
    assert model.embedding[...].dtype == jnp.float32  # the original is untouched


def test_greedy_generate_matches_argmax_of_full_forwards():
    model = make_model(seed=14, **F32)
    prompt = jnp.asarray(TOKENS[:5])
    generated = np.asarray(greedy_generate(model, prompt, 8))
    # Causality: one full forward of prompt + generated gives every step's next-token logits.
    full = np.asarray(model(jnp.concatenate([prompt, jnp.asarray(generated)])))
    assert generated.tolist() == np.argmax(full[4:12], axis=-1).tolist()


def test_presets_have_the_published_sizes():
    def params_of(config):
        return count_params(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))

    assert params_of(TransformerConfig.gpt2_small()) == 124_439_808
    assert params_of(TransformerConfig.smollm2_135m()) == 134_515_008
    tiny = TransformerConfig.tiny()
    assert Decoder(tiny, rngs=nnx.Rngs(0))(jnp.arange(4)).shape == (4, tiny.vocab_size)


# ---- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(n_heads=4, n_kv_heads=3), "not divisible by n_kv_heads"),
        (dict(d_model=30, n_heads=4, d_head=None), "set d_head"),
        (dict(window=0), "window must be >= 1"),
        (dict(window=(2, 3, 4)), "window has 3 entries"),
        (dict(pos_encoding="absolute"), "pos_encoding='absolute'"),
        (dict(norm="batchnorm"), "norm='batchnorm'"),
        (dict(norm_placement="middle"), "norm_placement"),
        (dict(activation="tanh"), "activation"),
        (dict(dtype="int8"), "dtype"),
        (dict(n_layers=0), "n_layers must be a positive integer"),
        (dict(rope_fraction=0.0), "rope_fraction"),
        (dict(norm="constant", norm_beta=0.0), "norm_beta"),
        (dict(attn_logit_softcap=-1.0), "attn_logit_softcap"),
    ],
)
def test_invalid_configs_raise_clear_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        TransformerConfig.tiny(**overrides)


def test_float64_without_x64_is_a_clear_error():
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            Decoder(TransformerConfig.tiny(dtype="float64"), rngs=nnx.Rngs(0))
    finally:
        jax.config.update("jax_enable_x64", True)


def test_bad_inputs_raise_clear_errors():
    model = make_model(seed=15, pos_encoding="learned", max_len=16, **F32)
    with pytest.raises(ValueError, match=r"vocab_size=32\), got values in \[0, 32\]"):
        model(jnp.array([0, 32]))
    with pytest.raises(ValueError, match=r"got values in \[-1"):
        model(jnp.array([-1, 3]))
    with pytest.raises(ValueError, match="integer ids"):
        model(jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="shape"):
        model(jnp.zeros((1, 2, 3), jnp.int32))
    with pytest.raises(ValueError, match="empty"):
        model(jnp.zeros((0,), jnp.int32))
    with pytest.raises(ValueError, match="exceeds max_len=16"):
        model(jnp.zeros((17,), jnp.int32))
    with pytest.raises(ValueError, match="width 5 but d_model=32"):
        model.forward_from_embeddings(jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match="floating point"):
        model.forward_from_embeddings(jnp.zeros((3, 32), jnp.int32))
    with pytest.raises(ValueError, match="start_layer"):
        model.forward_from_embeddings(jnp.zeros((3, 32)), start_layer=2, stop_layer=1)
    cache = model.init_cache(1, 4)
    with pytest.raises(ValueError, match="capacity 4"):
        model.decode(jnp.arange(5), cache)
    _, cache = model.decode(jnp.arange(3), cache)
    with pytest.raises(ValueError, match="prefix_lengths must lie in"):
        model.branch(cache, jnp.array([[1]]), jnp.array([4]))
    with pytest.raises(ValueError, match="batch"):
        model.branch(cache, jnp.array([[1], [2]]), jnp.array([1]))
    with pytest.raises(ValueError, match=r"rebuild\(n_layers=3\) changes the model's parameters"):
        rebuild(model, n_layers=3)


def test_randomized_helper_really_changes_norm_parameters():
    # Guards the reference tests: ones/zeros initialisation would hide offset mistakes.
    model = randomized(Decoder(TransformerConfig.tiny(**F32), rngs=nnx.Rngs(0)), seed=1)
    scale = np.asarray(model.blocks[0].attn_norm.scale[...])
    assert np.abs(scale - 1.0).max() > 0.01


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(pos_encoding="alibi", n_kv_heads=1), dict(window=(3, None)),
     dict(causal=False, pos_encoding="learned"),
     dict(attn_logit_softcap=0.5, norm_placement="sandwich", norm="rmsnorm")],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default",
)
def test_query_blocks_give_the_same_numbers_and_gradients(overrides):
    model = make_model(seed=9, **{**F64, **overrides})
    tokens = jnp.stack([jnp.asarray(TOKENS), jnp.asarray(TOKENS[::-1])])  # [2, 11]
    v0 = model.embed(tokens)

    def y(v, block, freeze=False):
        return model.forward_from_embeddings(v, query_block=block, freeze_attention=freeze).y

    whole = np.asarray(y(v0, None))
    for block in (1, 4, 50):  # 4 leaves a ragged last block; >= n is a no-op
        np.testing.assert_allclose(np.asarray(y(v0, block)), whole, atol=1e-12, rtol=0)
    for freeze in (False, True):
        loss = lambda v, b: jnp.sum(jnp.sin(y(v, b, freeze)))  # noqa: E731
        g_whole = np.asarray(jax.grad(loss)(v0, None))
        g_block = np.asarray(jax.grad(loss)(v0, 3))
        np.testing.assert_allclose(g_block, g_whole, atol=1e-11, rtol=0)


def test_query_blocks_attend_to_cached_context_like_whole_attention():
    model = make_model(seed=10, **F64)
    tokens = jnp.asarray(TOKENS)
    _, cache = model.decode(tokens[:5], model.init_cache(1, 16))
    positions = jnp.arange(5, 11)[None]
    valid = jnp.arange(16)[None] < 5
    v = model.embed(tokens[None, 5:], positions)
    run = lambda block: model.forward_from_embeddings(  # noqa: E731
        v, positions=positions, context=(cache.keys, cache.values, valid), query_block=block
    ).y
    np.testing.assert_allclose(np.asarray(run(4)), np.asarray(run(None)), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(pos_encoding="alibi", n_kv_heads=1, window=(3, None), attn_logit_softcap=0.5,
                  norm_placement="sandwich", norm="rmsnorm")],
    ids=["default", "alibi-mqa-window-softcap-sandwich"],
)
def test_causal_blocks_skip_masked_keys_without_changing_numbers_or_gradients(overrides):
    """Blocks of queries that attend only up to their own last key give the whole-matrix
    layer outputs and VJPs (what analysis.runners runs for n >= 128)."""
    model = make_model(seed=11, **{**F64, **overrides})
    tokens = jnp.stack([jnp.asarray(TOKENS), jnp.asarray(TOKENS[::-1])])  # [2, 11]
    v0 = model.embed(tokens)
    positions = jnp.broadcast_to(jnp.arange(v0.shape[1]), v0.shape[:2])

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def run(v, blocks, freeze=False):
        for block in model.blocks:
            v = block(v, positions, freeze_attention=freeze, causal_blocks=blocks).resid_post
        return v

    # 4 blocks of 11 queries: 3, 3, 3, 2 (a ragged last block)
    np.testing.assert_allclose(np.asarray(run(v0, 4)), np.asarray(run(v0, 1)), atol=1e-12, rtol=0)
    for freeze in (False, True):
        loss = lambda v, b: jnp.sum(jnp.sin(run(v, b, freeze)))  # noqa: E731
        np.testing.assert_allclose(np.asarray(jax.grad(loss)(v0, 4)),
                                   np.asarray(jax.grad(loss)(v0, 1)), atol=1e-11, rtol=0)
    out = model.blocks[0](v0, positions, causal_blocks=2)
    assert out.attn.scores is None and out.attn.pattern is None  # no whole score matrix exists


def test_causal_blocks_reject_what_they_cannot_do():
    model = make_model(seed=0, **F64)
    v0 = model.embed(jnp.asarray(TOKENS)[None])
    positions = jnp.arange(v0.shape[1])[None]
    block = model.blocks[0]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="causal_blocks"):
            block(v0, positions, causal_blocks=bad)
    with pytest.raises(ValueError, match="not both"):
        block(v0, positions, causal_blocks=2, query_block=4)
    bidirectional = make_model(seed=0, causal=False, pos_encoding="learned", **F64).blocks[0]
    with pytest.raises(ValueError, match="causal model"):
        bidirectional(v0, positions, causal_blocks=2)
    keys = jnp.zeros((1, 4, model.config.n_kv_heads or model.config.n_heads, model.config.d_head))
    with pytest.raises(ValueError, match="cached context"):
        block(v0, positions + 4, (keys, keys, jnp.ones((1, 4), bool)), causal_blocks=2)


def test_query_block_rejects_capture_and_bad_sizes():
    model = make_model(seed=0, **F64)
    v0 = model.embed(jnp.asarray(TOKENS))
    with pytest.raises(ValueError, match="capture"):
        model.forward_from_embeddings(v0, capture=True, query_block=4)
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="query_block"):
            model.forward_from_embeddings(v0, query_block=bad)


@pytest.mark.parametrize("activation", ["silu", "gelu", "gelu_tanh", "relu"])
def test_gated_product_derivatives_equal_autodiff_of_the_plain_product(activation):
    """`gated_product` has a hand-written JVP (fixed slopes); its values, JVPs, VJPs and
    second derivatives equal those of act(gate) * up differentiated by JAX itself."""
    act = ACTIVATION_FNS[activation]
    plain = lambda gu: act(gu[..., :5]) * gu[..., 5:]  # noqa: E731
    ours = functools.partial(gated_product, act)
    x = jax.random.normal(jax.random.key(0), (3, 10), jnp.float64)
    t = jax.random.normal(jax.random.key(1), (3, 10), jnp.float64)
    np.testing.assert_array_equal(np.asarray(ours(x)), np.asarray(plain(x)))
    np.testing.assert_allclose(jax.jvp(ours, (x,), (t,))[1], jax.jvp(plain, (x,), (t,))[1],
                               rtol=1e-13, atol=1e-14)
    loss = lambda f: lambda v: jnp.sum(jnp.cos(f(v)))  # noqa: E731
    np.testing.assert_allclose(jax.grad(loss(ours))(x), jax.grad(loss(plain))(x),
                               rtol=1e-13, atol=1e-14)
    hvp = lambda f: jax.jvp(jax.grad(loss(f)), (x,), (t,))[1]  # noqa: E731
    np.testing.assert_allclose(hvp(ours), hvp(plain), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(qkv_bias=True, qk_norm=True, rope_fraction=0.5, n_kv_heads=1)],
    ids=["default", "bias-qknorm-partial-rope-mqa"],
)
def test_fused_qkv_projection_gives_the_keys_and_values_of_project_kv(overrides):
    """The layers project q, k, v in one matmul; the last-layer trick of `analysis` takes
    the keys and values of earlier positions from `project_kv`: they must agree."""
    model = make_model(seed=5, **{**F64, **overrides})
    attn = model.blocks[0].attn
    x = model.embed(jnp.asarray(TOKENS))[None]
    positions = jnp.arange(len(TOKENS))[None]
    q, k, v = attn.project_qkv(x, positions)
    k_ref, v_ref = attn.project_kv(x, positions)
    np.testing.assert_allclose(np.asarray(k), np.asarray(k_ref), rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.asarray(v), np.asarray(v_ref), rtol=0, atol=1e-14)
    c = model.config
    assert q.shape == (1, len(TOKENS), c.n_heads, c.d_head)
