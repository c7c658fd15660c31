"""Building blocks of the decoder: norms, positional encodings, attention, MLP.

Einsum vocabulary (used everywhere in this package):
    b batch, q query position, k key position, h query heads, g key/value heads,
    r query heads per key/value head (h = g * r), d head dim, m model width,
    f MLP width, v vocabulary.

Head layout: query head `h = g_index * r + r_index`, so key/value head `g` serves the
query heads g*r .. g*r + r - 1 (the Hugging Face `repeat_kv` convention).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from transformer.config import TransformerConfig
from transformer.outputs import AttentionOutput
from transformer.shapes import Array, Bool, Float, Int, shape_checked


def _normal(rngs: nnx.Rngs, shape, std: float, dtype) -> jax.Array:
    return (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)


def round_to_format(x: jax.Array, fmt: str | None) -> jax.Array:
    """Fake quantisation: x rounded to a float8 format and back to its own dtype.

    Round to nearest, ties to even (the cast), after clipping to the format's largest finite
    value (e4m3fn has no infinity: an unclipped overflow would be NaN; no per-tensor scale).
    fmt None returns x unchanged. Not meant for differentiation (tangents are rounded too).
    """
    if fmt is None:
        return x
    f8 = jnp.dtype(fmt)
    big = jnp.asarray(float(jnp.finfo(f8).max), x.dtype)
    return jnp.clip(x, -big, big).astype(f8).astype(x.dtype)


# ---- norms -----------------------------------------------------------------------------


class Norm(nnx.Module):
    """One normalisation layer: layernorm, rmsnorm, none, or constant (x / beta).

    Statistics are accumulated in `config.accum_dtype` (the softmax/normalisation dtype),
    the result is returned in the input's dtype.
    """

    def __init__(self, config: TransformerConfig, width: int | None = None, *, rngs: nnx.Rngs):
        del rngs  # deterministic init
        self.kind = config.norm
        self.eps = config.norm_eps
        self.beta = config.norm_beta
        self.unit_offset = config.rmsnorm_unit_offset
        self.accum_dtype = config.accum_dtype
        self.store_format = config.activation_format
        width = width or config.d_model
        pdt = config.params_dtype
        if self.kind in ("layernorm", "rmsnorm"):
            # With the (1 + w) form the neutral scale is w = 0.
            init = jnp.zeros if (self.kind == "rmsnorm" and self.unit_offset) else jnp.ones
            self.scale = nnx.Param(init((width,), pdt))
        if self.kind == "layernorm" and config.norm_bias:
            self.bias = nnx.Param(jnp.zeros((width,), pdt))
        else:
            self.bias = None

    @shape_checked
    def __call__(self, x: Float[Array, "*batch m"]) -> Float[Array, "*batch m"]:
        if self.kind == "none":
            return x
        if self.kind == "constant":
            return round_to_format(x / jnp.asarray(self.beta, x.dtype), self.store_format)
        xf = x.astype(self.accum_dtype)
        if self.kind == "layernorm":
            xf = xf - xf.mean(-1, keepdims=True)
        inv = jax.lax.rsqrt((xf * xf).mean(-1, keepdims=True) + self.eps)
        scale = self.scale[...].astype(self.accum_dtype)
        if self.unit_offset and self.kind == "rmsnorm":
            scale = 1.0 + scale
        out = xf * inv * scale
        if self.bias is not None:
            out = out + self.bias[...].astype(self.accum_dtype)
        return round_to_format(out.astype(x.dtype), self.store_format)


# ---- positions ---------------------------------------------------------------------------


def sinusoidal_encoding(positions: jax.Array, d_model: int, dtype) -> jax.Array:
    """Vaswani et al. absolute encoding: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos.

    Args:
        positions: integer positions, any shape S.
    Returns:
        [*S, d_model] in `dtype`.
    """
    wide = jnp.promote_types(dtype, jnp.float32)
    freqs = 1.0 / (10_000.0 ** (jnp.arange(0, d_model, 2, dtype=wide) / d_model))  # [m/2]
    angles = positions.astype(wide)[..., None] * freqs  # [*S, m/2]
    pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # [*S, m/2, 2]
    return pe.reshape(*positions.shape, d_model).astype(dtype)


def apply_rope(
    x: jax.Array,
    positions: jax.Array,
    rope_dims: int,
    theta: float,
    linear_factor: float = 1.0,
    *,
    inv_freq: np.ndarray | None = None,
) -> jax.Array:
    """Rotary embedding (rotate-half layout) on the first `rope_dims` dims of each head.

    Args:
        x: [b, t, heads, d].
        positions: [b, t] integer positions.
        linear_factor: linear RoPE scaling: frequencies divided by it (1.0: none).
        inv_freq: [rope_dims / 2] frequencies to use instead of theta's (and linear_factor's),
            e.g. `rope_frequencies` with Llama 3 scaling.
    Returns:
        [b, t, heads, d], same dtype as x.
    """
    wide = jnp.promote_types(x.dtype, jnp.float32)
    half = rope_dims // 2
    if inv_freq is not None:
        inv_freq = jnp.asarray(inv_freq, wide)  # [half]
    else:
        inv_freq = 1.0 / (theta ** (jnp.arange(0, rope_dims, 2, dtype=wide) / rope_dims))
        if linear_factor != 1.0:
            inv_freq = inv_freq / linear_factor
    angles = positions.astype(wide)[..., None] * inv_freq  # [b, t, half]
    cos = jnp.cos(angles)[:, :, None, :]  # [b, t, 1, half]
    sin = jnp.sin(angles)[:, :, None, :]
    rot, rest = x[..., :rope_dims].astype(wide), x[..., rope_dims:]
    x1, x2 = rot[..., :half], rot[..., half:]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return jnp.concatenate([rotated.astype(x.dtype), rest], axis=-1)


def rope_frequencies(
    rope_dims: int, theta: float, linear_factor: float = 1.0, llama3=None
) -> np.ndarray:
    """RoPE's frequencies theta^(-2j / rope_dims), j < rope_dims / 2, scaled.

    linear_factor divides every frequency. llama3 = (factor, low_freq_factor,
    high_freq_factor, original_max_position_embeddings), Llama 3.1's scaling: with
    wavelength lambda = 2 pi / f and L the original context, frequencies whose wavelength
    is below L / high_freq_factor stay, those above L / low_freq_factor are divided by
    `factor`, and those between interpolate, f ((1 - s) / factor + s) with
    s = (L / lambda - low_freq_factor) / (high_freq_factor - low_freq_factor).

    Returns:
        [rope_dims / 2] float64 NumPy array.
    """
    freq = theta ** (-np.arange(0, rope_dims, 2, dtype=np.float64) / rope_dims) / linear_factor
    if llama3 is None:
        return freq
    factor, low, high, original = (float(x) for x in llama3)
    wavelength = 2 * np.pi / freq
    smooth = (original / wavelength - low) / (high - low)
    between = freq * ((1.0 - smooth) / factor + smooth)
    return np.where(
        wavelength < original / high, freq,
        np.where(wavelength > original / low, freq / factor, between),
    )


def alibi_slopes(n_heads: int) -> np.ndarray:
    """ALiBi head slopes (Press et al.): the geometric sequence 2^(-8 i / n) for i = 1..n,
    with the published interleaving when n is not a power of two.

    Returns:
        [n_heads] float64 NumPy array.
    """

    def power_of_two(n):
        # 2^(-8 i / n) for i = 1..n, written as powers so the values are exact.
        return [2.0 ** (-8.0 * i / n) for i in range(1, n + 1)]

    if math.log2(n_heads).is_integer():
        return np.array(power_of_two(n_heads))
    closest = 2 ** math.floor(math.log2(n_heads))
    extra = power_of_two(2 * closest)[0::2][: n_heads - closest]
    return np.array(power_of_two(closest) + extra)


# ---- attention ---------------------------------------------------------------------------

# A finite stand-in for -inf: fully masked rows give a uniform (not NaN) softmax, and
# exp(MASKED - max) underflows to exactly 0 for masked keys in every float format.
def _masked_value(dtype) -> float:
    return float(jnp.finfo(dtype).min) / 2


def attention_mask(
    q_pos: jax.Array, k_pos: jax.Array, k_valid: jax.Array, *, causal: bool, window: int | None
) -> jax.Array:
    """Which keys each query may see, composed from positions.

    Args:
        q_pos: [b, q] query positions; k_pos: [b, k] key positions; k_valid: [b, k] bool
            (padding / unfilled cache slots are False).
    Returns:
        [b, 1, q, k] bool (broadcasts over heads).
    """
    delta = q_pos[:, :, None] - k_pos[:, None, :]  # [b, q, k]
    mask = k_valid[:, None, :]
    if causal:
        mask = mask & (delta >= 0)
    if window is not None:
        mask = mask & (jnp.abs(delta) < window)
    return mask[:, None]


# "Softmax is not enough" (Velickovic, Perivolaropoulos, Barbero, Pascanu, arXiv 2410.01104),
# their listing of `adaptive_temperature_softmax`: a degree-4 polynomial fit of the inverse
# temperature beta against the Shannon entropy H (nats) of the attention row, highest
# degree first (np.polyval order).
ADAPTIVE_TEMPERATURE_POLY = (-0.037, 0.481, -2.3, 4.917, -1.791)
ADAPTIVE_TEMPERATURE_MIN_ENTROPY = 0.5  # rows this sharp are left alone
ADAPTIVE_TEMPERATURE_LOG_EPS = 1e-9  # H = -sum p log(p + eps), as in the listing


def attention_softmax(
    scores: jax.Array, mask: jax.Array, *, kind: str = "standard", ssmax_s: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Attention weights from scores: the decoder's one softmax, with its switches.

    Args:
        scores: [..., k] scaled (soft-capped, biased) scores, unmasked, in the accumulation
            dtype.
        mask: bool, broadcastable to scores: which keys each query sees.
        kind: "standard": p = softmax(s) over the visible keys.
            "adaptive_temperature" (Velickovic et al. 2024, their inference-time fix, from
            the paper's code listing): p0 = softmax(s); H = -sum_j p0_j log(p0_j + 1e-9);
            beta = max(poly(H), 1) where H > 0.5, else 1, poly the fit
            `ADAPTIVE_TEMPERATURE_POLY`; p = softmax(beta s). beta never drops below 1, so
            it only sharpens; poly peaks at about 2.42 near H = 4.4 nats and falls below 1
            past H ~ 6.2 (about 500 equally weighted keys), where beta is 1 again.
            Differentiated as written (beta's dependence on s included).
            "scalable" (Scalable-Softmax, Nakanishi 2025): p = softmax((ssmax_s log n) s),
            n the number of keys the row sees (visible keys of the mask: causal, window,
            padding). Nakanishi learns s per layer and head; here it is one fixed number.
        ssmax_s: s of Scalable-Softmax.
    Returns:
        (logits, pattern): the masked logits the softmax saw [..., k] (softmax(logits) ==
        pattern) and the weights [..., k], both in the dtype of `scores`.
    """
    dtype = scores.dtype
    masked = jnp.asarray(_masked_value(dtype), dtype)
    if kind == "scalable":
        n = jnp.sum(mask, axis=-1, keepdims=True).astype(dtype)  # [..., 1]
        scores = scores * (jnp.asarray(ssmax_s, dtype) * jnp.log(jnp.maximum(n, 1)))
    elif kind == "adaptive_temperature":
        p0 = jax.nn.softmax(jnp.where(mask, scores, masked), axis=-1)
        entropy = -jnp.sum(p0 * jnp.log(p0 + ADAPTIVE_TEMPERATURE_LOG_EPS), -1, keepdims=True)
        poly = jnp.polyval(jnp.asarray(ADAPTIVE_TEMPERATURE_POLY, dtype), entropy)
        beta = jnp.where(entropy > ADAPTIVE_TEMPERATURE_MIN_ENTROPY, jnp.maximum(poly, 1), 1)
        scores = scores * beta.astype(dtype)
    elif kind != "standard":
        raise ValueError(f"attention softmax {kind!r} is not one of standard, "
                         "adaptive_temperature, scalable")
    # The mask goes on after the rescaling: a factor on the finite masked value could
    # overflow it to -inf (NaN on a fully masked row).
    logits = jnp.where(mask, scores, masked)
    return logits, jax.nn.softmax(logits, axis=-1)


