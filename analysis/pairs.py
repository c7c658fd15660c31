"""Token-level pairs for representational collapse (R4) and counting (R5, R12a).

Pairs are built at the token-id level (any vocabulary) by `PairFamily`:

    base(n) = prompt + separated([repeat] * n, sep, every) + tail
    tail empty:     (s_n, s*_n) = (base(n), base(n + 1))      n vs n + 1 copies (counting;
                                                             = repeated last without sep)
    tail not empty: (s_n, s*_n) = (base(n), base(n) + [tail[-1]])   repeated last token

and, over one fixed sequence, by `SequenceFamily` (s_n = seq[:n], s*_n = s_n + [seq[n-1]]).
Each family also tells `analysis.collapse_sweep` how to prefill its longest shared prefix
once and branch every n off it (`_branch_plan`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


def check_ids(name: str, ids) -> list[int]:
    """A 1-D sequence of non-negative integer token ids as a list (ValueError naming it)."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of token ids, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.size and ids.min() < 0:
        raise ValueError(f"{name} has negative token ids")
    return [int(t) for t in ids]


def check_id(name: str, token) -> int:
    """One non-negative integer token id (ValueError naming it)."""
    if not isinstance(token, (int, np.integer)) or isinstance(token, bool) or token < 0:
        raise ValueError(f"{name} must be a non-negative integer token id, got {token!r}")
    return int(token)


