"""Sweeps of arbitrary token-id pairs (s_n, s*_n), as the `llm` profile's Figure 5
experiments need (R4, R6, R12): one prefill per model, prompt and float format, every length
branched off it, and two readings of each pair from that one pass.

Readings of the last token of s_n and of s*_n:
- the states of every level (resid_post of each layer, then the final-normed y), as
  `analysis.CollapseSweep` holds them (the "y" reading is its last level);
- the last layer's per-head attention outputs o_h = sum_k Lambda_(h, n, k) v_k (before the
  output projection W_O), [h, d_head]: the paper's Figure 5 metric, "L-infinity distance of
  the last-layer last-token representations, averaged over each head", read as the mean
  over heads of ||o_h(s_n) - o_h(s*_n)||_inf, with the min and max over heads as a band.
  (The paper does not say which tensor it split into heads; Gemma 7B has d_model 3072 but
  16 heads of 256, so its final state has no head-sized chunks: the per-head attention
  outputs are the reading that exists for its model. Documented in docs/results.md.)

The longest pair sequence is prefilled in chunks (`transformer.generate.prefill`), then every
length continues from its own branch point (`Decoder.branch`, exact thanks to the causal
mask; `analysis.collapse.branch_readings`, the compiled step `collapse_sweep` uses too), in
batches of a fixed size, so the compilations do not depend on the number of lengths.
`analysis.collapse_sweep` computes the same states from a `PairFamily`'s own plan; tests
compare the two, and the per-head outputs against the attention sublayer's output
(sum_h o_h W_O[h] = resid_mid - resid_pre in a Pre-LN layer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from analysis.collapse import CollapseSweep, branch_readings, host64
from transformer.config import DTYPES
from transformer.generate import prefill
from transformer.model import Decoder
from transformer.rebuild import rebuild

PREFILL_CHUNK = 256  # tokens per prefill call: attention scores [h, 256, capacity + 256]
BRANCH_BATCH = 32  # branches per compiled call
CAPACITY_QUANTUM = 256  # cache capacities are rounded up to this (fewer compiled shapes)


@dataclasses.dataclass(frozen=True)
class PairSweep:
    """Both readings of every pair (s_n, s*_n) in every format, from one pass per format.

    collapse: `analysis.CollapseSweep` (states [D, N, L + 1, m], levels resid_post..., y);
    heads, heads_star: [D, N, h, d_head] float64, the last layer's per-head attention
    outputs at the last token of s_n and of s*_n.
    """

    collapse: CollapseSweep
    heads: np.ndarray
    heads_star: np.ndarray

    @property
    def lengths(self) -> tuple[int, ...]:
        return self.collapse.lengths

    @property
    def dtypes(self) -> tuple[str, ...]:
        return self.collapse.dtypes

    def index(self, dtype: str) -> int:
        return self.collapse.index(dtype)

    def y_linf(self, dtype: str) -> np.ndarray:
        """[N] ||y(s_n) - y(s*_n)||_inf at the last token."""
        return self.collapse.linf[self.index(dtype), :, -1]

    def head_linf(self, dtype: str) -> np.ndarray:
        """[N, h] ||o_h(s_n) - o_h(s*_n)||_inf per head of the last layer."""
        i = self.index(dtype)
        return np.abs(self.heads[i] - self.heads_star[i]).max(-1)

    def head_band(self, dtype: str) -> dict[str, np.ndarray]:
        """The Figure 5 reading: mean, min and max over heads of `head_linf`, each [N]."""
        d = self.head_linf(dtype)
        return {"mean": d.mean(-1), "min": d.min(-1), "max": d.max(-1)}


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


def branch_plan(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]):
    """Where each pair branches off one shared trunk.

    Every s*_n must extend s_n (s*_n[:len(s_n)] == s_n: true of all the paper's pairs). The
    trunk is the longest s*_n; pair n branches at p_n = min(common prefix of s*_n and the
    trunk, len(s_n) - 1) (at least s_n's last token is computed in the branch) and
    continues with s*_n[p_n:], right-padded to a common width (future tokens are invisible).

    Returns:
        (trunk ids, points [N], tokens [N, t], ia [N], ib [N]): pair n's last tokens are at
        continuation indices ia (s_n) and ib (s*_n).
    """
    pairs = [(list(map(int, a)), list(map(int, b))) for a, b in pairs]
    if not pairs:
        raise ValueError("no pairs to sweep")
    for a, b in pairs:
        if not a or b[: len(a)] != a or len(b) <= len(a):
            raise ValueError("every pair (s, s*) needs a non-empty s that s* extends")
    trunk = max((b for _, b in pairs), key=len)
    points = np.array([min(_common_prefix(b, trunk), len(a) - 1) for a, b in pairs])
    conts = [b[p:] for (_, b), p in zip(pairs, points)]
    t = max(map(len, conts))
    tokens = np.array([c + [c[-1]] * (t - len(c)) for c in conts], np.int64)
    ia = np.array([len(a) - 1 - p for (a, _), p in zip(pairs, points)])
    ib = np.array([len(b) - 1 - p for (_, b), p in zip(pairs, points)])
    return trunk, points, tokens, ia, ib


def pair_sweep(
    model: Decoder,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    lengths: Sequence[int],
    dtypes: Sequence[str],
) -> PairSweep:
    """States and per-head outputs of every pair in every format (see the module docstring).

    Args:
        model: a causal decoder (not modified; each format is `rebuild` of it, with
            parameters, compute and softmax in that format, as `analysis.collapse_sweep`).
        pairs: one (s_n, s*_n) of token ids per length; lengths: the n they stand for.
        dtypes: format names ("float64" needs jax_enable_x64).
    Returns:
        `PairSweep` (the lengths in the order given).
    """
    if len(pairs) != len(lengths) or not pairs:
        raise ValueError(f"need one pair per length, got {len(pairs)} pairs, {len(lengths)} n")
    bad = [d for d in dtypes if d not in DTYPES]
    if bad or not dtypes:
        raise ValueError(f"dtypes must be a non-empty list from {DTYPES}, got {list(dtypes)}")
    if not model.config.causal:
        raise ValueError("pair_sweep shares a prefix, which is exact only for a causal model")
    trunk, points, tokens, ia, ib = branch_plan(pairs)
    c = model.config
    if max(trunk) >= c.vocab_size or int(tokens.max()) >= c.vocab_size:
        raise ValueError(f"a token id is outside the vocabulary of {c.vocab_size}")
    prefix_len = int(points.max())
    capacity = max(1, -(-prefix_len // CAPACITY_QUANTUM)) * CAPACITY_QUANTUM
    chunk = min(PREFILL_CHUNK, capacity)
    if c.pos_encoding == "learned" and capacity + tokens.shape[1] > c.max_len:
        raise ValueError(f"the sweep needs {capacity + tokens.shape[1]} positions > max_len")
    filled = np.full(capacity, trunk[-1], np.int32)  # slots >= a branch point stay unseen
    filled[:prefix_len] = trunk[:prefix_len]

    n = len(pairs)
    n_pad = -n % BRANCH_BATCH
    pad = lambda a: np.concatenate([a, np.repeat(a[-1:], n_pad, axis=0)])
    tokens_p, points_p, ia_p, ib_p = (jnp.asarray(pad(x), jnp.int32)
                                      for x in (tokens, points, ia, ib))
    states, heads = [], []
    for dtype in dtypes:
        m = rebuild(model, dtype=dtype, param_dtype=dtype, softmax_dtype=dtype)
        cache = prefill(m, filled[None], capacity, chunk=chunk)
        graphdef, state = nnx.split(m)
        lv, hd = [], []
        for s in range(0, n + n_pad, BRANCH_BATCH):
            sl = slice(s, s + BRANCH_BATCH)
            a, h = branch_readings(graphdef, state, cache, tokens_p[sl], points_p[sl],
                                   ia_p[sl], ib_p[sl], True)
            lv.append(host64(a))
            hd.append(host64(h))
        states.append(np.concatenate(lv, axis=2)[:, :, :n].transpose(0, 2, 1, 3))  # [2,N,L+1,m]
        heads.append(np.concatenate(hd, axis=1)[:, :n])  # [2, N, h, d]
        del m, state, cache
    states, heads = np.stack(states, axis=1), np.stack(heads, axis=1)  # [2, D, ...]
    collapse = CollapseSweep(
        lengths=tuple(int(k) for k in lengths),
        seq_lengths=tuple(len(a) for a, _ in pairs),
        dtypes=tuple(dtypes),
        states=states[0],
        states_star=states[1],
    )
    return PairSweep(collapse=collapse, heads=heads[0], heads_star=heads[1])


def sweep_lengths(n_max: int, n_grid: int, must: Sequence[int] = ()) -> list[int]:
    """Lengths 1..n_max: a geometric grid of about `n_grid` points, plus `must` (<= n_max).

    The collapse sweeps share one prefix, so their cost is the prefill of the longest
    sequence plus one short branch per length: fewer lengths below the maximum keep the
    longest run affordable (issue 14: "lowering the number of lengths before the maximum").
    """
    if n_max < 1 or n_grid < 2:
        raise ValueError(f"need n_max >= 1 and n_grid >= 2, got {n_max}, {n_grid}")
    grid = np.unique(np.round(np.geomspace(1, n_max, n_grid)).astype(int))
    return sorted(set(grid.tolist()) | {int(k) for k in must if 1 <= k <= n_max})