def causal_block_bounds(t: int, n_blocks: int) -> list[tuple[int, int]]:
    """The query ranges [start, end) of `Attention`'s causal blocks for t queries: n_blocks
    blocks of ceil(t / n_blocks) (the last one shorter); [(0, t)] when t < n_blocks. Block
    [start, end) attends keys [0, end)."""
    if n_blocks <= 1 or t < n_blocks:
        return [(0, t)]
    size = -(-t // n_blocks)
    return [(start, min(t, start + size)) for start in range(0, t, size)]


class Attention(nnx.Module):
    """Multi-head (MHA / GQA / MQA) attention with one explicit path:
    scores -> soft-cap -> position bias -> mask -> softmax (accum dtype; `attn_softmax`
    chooses its variant, `attention_softmax`) -> mix."""

    def __init__(self, config: TransformerConfig, layer: int, *, rngs: nnx.Rngs):
        c = config
        self.config = c
        self.window = c.layer_window(layer)
        self.rope_theta = (
            c.rope_theta_local
            if (self.window is not None and c.rope_theta_local is not None)
            else c.rope_theta
        )
        # Linear scaling goes with the global base (Gemma 3 scales only its global layers).
        local_base = self.window is not None and c.rope_theta_local is not None
        self.rope_linear_factor = 1.0 if local_base else c.rope_linear_factor
        # RoPE on this layer (off on SmolLM3's NoPE layers). Llama 3's scaled frequencies
        # are static (computed once in float64); the others come from theta in apply_rope.
        self.use_rope = c.pos_encoding == "rope" and layer not in c.no_rope_layers
        llama3 = None if local_base else c.rope_llama3
        self.rope_inv_freq = None
        if self.use_rope and llama3 is not None:
            self.rope_inv_freq = tuple(
                float(f) for f in rope_frequencies(c.rope_dims, self.rope_theta, 1.0, llama3)
            )
        m, h, g, d, pdt = c.d_model, c.n_heads, c.n_kv_heads, c.d_head, c.params_dtype
        std = c.init_std
        self.wq = nnx.Param(_normal(rngs, (m, h, d), std, pdt))
        self.wk = nnx.Param(_normal(rngs, (m, g, d), std, pdt))
        self.wv = nnx.Param(_normal(rngs, (m, g, d), std, pdt))
        self.wo = nnx.Param(_normal(rngs, (h, d, m), std / math.sqrt(2 * c.n_layers), pdt))
        if c.qkv_bias:
            self.bq = nnx.Param(jnp.zeros((h, d), pdt))
            self.bk = nnx.Param(jnp.zeros((g, d), pdt))
            self.bv = nnx.Param(jnp.zeros((g, d), pdt))
        else:
            self.bq = self.bk = self.bv = None
        self.bo = nnx.Param(jnp.zeros((m,), pdt)) if c.out_bias else None
        if c.qk_norm:
            qk_config = c.replace(norm="rmsnorm")
            # per head (width d) or over the whole projection (OLMo-2: h d and g d)
            whole = c.qk_norm_over == "projection"
            self.q_norm = Norm(qk_config, h * d if whole else d, rngs=rngs)
            self.k_norm = Norm(qk_config, g * d if whole else d, rngs=rngs)
        else:
            self.q_norm = self.k_norm = None
        if c.pos_encoding == "alibi":
            self.alibi = tuple(float(x) for x in alibi_slopes(h))  # static, not a parameter
        else:
            self.alibi = None

    def _score_positions(self, positions: jax.Array, pos_vectors) -> jax.Array | None:
        """p [b, t, m] added to the query/key inputs (abs_pos_placement="scores"), else None.

        Sinusoidal vectors are computed from the positions; learned ones live in the
        decoder's table and must be passed in (`Decoder.score_positions`)."""
        c = self.config
        if not c.positions_in_scores:
            return None
        if pos_vectors is not None:
            return pos_vectors.astype(c.compute_dtype)
        if c.pos_encoding == "sinusoidal":
            return sinusoidal_encoding(positions, c.d_model, c.compute_dtype)
        raise ValueError(
            "learned positions in the scores (abs_pos_placement='scores') need the position "
            "vectors: pass pos_vectors=Decoder.score_positions(positions)"
        )

    def project_kv(
        self, x: jax.Array, positions: jax.Array, pos_vectors: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Keys (rotated where RoPE is on; with p_j added to their input where absolute
        positions enter the scores) and values of new tokens.

        Args:
            x: [b, t, m] normalised inputs; positions: [b, t]; pos_vectors: optional [b, t, m]
                absolute position vectors (see `_score_positions`).
        Returns:
            keys [b, t, g, d], values [b, t, g, d].
        """
        c, dt, prec = self.config, self.config.compute_dtype, self.config.precision
        p = self._score_positions(positions, pos_vectors)
        k_in = x if p is None else x + p  # values never see p
        k = jnp.einsum("btm,mgd->btgd", k_in, self.wk[...].astype(dt), precision=prec)
        v = jnp.einsum("btm,mgd->btgd", x, self.wv[...].astype(dt), precision=prec)
        if self.bk is not None:
            k = k + self.bk[...].astype(dt)
            v = v + self.bv[...].astype(dt)
        if self.k_norm is not None:
            k = self._qk_normed(self.k_norm, k)
        kv_format = c.kv_format or c.activation_format
        k = self._rotated(k, positions)
        return round_to_format(k, kv_format), round_to_format(v, kv_format)

    def project_qkv(self, x: jax.Array, positions: jax.Array, pos_vectors=None):
        """Queries, keys and values of new tokens from one matmul (weights side by side):
        keys and values are those of `project_kv` up to rounding, and under
        differentiation one [., (h + 2g) d] x [(h + 2g) d, m] product for the three input
        cotangents instead of three smaller ones and their sum (~3% faster Jacobians).

        Args:
            x: [b, t, m] normalised inputs; positions: [b, t]; pos_vectors: optional [b, t, m]
                absolute position vectors (see `_score_positions`).
        Returns:
            queries [b, t, h, d], keys [b, t, g, d], values [b, t, g, d].
        """
        c, dt, prec = self.config, self.config.compute_dtype, self.config.precision
        h, g = c.n_heads, c.n_kv_heads
        w = jnp.concatenate([self.wq[...], self.wk[...], self.wv[...]], axis=1)  # [m, h+2g, d]
        qkv = jnp.einsum("btm,mhd->bthd", x, w.astype(dt), precision=prec)
        p = self._score_positions(positions, pos_vectors)
        if p is not None:  # (x + p) W for queries and keys only: p W_q, p W_k added
            w_qk = w[:, : h + g].astype(dt)
            p_qk = jnp.einsum("btm,mhd->bthd", p, w_qk, precision=prec)  # [b, t, h+g, d]
            qkv = qkv + jnp.pad(p_qk, ((0, 0), (0, 0), (0, g), (0, 0)))
        if self.bq is not None:
            qkv = qkv + jnp.concatenate([self.bq[...], self.bk[...], self.bv[...]]).astype(dt)
        qk, v = qkv[:, :, : h + g], qkv[:, :, h + g :]
        if self.q_norm is not None:
            qk = jnp.concatenate([self._qk_normed(self.q_norm, qk[:, :, :h]),
                                  self._qk_normed(self.k_norm, qk[:, :, h:])], axis=2)
        qk = self._rotated(qk, positions)  # queries and keys share each position's rotation
        kv_format = c.kv_format or c.activation_format
        q = round_to_format(qk[:, :, :h], c.activation_format)
        return q, round_to_format(qk[:, :, h:], kv_format), round_to_format(v, kv_format)

    def _qk_normed(self, norm: "Norm", x: jax.Array) -> jax.Array:
        """q or k [b, t, heads, d] through its norm: per head, or over the whole projection
        (qk_norm_over="projection": [b, t, heads * d] normalised as one vector)."""
        if self.config.qk_norm_over == "head":
            return norm(x)
        b, t, heads, d = x.shape
        return norm(x.reshape(b, t, heads * d)).reshape(b, t, heads, d)

    def _rotated(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        """x [b, t, heads, d] rotated by RoPE where this layer uses it, else x."""
        if not self.use_rope:
            return x
        inv_freq = None if self.rope_inv_freq is None else np.asarray(self.rope_inv_freq)
        return apply_rope(x, positions, self.config.rope_dims, self.rope_theta,
                          self.rope_linear_factor, inv_freq=inv_freq)

    @shape_checked
    def __call__(
        self,
        x: Float[Array, "b t m"],
        positions: Int[Array, "b t"],
        context: tuple[Float[Array, "_ s g d"], Float[Array, "_ s g d"], Bool[Array, "b s"]]
        | None = None,
        *,
        freeze_attention: bool = False,
        query_block: int | None = None,
        causal_blocks: int = 1,
        pos_vectors: Float[Array, "b t m"] | None = None,
    ) -> AttentionOutput:
        """Attend from new tokens to cached context keys and to themselves.

        Args:
            x: [b, t, m] normalised inputs of the new tokens.
            positions: [b, t] their positions.
            pos_vectors: [b, t, m] absolute position vectors added to the query/key inputs
                (abs_pos_placement="scores"; computed here for sinusoidal positions, needed
                for learned ones; ignored otherwise).
            context: optional (keys [b', s, g, d], values [b', s, g, d], valid [b, s]) of
                earlier tokens (b' = b or 1); slot j holds position j.
            freeze_attention: hold the pattern constant under differentiation (R7).
            query_block: when set and t > query_block, attend `query_block` queries at a
                time, each block rematerialised under differentiation, so neither the
                forward pass nor a VJP ever holds more than [b, h, query_block, k] scores
                (memory linear in t instead of quadratic). The numbers are the same; the
                scores and pattern are then not returned (None).
            causal_blocks: when > 1, split the queries into this many blocks, each attending
                only to the keys up to its own last query: causality masks every later key,
                so the numbers are the same (up to rounding) while the masked upper blocks
                of the score matrix are never computed (about 5/8 of the attention work
                with 4 blocks; a speed switch for short inputs, used by `analysis`).
                Requires a causal config, no `context`, and positions increasing along t
                (key j sits at positions[:, j]); scores and pattern are then None.
        Returns:
            `AttentionOutput`: out [b, t, m], keys and values [b, t, g, d] of the new
            tokens, scores and pattern [b, h, t, k] (k = s + t) or None (blocked queries).
        """
        dt, prec = self.config.compute_dtype, self.config.precision
        b, t, _ = x.shape
        q, k_new, v_new = self.project_qkv(x, positions, pos_vectors)
        k_pos, k_valid = positions, jnp.ones((b, t), bool)
        k_all, v_all = k_new, v_new
        if context is not None:
            k_ctx, v_ctx, valid_ctx = context
            s = k_ctx.shape[1]
            k_ctx = jnp.broadcast_to(k_ctx, (b, *k_ctx.shape[1:])).astype(dt)
            v_ctx = jnp.broadcast_to(v_ctx, (b, *v_ctx.shape[1:])).astype(dt)
            k_all = jnp.concatenate([k_ctx, k_new], axis=1)  # [b, s + t, g, d]
            v_all = jnp.concatenate([v_ctx, v_new], axis=1)
            ctx_pos = jnp.broadcast_to(jnp.arange(s, dtype=positions.dtype), (b, s))
            k_pos = jnp.concatenate([ctx_pos, positions], axis=1)  # [b, s + t]
            k_valid = jnp.concatenate([valid_ctx, k_valid], axis=1)

        keys = (k_all, v_all, k_pos, k_valid)
        if type(causal_blocks) is not int or causal_blocks != 1:
            self._check_causal_blocks(causal_blocks, context, query_block, t)
        if len(causal_block_bounds(t, causal_blocks)) > 1:
            mixed = self._attend_causal_blocks(q, positions, keys, freeze_attention, causal_blocks)
            scores = pattern = None
        elif query_block is not None and t > query_block:
            mixed = self._attend_blocked(q, positions, keys, freeze_attention, query_block)
            scores = pattern = None
        else:
            mixed, scores, pattern = self._attend(q, positions, keys, freeze_attention)
        fmt = self.config.activation_format
        mixed = round_to_format(mixed, fmt)
        out = jnp.einsum("bqhd,hdm->bqm", mixed, self.wo[...].astype(dt), precision=prec)
        if self.bo is not None:
            out = out + self.bo[...].astype(dt)
        out = round_to_format(out, fmt)
        return AttentionOutput(out=out, keys=k_new, values=v_new, scores=scores, pattern=pattern)

    def _attend(self, q, positions, keys, freeze_attention: bool):
        """Queries q [b, t, h, d] at positions [b, t] against keys = (k_all, v_all [b, k, g, d],
        k_pos [b, k], k_valid [b, k]) -> (mixed [b, t, h, d], scores, pattern [b, h, t, k])."""
        c, dt, prec = self.config, self.config.compute_dtype, self.config.precision
        k_all, v_all, k_pos, k_valid = keys
        b, t = positions.shape
        g, r = c.n_kv_heads, c.n_groups
        qg = q.reshape(b, t, g, r, c.d_head)  # [b, q, g, r, d]
        scores = jnp.einsum("bqgrd,bkgd->bgrqk", qg, k_all, precision=prec)
        scores = scores.reshape(b, c.n_heads, t, k_all.shape[1])  # [b, h, q, k]
        acc = c.accum_dtype
        scale = c.query_scale if c.query_scale is not None else c.d_head**-0.5
        scores = scores.astype(acc) * jnp.asarray(scale, acc)
        if c.attn_logit_softcap is not None:
            cap = jnp.asarray(c.attn_logit_softcap, acc)
            scores = cap * jnp.tanh(scores / cap)
        if self.alibi is not None:
            distance = jnp.abs(positions[:, :, None] - k_pos[:, None, :]).astype(acc)  # [b, q, k]
            slopes = jnp.asarray(self.alibi, acc)[None, :, None, None]  # [1, h, 1, 1]
            scores = scores - slopes * distance[:, None]
        mask = attention_mask(positions, k_pos, k_valid, causal=c.causal, window=self.window)
        scores, pattern = attention_softmax(scores, mask, kind=c.attn_softmax,
                                            ssmax_s=c.ssmax_s)
        if freeze_attention:
            pattern = jax.lax.stop_gradient(pattern)

        pg = pattern.astype(dt).reshape(b, g, r, t, k_all.shape[1])  # [b, g, r, q, k]
        mixed = jnp.einsum("bgrqk,bkgd->bqgrd", pg, v_all, precision=prec)
        return mixed.reshape(b, t, c.n_heads, c.d_head), scores, pattern

    def _check_causal_blocks(self, causal_blocks, context, query_block, t) -> None:
        if type(causal_blocks) is not int or causal_blocks < 1:
            raise ValueError(f"causal_blocks must be a positive integer, got {causal_blocks!r}")
        if not self.config.causal:
            raise ValueError("causal_blocks needs a causal model: without the causal mask "
                             "later keys are not masked and cannot be skipped")
        if context is not None:
            raise ValueError("causal_blocks applies to self-attention without cached context")
        if query_block is not None and t > query_block:
            raise ValueError("use either query_block (memory) or causal_blocks (speed), not both")

    def _attend_causal_blocks(self, q, positions, keys, freeze_attention: bool, n_blocks: int):
        """`_attend`'s mixed values [b, t, h, d], in `n_blocks` query blocks (static, unrolled)
        where the block of queries [s, e) attends keys [0, e) only: keys past e sit at later
        positions, which the causal mask removes anyway."""
        mixed = []
        for start, end in causal_block_bounds(q.shape[1], n_blocks):
            block_keys = tuple(x[:, :end] for x in keys)  # keys, values, positions, valid
            mixed.append(
                self._attend(q[:, start:end], positions[:, start:end], block_keys,
                             freeze_attention)[0]
            )
        return jnp.concatenate(mixed, axis=1)

    def _attend_blocked(self, q, positions, keys, freeze_attention: bool, block: int):
        """`_attend`'s mixed values [b, t, h, d], `block` queries at a time.

        A `lax.map` over query blocks whose body is `jax.checkpoint`ed: a VJP saves only the
        block's queries and recomputes its [b, h, block, k] pattern in the backward pass.
        Rows past t (padding to a whole number of blocks) repeat the last position and are
        dropped.
        """
        b, t, h, d = q.shape
        n_blocks = -(-t // block)
        pad = n_blocks * block - t
        if pad:
            q = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
            positions = jnp.pad(positions, ((0, 0), (0, pad)), mode="edge")
        q_blocks = q.reshape(b, n_blocks, block, h, d).swapaxes(0, 1)  # [nb, b, B, h, d]
        pos_blocks = positions.reshape(b, n_blocks, block).swapaxes(0, 1)  # [nb, b, B]

        @jax.checkpoint
        def one_block(qp):
            return self._attend(qp[0], qp[1], keys, freeze_attention)[0]

        mixed = jax.lax.map(one_block, (q_blocks, pos_blocks))  # [nb, b, B, h, d]
        return mixed.swapaxes(0, 1).reshape(b, n_blocks * block, h, d)[:, :t]


# ---- MLP ---------------------------------------------------------------------------------

ACTIVATION_FNS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
}


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def gated_product(act, gate_up: jax.Array) -> jax.Array:
    """act(gate) * up for gate_up = [gate | up] [..., 2f] -> [..., f] (SwiGLU / GeGLU).

    Its derivative is the usual one, written so that differentiation sees a product with
    fixed slopes: the JVP is sum over the halves of t * [up * act'(gate) | act(gate)], so
    a linearisation computes the slopes [..., 2, f] once and every VJP through it is one
    elementwise product (autodiff of act(gate) * up re-evaluates act' for each cotangent:
    ~2% of a last-token Jacobian, benchmarks/README.md). Differentiable to any order.
    """
    gate, up = jnp.split(gate_up, 2, axis=-1)
    return act(gate) * up


@gated_product.defjvp
def _gated_product_jvp(act, primals, tangents):
    (gate_up,), (t,) = primals, tangents
    gate, up = jnp.split(gate_up, 2, axis=-1)
    a, slope = jax.jvp(act, (gate,), (jnp.ones_like(gate),))  # act and act' (elementwise)
    slopes = jnp.stack([slope * up, a], axis=-2)  # [..., 2, f]: d/d gate, d/d up
    t_out = jnp.sum(t.reshape(*t.shape[:-1], 2, gate.shape[-1]) * slopes, axis=-2)
    return a * up, t_out


class MLP(nnx.Module):
    """psi(x) = act(x W_up + b) W_down + b, or the gated act(x W_gate) * (x W_up) W_down."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        c = config
        self.config = c
        m, f, pdt, std = c.d_model, c.d_mlp, c.params_dtype, c.init_std
        self.w_up = nnx.Param(_normal(rngs, (m, f), std, pdt))
        self.w_gate = nnx.Param(_normal(rngs, (m, f), std, pdt)) if c.gated else None
        self.w_down = nnx.Param(_normal(rngs, (f, m), std / math.sqrt(2 * c.n_layers), pdt))
        if c.mlp_bias:
            self.b_up = nnx.Param(jnp.zeros((f,), pdt))
            self.b_gate = nnx.Param(jnp.zeros((f,), pdt)) if c.gated else None
            self.b_down = nnx.Param(jnp.zeros((m,), pdt))
        else:
            self.b_up = self.b_gate = self.b_down = None

    @shape_checked
    def __call__(self, x: Float[Array, "b t m"]) -> Float[Array, "b t m"]:
        """x: [b, t, m] -> [b, t, m]."""
        c, dt, prec = self.config, self.config.compute_dtype, self.config.precision
        act = ACTIVATION_FNS[c.activation]
        if self.w_gate is not None:
            # Gate and up projections as ONE matmul with the weights side by side: the same
            # numbers up to rounding, and under differentiation one [., 2f] x [2f, m] product
            # instead of two products and a sum (~4% faster Jacobians, benchmarks/README.md).
            w = jnp.concatenate([self.w_gate[...].astype(dt), self.w_up[...].astype(dt)], 1)
            gate_up = jnp.einsum("btm,mf->btf", x, w, precision=prec)  # [b, t, 2f]
            if self.b_up is not None:
                gate_up = gate_up + jnp.concatenate(
                    [self.b_gate[...].astype(dt), self.b_up[...].astype(dt)]
                )
            hidden = gated_product(act, gate_up)
        else:
            up = jnp.einsum("btm,mf->btf", x, self.w_up[...].astype(dt), precision=prec)
            if self.b_up is not None:
                up = up + self.b_up[...].astype(dt)
            hidden = act(up)
        hidden = round_to_format(hidden, c.activation_format)
        out = jnp.einsum("btf,fm->btm", hidden, self.w_down[...].astype(dt), precision=prec)
        if self.b_down is not None:
            out = out + self.b_down[...].astype(dt)
        return round_to_format(out, c.activation_format)
