"""Greedy generation with the key/value cache (one compiled step for every position)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from transformer.model import Decoder, KVCache


@nnx.jit
def _prefill(model: Decoder, tokens: jax.Array, cache: KVCache):
    out, cache = model.decode(tokens, cache)
    return out.logits[:, -1], cache


@nnx.jit
def _step(model: Decoder, token: jax.Array, cache: KVCache):
    out, cache = model.decode(token[:, None], cache)
    return out.logits[:, -1], cache


def greedy_generate(model: Decoder, prompt, n_new: int) -> jax.Array:
    """Greedy continuation of a prompt.

    Args:
        model: the decoder.
        prompt: [n] or [b, n] token ids.
        n_new: number of tokens to generate.
    Returns:
        [n_new] or [b, n_new] generated ids.
    """
    prompt = model._check_tokens(prompt)
    if n_new < 0:
        raise ValueError(f"n_new must be non-negative, got {n_new}")
    unbatched = prompt.ndim == 1
    prompt = prompt[None] if unbatched else prompt
    b, n = prompt.shape
    capacity = n + n_new
    if model.config.pos_encoding == "learned" and capacity > model.config.max_len:
        raise ValueError(
            f"prompt plus {n_new} new tokens ({capacity}) exceeds max_len={model.config.max_len}"
        )
    cache = model.init_cache(b, capacity)
    logits, cache = _prefill(model, prompt, cache)
    generated = []
    for _ in range(n_new):
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [b]
        generated.append(token)
        if len(generated) < n_new:
            logits, cache = _step(model, token, cache)
    out = jnp.stack(generated, axis=1) if generated else jnp.zeros((b, 0), jnp.int32)
    return out[0] if unbatched else out
