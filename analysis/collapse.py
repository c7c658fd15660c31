"""Representational collapse (R4), its consequence for counting (R5) and precision (R6).

R4 (Theorem 4.2): a sequence s_n and s*_n, the same sequence with its last token repeated,
get last-token states ||v_n^(L) - v*_(n+1)^(L)|| that vanish as n grows. R5: once the two
states are equal in the model's float format, the model cannot tell them apart, so it
cannot count. R6: the lower the precision, the shorter the n at which that happens.

Pairs come from `analysis.pairs` (token-level families), collapse lengths from
`analysis.collapse_length` (fits and the formats' resolution); both are re-exported here so
that `analysis.collapse.<name>` keeps naming every collapse tool.

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
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from analysis.checks import check_computed_finite
from analysis.collapse_length import (  # noqa: F401  (re-exported)
    UNIT_ROUNDOFF, CollapseLength, CollapseReport, DecayFit, check_sweep_finite,
    collapse_lengths, fit_decay, pair_norm,
)
from analysis.pairs import (  # noqa: F401  (re-exported)
    PairFamily, SequenceFamily, check_count, check_ids, counting_pairs, ones_then_zero_pairs,
    repeated_last_pair, separated_digits,
)
from transformer import generate
from transformer.config import DTYPES, FLOAT8_FORMATS
from transformer.model import Decoder
from transformer.rebuild import rebuild

# Incremented inside the traced functions below, so each count is a number of traces,
# i.e. of XLA compilations (a jit cache hit does not trace). Tests read it (with the
# prefill's, `transformer.generate.trace_counts`) to show that a sweep's compilations do not
# grow with the number of lengths.
_TRACE_COUNTS: collections.Counter = collections.Counter()

# Cache capacities are rounded up to a multiple of this (fewer distinct compiled shapes).
_CAPACITY_QUANTUM = 128


def trace_counts() -> dict[str, int]:
    """How many times the prefill and the jitted branch / forward steps were traced."""
    return {"prefill": generate.trace_counts().get("prefill", 0), **_TRACE_COUNTS}


# ---- compiled steps (each traced once per model, dtype and shape) ---------------------


def _levels(resid_post: jax.Array, y: jax.Array) -> jax.Array:
    """resid_post [L, ..., m] and y [..., m] -> [L + 1, ..., m]."""
    return jnp.concatenate([resid_post, y[None]], axis=0)


def host64(x: jax.Array) -> np.ndarray:
    """A float64 NumPy copy (bfloat16 -> float32 is exact; NumPy then widens exactly)."""
    if x.dtype in (jnp.bfloat16, jnp.float16):
        x = x.astype(jnp.float32)
    return np.asarray(x, dtype=np.float64)


@functools.partial(jax.jit, static_argnums=(0, 7))
def branch_readings(graphdef, state, cache, tokens, prefix_lengths, ia, ib, heads: bool):
    """tokens [B, t] branched off prefix_lengths [B] (`Decoder.branch`) -> the states of
    every level [2, L + 1, B, m] at continuation indices ia and ib [B], and (heads) the last
    layer's per-head attention outputs o_h = sum_k Lambda_(h, q, k) v_k (before W_O) there,
    [2, B, h, d_head] (else None)."""
    _TRACE_COUNTS["branch"] += 1
    model = nnx.merge(graphdef, state)
    out = model.branch(cache, tokens, prefix_lengths, capture=True)
    levels = _levels(out.intermediates.resid_post, out.y)  # [L + 1, B, t, m]
    rows = jnp.arange(tokens.shape[0])
    states = jnp.stack([levels[:, rows, ia], levels[:, rows, ib]])
    if not heads:
        return states, None
    # Last layer: the values the branch attended to are the cache's slots, then its own.
    c, b = model.config, tokens.shape[0]
    v_ctx = jnp.broadcast_to(cache.values[-1], (b, *cache.values.shape[2:]))
    v_all = jnp.concatenate([v_ctx.astype(c.compute_dtype), out.new_values[-1]], axis=1)
    pattern = out.intermediates.attn_pattern[-1].astype(c.compute_dtype)  # [B, h, t, k]
    pg = pattern.reshape(b, c.n_kv_heads, c.n_groups, *pattern.shape[2:])
    o = jnp.einsum("bgrqk,bkgd->bqgrd", pg, v_all, precision=c.precision)
    o = o.reshape(b, tokens.shape[1], c.n_heads, c.d_head)  # [B, t, h, d]
    return states, jnp.stack([o[rows, ia], o[rows, ib]])


@functools.partial(jax.jit, static_argnums=0)
def _forward_states(graphdef, state, tokens, last):
    """Full forwards of tokens [b, P] (no cache) -> states at positions last [b]:
    [L + 1, b, m]."""
    _TRACE_COUNTS["forward"] += 1
    model = nnx.merge(graphdef, state)
    _, inter = model(tokens, capture=True)
    levels = _levels(inter.resid_post, inter.y)  # [L + 1, b, P, m]
    return levels[:, jnp.arange(tokens.shape[0]), last]


# ---- measuring pairs ------------------------------------------------------------------


def last_token_states(model: Decoder, seq) -> np.ndarray:
    """Last-token states of one sequence at every level (one full forward, no cache;
    compiled once per sequence length).

    Args:
        model: the decoder; seq: [n] token ids.
    Returns:
        [L + 1, m] float64: resid_post of each layer, then y.
    """
    ids = check_ids("seq", seq)
    if not ids:
        raise ValueError("seq is empty")
    if max(ids) >= model.config.vocab_size:
        raise ValueError(f"token id {max(ids)} is outside the vocabulary")
    graphdef, state = nnx.split(model)
    tokens, last = jnp.asarray([ids], jnp.int32), jnp.asarray([len(ids) - 1])
    out = host64(_forward_states(graphdef, state, tokens, last))[:, 0]
    check_computed_finite(out, f"the last-token states of a length-{len(ids)} sequence",
                          lambda i: f"level {i[0]}")
    return out


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

    def __post_init__(self):
        check_sweep_finite(self)  # no distance or fit is made of a NaN state

    def distance(self, norm: str = "linf") -> np.ndarray:
        """[D, N, L + 1] pair distances in the given norm ("l1" or "linf")."""
        return pair_norm(self.states - self.states_star, norm)

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


def _check_sweep_args(model, family, lengths, dtypes, softmax_dtype):
    if not isinstance(model, Decoder):
        raise ValueError(f"model must be a transformer.Decoder, got {type(model).__name__}")
    if not isinstance(family, (PairFamily, SequenceFamily)):
        raise ValueError(
            f"family must be a PairFamily or SequenceFamily, got {type(family).__name__}"
        )
    lengths = tuple(check_count("lengths entry", n, family.min_n) for n in lengths)
    if not lengths:
        raise ValueError("lengths is empty")
    dtypes = tuple(dtypes)
    if not dtypes:
        raise ValueError("dtypes is empty")
    for d in dtypes:
        if d not in DTYPES + FLOAT8_FORMATS:
            raise ValueError(f"dtype {d!r} is not one of {DTYPES + FLOAT8_FORMATS}")
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
    float64 reference stays float64 throughout). A float8 format is fake quantisation:
    float32 weights and arithmetic, every stored activation rounded to it
    (`activation_format`)."""
    if dtype in FLOAT8_FORMATS:
        return dict(dtype="float32", param_dtype="float32", softmax_dtype="float32",
                    activation_format=dtype)
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
        model: a causal decoder (not modified; each format is `rebuild` of it).
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
    chunk_size = check_count("chunk_size", chunk_size, 1)
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
        m = rebuild(model, **_precision_kwargs(dtype, softmax_dtype))
        graphdef, state = nnx.split(m)
        state = place(state, "rep")
        cache = place(generate.prefill(m, filled[None], capacity), "rep")
        outs_a, outs_b = [], []
        for start in range(0, n + n_pad, chunk_size):
            sl = slice(start, start + chunk_size)
            ab, _ = branch_readings(
                graphdef,
                state,
                cache,
                *(place(jnp.asarray(x[sl], jnp.int32), "batch")
                  for x in (tokens_p, points_p, ia_p, ib_p)),
                False,
            )
            outs_a.append(host64(ab[0]))
            outs_b.append(host64(ab[1]))
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
        m = rebuild(model, **_precision_kwargs(dtype, softmax_dtype))
        graphdef, state = nnx.split(m)
        got_a, got_b = [], []
        for a, b in pairs:
            if causal:
                rows = [r + [family.filler_id] * (width - len(r)) for r in (a, b)]
                tokens, last = jnp.asarray(rows, jnp.int32), jnp.asarray([len(a) - 1, len(b) - 1])
                out = host64(_forward_states(graphdef, state, tokens, last))  # [L + 1, 2, m]
                got_a.append(out[:, 0])
                got_b.append(out[:, 1])
            else:
                for seq, got in ((a, got_a), (b, got_b)):
                    out = _forward_states(
                        graphdef, state, jnp.asarray([seq], jnp.int32), jnp.asarray([len(seq) - 1])
                    )
                    got.append(host64(out)[:, 0])
        states.append(np.stack(got_a))
        states_star.append(np.stack(got_b))
    return CollapseSweep(
        lengths=lengths,
        seq_lengths=tuple(len(a) for a, _ in pairs),
        dtypes=dtypes,
        states=np.stack(states),
        states_star=np.stack(states_star),
    )
