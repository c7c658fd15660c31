"""`transformer.generate.prefill`: a cache filled in chunks equals one filled in one call and
the full forward's keys and values (float64, so only rounding differs)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import make_model
from transformer.generate import prefill

jax.config.update("jax_enable_x64", True)

F64 = dict(dtype="float64", param_dtype="float64", softmax_dtype="float64")


def test_chunked_prefill_equals_one_call_and_the_forward():
    model = make_model(seed=5, pos_encoding="rope", **F64)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 32, (2, 12)), jnp.int32)
    whole = prefill(model, tokens, 16)
    chunked = prefill(model, tokens, 16, chunk=4)
    assert list(whole.length) == list(chunked.length) == [12, 12]
    np.testing.assert_allclose(chunked.keys[:, :, :12], whole.keys[:, :, :12], atol=1e-12)
    np.testing.assert_allclose(chunked.values[:, :, :12], whole.values[:, :, :12], atol=1e-12)
    # The next token's output from the cache equals the full forward's (causality).
    out, _ = model.decode(jnp.asarray([[7], [8]], jnp.int32), chunked)
    full = model(jnp.concatenate([tokens, jnp.asarray([[7], [8]], jnp.int32)], axis=1))
    np.testing.assert_allclose(out.logits[:, -1], full[:, -1], atol=1e-10)
    with pytest.raises(ValueError, match="multiple of chunk"):
        prefill(model, tokens, 16, chunk=5)
    with pytest.raises(ValueError, match="capacity"):
        prefill(model, tokens, 8)
