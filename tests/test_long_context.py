"""Long-context memory switches (query blocks, layer-by-layer rematerialisation): the same
numbers as the plain path and as `jax.jacrev` of the full forward pass, and XLA's compiled
memory growing linearly in n with the cotangent chunk held fixed (issue 8)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from analysis.jacobian import last_token_jacobian
from analysis.memory import MemoryPlan, memory_plan
from analysis.runners import ROWS as _ROWS
from analysis.runners import _after
from analysis.sensitivity import estimate_sensitivity, sensitivity_profile
from tests.test_jacobian import full_jacrev, small_model
from transformer import Decoder, TransformerConfig

jax.config.update("jax_enable_x64", True)

PLANS = [(3, False), (None, True), (4, True)]  # (None, False) is the tested plain path


@pytest.mark.parametrize(
    "overrides",
    [dict(n_layers=3), dict(n_layers=3, pos_encoding="alibi", norm_placement="post"),
     dict(window=(4, None), norm_placement="sandwich", attn_logit_softcap=2.0)],
    ids=["rope", "alibi-post", "window-sandwich"],
)
def test_every_plan_gives_the_reference_jacobian(overrides):
    model = small_model(seed=3, **overrides)
    v0 = model.embed(jnp.arange(11) % 16)
    ref = np.asarray(full_jacrev(model, v0))
    for query_block, remat in PLANS:
        jac = last_token_jacobian(model, v0, query_block=query_block, remat=remat, chunk_size=3)
        np.testing.assert_allclose(np.asarray(jac), ref, atol=1e-12, rtol=0,
                                   err_msg=f"query_block={query_block}, remat={remat}")
    frozen = np.asarray(full_jacrev(model, v0, freeze_attention=True))
    jac = last_token_jacobian(model, v0, query_block=2, remat=True, freeze_attention=True)
    np.testing.assert_allclose(np.asarray(jac), frozen, atol=1e-12, rtol=0)
    # Of an intermediate stream: d v_n^(L-1) / d v^(0) (no final norm).
    mid = model.config.n_layers - 1
    ref_mid = np.asarray(full_jacrev(model, v0, stop_layer=mid))
    jac = last_token_jacobian(model, v0, of_layer=mid, query_block=4, remat=True)
    np.testing.assert_allclose(np.asarray(jac), ref_mid, atol=1e-12, rtol=0)


def test_causal_blocks_of_the_automatic_plan_give_the_reference_jacobian():
    """From n = 128 on, inputs that are not query-blocked run in causal query blocks (a
    speed switch): the Jacobian is still jax.jacrev's of the plain forward pass."""
    model = small_model(seed=5, n_layers=3, max_len=160, window=(None, 40, None))
    v0 = model.embed(jnp.arange(130) % 16)
    assert memory_plan(model, 130, 3).causal_blocks > 1
    ref = np.asarray(full_jacrev(model, v0))
    for remat in (False, True):
        jac = last_token_jacobian(model, v0, remat=remat, chunk_size=3)
        np.testing.assert_allclose(np.asarray(jac), ref, atol=1e-12, rtol=0)
    fwd = last_token_jacobian(model, v0, mode="forward")
    np.testing.assert_allclose(np.asarray(fwd), ref, atol=1e-12, rtol=0)


def test_profiles_and_estimates_agree_across_plans():
    model = small_model(seed=4, n_layers=3)
    v0 = model.embed(jnp.arange(13) % 16)
    for norm in ("fro", "linf", "l1"):
        plain = sensitivity_profile(model, v0, norm=norm, query_block=None, remat=False)
        low = sensitivity_profile(model, v0, norm=norm, query_block=4, remat=True, chunk_size=3)
        np.testing.assert_allclose(np.asarray(low), np.asarray(plain), atol=1e-12, rtol=0)
    e_plain, s_plain = estimate_sensitivity(model, v0, n_probes=5, query_block=None, remat=False)
    e_low, s_low = estimate_sensitivity(model, v0, n_probes=5, query_block=2, remat=True,
                                        chunk_size=2)
    np.testing.assert_allclose(np.asarray(e_low), np.asarray(e_plain), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(s_low), np.asarray(s_plain), rtol=1e-10)


