"""The paper's synthetic collapse experiments (R4; Figures 8 and 10) to its own protocol.

Queries, keys and values are sampled i.i.d. directly (no token embeddings, no projection
matrices); the second sequence repeats the n-th element; one attention layer of width d and
one head; the L1 distance of the two last tokens after the layer. The paper leaves several
choices open (docs/paper_protocols.md); each is a field of `Reading`, so every plausible
reading runs as a named variant rather than one picked silently.

The layer (every reading). Element i = (x_i, q_i, k_i, v_i): x_i ~ N(0, I_d) is its residual
stream (unit variance, what a LayerNorm'd stream has), q_i, k_i, v_i ~ N(0, sigma^2 I_d)
with sigma^2 = `Reading.variance` (1 or 1/d). At position t_i (0-based):
    s_ij   = q^_i . k^_j / sqrt(d) - m |t_i - t_j| (ALiBi only),   j <= i
    y_i    = LN(x^_i + sum_j softmax_j(s_i) v^_j)                  (LN without parameters)
where the hats add the positional encoding:
    RoPE:  q^_i = R(t_i) q_i, k^_j = R(t_j) k_j (rotate-half, base 10,000);
    ALiBi: the bias above, m = 2^-8 (Press et al.'s slope for a single head);
    APE (sinusoidal p(t), entries of mean square 1/2):
        placement "scores":   q^ = q + sigma p(t), k^ = k + sigma p(t); v, x untouched
                              (the paper's Section 2 model: positions in k(q_i, k_j, p_ij));
        placement "residual": the stream carries p: x^ = x + p(t), and q, k, v (projections
                              of that stream) get sigma p(t);
      sigma p keeps the original Transformer's ratio of position to content (unit-variance
      content, PE entries of mean square 1/2) at the scale of q, k, v.
    NoPE: no hats.
Sequence s has elements 1..n at positions 0..n-1; s* appends element n again, at position n
(`repeat_at="new"`) or n-1 (`"same"`, the copy keeps the copied token's position).

No MLP: with q, k, v sampled directly there are no weights to give it. Everything runs in
float64 on one traced program for all lengths (no recompiling per n).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from transformer import placement
from transformer.config import ATTN_SOFTMAXES
from transformer.layers import alibi_slopes, apply_rope, attention_softmax, sinusoidal_encoding

ENCODINGS = ("none", "rope", "alibi", "sinusoidal")
VARIANCES = ("1", "1/d")
PLACEMENTS = ("scores", "residual")
REPEATS = ("new", "same")
LN_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class Reading:
    """One way to make the paper's open choices (docs/paper_protocols.md, Figure 10).

    variance: "1" (standard Gaussian q, k, v) or "1/d" (variance 1/d, as the paper's C.3).
    placement: where absolute (APE) positions enter: "scores" or "residual".
    repeat_at: position of the repeated element of s*: "new" (n + 1) or "same" (n).
    """

    variance: str = "1/d"
    placement: str = "scores"
    repeat_at: str = "new"

    def __post_init__(self):
        for name, value, choices in (
            ("variance", self.variance, VARIANCES),
            ("placement", self.placement, PLACEMENTS),
            ("repeat_at", self.repeat_at, REPEATS),
        ):
            if value not in choices:
                raise ValueError(f"{name}={value!r} is not one of {choices}")

    @property
    def name(self) -> str:
        copy = "copy at n+1" if self.repeat_at == "new" else "copy at n"
        return f"var {self.variance}, APE in {self.placement}, {copy}"

    def sigma(self, d: int) -> float:
        return 1.0 if self.variance == "1" else d**-0.5


def all_readings() -> list[Reading]:
    """The 8 readings: variance x placement x repeat position."""
    return [Reading(v, p, r) for v in VARIANCES for p in PLACEMENTS for r in REPEATS]


def _check_lengths(lengths: Sequence[int]) -> np.ndarray:
    lengths = np.asarray(list(lengths))
    if lengths.ndim != 1 or lengths.size == 0:
        raise ValueError("lengths must be a non-empty list of integers")
    if not np.issubdtype(lengths.dtype, np.integer) or lengths.min() < 1:
        raise ValueError(f"lengths must be positive integers, got {lengths.tolist()}")
    return lengths.astype(np.int32)


APPENDED = ("repeat", "fresh")


def sample_elements(key: jax.Array, n_max: int, d: int, sigma: float) -> dict[str, jax.Array]:
    """x [n_max + 1, d] ~ N(0, 1); q, k, v [n_max + 1, d] ~ N(0, sigma^2), float64.

    Row n_max is a spare element, used only by the `appended="fresh"` control."""
    kx, kq, kk, kv = jax.random.split(key, 4)
    draw = lambda k, s: s * jax.random.normal(k, (n_max + 1, d), jnp.float64)  # noqa: E731
    return {"x": draw(kx, 1.0), "q": draw(kq, sigma), "k": draw(kk, sigma), "v": draw(kv, sigma)}


def _rotate(x: jax.Array, positions: jax.Array) -> jax.Array:
    """RoPE on rows x [t, d] at positions [t] (the decoder's own rotation)."""
    return apply_rope(x[None, :, None, :], positions[None], x.shape[-1], 10_000.0)[0, :, 0]


def _ln(z: jax.Array) -> jax.Array:
    z = z - z.mean(-1, keepdims=True)
    return z / jnp.sqrt((z * z).mean(-1, keepdims=True) + LN_EPS)


def _pair_l1(key, lengths, sigma, shift, *, n_max, d, encoding, placement, appended,
             softmax="standard", ssmax_s=1.0):
    """||y_n - y*_(n+1)||_1 for every n in lengths [L], one draw of the elements.

    One matrix of scores [L, n_max] per sequence, masked to the first n keys; the last
    element of s* (the repeated element n, or a fresh one for the control) enters as one
    extra key and value and is the query."""
    el = sample_elements(key, n_max, d, sigma)
    idx = jnp.arange(n_max)
    pos = idx.astype(jnp.int32)  # element j sits at position j in both sequences
    last = lengths - 1  # [L] index (and position) of element n
    t_star = last + shift  # position of s*'s last element: n (shift 1) or n - 1 (shift 0)
    q, k, v, x = (el[name][:n_max] for name in "qkvx")
    src = last if appended == "repeat" else jnp.full_like(last, n_max)  # s*'s last element
    ape = encoding == "sinusoidal"
    ape_residual = ape and placement == "residual"
    slope = float(alibi_slopes(1)[0])

    def with_ape(a, p, scale):
        return a + scale * sinusoidal_encoding(p, d, jnp.float64)

    def as_query_or_key(a, t):
        if ape:
            return with_ape(a, t, sigma)
        return _rotate(a, t) if encoding == "rope" else a

    keys = as_query_or_key(k, pos)  # [n_max, d], shared by s and s*
    vals = with_ape(v, pos, sigma) if ape_residual else v

    def last_state(element, t_query, extra: bool):
        """y of the last token: element's query at t_query [L] against keys 1..n, plus the
        element itself as an extra key/value at t_query when `extra`; the weights come
        from the decoder's own softmax (`attention_softmax`, with its switch)."""
        qq = as_query_or_key(el["q"][element], t_query)  # [L, d]
        s = jnp.einsum("ld,jd->lj", qq, keys) / jnp.sqrt(d)  # [L, n_max]
        if encoding == "alibi":
            s = s - slope * jnp.abs(t_query[:, None] - pos[None, :])
        seen = idx[None, :] <= last[:, None]  # [L, n_max]
        if extra:
            k_x = as_query_or_key(el["k"][element], t_query)
            s_x = jnp.einsum("ld,ld->l", qq, k_x) / jnp.sqrt(d)  # [L]; ALiBi distance 0
            s = jnp.concatenate([s, s_x[:, None]], axis=1)  # [L, n_max + 1]
            seen = jnp.concatenate([seen, jnp.ones_like(seen[:, :1])], axis=1)
        _, w = attention_softmax(s, seen, kind=softmax, ssmax_s=ssmax_s)
        mixed = w[:, :n_max] @ vals  # [L, d]
        if extra:
            v_x = el["v"][element]
            v_x = with_ape(v_x, t_query, sigma) if ape_residual else v_x
            mixed = mixed + w[:, n_max:] * v_x
        stream = el["x"][element]
        stream = with_ape(stream, t_query, 1.0) if ape_residual else stream
        return _ln(stream + mixed)

    y = last_state(last, last, extra=False)
    y_star = last_state(src, t_star, extra=True)
    return jnp.abs(y - y_star).sum(-1)


_STATIC = ("n_max", "d", "encoding", "placement", "appended", "softmax", "ssmax_s")
@functools.partial(jax.jit, static_argnames=_STATIC)
def _pair_l1_seeds(keys, lengths, sigma, shift, **options):
    """`_pair_l1` for a batch of keys [S]: [S, L] (sigma and the copy's position shift are
    traced: the readings of one encoding and placement share one compiled program)."""
    return jax.vmap(lambda key: _pair_l1(key, lengths, sigma, shift, **options))(keys)
SEED_CHUNK = 8  # draws per compiled call: bounds memory at [8, L, n_max] scores


def synthetic_pair_distances(
    encoding: str,
    reading: Reading,
    lengths: Sequence[int],
    seeds: Sequence[int],
    d: int = 64,
    *,
    appended: str = "repeat",
    softmax: str = "standard",
    ssmax_s: float = 1.0,
) -> np.ndarray:
    """R4 (Theorem 4.2), the paper's Figure 10 / 8 protocol: ||y_n - y*_(n+1)||_1.

    Args:
        encoding: "none", "rope", "alibi" or "sinusoidal" (APE).
        reading: the open choices (`Reading`).
        lengths: the lengths n (one compiled program serves them all).
        seeds: one independent draw of (x, q, k, v) per seed.
        d: width (the paper: 64).
        appended: "repeat" (the protocol: s* repeats element n) or "fresh" (a control
            outside the theorem: s* appends an independent element, which never collapses).
        softmax, ssmax_s: the attention softmax and its s (the decoder's `attn_softmax`
            switch, `transformer.layers.attention_softmax`; M1).
    Returns:
        [len(seeds), len(lengths)] float64 L1 distances.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding={encoding!r} is not one of {ENCODINGS}")
    if softmax not in ATTN_SOFTMAXES:
        raise ValueError(f"softmax={softmax!r} is not one of {ATTN_SOFTMAXES}")
    if appended not in APPENDED:
        raise ValueError(f"appended={appended!r} is not one of {APPENDED}")
    if not isinstance(d, int) or d < 2 or d % 2:
        raise ValueError(f"d must be an even integer >= 2, got {d!r}")
    if not jax.config.jax_enable_x64:
        raise ValueError("the synthetic collapse runs in float64: enable jax_enable_x64")
    lengths = _check_lengths(lengths)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty")
    options = dict(
        n_max=int(lengths.max()), d=d, encoding=encoding, placement=reading.placement,
        appended=appended, softmax=softmax, ssmax_s=float(ssmax_s),
    )
    rows = []
    with placement.default_device_for(jnp.float64):  # the host CPU when there is a TPU/GPU
        sigma = jnp.float64(reading.sigma(d))
        shift = jnp.int32(1 if reading.repeat_at == "new" else 0)
        for start in range(0, len(seeds), SEED_CHUNK):
            chunk = seeds[start:start + SEED_CHUNK]
            chunk = chunk + [chunk[-1]] * (SEED_CHUNK - len(chunk))  # one shape: one compile
            keys = jnp.stack([jax.random.key(s) for s in chunk])
            rows.append(np.asarray(_pair_l1_seeds(keys, jnp.asarray(lengths), sigma, shift,
                                                  **options)))
    return np.concatenate(rows)[: len(seeds)]


def reading_applies(encoding: str, reading: Reading) -> bool:
    """Whether a reading's placement choice changes anything for an encoding (it matters
    for APE only; for the others the two placements give the same numbers)."""
    return encoding == "sinusoidal" or reading.placement == "scores"
