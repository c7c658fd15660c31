"""Decoding with the key/value cache: prefill a cache, greedy generation (one prompt, or
many prompts of different lengths), with a bounded number of compilations.

The model is split once and merged inside the compiled functions: passing an nnx.Module
through nnx.jit at every step costs a graph traversal per token (~10x slower on a 135M
model than the step itself). Branching many continuations off one cached prefix is
`Decoder.branch`; `analysis.collapse` and `analysis.pair_sweep` build their sweeps from
`prefill` and it.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from transformer.model import Decoder, KVCache

# Incremented inside the traced functions, so each count is a number of traces, i.e. of
# XLA compilations (a jit cache hit does not trace): tests read it to show that a sweep's
# compilations do not grow with the number of lengths.
_TRACES: collections.Counter = collections.Counter()


def trace_counts() -> dict[str, int]:
    """How many times the compiled prefill steps of this module were traced."""
    return dict(_TRACES)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _prefill_fresh(graphdef, state, tokens, capacity: int) -> KVCache:
    """tokens [b, C] into a fresh cache of `capacity` slots (made inside: an empty context
    is a constant, which compiles 2-3x faster than a cache passed in)."""
    _TRACES["prefill"] += 1
    model = nnx.merge(graphdef, state)
    _, cache = model.decode(tokens, model.init_cache(tokens.shape[0], capacity))
    return cache


@functools.partial(jax.jit, static_argnums=0)
def _prefill_append(graphdef, state, tokens, cache: KVCache) -> KVCache:
    """tokens [b, C] appended to the cache (logits unused: removed by XLA)."""
    _TRACES["append"] += 1
    _, cache = nnx.merge(graphdef, state).decode(tokens, cache)
    return cache


def prefill(model: Decoder, tokens, capacity: int, *, chunk: int | None = None) -> KVCache:
    """A cache of `capacity` slots holding tokens [b, S] (S <= capacity).

    Args:
        model: the decoder.
        tokens: [b, S] token ids.
        capacity: cache slots (a multiple of a fixed quantum keeps compilations shared).
        chunk: tokens per compiled call (S must be a multiple of it), bounding the
            attention scores to [h, chunk, capacity]; None: one call.
    Returns:
        `KVCache` of length S.
    """
    tokens = jnp.asarray(tokens, jnp.int32)
    if tokens.ndim != 2 or tokens.shape[1] > capacity:
        raise ValueError(f"tokens must be [b, S] with S <= capacity={capacity}, "
                         f"got shape {tokens.shape}")
    chunk = chunk or tokens.shape[1]
    if tokens.shape[1] % chunk:
        raise ValueError(f"{tokens.shape[1]} tokens are not a multiple of chunk={chunk}")
    graphdef, state = nnx.split(model)
    cache = _prefill_fresh(graphdef, state, tokens[:, :chunk], capacity)
    for c0 in range(chunk, tokens.shape[1], chunk):
        cache = _prefill_append(graphdef, state, tokens[:, c0 : c0 + chunk], cache)
    return cache


@functools.partial(jax.jit, static_argnums=0)
def _prefill_pick(graphdef, state, tokens, cache: KVCache, pick):
    """tokens [b, C] appended to the cache -> (argmax ids [b] at chunk index pick [b],
    cache). Only the picked positions are unembedded (a 262k vocabulary costs more than the
    whole body otherwise)."""
    model = nnx.merge(graphdef, state)
    out, cache = model.decode(tokens, cache)
    y = out.y[jnp.arange(tokens.shape[0]), pick]  # [b, m]
    return jnp.argmax(model.unembed(y), axis=-1).astype(jnp.int32), cache


@functools.partial(jax.jit, static_argnums=0, donate_argnums=3)
def _step(graphdef, state, token, cache: KVCache):
    """token [b] -> (next ids [b], cache)."""
    out, cache = nnx.merge(graphdef, state).decode(token[:, None], cache)
    return jnp.argmax(out.logits[:, -1], axis=-1).astype(jnp.int32), cache


def _continue(graphdef, state, first, cache: KVCache, n_new: int) -> np.ndarray:
    """first [b] (the ids after the prompts) and n_new - 1 greedy steps: [b, n_new]."""
    token, out = jnp.asarray(first), [np.asarray(first)]
    for _ in range(n_new - 1):
        token, cache = _step(graphdef, state, token, cache)
        out.append(np.asarray(token))
    return np.stack(out, axis=1)


def _check_room(model: Decoder, capacity: int, n_new: int) -> None:
    if model.config.pos_encoding == "learned" and capacity > model.config.max_len:
        raise ValueError(
            f"prompt plus {n_new} new tokens ({capacity}) exceeds max_len={model.config.max_len}"
        )


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
    if not isinstance(n_new, int) or n_new < 0:
        raise ValueError(f"n_new must be a non-negative integer, got {n_new!r}")
    unbatched = prompt.ndim == 1
    prompt = prompt[None] if unbatched else prompt
    b, n = prompt.shape
    _check_room(model, n + n_new, n_new)
    if n_new == 0:
        out = jnp.zeros((b, 0), jnp.int32)
        return out[0] if unbatched else out
    graphdef, state = nnx.split(model)
    first, cache = _prefill_pick(graphdef, state, prompt, model.init_cache(b, n + n_new),
                                 jnp.full((b,), n - 1))
    out = jnp.asarray(_continue(graphdef, state, first, cache, n_new))
    return out[0] if unbatched else out


def greedy_batch(
    model: Decoder,
    prompts: Sequence[Sequence[int]],
    n_new: int,
    *,
    batch_size: int = 8,
    chunk: int = 32,
) -> list[list[int]]:
    """Greedy continuations of prompts of different lengths, with two compilations in all.

    Prompts are sorted by length and run `batch_size` at a time; each batch is prefilled in
    right-padded chunks of `chunk` tokens, then every row's cache length is reset to its
    own prompt length, so the padding slots are overwritten before any query can see them
    (the cache mask hides slots >= length). Shapes are the same for every batch: one
    compiled prefill chunk and one compiled step serve the whole call.

    Args:
        model: the decoder.
        prompts: token-id lists (each non-empty).
        n_new: tokens to generate per prompt (>= 1).
        batch_size, chunk: rows per batch and prefill chunk width.
    Returns:
        One list of n_new generated ids per prompt, in the order given.
    """
    prompts = [list(map(int, p)) for p in prompts]
    if not prompts or any(not p for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty id lists")
    if not isinstance(n_new, int) or n_new < 1:
        raise ValueError(f"n_new must be an integer >= 1, got {n_new!r}")
    capacity = -(-max(map(len, prompts)) // chunk) * chunk + n_new
    _check_room(model, capacity, n_new)
    graphdef, state = nnx.split(model)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: dict[int, list[int]] = {}
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        rows_p = rows + [rows[-1]] * (batch_size - len(rows))  # pad the batch by repetition
        lens = np.array([len(prompts[i]) for i in rows_p])
        w = -(-int(lens.max()) // chunk) * chunk
        grid = np.zeros((batch_size, w), np.int32)
        for r, i in enumerate(rows_p):
            grid[r, : lens[r]] = prompts[i]
            grid[r, lens[r] :] = prompts[i][-1]  # padding: overwritten, never seen
        cache = model.init_cache(batch_size, capacity)
        first = np.zeros(batch_size, np.int32)
        for c0 in range(0, w, chunk):
            pick = np.clip(lens - 1 - c0, 0, chunk - 1)
            ids, cache = _prefill_pick(
                graphdef, state, jnp.asarray(grid[:, c0 : c0 + chunk]), cache, jnp.asarray(pick)
            )
            here = (lens - 1 >= c0) & (lens - 1 < c0 + chunk)
            first[here] = np.asarray(ids)[here]
        cache = KVCache(keys=cache.keys, values=cache.values, length=jnp.asarray(lens, jnp.int32))
        gen = _continue(graphdef, state, first, cache, n_new)
        for r, i in enumerate(rows):
            results[i] = [int(t) for t in gen[r]]
    return [results[i] for i in range(len(prompts))]
