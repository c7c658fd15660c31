"""Counting without positions (R10, Proposition 6.1 / B.9).

Without positional encodings and without the causal mask, attention sees each token type
only through its share of the sequence: every query attends to a multiset of keys, and
scaling every count by k leaves all softmax averages unchanged. So "10" and "1100" (the
same ratio of ones to zeros) give the same representation to every "1" and every "0" at
every layer, although their counts differ: such a model cannot count.

`ratio_invariance` measures this on a bidirectional NoPE model; `counting_contrast` runs
the same weights with the causal mask or with positions, where the representations differ.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from analysis.checks import check_computed_finite
from transformer.model import Decoder
from transformer.rebuild import rebuild

def scale_counts(seq, k: int) -> list[int]:
    """Every token repeated k times in place ("10", k = 2 -> "1100"): the same ratio.

    Args:
        seq: [n] token ids; k >= 1.
    Returns:
        [n * k] ids.
    """
    ids = _check_seq("seq", seq)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return [t for t in ids for _ in range(int(k))]


def _check_seq(name: str, seq) -> list[int]:
    arr = np.asarray(seq)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of ids, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer token ids, got dtype {arr.dtype}")
    return [int(t) for t in arr]


@functools.partial(jax.jit, static_argnums=0)
def _all_levels(graphdef, state, sequences):
    """Each [n_i] sequence -> [L + 1, n_i, m] (resid_post per layer, then y), one compile
    for the whole tuple."""
    model = nnx.merge(graphdef, state)
    out = []
    for tokens in sequences:
        _, inter = model(tokens, capture=True)
        out.append(jnp.concatenate([inter.resid_post, inter.y[None]], axis=0))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class TokenSpread:
    """How much the states of equal tokens differ across (and within) sequences.

    token_ids: the token types compared; per_token: [T, L + 1] max |state - reference| over
    every position holding that token in every sequence (reference: its first occurrence);
    per_level: [L + 1] max over token types (levels: resid_post per layer, then y);
    max_diff: the overall maximum.
    """

    token_ids: tuple[int, ...]
    per_token: np.ndarray
    per_level: np.ndarray
    max_diff: float


def token_spread(model: Decoder, sequences: Sequence) -> TokenSpread:
    """Max difference between the states of equal tokens over several sequences (R10).

    Args:
        model: any decoder; sequences: at least two [n_i] id sequences with the same set of
            token types.
    Returns:
        `TokenSpread` (float64 differences of the model's states).
    """
    seqs = [_check_seq(f"sequences[{i}]", s) for i, s in enumerate(sequences)]
    if len(seqs) < 2:
        raise ValueError("need at least two sequences to compare")
    types = set(seqs[0])
    for i, s in enumerate(seqs[1:], 1):
        if set(s) != types:
            raise ValueError(
                f"sequences[{i}] holds token types {sorted(set(s))}, sequences[0] holds "
                f"{sorted(types)}: equal tokens cannot be matched"
            )
    if max(types) >= model.config.vocab_size:
        raise ValueError(f"token id {max(types)} is outside the vocabulary")
    graphdef, state = nnx.split(model)
    levels = _all_levels(graphdef, state, tuple(jnp.asarray(s, jnp.int32) for s in seqs))
    # bfloat16 -> float32 is exact; NumPy then widens exactly to float64.
    levels = [np.asarray(lv.astype(jnp.float32), np.float64) if lv.dtype.itemsize < 4
              else np.asarray(lv, np.float64) for lv in levels]
    for i, lv in enumerate(levels):
        check_computed_finite(lv, f"the states of sequences[{i}]",
                              lambda j: f"level {j[0]}, position {j[1]}")
    token_ids = tuple(sorted(types))
    per_token = []
    for t in token_ids:
        states = np.concatenate(
            [lv[:, np.asarray(s) == t] for lv, s in zip(levels, seqs)], axis=1
        )  # [L + 1, K, m]
        per_token.append(np.abs(states - states[:, :1]).max(axis=(1, 2)))
    per_token = np.stack(per_token)
    per_level = per_token.max(axis=0)
    return TokenSpread(token_ids, per_token, per_level, float(per_level.max()))


def ratio_invariance(model: Decoder, sequences: Sequence) -> TokenSpread:
    """R10 on a bidirectional NoPE model: equal tokens of same-ratio sequences share states.

    For sequences with the same ratio of token types (e.g. "10", "1100", "101010") the
    result's differences are rounding errors only (exactly 0 in exact arithmetic).

    Args:
        model: a decoder with causal=False, pos_encoding="none" and no sliding window.
        sequences: at least two [n_i] id sequences (same token types; R10 needs same ratio).
    Returns:
        `TokenSpread`.
    """
    c = model.config
    if c.causal:
        raise ValueError("R10 concerns a bidirectional model: causal must be False")
    if c.pos_encoding != "none":
        raise ValueError(f"R10 concerns a model without positions, got {c.pos_encoding!r}")
    if any(c.layer_window(layer) is not None for layer in range(c.n_layers)):
        raise ValueError("R10 needs global attention: a sliding window sees positions")
    return token_spread(model, sequences)


# The contrast variants: the same weights with the causal mask, or with positions.
CONTRAST_VARIANTS = {
    "causal_nope": dict(causal=True),
    "bidirectional_sinusoidal": dict(pos_encoding="sinusoidal"),
    "bidirectional_rope": dict(pos_encoding="rope"),
}


def counting_contrast(
    model: Decoder,
    sequences: Sequence,
    variants: Sequence[str] = ("causal_nope", "bidirectional_sinusoidal"),
) -> dict[str, TokenSpread]:
    """R10 and its contrast: the same weights with a causal mask or with positions.

    Args:
        model: a bidirectional NoPE decoder (see `ratio_invariance`).
        sequences: same-ratio sequences.
        variants: names from `CONTRAST_VARIANTS`.
    Returns:
        {"bidirectional_nope": ..., **{variant: ...}}: the `TokenSpread` of each model; only
        the first is (numerically) zero.
    """
    unknown = set(variants) - set(CONTRAST_VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; use {sorted(CONTRAST_VARIANTS)}")
    out = {"bidirectional_nope": ratio_invariance(model, sequences)}
    for name in variants:
        out[name] = token_spread(rebuild(model, **CONTRAST_VARIANTS[name]), sequences)
    return out
