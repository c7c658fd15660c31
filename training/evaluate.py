"""Exact-match accuracy of a decoder's greedy answer on a task, per length (R5, R11, R12's
trained models), and the check that a model fits the task layout (causal, its vocabulary)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from training.spec import _check_int
from training.tasks import VOCAB_SIZE, TaskSpec, make_batch, sequence_length
from transformer.config import TransformerConfig
from transformer.model import Decoder


def _answer_logits(model: Decoder, tokens: jax.Array, query_pos: jax.Array) -> jax.Array:
    """Logits at each row's query position: tokens [b, W], query_pos [b] -> [b, v]."""
    logits = model(tokens)  # [b, W, v]; causal, so the right padding is never seen
    return jnp.take_along_axis(logits, query_pos[:, None, None], axis=1)[:, 0]


@nnx.jit
def _predict(model: Decoder, tokens: jax.Array, query_pos: jax.Array) -> jax.Array:
    return jnp.argmax(_answer_logits(model, tokens, query_pos), axis=-1).astype(jnp.int32)


def evaluate(
    model: Decoder,
    task: TaskSpec,
    lengths,
    n_examples: int = 256,
    seed: int = 0,
    *,
    batch_size: int = 256,
) -> dict[int, float]:
    """Exact-match accuracy of the greedy answer at each length.

    Every length is padded to the width of the longest one and evaluated in batches of
    `batch_size`, so the sweep compiles once. Examples of length n are drawn, batch after
    batch, from `np.random.default_rng([seed, 1, n])` (training uses [seed, 0, step]), so
    they depend on (seed, n, batch_size) alone.

    Args:
        model: a causal decoder with vocab_size >= tasks.VOCAB_SIZE.
        task: the task (its min_len / max_len are replaced by each evaluated length).
        lengths: iterable of lengths n.
        n_examples: examples per length.
        seed: evaluation seed.
        batch_size: examples per forward pass.
    Returns:
        {n: fraction of examples whose argmax answer is right}.
    """
    _check_model(model.config)
    if not isinstance(task, TaskSpec):
        raise ValueError(f"task must be a TaskSpec, got {type(task).__name__}")
    if isinstance(lengths, (int, np.integer)):
        lengths = [lengths]
    lengths = list(lengths)
    if not lengths:
        raise ValueError("lengths must be a non-empty iterable of ints")
    _check_int("n_examples", n_examples, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("seed", seed, 0)
    specs = {int(n): task.at_length(n) for n in lengths}  # validates every length for the task
    width = max(sequence_length(s, n) for n, s in specs.items())
    chunk = min(batch_size, n_examples)
    out = {}
    for n, spec in specs.items():
        rng = np.random.default_rng([seed, 1, n])
        correct = 0
        for start in range(0, n_examples, chunk):
            batch = make_batch(spec, rng, chunk, width=width)
            tokens, query_pos = jnp.asarray(batch.tokens), jnp.asarray(batch.query_pos)
            pred = np.asarray(_predict(model, tokens, query_pos))
            take = min(chunk, n_examples - start)
            correct += int(np.sum(pred[:take] == batch.answer[:take]))
        out[n] = correct / n_examples
    return out


def _check_model(config: TransformerConfig) -> None:
    if config.vocab_size < VOCAB_SIZE:
        raise ValueError(
            f"config.vocab_size={config.vocab_size} is below the task vocabulary {VOCAB_SIZE}"
        )
    if not config.causal:
        raise ValueError(
            "training and evaluation read the answer at the query of right-padded batches, "
            "which needs causal=True (padding would leak into a bidirectional model)"
        )