def check_count(name: str, n, minimum: int = 0) -> int:
    """An integer >= minimum (ValueError naming it)."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def repeated_last_pair(seq) -> tuple[list[int], list[int]]:
    """(s, s + [s[-1]]): the R4 pair v^(0) = [x, v_a] and v*^(0) = [x, v_a, v_a].

    Args:
        seq: [n] token ids, n >= 1.
    Returns:
        Two lists of ids, of lengths n and n + 1.
    """
    seq = check_ids("seq", seq)
    if not seq:
        raise ValueError("seq is empty")
    return seq, seq + [seq[-1]]


def ones_then_zero_pairs(
    one_id: int, zero_id: int, lengths: Sequence[int], prompt_ids=()
) -> list[tuple[list[int], list[int]]]:
    """The copying probe's pairs "1...10" vs "1...100" (prompt + n ones + one or two zeros).

    Args:
        one_id, zero_id: token ids of "1" and "0".
        lengths: numbers n >= 0 of ones.
        prompt_ids: ids placed before the run.
    Returns:
        One (s_n, s*_n) per length.
    """
    family = PairFamily(repeat_id=one_id, prompt_ids=prompt_ids, tail_ids=(zero_id,))
    return [family.pair(check_count("length", n)) for n in lengths]


def counting_pairs(prompt_ids, one_id: int, n: int) -> tuple[list[int], list[int]]:
    """R5's counting pair: prompt + n ones vs prompt + (n + 1) ones.

    Args:
        prompt_ids: ids before the run; one_id: id of "1"; n >= 1 (or >= 0 with a prompt).
    Returns:
        (s_n, s*_n).
    """
    return PairFamily(repeat_id=one_id, prompt_ids=prompt_ids).pair(n)


def separated_digits(digits, sep_id: int, k: int) -> list[int]:
    """Insert a separator after every k digits (R12a: "1,1,1" for k = 1), none at the end.

    Args:
        digits: [n] ids; sep_id: the separator's id; k >= 1 digits per group.
    Returns:
        The ids with n + (n - 1) // k entries (n >= 1).
    """
    digits = check_ids("digits", digits)
    sep_id = check_id("sep_id", sep_id)
    k = check_count("k", k, 1)
    out: list[int] = []
    for i, d in enumerate(digits):
        if i and i % k == 0:
            out.append(sep_id)
        out.append(d)
    return out


def _separated_length(n: int, every: int | None) -> int:
    return n if (every is None or n == 0) else n + (n - 1) // every


@dataclasses.dataclass(frozen=True)
class PairFamily:
    """A family of pairs indexed by the run length n (see the module docstring).

    Fields: repeat_id (the run's token), prompt_ids, tail_ids, sep_id and sep_every (a
    separator after every `sep_every` run tokens; both None for a plain run).
    """

    repeat_id: int
    prompt_ids: tuple[int, ...] = ()
    tail_ids: tuple[int, ...] = ()
    sep_id: int | None = None
    sep_every: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "repeat_id", check_id("repeat_id", self.repeat_id))
        object.__setattr__(self, "prompt_ids", tuple(check_ids("prompt_ids", self.prompt_ids)))
        object.__setattr__(self, "tail_ids", tuple(check_ids("tail_ids", self.tail_ids)))
        if (self.sep_id is None) != (self.sep_every is None):
            raise ValueError("sep_id and sep_every must be given together")
        if self.sep_id is not None:
            object.__setattr__(self, "sep_id", check_id("sep_id", self.sep_id))
            object.__setattr__(self, "sep_every", check_count("sep_every", self.sep_every, 1))

    @property
    def min_n(self) -> int:
        """Smallest n whose s_n is non-empty."""
        return 0 if (self.prompt_ids or self.tail_ids) else 1

    def run(self, n: int) -> list[int]:
        """prompt + separated([repeat] * n)."""
        run = [self.repeat_id] * n
        if self.sep_id is not None:
            run = separated_digits(run, self.sep_id, self.sep_every) if n else []
        return list(self.prompt_ids) + run

    def run_length(self, n: int) -> int:
        return len(self.prompt_ids) + _separated_length(n, self.sep_every)

    def base(self, n: int) -> list[int]:
        """s_n = prompt + separated run of n + tail."""
        return self.run(n) + list(self.tail_ids)

    def pair(self, n: int) -> tuple[list[int], list[int]]:
        """(s_n, s*_n)."""
        n = check_count("n", n, self.min_n)
        if self.tail_ids:
            return repeated_last_pair(self.base(n))
        return self.base(n), self.base(n + 1)

    @property
    def filler_id(self) -> int:
        """A token for cache slots and padding that no query can see."""
        return self.repeat_id

    def token_ids(self) -> list[int]:
        """Every id the family uses (checked against the vocabulary)."""
        ids = [self.repeat_id, *self.prompt_ids, *self.tail_ids]
        return ids + ([] if self.sep_id is None else [self.sep_id])

    def seq_length(self, n: int) -> int:
        """len(s_n)."""
        return self.run_length(n) + len(self.tail_ids)

    def _branch_plan(self, lengths: Sequence[int]):
        """Cached prefix, and per n: branch point, continuation [t], indices of s_n / s*_n."""
        n_max = max(lengths)
        if self.tail_ids:
            # s_n and s*_n share prompt + run(n); both continue with tail + [tail[-1]].
            prefix = self.run(n_max)
            cont = list(self.tail_ids) + [self.tail_ids[-1]]
            points = np.array([self.run_length(n) for n in lengths])
            tokens = np.tile(np.asarray(cont), (len(lengths), 1))
            t = len(cont)
            ia, ib = np.full(len(lengths), t - 2), np.full(len(lengths), t - 1)
            return prefix, points, tokens, ia, ib
        # s_n and s*_n are both prefixes of base(n_max + 1): branch just before the last
        # token of s_n and read s_n's and s*_n's last tokens (1 or 2 positions apart).
        full = self.base(n_max + 1)
        ends_a = np.array([self.run_length(n) - 1 for n in lengths])
        ends_b = np.array([self.run_length(n + 1) - 1 for n in lengths])
        t = int((ends_b - ends_a).max()) + 1
        # Positions past s*_n's end are future tokens: causally invisible, any id will do.
        padded = np.asarray(full + [self.repeat_id] * t)
        tokens = np.stack([padded[a : a + t] for a in ends_a])
        return full, ends_a, tokens, np.zeros(len(lengths), int), ends_b - ends_a


@dataclasses.dataclass(frozen=True)
class SequenceFamily:
    """R4's pairs over one fixed sequence: s_n = seq[:n] and s*_n = seq[:n] + [seq[n-1]]
    (the same prefix with its last token repeated), for n = 1..len(seq).

    With `seq` of random tokens this is the paper's [x, v_a] vs [x, v_a, v_a] with a fresh
    x at every n; the sweep prefills seq once and branches [seq[n-1], seq[n-1]] off every
    prefix length n - 1.
    """

    sequence: tuple[int, ...]

    def __post_init__(self):
        seq = tuple(check_ids("sequence", self.sequence))
        if not seq:
            raise ValueError("sequence is empty")
        object.__setattr__(self, "sequence", seq)

    min_n = 1

    @property
    def filler_id(self) -> int:
        return self.sequence[0]

    def token_ids(self) -> list[int]:
        return list(self.sequence)

    def seq_length(self, n: int) -> int:
        return n

    def pair(self, n: int) -> tuple[list[int], list[int]]:
        """(s_n, s*_n)."""
        n = check_count("n", n, 1)
        if n > len(self.sequence):
            raise ValueError(f"n={n} exceeds the sequence length {len(self.sequence)}")
        return repeated_last_pair(list(self.sequence[:n]))

    def _branch_plan(self, lengths: Sequence[int]):
        n_max = max(lengths)
        if n_max > len(self.sequence):
            raise ValueError(f"length {n_max} exceeds the sequence length {len(self.sequence)}")
        seq = np.asarray(self.sequence)
        points = np.asarray(lengths) - 1
        last = seq[np.asarray(lengths) - 1]
        tokens = np.stack([last, last], axis=1)  # [N, 2]
        zeros = np.zeros(len(lengths), int)
        return list(self.sequence[: n_max - 1]), points, tokens, zeros, zeros + 1