def test_after_returns_x_bit_for_bit_whatever_g_holds():
    # (Subnormals are left out: XLA:CPU flushes them to zero in every arithmetic op, this
    # subtraction and the layer's own first operation alike.)
    x = jnp.asarray([[0.0, -0.0, 1.5, -2.0, jnp.inf, -jnp.inf, 1e-300, jnp.nan]])
    bits = np.asarray(x).view(np.uint64)[:, :7]
    for first in (3.0, -3.0, 0.0, -0.0, jnp.inf, -jnp.inf, jnp.nan):
        out = np.asarray(_after(x, jnp.asarray([first, 1.0])))
        np.testing.assert_array_equal(out.view(np.uint64)[:, :7], bits)
        assert np.isnan(out[0, 7])


def test_memory_plan_resolves_and_validates():
    model = small_model()
    assert memory_plan(model, 100, 2) == MemoryPlan(None, False)
    assert memory_plan(model, 2047, 2).query_block is None
    assert memory_plan(model, 2048, 2).query_block == 256
    assert memory_plan(model, 100, 2, query_block=8, remat=True) == MemoryPlan(8, True)
    assert memory_plan(model, 128, 2).causal_blocks == 4  # speed: causal query blocks
    assert memory_plan(model, 128, 2, query_block=8).causal_blocks == 1  # one or the other
    assert memory_plan(model, 1024, 2).causal_blocks == 4
    assert memory_plan(model, 2048, 2).causal_blocks == 1
    encoder = small_model(causal=False, pos_encoding="learned", max_len=128)
    assert memory_plan(encoder, 128, 2).causal_blocks == 1
    big = Decoder(TransformerConfig.smollm2_135m(max_len=16), rngs=nnx.Rngs(0))
    assert memory_plan(big, 8192, 30).remat  # ~30 layers of residuals: > 2 GiB
    for bad in (0, 2.5, "big", True):
        with pytest.raises(ValueError, match="query_block"):
            memory_plan(model, 10, 2, query_block=bad)
    with pytest.raises(ValueError, match="remat"):
        memory_plan(model, 10, 2, remat="yes")
    with pytest.raises(ValueError, match="query_block"):
        last_token_jacobian(model, jnp.arange(5), query_block=-1)


# ---- memory: XLA's own buffer assignment, from compiling (nothing is run) -----------------


def compiled_temp_bytes(n: int, plan: MemoryPlan, *, n_layers: int = 3, chunk: int = 4) -> int:
    """Temporary bytes XLA allocates for the VJP rows of a [n]-position input (8 rows,
    `chunk` at a time), float32, d_model 32, 4 heads."""
    config = TransformerConfig(
        vocab_size=16, d_model=32, n_layers=n_layers, n_heads=4, n_kv_heads=2, d_head=8,
        d_mlp=64, max_len=n, pos_encoding="rope", norm="rmsnorm",
    )
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))
    v = jax.ShapeDtypeStruct((n, 32), jnp.float32)
    cot = jax.ShapeDtypeStruct((8, 32), jnp.float32)
    compiled = _ROWS[0].lower(graphdef, state, v, cot, wrt_layer=0, freeze_attention=False,
                              chunk=chunk, reduce="sq", plan=plan).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_blocked_memory_grows_linearly_in_n_and_whole_attention_quadratically():
    low = MemoryPlan(query_block=64, remat=True)
    plain = MemoryPlan(query_block=None, remat=False)
    low_sizes = [compiled_temp_bytes(n, low) for n in (512, 1024, 2048)]
    plain_sizes = [compiled_temp_bytes(n, plain) for n in (512, 1024, 2048)]
    low_growth = [b / a for a, b in zip(low_sizes, low_sizes[1:])]
    plain_growth = [b / a for a, b in zip(plain_sizes, plain_sizes[1:])]
    assert all(1.5 < g < 2.3 for g in low_growth), (low_sizes, low_growth)  # ~2x per doubling
    assert all(g > 3.0 for g in plain_growth), (plain_sizes, plain_growth)  # ~4x per doubling
    assert low_sizes[-1] < plain_sizes[-1] / 8


def test_layer_by_layer_remat_keeps_one_layer_live():
    """Each extra layer costs about its saved input with remat; about all its residuals
    without (the ordering `_after` forces is what XLA:CPU's scheduler otherwise ignores)."""
    def per_layer(plan):
        return (compiled_temp_bytes(1024, plan, n_layers=6, chunk=1)
                - compiled_temp_bytes(1024, plan, n_layers=2, chunk=1)) / 4
    with_remat = per_layer(MemoryPlan(query_block=None, remat=True))
    without = per_layer(MemoryPlan(query_block=None, remat=False))
    assert with_remat < without / 4, (with_remat, without)
