"""Last-token Jacobians and sensitivity profiles (R7, R11) against independent references:
central finite differences, plain `jax.jacrev` of the full forward pass, NumPy norms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from analysis.jacobian import last_token_jacobian
from analysis.sensitivity import (
    block_norms,
    estimate_sensitivity,
    layer_position_map,
    sensitivity_profile,
)
from tests.helpers import randomized
from transformer import Decoder, TransformerConfig

jax.config.update("jax_enable_x64", True)

F64 = dict(dtype="float64", param_dtype="float64", softmax_dtype="float64")
# The references are tiny; compile them without LLVM's expensive passes (test time).
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def small_model(seed=0, **overrides):
    base = dict(
        vocab_size=16, d_model=8, n_layers=2, n_heads=2, n_kv_heads=1, d_head=4, d_mlp=16,
        max_len=64, **F64,
    )
    base.update(overrides)
    model = Decoder(TransformerConfig(**base), rngs=nnx.Rngs(seed))
    return randomized(model, seed, scale=0.5)


def full_jacrev(model, v0, *, freeze_attention=False, position=-1, stop_layer=None):
    """Reference: reverse mode through the plain full forward pass (no last-query trick)."""

    def f(v):
        out = model.forward_from_embeddings(
            v, freeze_attention=freeze_attention, stop_layer=stop_layer
        )
        return out.y[position]

    return jax.jit(jax.jacrev(f), compiler_options=FAST)(v0)  # [d_out, n, d_in]


def central_differences(model, v0, h=1e-5):
    """[d_out, n, d_in] by central differences of y_n, one batched forward for all inputs."""
    n, m = v0.shape
    f = jax.jit(jax.vmap(lambda v: model.forward_from_embeddings(v).y[-1]), compiler_options=FAST)
    basis = jnp.eye(n * m, dtype=v0.dtype).reshape(n * m, n, m)
    diff = (f(v0 + h * basis) - f(v0 - h * basis)) / (2 * h)  # [n*m, d_out]
    return diff.T.reshape(-1, n, m)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(pos_encoding="rope", norm="layernorm"),
        dict(pos_encoding="alibi", norm="rmsnorm", gated=True, activation="silu",
             norm_placement="sandwich"),
        dict(pos_encoding="sinusoidal", norm="layernorm", norm_placement="post", n_layers=1),
        dict(pos_encoding="learned", abs_pos_placement="scores"),  # positions in the scores
    ],
)
def test_matches_central_differences(overrides):
    model = small_model(**overrides)
    tokens = jnp.array([3, 1, 4, 1, 5, 9])
    v0 = model.embed(tokens)
    jac = last_token_jacobian(model, tokens)
    ref = central_differences(model, v0)
    assert jac.shape == (8, 6, 8)
    rel = float(jnp.abs(jac - ref).max() / jnp.abs(ref).max())
    assert rel < 1e-6, rel
    # Embeddings as input give the same thing.
    np.testing.assert_allclose(last_token_jacobian(model, v0), jac, rtol=0, atol=1e-13)


def test_modes_chunks_frozen_and_of_layer_agree_with_jacrev():
    model = small_model(n_layers=2, window=(None, 3))
    tokens = jnp.array([2, 7, 1, 8, 2, 8, 1])
    v0 = model.embed(tokens)
    ref = full_jacrev(model, v0)
    for jac in (
        last_token_jacobian(model, tokens, mode="reverse"),
        last_token_jacobian(model, tokens, mode="forward", chunk_size=5),  # padded chunks
        last_token_jacobian(model, tokens, chunk_size=3),
    ):
        np.testing.assert_allclose(jac, ref, rtol=0, atol=1e-12)
    frozen = last_token_jacobian(model, tokens, freeze_attention=True)
    np.testing.assert_allclose(
        frozen, full_jacrev(model, v0, freeze_attention=True), rtol=0, atol=1e-12
    )
    # Freezing really changes the Jacobian (the softmax derivative is dropped).
    assert float(jnp.abs(frozen - ref).max()) > 1e-6
    # of_layer / wrt_layer: from and to the residual v^(1) (no final norm on v^(1)).
    v1 = model.forward_from_embeddings(v0, stop_layer=1).y
    np.testing.assert_allclose(
        last_token_jacobian(model, v0, of_layer=1), full_jacrev(model, v0, stop_layer=1),
        atol=1e-12,
    )
    ref1 = jax.jit(
        jax.jacrev(lambda v: model.forward_from_embeddings(v, start_layer=1).y[-1]),
        compiler_options=FAST,
    )(v1)
    np.testing.assert_allclose(last_token_jacobian(model, tokens, wrt_layer=1), ref1, atol=1e-12)
    np.testing.assert_allclose(last_token_jacobian(model, v1, wrt_layer=1), ref1, atol=1e-12)
    # of_layer == wrt_layer: the identity at the last position.
    ident = last_token_jacobian(model, v1, wrt_layer=1, of_layer=1)
    np.testing.assert_array_equal(ident[:, -1], jnp.eye(8))
    np.testing.assert_array_equal(ident[:, :-1], 0.0)


def test_causality_future_positions_have_exactly_zero_influence():
    model = small_model(pos_encoding="rope")
    tokens = jnp.array([5, 3, 0, 9, 4, 4, 7, 1])
    v0 = model.embed(tokens)
    k = 4
    # State of position k in the full sequence: exactly zero dependence on positions > k ...
    full = full_jacrev(model, v0, position=k)
    assert float(jnp.abs(full[:, k + 1 :]).max()) == 0.0
    assert bool((jnp.abs(full[:, : k + 1]).max(axis=(0, 2)) > 0).all())
    # ... and the truncated sequence's last-token Jacobian is the same function.
    trunc = last_token_jacobian(model, tokens[: k + 1])
    np.testing.assert_allclose(trunc, full[:, : k + 1], rtol=0, atol=1e-12)
    # The same after one layer (stop_layer < n_layers: the residual v^(1), no final norm).
    ref = full_jacrev(model, v0, position=k, stop_layer=1)
    assert float(jnp.abs(ref[:, k + 1 :]).max()) == 0.0
    np.testing.assert_allclose(
        last_token_jacobian(model, v0[: k + 1], of_layer=1), ref[:, : k + 1], atol=1e-12
    )


@pytest.mark.parametrize("n_layers,window", [(1, 3), (3, 2)])
def test_window_gives_exactly_zero_blocks_outside_its_reach(n_layers, window):
    model = small_model(n_layers=n_layers, window=window, pos_encoding="none")
    n = 10
    tokens = jnp.arange(n) % 16
    per_position = jnp.abs(last_token_jacobian(model, tokens)).max(axis=(0, 2))
    reach = n_layers * (window - 1)  # positions n-1-reach .. n-1 can influence y_n
    first = n - 1 - reach
    np.testing.assert_array_equal(per_position[:first], 0.0)
    assert bool((per_position[first:] > 0).all())


@pytest.mark.parametrize("norm", ["fro", "spectral", "l1", "linf"])
def test_sensitivity_norms_match_numpy(norm):
    model = small_model()
    tokens = jnp.array([1, 2, 3, 4, 5])
    jac = np.asarray(last_token_jacobian(model, tokens))
    ord_ = {"fro": "fro", "spectral": 2, "l1": 1, "linf": np.inf}[norm]
    expected = [np.linalg.norm(jac[:, i, :], ord=ord_) for i in range(jac.shape[1])]
    np.testing.assert_allclose(block_norms(jnp.asarray(jac), norm), expected, rtol=1e-12)
    np.testing.assert_allclose(sensitivity_profile(model, tokens, norm=norm), expected, rtol=1e-12)


def test_layer_position_map_rows_are_per_layer_profiles():
    model = small_model(n_layers=2)
    tokens = jnp.array([3, 3, 1, 0, 2, 6])
    grid = layer_position_map(model, tokens, norm="fro", chunk_size=3)
    assert grid.shape == (3, 6)
    for layer in range(2):
        expected = sensitivity_profile(model, tokens, norm="fro", wrt_layer=layer)
        np.testing.assert_allclose(grid[layer], expected, rtol=1e-10, atol=1e-14)
    # y_n = norm3(v_n^(L)) reads only the last position of the last stream: row L is the
    # final norm's Jacobian there, and zero elsewhere.
    _, inter = model(tokens, capture=True)
    v_last = inter.resid_post[-1, -1]
    final = jax.jacrev(lambda x: model.final_norm(x[None, None])[0, 0])(v_last)
    np.testing.assert_array_equal(grid[2, :-1], 0.0)
    np.testing.assert_allclose(grid[2, -1], jnp.linalg.norm(final), rtol=1e-12)


def test_hutchinson_estimate_matches_exact_within_standard_errors():
    model = small_model()
    tokens = jnp.array([4, 2, 0, 1, 7, 3, 5])
    jac = np.asarray(last_token_jacobian(model, tokens))
    exact = (jac**2).sum(axis=(0, 2))
    k = 400
    est, err = estimate_sensitivity(model, tokens, n_probes=k, seed=1)
    z = np.abs(np.asarray(est) - exact) / np.asarray(err)
    assert z.max() < 4.5, z
    # The standard error has the right size: Var ||u^T J_i||^2 = 2 ||J_i J_i^T||_F^2.
    var = np.array([2 * np.sum((jac[:, i] @ jac[:, i].T) ** 2) for i in range(jac.shape[1])])
    ratio = np.asarray(err) ** 2 * k / var
    assert 0.5 < ratio.min() and ratio.max() < 2.0, ratio
    root, root_err = estimate_sensitivity(model, tokens, n_probes=k, seed=1, squared=False)
    np.testing.assert_allclose(root, np.sqrt(est), rtol=1e-12)
    assert bool((root_err > 0).all())


def test_bad_inputs_raise():
    model = small_model()
    tokens = jnp.array([1, 2, 3])
    with pytest.raises(ValueError, match="mode"):
        last_token_jacobian(model, tokens, mode="sideways")
    with pytest.raises(ValueError, match="shape"):
        last_token_jacobian(model, tokens[None])
    with pytest.raises(ValueError, match="width"):
        last_token_jacobian(model, jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match="shape"):
        last_token_jacobian(model, jnp.zeros((2, 3, 8)))
    with pytest.raises(ValueError, match="wrt_layer"):
        last_token_jacobian(model, tokens, wrt_layer=3)
    with pytest.raises(ValueError, match="of_layer"):
        last_token_jacobian(model, tokens, wrt_layer=1, of_layer=0)
    with pytest.raises(ValueError, match="chunk_size"):
        last_token_jacobian(model, tokens, chunk_size=0)
    with pytest.raises(ValueError, match="token ids"):
        last_token_jacobian(model, jnp.array([1, 99]))
    with pytest.raises(ValueError, match="norm"):
        sensitivity_profile(model, tokens, norm="nuclear")
    with pytest.raises(ValueError, match="norm"):
        layer_position_map(model, tokens, norm="max")
    with pytest.raises(ValueError, match="n_probes"):
        estimate_sensitivity(model, tokens, n_probes=1)


def test_optimised_kernels_and_their_cpu_options_give_the_same_jacobian(monkeypatch):
    """Large inputs run the optimised kernel, compiled on the CPU with `_CPU_OPTIONS`
    (checked once); an XLA that rejects the option falls back to the plain optimised kernel,
    and so does a call under the caller's own `jax.jit`.
    Each variant against `jax.jacrev` of the plain forward pass (tiny models normally take
    the fast-compiling variant, so the threshold is lowered here)."""
    import analysis.jacobian as J
    import analysis.kernels as K
    from analysis.memory import MemoryPlan

    model = small_model(gated=True, activation="silu", norm="rmsnorm")
    tokens = jnp.array([2, 7, 1, 8, 2, 8, 1])
    ref = full_jacrev(model, model.embed(tokens))
    monkeypatch.setattr(K, "_SMALL_WORK", 0)
    if jax.default_backend() != "cpu":
        assert K.cpu_options_apply() is False  # CPU-only options
    picked = K.pick_kernel(J._JACOBIAN, model, len(tokens))
    assert picked is J._JACOBIAN[2 if K.cpu_options_apply() else 0]
    np.testing.assert_allclose(last_token_jacobian(model, tokens), ref, rtol=0, atol=1e-12)
    # Query-blocked plans (measured slower with the options) take the plain variant.
    blocked = MemoryPlan(query_block=4, remat=True)
    assert K.pick_kernel(J._JACOBIAN, model, len(tokens), plan=blocked) is J._JACOBIAN[0]
    np.testing.assert_allclose(last_token_jacobian(model, tokens, query_block=4, remat=True),
                               ref, rtol=0, atol=1e-12)
    # Under the caller's own jit (nested jits take no compiler options): the plain kernel.
    v0 = model.embed(tokens)
    np.testing.assert_allclose(jax.jit(lambda v: last_token_jacobian(model, v))(v0), ref,
                               rtol=0, atol=1e-12)
    monkeypatch.setattr(K, "_SMALL_WORK", 2e8)  # the fast-compiling variant's options too
    np.testing.assert_allclose(jax.jit(lambda v: last_token_jacobian(model, v))(v0), ref,
                               rtol=0, atol=1e-12)
    monkeypatch.setattr(K, "_SMALL_WORK", 0)

    monkeypatch.setattr(K, "_CPU_OPTIONS", {"xla_cpu_experimental_ynn_fusion_type": "NO_SUCH"})
    K.cpu_options_apply.cache_clear()
    try:
        assert K.cpu_options_apply() is False  # rejected by XLA (or not on the CPU)
        assert K.pick_kernel(J._JACOBIAN, model, len(tokens)) is J._JACOBIAN[0]
        np.testing.assert_allclose(last_token_jacobian(model, tokens), ref, rtol=0, atol=1e-12)
    finally:
        K.cpu_options_apply.cache_clear()


@pytest.mark.parametrize("bad, kind", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_states_name_the_first_bad_position(bad, kind):
    from analysis import estimate_sensitivity, path_bound

    model = small_model()
    v0 = np.asarray(model.embed(jnp.arange(6) % 16)).copy()
    v0[3, 1] = bad
    v0[5, 0] = bad
    for fn in (last_token_jacobian, sensitivity_profile, path_bound,
               lambda m, v: estimate_sensitivity(m, v, n_probes=2)):
        with pytest.raises(ValueError, match=rf"input states hold {kind} at position 3 \(first "
                                             r"of 2"):
            fn(model, jnp.asarray(v0))
    # a model whose weights hold NaN: named when the states come from token ids
    broken = small_model()
    emb = broken.embedding[...]
    broken.embedding[...] = emb.at[4].set(np.nan)
    with pytest.raises(ValueError, match="v\\^\\(0\\) computed from the token ids.*position 2"):
        sensitivity_profile(broken, jnp.asarray([1, 2, 4, 5]))
