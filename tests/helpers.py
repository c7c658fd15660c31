"""Small shared helpers for the tests."""

import jax
import jax.numpy as jnp
from flax import nnx

from transformer import Decoder, TransformerConfig


def randomized(model: Decoder, seed: int = 0, scale: float = 0.3) -> Decoder:
    """Every parameter (norm scales and biases included) replaced by random values, so that
    a wrong offset or a missing bias cannot hide behind ones/zeros initialisation."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [
        (scale * jax.random.normal(k, leaf.shape, jnp.float32)).astype(leaf.dtype)
        + (1.0 if leaf.ndim == 1 else 0.0)  # keep norm scales away from zero
        for k, leaf in zip(keys, leaves)
    ]
    nnx.update(model, jax.tree.unflatten(treedef, new))
    return model


def make_model(seed: int = 0, randomize: bool = True, **overrides) -> Decoder:
    config = TransformerConfig.tiny(**overrides)
    model = Decoder(config, rngs=nnx.Rngs(seed))
    return randomized(model, seed) if randomize else model


def greedy_one_step_at_a_time(model: Decoder, prompt: list[int], n_new: int) -> list[int]:
    """Greedy decoding through the KV cache with a single compiled one-token step (the
    prompt is fed through the same step), which keeps compile time low on CPU."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, token, cache):
        out, cache = nnx.merge(graphdef, state).decode(token[None, None], cache)
        return jnp.argmax(out.logits[0, -1]).astype(jnp.int32), cache

    cache = model.init_cache(1, len(prompt) + n_new)
    for token in prompt:
        nxt, cache = step(state, jnp.int32(token), cache)
    generated = [int(nxt)]
    while len(generated) < n_new:
        nxt, cache = step(state, nxt, cache)
        generated.append(int(nxt))
    return generated
