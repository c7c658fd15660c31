"""Representational collapse (R4), its consequence for counting (R5) and precision (R6).

R4 (Theorem 4.2): a sequence s_n and s*_n, the same sequence with its last token repeated,
get last-token states ||v_n^(L) - v*_(n+1)^(L)|| that vanish as n grows. R5: once the two
states are equal in the model's float format, the model cannot tell them apart, so it
cannot count. R6: the lower the precision, the shorter the n at which that happens.

Pairs are built at the token-id level (any vocabulary) by `PairFamily`:

    base(n) = prompt + separated([repeat] * n, sep, every) + tail
    tail empty:     (s_n, s*_n) = (base(n), base(n + 1))      n vs n + 1 copies (counting;
                                                             = repeated last without sep)
    tail not empty: (s_n, s*_n) = (base(n), base(n) + [tail[-1]])   repeated last token

`collapse_sweep` measures the pair over many n and several float formats of the SAME
weights without one compilation or one full forward per n: the longest shared prefix is
prefilled once into the KV cache, then `Decoder.branch` continues every n at once from
its own prefix length (exact thanks to the causal mask), in fixed-size chunks so the
number of compilations does not depend on the number of lengths. `collapse_sweep_slow`
is the one-full-forward-per-sequence reference the fast path is tested against.

"States" of a sequence are read at its last token on L + 1 levels: `resid_post` of each
layer (v^(l+1)), then the final-normed y (the last level, what the unembedding reads).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from transformer.config import DTYPES
from transformer.model import Decoder, with_precision

# Unit round-off u = 2^-p of each format (p significant bits, R6).
UNIT_ROUNDOFF = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}

# Incremented inside the traced functions below, so each count is a number of traces,
# i.e. of XLA compilations (a jit cache hit does not trace). Tests read it to show that a
# sweep's compilations do not grow with the number of lengths.
_TRACE_COUNTS: collections.Counter = collections.Counter()

# Cache capacities are rounded up to a multiple of this (fewer distinct compiled shapes).
_CAPACITY_QUANTUM = 128


def trace_counts() -> dict[str, int]:
    """How many times the jitted prefill / branch steps of this module were traced."""
    return dict(_TRACE_COUNTS)


# ---- pair builders --------------------------------------------------------------------


def _check_ids(name: str, ids) -> list[int]:
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of token ids, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.size and ids.min() < 0:
        raise ValueError(f"{name} has negative token ids")
    return [int(t) for t in ids]


def _check_id(name: str, token) -> int:
    if not isinstance(token, (int, np.integer)) or isinstance(token, bool) or token < 0:
        raise ValueError(f"{name} must be a non-negative integer token id, got {token!r}")
    return int(token)


def _check_count(name: str, n, minimum: int = 0) -> int:
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
    seq = _check_ids("seq", seq)
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
    return [family.pair(_check_count("length", n)) for n in lengths]


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
    digits = _check_ids("digits", digits)
    sep_id = _check_id("sep_id", sep_id)
    k = _check_count("k", k, 1)
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
        object.__setattr__(self, "repeat_id", _check_id("repeat_id", self.repeat_id))
        object.__setattr__(self, "prompt_ids", tuple(_check_ids("prompt_ids", self.prompt_ids)))
        object.__setattr__(self, "tail_ids", tuple(_check_ids("tail_ids", self.tail_ids)))
        if (self.sep_id is None) != (self.sep_every is None):
            raise ValueError("sep_id and sep_every must be given together")
        if self.sep_id is not None:
            object.__setattr__(self, "sep_id", _check_id("sep_id", self.sep_id))
            object.__setattr__(self, "sep_every", _check_count("sep_every", self.sep_every, 1))

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
        n = _check_count("n", n, self.min_n)
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


# ---- compiled steps (each traced once per model, dtype and shape) ---------------------


def _levels(resid_post: jax.Array, y: jax.Array) -> jax.Array:
    """resid_post [L, ..., m] and y [..., m] -> [L + 1, ..., m]."""
    return jnp.concatenate([resid_post, y[None]], axis=0)


def _host64(x: jax.Array) -> np.ndarray:
    # bfloat16 -> float32 is exact; NumPy then widens exactly to float64.
    if x.dtype in (jnp.bfloat16, jnp.float16):
        x = x.astype(jnp.float32)
    return np.asarray(x, dtype=np.float64)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _prefill(graphdef, state, tokens, capacity: int):
    """Cache of one prefix: tokens [1, S] -> KVCache of `capacity` slots."""
    _TRACE_COUNTS["prefill"] += 1
    model = nnx.merge(graphdef, state)
    _, cache = model.decode(tokens, model.init_cache(1, capacity))
    return cache


@functools.partial(jax.jit, static_argnums=0)
def _branch_states(graphdef, state, cache, tokens, prefix_lengths, ia, ib):
    """tokens [B, t] off prefix_lengths [B] -> states at continuation indices ia, ib [B]:
    two arrays [L + 1, B, m]."""
    _TRACE_COUNTS["branch"] += 1
    model = nnx.merge(graphdef, state)
    out = model.branch(cache, tokens, prefix_lengths, capture=True)
    levels = _levels(out.intermediates.resid_post, out.y)  # [L + 1, B, t, m]
    rows = jnp.arange(tokens.shape[0])
    return levels[:, rows, ia], levels[:, rows, ib]


@functools.partial(jax.jit, static_argnums=0)
def _forward_states(graphdef, state, tokens, last):
    """Full forwards of tokens [b, P] (no cache) -> states at positions last [b]:
    [L + 1, b, m]."""
    _TRACE_COUNTS["forward"] += 1
    model = nnx.merge(graphdef, state)
    _, inter = model(tokens, capture=True)
    levels = _levels(inter.resid_post, inter.y)  # [L + 1, b, P, m]
    return levels[:, jnp.arange(tokens.shape[0]), last]


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
        seq = tuple(_check_ids("sequence", self.sequence))
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
        n = _check_count("n", n, 1)
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


# ---- measuring pairs ------------------------------------------------------------------


def last_token_states(model: Decoder, seq) -> np.ndarray:
    """Last-token states of one sequence at every level (one full forward, no cache;
    compiled once per sequence length).

    Args:
        model: the decoder; seq: [n] token ids.
    Returns:
        [L + 1, m] float64: resid_post of each layer, then y.
    """
    ids = _check_ids("seq", seq)
    if not ids:
        raise ValueError("seq is empty")
    if max(ids) >= model.config.vocab_size:
        raise ValueError(f"token id {max(ids)} is outside the vocabulary")
    graphdef, state = nnx.split(model)
    tokens, last = jnp.asarray([ids], jnp.int32), jnp.asarray([len(ids) - 1])
    out = _forward_states(graphdef, state, tokens, last)
    return _host64(out)[:, 0]


@dataclasses.dataclass(frozen=True)
class PairDistance:
    """||state(s)_last - state(s*)_last|| per level: l1 [L + 1], linf [L + 1] (last = y)."""

    l1: np.ndarray
    linf: np.ndarray


def pair_distance(model: Decoder, seq, seq_star) -> PairDistance:
    """R4's distance ||v_n^(l) - v*_(n+1)^(l)|| in L1 and L-inf, per layer and for y.

    Args:
        model: the decoder; seq, seq_star: token ids (e.g. from `repeated_last_pair`).
    Returns:
        `PairDistance` (computed in float64 from the model's states).
    """
    diff = last_token_states(model, seq) - last_token_states(model, seq_star)
    return PairDistance(l1=np.abs(diff).sum(-1), linf=np.abs(diff).max(-1))


@dataclasses.dataclass(frozen=True)
class CollapseSweep:
    """Last-token states of (s_n, s*_n) for every n and float format (same weights).

    lengths: [N] run lengths n; seq_lengths: [N] len(s_n); dtypes: [D] format names;
    states, states_star: [D, N, L + 1, m] float64 copies of the states of s_n and s*_n
    (levels: resid_post per layer, then y).
    """

    lengths: tuple[int, ...]
    seq_lengths: tuple[int, ...]
    dtypes: tuple[str, ...]
    states: np.ndarray
    states_star: np.ndarray

    def distance(self, norm: str = "linf") -> np.ndarray:
        """[D, N, L + 1] pair distances in the given norm ("l1" or "linf")."""
        return _norm(self.states - self.states_star, norm)

    @property
    def l1(self) -> np.ndarray:
        """[D, N, L + 1]."""
        return self.distance("l1")

    @property
    def linf(self) -> np.ndarray:
        """[D, N, L + 1]."""
        return self.distance("linf")

    def index(self, dtype: str) -> int:
        if dtype not in self.dtypes:
            raise ValueError(f"dtype {dtype!r} is not in this sweep's {self.dtypes}")
        return self.dtypes.index(dtype)


def _norm(x: np.ndarray, norm: str) -> np.ndarray:
    if norm == "l1":
        return np.abs(x).sum(-1)
    if norm == "linf":
        return np.abs(x).max(-1)
    raise ValueError(f"norm must be 'l1' or 'linf', got {norm!r}")


def _check_sweep_args(model, family, lengths, dtypes, softmax_dtype):
    if not isinstance(model, Decoder):
        raise ValueError(f"model must be a transformer.Decoder, got {type(model).__name__}")
    if not isinstance(family, (PairFamily, SequenceFamily)):
        raise ValueError(
            f"family must be a PairFamily or SequenceFamily, got {type(family).__name__}"
        )
    lengths = tuple(_check_count("lengths entry", n, family.min_n) for n in lengths)
    if not lengths:
        raise ValueError("lengths is empty")
    dtypes = tuple(dtypes)
    if not dtypes:
        raise ValueError("dtypes is empty")
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"dtype {d!r} is not one of {DTYPES}")
    if len(set(dtypes)) != len(dtypes):
        raise ValueError(f"dtypes has duplicates: {dtypes}")
    if softmax_dtype is not None and softmax_dtype not in DTYPES:
        raise ValueError(f"softmax_dtype {softmax_dtype!r} is not one of {DTYPES}")
    vocab = model.config.vocab_size
    ids = family.token_ids()
    if max(ids) >= vocab:
        raise ValueError(f"token id {max(ids)} is outside the vocabulary of {vocab}")
    return lengths, dtypes


def _precision_kwargs(dtype: str, softmax_dtype: str | None) -> dict:
    """Compute and parameters in `dtype`; softmax/norm statistics in `dtype` (None) or in
    the wider of `dtype` and `softmax_dtype` (never narrower than the compute dtype, so a
    float64 reference stays float64 throughout)."""
    if softmax_dtype is None:
        acc = dtype
    else:
        acc = min(dtype, softmax_dtype, key=UNIT_ROUNDOFF.get)  # smaller u: wider
    return dict(dtype=dtype, param_dtype=dtype, softmax_dtype=acc)


def collapse_sweep(
    model: Decoder,
    family: PairFamily,
    lengths: Sequence[int],
    dtypes: Sequence[str] = ("float32",),
    *,
    softmax_dtype: str | None = None,
    chunk_size: int = 64,
    mesh=None,
) -> CollapseSweep:
    """R4/R6: last-token states of (s_n, s*_n) for every n, in every format, fast.

    One prefill of the longest shared prefix per format, then `Decoder.branch` over all n
    in chunks of `chunk_size` (the last chunk padded), so a sweep costs 2 compilations per
    format whatever len(lengths) is (fewer on a jit cache hit). Needs a causal model:
    sharing a prefix is exact only when later tokens are invisible to earlier ones.

    Args:
        model: a causal decoder (not modified; each format is `with_precision` of it).
        family: which pairs (`PairFamily`).
        lengths: run lengths n (each >= family.min_n).
        dtypes: format names ("float64" needs jax_enable_x64); parameters are cast too.
        softmax_dtype: None keeps softmax and norm statistics in each format (the plain
            low-precision model); e.g. "float32" keeps them at least float32.
        chunk_size: branches per compiled call.
        mesh: optional one-axis `jax.sharding.Mesh` (`analysis.sharding.device_mesh`):
            each chunk's branches are split over its devices, the cache replicated;
            chunk_size is rounded up to a multiple of the number of devices.
    Returns:
        `CollapseSweep`.
    """
    lengths, dtypes = _check_sweep_args(model, family, lengths, dtypes, softmax_dtype)
    chunk_size = _check_count("chunk_size", chunk_size, 1)
    place = lambda x, spec: x  # noqa: E731  (one device: leave placement to jax)
    if mesh is not None:
        if len(mesh.axis_names) != 1:
            raise ValueError(f"mesh must have one axis, got {mesh.axis_names}")
        chunk_size = -(-chunk_size // mesh.size) * mesh.size
        spec_of = {"rep": jax.sharding.PartitionSpec(),
                   "batch": jax.sharding.PartitionSpec(mesh.axis_names[0])}
        place = lambda x, spec: jax.device_put(  # noqa: E731
            x, jax.sharding.NamedSharding(mesh, spec_of[spec])
        )
    if not model.config.causal:
        raise ValueError(
            "collapse_sweep shares prefixes across lengths, which is exact only for a causal "
            "model; use collapse_sweep_slow for a bidirectional one"
        )
    prefix, points, tokens, ia, ib = family._branch_plan(lengths)
    t = tokens.shape[1]
    top = int((points + t).max())
    c = model.config
    if c.pos_encoding == "learned" and top > c.max_len:
        raise ValueError(f"the sweep reaches position {top - 1}, beyond max_len={c.max_len}")
    if int(tokens.max()) >= c.vocab_size:
        raise ValueError(f"token id {int(tokens.max())} is outside the vocabulary")

    n = len(lengths)
    n_pad = -n % chunk_size
    # Pad with copies of the last branch so every chunk has the same shape.
    pad = lambda a: np.concatenate([a, np.repeat(a[-1:], n_pad, axis=0)])  # noqa: E731
    points_p, tokens_p, ia_p, ib_p = map(pad, (points, tokens, ia, ib))

    # Round the cache up so sweeps of nearby lengths (and other families) reuse the same
    # compiled prefill and branch; the filler slots are never visible (prefix_lengths).
    capacity = max(1, -(-len(prefix) // _CAPACITY_QUANTUM)) * _CAPACITY_QUANTUM
    if c.pos_encoding == "learned":
        capacity = min(capacity, c.max_len)
    filled = np.asarray(prefix + [family.filler_id] * (capacity - len(prefix)), np.int32)

    per_dtype_a, per_dtype_b = [], []
    for dtype in dtypes:
        m = with_precision(model, **_precision_kwargs(dtype, softmax_dtype))
        graphdef, state = nnx.split(m)
        state = place(state, "rep")
        cache = place(_prefill(graphdef, state, jnp.asarray(filled)[None], capacity), "rep")
        outs_a, outs_b = [], []
        for start in range(0, n + n_pad, chunk_size):
            sl = slice(start, start + chunk_size)
            a, b = _branch_states(
                graphdef,
                state,
                cache,
                *(place(jnp.asarray(x[sl], jnp.int32), "batch")
                  for x in (tokens_p, points_p, ia_p, ib_p)),
            )
            outs_a.append(_host64(a))
            outs_b.append(_host64(b))
        # [L + 1, N, m] -> [N, L + 1, m]
        per_dtype_a.append(np.concatenate(outs_a, axis=1)[:, :n].swapaxes(0, 1))
        per_dtype_b.append(np.concatenate(outs_b, axis=1)[:, :n].swapaxes(0, 1))
    return CollapseSweep(
        lengths=lengths,
        seq_lengths=tuple(family.seq_length(k) for k in lengths),
        dtypes=dtypes,
        states=np.stack(per_dtype_a),
        states_star=np.stack(per_dtype_b),
    )


def collapse_sweep_slow(
    model: Decoder,
    family: PairFamily,
    lengths: Sequence[int],
    dtypes: Sequence[str] = ("float32",),
    *,
    softmax_dtype: str | None = None,
) -> CollapseSweep:
    """Reference for `collapse_sweep`: a separate full forward of s_n and of s*_n for every
    n (no cache, no branching).

    For a causal model every sequence is right-padded to one length (future positions are
    invisible), so one compilation serves all n; a bidirectional model is run at each exact
    length (one compilation per length). Same arguments and result as `collapse_sweep`.
    """
    lengths, dtypes = _check_sweep_args(model, family, lengths, dtypes, softmax_dtype)
    pairs = [family.pair(n) for n in lengths]
    longest = max(len(b) for _, b in pairs)
    causal = model.config.causal
    width = -(-longest // _CAPACITY_QUANTUM) * _CAPACITY_QUANTUM
    if model.config.pos_encoding == "learned":
        if longest > model.config.max_len:
            raise ValueError(f"sequences reach length {longest} > max_len={model.config.max_len}")
        width = min(width, model.config.max_len)
    states, states_star = [], []
    for dtype in dtypes:
        m = with_precision(model, **_precision_kwargs(dtype, softmax_dtype))
        graphdef, state = nnx.split(m)
        got_a, got_b = [], []
        for a, b in pairs:
            if causal:
                rows = [r + [family.filler_id] * (width - len(r)) for r in (a, b)]
                tokens, last = jnp.asarray(rows, jnp.int32), jnp.asarray([len(a) - 1, len(b) - 1])
                out = _host64(_forward_states(graphdef, state, tokens, last))  # [L + 1, 2, m]
                got_a.append(out[:, 0])
                got_b.append(out[:, 1])
            else:
                for seq, got in ((a, got_a), (b, got_b)):
                    out = _forward_states(
                        graphdef, state, jnp.asarray([seq], jnp.int32), jnp.asarray([len(seq) - 1])
                    )
                    got.append(_host64(out)[:, 0])
        states.append(np.stack(got_a))
        states_star.append(np.stack(got_b))
    return CollapseSweep(
        lengths=lengths,
        seq_lengths=tuple(len(a) for a, _ in pairs),
        dtypes=dtypes,
        states=np.stack(states),
        states_star=np.stack(states_star),
    )


# ---- collapse lengths -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DecayFit:
    """distance(n) ~ C n^slope, least squares in log-log on the reference format."""

    dtype: str
    slope: float
    log_c: float

    def __call__(self, n) -> np.ndarray:
        return np.exp(self.log_c + self.slope * np.log(np.asarray(n, float)))


def fit_decay(sweep: CollapseSweep, dtype: str, norm: str = "linf", level: int = -1) -> DecayFit:
    """Log-log least-squares fit of the pair distance against n (R4's decay).

    Args:
        sweep: a `CollapseSweep`; dtype: the format to fit (float64 or float32: above the
            rounding floor); norm: "l1" / "linf"; level: which level (-1: y).
    Returns:
        `DecayFit` (uses the n > 0 with a non-zero distance; needs at least two).
    """
    d = sweep.distance(norm)[sweep.index(dtype), :, level]
    n = np.asarray(sweep.lengths, float)
    use = (d > 0) & (n > 0)
    if use.sum() < 2:
        raise ValueError(f"fewer than two non-zero distances to fit in {dtype}")
    slope, log_c = np.polyfit(np.log(n[use]), np.log(d[use]), 1)
    return DecayFit(dtype=dtype, slope=float(slope), log_c=float(log_c))


@dataclasses.dataclass(frozen=True)
class CollapseLength:
    """When the pair becomes indistinguishable in one format (R5, R6); arrays are [N] over
    the sweep's lengths in increasing order.

    distance: the pair's distance computed in this format;
    reference_distance: the same in the reference format (the true difference);
    noise: ||state_format(s_n) - state_reference(s_n)||, the rounding error of one run;
    noise_floor: median of `noise` over n;
    identical: bit-identical pair states in this format;
    indistinguishable: identical, or reference_distance <= noise_floor;
    first_identical: smallest n with bit-identical states (None: never);
    collapse_length: smallest n from which every later pair is indistinguishable (None: not
        within the sweep);
    threshold: u * scale; predicted_length: n where the fitted decay reaches the threshold.
    """

    dtype: str
    lengths: np.ndarray
    unit_roundoff: float
    distance: np.ndarray
    reference_distance: np.ndarray
    noise: np.ndarray
    noise_floor: float
    identical: np.ndarray
    indistinguishable: np.ndarray
    first_identical: int | None
    collapse_length: int | None
    threshold: float
    predicted_length: float | None


@dataclasses.dataclass(frozen=True)
class CollapseReport:
    """`collapse_lengths` result: the decay fit, the state scale M, and per-format lengths
    (per_dtype: format name -> `CollapseLength`)."""

    norm: str
    level: int
    fit: DecayFit
    scale: float
    per_dtype: dict


def collapse_lengths(
    sweep: CollapseSweep,
    *,
    norm: str = "linf",
    level: int = -1,
    reference: str = "float64",
    fit_dtype: str | None = None,
) -> CollapseReport:
    """Collapse length of every format in a sweep, measured and predicted (R5, R6).

    Measured: the pair is indistinguishable in format f at n when its states in f are
    bit-identical, or when its true distance (the reference format's) is at most f's
    rounding-noise floor: the median over n of the distance between f's state of s_n and
    the reference state of the same s_n. Below that floor f's two states differ by
    rounding, not by content. The collapse length is the smallest n of the sweep from which
    this holds for every later n.

    Predicted: with the fit distance(n) ~ C n^s (s < 0) on `fit_dtype` and the typical
    state magnitude M = median_n ||state_reference(s_n)|| (same norm and level), the pair
    drops below the format's resolution u * M (u = 2^-53, 2^-24, 2^-11, 2^-8) at

        n_pred = (u * M / C)^(1 / s) = exp((log(u M) - log C) / s).

    One rounding of the output is the least error a forward pass commits; the measured
    floor is the accumulated error of a whole pass (a small multiple of u M), so the
    measured length comes somewhat before n_pred.

    Args:
        sweep: a `CollapseSweep` that includes `reference`.
        norm: "l1" or "linf"; level: state level (-1: y; 0..L-1: resid_post of a layer).
        reference: the format whose run counts as exact (float64).
        fit_dtype: where to fit the decay (default: the reference).
    Returns:
        `CollapseReport`.
    """
    ref = sweep.index(reference)
    n_levels = sweep.states.shape[2]
    if not -n_levels <= level < n_levels:
        raise ValueError(f"level must be in [{-n_levels}, {n_levels}), got {level}")
    fit = fit_decay(sweep, fit_dtype or reference, norm, level)
    order = np.argsort(sweep.lengths, kind="stable")
    lengths = np.asarray(sweep.lengths)[order]
    states = sweep.states[:, order, level]  # [D, N, m]
    stars = sweep.states_star[:, order, level]
    scale = float(np.median(_norm(states[ref], norm)))
    ref_dist = _norm(states[ref] - stars[ref], norm)
    per_dtype = {}
    for i, dtype in enumerate(sweep.dtypes):
        noise = _norm(states[i] - states[ref], norm)
        floor = float(np.median(noise))
        identical = (states[i] == stars[i]).all(-1)
        ok = identical | (ref_dist <= floor)
        # ok at every index from j on: reverse cumulative AND.
        tail_ok = np.flip(np.logical_and.accumulate(np.flip(ok)))
        u = UNIT_ROUNDOFF[dtype]
        threshold = u * scale
        predicted = None
        if fit.slope < 0 and threshold > 0:
            exponent = (math.log(threshold) - fit.log_c) / fit.slope
            # A nearly flat decay predicts no collapse at any representable length.
            predicted = float(math.exp(exponent)) if exponent < 700 else math.inf
        per_dtype[dtype] = CollapseLength(
            dtype=dtype,
            lengths=lengths,
            unit_roundoff=u,
            distance=_norm(states[i] - stars[i], norm),
            reference_distance=ref_dist,
            noise=noise,
            noise_floor=floor,
            identical=identical,
            indistinguishable=ok,
            first_identical=int(lengths[identical.argmax()]) if identical.any() else None,
            collapse_length=int(lengths[tail_ok.argmax()]) if tail_ok.any() else None,
            threshold=threshold,
            predicted_length=predicted,
        )
    return CollapseReport(norm=norm, level=level, fit=fit, scale=scale, per_dtype=per_dtype)
