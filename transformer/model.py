"""The decoder: embed, a residual loop of blocks, final norm, unembed.

The forward pass is the paper's Pre-LN model (docs/results.md) by default:
    z^(l)     = v^(l) + Attn(norm1(v^(l)))        (resid_mid)
    v^(l+1)   = z^(l) + MLP(norm2(z^(l)))         (resid_post)
    y         = norm3(v^(L)),   logits = y E^T
with `post` and `sandwich` placements as alternatives. Shapes use the einsum vocabulary
of `transformer.layers`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from transformer import placement
from transformer.config import TransformerConfig
from transformer.layers import MLP, Attention, Norm, _normal, round_to_format, sinusoidal_encoding
from transformer.outputs import (
    AttentionOutput,
    BlockOutput,
    ForwardResult,
    Intermediates,
    KVCache,
)
from transformer.shapes import Array, ArrayLike, Bool, Float, Int, shape_checked

# Token ids and positions as callers give them: arrays or (nested) lists of ints.
Tokens = Int[ArrayLike, "*b n"] | Sequence[int] | Sequence[Sequence[int]]
Positions = Int[ArrayLike, "*b n"] | Sequence[int] | Sequence[Sequence[int]]


@dataclasses.dataclass(frozen=True)
class SublayerLayout:
    """Where a sub-layer's norms sit, by the block attribute that holds each (None: none).

    pre: normalises the sub-layer's input (x -> f(pre(x))); post: normalises its output
    before the residual add (x + post(f(.))); outer: normalises the sum after the add
    (outer(x + f(.))). The sub-layer computes outer(x + post(f(pre(x)))).
    """

    pre: str | None = None
    post: str | None = None
    outer: str | None = None

    def norms(self) -> tuple[str, ...]:
        return tuple(name for name in (self.pre, self.post, self.outer) if name is not None)


# The one place each norm placement is decided: (attention layout, MLP layout).
#   pre (the paper's Pre-LN):  z = v + Attn(norm1(v));          v' = z + MLP(norm2(z))
#   post (original):           z = norm1(v + Attn(v));          v' = norm2(z + MLP(z))
#   sandwich (Gemma 2/3):      z = v + norm1'(Attn(norm1(v)));  v' = z + norm2'(MLP(norm2(z)))
#   post_sublayer (OLMo-2):    z = v + norm1'(Attn(v));         v' = z + norm2'(MLP(z))
#   shared_pre (Phi-2, parallel StableLM): both sub-layers read one input norm, norm1(v)
# With parallel_residual both sub-layers read v: v' = v + Attn(pre1(v)) + MLP(pre2(v)).
LAYOUTS: dict[str, tuple[SublayerLayout, SublayerLayout]] = {
    "pre": (SublayerLayout(pre="attn_norm"), SublayerLayout(pre="mlp_norm")),
    "post": (SublayerLayout(outer="attn_norm"), SublayerLayout(outer="mlp_norm")),
    "sandwich": (
        SublayerLayout(pre="attn_norm", post="attn_post_norm"),
        SublayerLayout(pre="mlp_norm", post="mlp_post_norm"),
    ),
    "post_sublayer": (SublayerLayout(post="attn_post_norm"), SublayerLayout(post="mlp_post_norm")),
    "shared_pre": (SublayerLayout(pre="attn_norm"), SublayerLayout(pre="attn_norm")),
}
NORM_NAMES = ("attn_norm", "mlp_norm", "attn_post_norm", "mlp_post_norm")


class Block(nnx.Module):
    """One decoder layer: attention and MLP sub-layers with residuals and norms placed as
    `LAYOUTS[config.norm_placement]` says (the only place the placement is read)."""

    def __init__(self, config: TransformerConfig, layer: int, *, rngs: nnx.Rngs):
        self.attn_layout, self.mlp_layout = LAYOUTS[config.norm_placement]
        self.store_format = config.activation_format  # the residual stream's (fake) format
        self.parallel = config.parallel_residual
        self.residual_scale = config.residual_scale
        self.attn = Attention(config, layer, rngs=rngs)
        self.mlp = MLP(config, rngs=rngs)
        named = self.attn_layout.norms() + self.mlp_layout.norms()
        for name in NORM_NAMES:  # exactly the norms the layouts name (None: absent)
            setattr(self, name, Norm(config, rngs=rngs) if name in named else None)

    @property
    def layouts(self) -> tuple[SublayerLayout, SublayerLayout]:
        """(attention layout, MLP layout): where each norm of this block sits."""
        return self.attn_layout, self.mlp_layout

    def attn_input(self, v: jax.Array) -> jax.Array:
        """What the attention sub-layer is applied to for residual states v [..., m] (its
        input norm's output, or v): the keys and values of a context come from it."""
        pre = self.attn_layout.pre
        return v if pre is None else getattr(self, pre)(v)

    def _sublayer(self, layout: SublayerLayout, x, apply, taps: dict):
        """outer(x + post(apply(pre(x)))), recording each norm's input in `taps`.
        Returns (result, what `apply` was applied to, what `apply` returned)."""
        branch, inner, result = self._branch(layout, x, apply, taps)
        resid = self._norm(layout.outer, x + branch, taps)
        return round_to_format(resid, self.store_format), inner, result

    def _branch(self, layout: SublayerLayout, x, apply, taps: dict):
        """The residual branch s * post(apply(pre(x))) (s: residual_scale), with (what
        `apply` was applied to, what it returned)."""
        inner = self._norm(layout.pre, x, taps)
        result = apply(inner)
        out = result.out if isinstance(result, AttentionOutput) else result
        branch = self._norm(layout.post, out, taps)
        if self.residual_scale != 1.0:  # Granite's residual_multiplier
            branch = branch * jnp.asarray(self.residual_scale, branch.dtype)
        return branch, inner, result

    def _norm(self, name: str | None, h, taps: dict):
        if name is None:
            return h
        taps[name] = h
        return getattr(self, name)(h)

    @shape_checked
    def __call__(
        self,
        v: Float[Array, "b t m"],
        positions: Int[Array, "b t"],
        context: tuple[Float[Array, "_ s g d"], Float[Array, "_ s g d"], Bool[Array, "b s"]]
        | None = None,
        *,
        freeze_attention: bool = False,
        query_block: int | None = None,
        causal_blocks: int = 1,
        pos_vectors: Float[Array, "b t m"] | None = None,
    ) -> BlockOutput:
        """v^(l) [b, t, m] -> `BlockOutput` (v^(l+1), z^(l), the attention's results and
        the input every piece saw).

        query_block, causal_blocks, pos_vectors: see `Attention.__call__` (the attention's
        scores and pattern are None when either of the first two applies).
        """
        taps: dict[str, jax.Array] = {}

        def attend(h):
            return self.attn(h, positions, context, freeze_attention=freeze_attention,
                             query_block=query_block, causal_blocks=causal_blocks,
                             pos_vectors=pos_vectors)

        z, attn_in, attn = self._sublayer(self.attn_layout, v, attend, taps)
        if self.parallel:  # both sub-layers read v: v' = v + attention branch + MLP branch
            mlp_branch, mlp_in, _ = self._branch(self.mlp_layout, v, self.mlp, taps)
            v_next = round_to_format(z + mlp_branch, self.store_format)
        else:
            v_next, mlp_in, _ = self._sublayer(self.mlp_layout, z, self.mlp, taps)
        return BlockOutput(resid_post=v_next, resid_mid=z, attn=attn, attn_in=attn_in,
                           mlp_in=mlp_in, taps=taps)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


class Decoder(nnx.Module):
    """A decoder-only Transformer with every choice of the forward pass exposed.

    Example:
        >>> from flax import nnx
        >>> from transformer import Decoder, TransformerConfig
        >>> model = Decoder(TransformerConfig.tiny(), rngs=nnx.Rngs(0))
        >>> model(jnp.arange(5)).shape
        (5, 32)
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        c = config
        self.config = c
        pdt = c.params_dtype
        c.compute_dtype, c.accum_dtype  # noqa: B018  (a float64 setting without x64 fails here)
        self.embedding = nnx.Param(_normal(rngs, (c.vocab_size, c.d_model), c.init_std, pdt))
        if c.pos_encoding == "learned":
            self.pos_embedding = nnx.Param(_normal(rngs, (c.max_len, c.d_model), c.init_std, pdt))
        else:
            self.pos_embedding = None
        self.blocks = nnx.List([Block(c, layer, rngs=rngs) for layer in range(c.n_layers)])
        self.final_norm = Norm(c, rngs=rngs) if c.final_norm else None
        if c.tie_embeddings:
            self.unembedding = None
        else:
            self.unembedding = nnx.Param(_normal(rngs, (c.d_model, c.vocab_size), c.init_std, pdt))
        self.lm_head_bias = nnx.Param(jnp.zeros((c.vocab_size,), pdt)) if c.lm_head_bias else None
        # float64 models on the host CPU, the formats under study on the accelerator
        # (transformer.placement; a no-op on a CPU-only machine)
        nnx.update(self, placement.place(nnx.state(self), c.compute_dtype))

    # ---- input checks ---------------------------------------------------------------------

    def _check_tokens(self, tokens) -> jax.Array:
        tokens = jnp.asarray(tokens)
        if tokens.ndim not in (1, 2):
            raise ValueError(f"tokens must have shape [n] or [b, n], got shape {tokens.shape}")
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
        if tokens.shape[-1] == 0:
            raise ValueError("tokens is empty: need at least one position")
        if _is_concrete(tokens) and tokens.size:
            # NumPy on the concrete values: jnp reductions would be staged out under jit.
            host = np.asarray(tokens)
            lo, hi = int(host.min()), int(host.max())
            if lo < 0 or hi >= self.config.vocab_size:
                raise ValueError(
                    f"token ids must lie in [0, vocab_size={self.config.vocab_size}), "
                    f"got values in [{lo}, {hi}]"
                )
        return tokens

    def _check_positions(self, positions: jax.Array) -> None:
        if self.config.pos_encoding == "learned" and _is_concrete(positions) and positions.size:
            top = int(np.asarray(positions).max())
            if top >= self.config.max_len:
                raise ValueError(
                    f"position {top} is beyond max_len={self.config.max_len} of the learned "
                    "positional embedding"
                )

    def default_positions(self, batch: int, n: int, offset: int = 0) -> jax.Array:
        """Positions offset..offset+n-1 for each of `batch` rows, [batch, n] int32.

        Raises:
            ValueError: a learned positional table (either placement) has fewer than
                offset + n rows.
        """
        if self.config.pos_encoding == "learned" and offset + n > self.config.max_len:
            raise ValueError(
                f"sequence length {offset + n} exceeds max_len={self.config.max_len} of the "
                "learned positional embedding"
            )
        return jnp.broadcast_to(jnp.arange(offset, offset + n, dtype=jnp.int32), (batch, n))

    # ---- pieces of the forward pass -----------------------------------------------------

    @shape_checked
    def embed(self, tokens: Tokens, positions: Positions | None = None) -> Float[Array, "*b n m"]:
        """v^(0): token embeddings (times `embedding_scale`) plus absolute positions where
        they enter the residual stream (abs_pos_placement="residual").

        Args:
            tokens: [n] or [b, n] integer ids in [0, vocab_size).
            positions: optional [n] or [b, n] positions (default 0..n-1).
        Returns:
            [n, m] or [b, n, m] in the compute dtype.
        """
        tokens = self._check_tokens(tokens)
        unbatched = tokens.ndim == 1
        tb = tokens[None] if unbatched else tokens
        pos = self._batch_positions(positions, tb.shape)
        v0 = self._embed(tb, pos)
        return v0[0] if unbatched else v0

    def _batch_positions(self, positions, shape) -> jax.Array:
        b, n = shape
        if positions is None:
            return self.default_positions(b, n)
        positions = jnp.asarray(positions)
        if not jnp.issubdtype(positions.dtype, jnp.integer):
            raise ValueError(f"positions must be integers, got dtype {positions.dtype}")
        positions = jnp.broadcast_to(positions, (b, n)) if positions.ndim == 1 else positions
        if positions.shape != (b, n):
            raise ValueError(f"positions has shape {positions.shape}, expected {(b, n)}")
        self._check_positions(positions)
        return positions

    def _embed(self, tokens: jax.Array, positions: jax.Array) -> jax.Array:
        c, dt = self.config, self.config.compute_dtype
        v0 = jnp.take(self.embedding[...], tokens, axis=0).astype(dt)  # [b, n, m]
        if c.embedding_scale is not None:
            v0 = v0 * jnp.asarray(c.embedding_scale, dt)
        if c.positions_in_residual:
            v0 = v0 + self._position_vectors(positions)
        return round_to_format(v0, c.activation_format)

    def _position_vectors(self, positions: jax.Array) -> jax.Array:
        """Absolute position vectors p [b, n, m] (sinusoidal or learned) in the compute dtype."""
        c, dt = self.config, self.config.compute_dtype
        if c.pos_encoding == "sinusoidal":
            return sinusoidal_encoding(positions, c.d_model, dt)
        return jnp.take(self.pos_embedding[...], positions, axis=0).astype(dt)

    def score_positions(self, positions) -> jax.Array | None:
        """The position vectors every layer adds to its query/key inputs, [b, n, m], when
        absolute positions enter the scores only (abs_pos_placement="scores"); else None.

        Pass them as `pos_vectors` when calling a block or its attention directly."""
        if not self.config.positions_in_scores:
            return None
        positions = jnp.asarray(positions)
        self._check_positions(positions)
        return self._position_vectors(positions)

    @shape_checked
    def unembed(self, y: Float[Array, "*batch m"]) -> Float[Array, "*batch v"]:
        """Logits from final-normed states: y [..., m] -> [..., v]."""
        c, dt, prec = self.config, self.config.compute_dtype, self.config.precision
        if self.unembedding is None:
            logits = jnp.einsum("...m,vm->...v", y, self.embedding[...].astype(dt), precision=prec)
        else:
            logits = jnp.einsum(
                "...m,mv->...v", y, self.unembedding[...].astype(dt), precision=prec
            )
        if self.lm_head_bias is not None:
            logits = logits + self.lm_head_bias[...].astype(dt)
        if c.logit_scale != 1.0:  # Granite: logits / logits_scaling
            logits = logits * jnp.asarray(c.logit_scale, dt)
        if c.final_logit_softcap is not None:
            cap = jnp.asarray(c.final_logit_softcap, dt)
            logits = cap * jnp.tanh(logits / cap)
        return logits

    # ---- the forward pass ------------------------------------------------------------------

    @shape_checked
    def forward_from_embeddings(
        self,
        v0: Float[ArrayLike, "*b n m"],
        *,
        capture: bool = False,
        freeze_attention: bool = False,
        start_layer: int = 0,
        stop_layer: int | None = None,
        positions: Positions | None = None,
        context: tuple[Any, Any, Any] | None = None,
        query_block: int | None = None,
    ) -> ForwardResult:
        """Run layers [start_layer, stop_layer) on v^(start_layer), then the final norm.

        Derivatives with respect to v^(0) (or any v^(l) with start_layer = l) need no hooks:
        differentiate this function.

        Args:
            v0: [n, m] or [b, n, m] states entering layer `start_layer` (v^(0) by default).
            capture: also return per-layer `Intermediates` (never changes the numbers).
            freeze_attention: hold every attention pattern constant under differentiation
                (the assumption of Theorem 5.1, R7).
            start_layer, stop_layer: the slice of layers to run. With stop_layer < n_layers
                the result's `y` is the residual v^(stop_layer) (no final norm) and `logits`
                is None.
            positions: [n] or [b, n] positions (default 0..n-1).
            context: keys [L, b', s, g, d], values [L, b', s, g, d] and valid [b, s] of
                earlier tokens to attend to (what the KV cache provides).
            query_block: attend this many queries at a time (long contexts: attention
                memory linear in n, also under differentiation; see `Attention.__call__`).
                Same numbers; cannot be combined with capture, which keeps the patterns.
        Returns:
            `ForwardResult` (batch axis dropped for unbatched input).
        """
        c = self.config
        v0 = jnp.asarray(v0)
        if v0.ndim not in (2, 3):
            raise ValueError(f"v0 must have shape [n, d_model] or [b, n, d_model], got {v0.shape}")
        if v0.shape[-1] != c.d_model:
            raise ValueError(f"v0 has width {v0.shape[-1]} but d_model={c.d_model}")
        if not jnp.issubdtype(v0.dtype, jnp.floating):
            raise ValueError(f"v0 must be floating point, got dtype {v0.dtype}")
        if query_block is not None:
            if not isinstance(query_block, int) or isinstance(query_block, bool) or query_block < 1:
                raise ValueError(
                    f"query_block must be a positive integer or None, got {query_block!r}"
                )
            if capture:
                raise ValueError(
                    "capture=True keeps the full [h, n, k] attention patterns, which "
                    "query_block exists to avoid; use one or the other"
                )
        stop = c.n_layers if stop_layer is None else stop_layer
        if not 0 <= start_layer <= stop <= c.n_layers:
            raise ValueError(
                f"need 0 <= start_layer <= stop_layer <= n_layers={c.n_layers}, "
                f"got start_layer={start_layer}, stop_layer={stop_layer}"
            )
        unbatched = v0.ndim == 2
        v = (v0[None] if unbatched else v0).astype(c.compute_dtype)
        pos = self._batch_positions(positions, v.shape[:2])

        pos_vectors = self.score_positions(pos)  # None unless positions enter the scores
        layers: list[tuple] = []
        keys, values = [], []
        for layer in range(start_layer, stop):
            layer_context = None
            if context is not None:
                layer_context = (context[0][layer], context[1][layer], context[2])
            out = self.blocks[layer](
                v, pos, layer_context, freeze_attention=freeze_attention, query_block=query_block,
                pos_vectors=pos_vectors,
            )
            keys.append(out.attn.keys)
            values.append(out.attn.values)
            if capture:
                layers.append((v, out.resid_mid, out.resid_post, out.attn.scores,
                               out.attn.pattern))
            v = out.resid_post

        if stop == c.n_layers:
            y = self.final_norm(v) if self.final_norm is not None else v
            logits = round_to_format(self.unembed(y), c.activation_format)
        else:
            y, logits = v, None

        strip = (lambda a: a[0]) if unbatched else (lambda a: a)
        inter = None
        if capture:
            stacked = [jnp.stack(parts) if parts else None for parts in zip(*layers)] or [None] * 5
            strip_layers = (lambda a: a[:, 0]) if unbatched else (lambda a: a)
            stacked = [None if a is None else strip_layers(a) for a in stacked]
            inter = Intermediates(*stacked, y=strip(y))
        return ForwardResult(
            y=strip(y),
            logits=None if logits is None else strip(logits),
            intermediates=inter,
            new_keys=jnp.stack(keys) if keys else None,
            new_values=jnp.stack(values) if values else None,
        )

    @shape_checked
    def __call__(
        self, tokens: Tokens, *, capture: bool = False, freeze_attention: bool = False
    ) -> Float[Array, "*b n v"] | tuple[Float[Array, "*b n v"], Intermediates]:
        """Logits [n, v] or [b, n, v]; with capture=True, (logits, Intermediates)."""
        tokens = self._check_tokens(tokens)
        out = self.forward_from_embeddings(
            self.embed(tokens), capture=capture, freeze_attention=freeze_attention
        )
        return (out.logits, out.intermediates) if capture else out.logits

    # ---- incremental decoding ----------------------------------------------------------

    def init_cache(self, batch_size: int, capacity: int | None = None) -> KVCache:
        """An empty cache of `capacity` slots (default max_len) in the compute dtype."""
        c = self.config
        capacity = capacity or c.max_len
        shape = (c.n_layers, batch_size, capacity, c.n_kv_heads, c.d_head)
        return KVCache(
            keys=jnp.zeros(shape, c.compute_dtype),
            values=jnp.zeros(shape, c.compute_dtype),
            length=jnp.zeros((batch_size,), jnp.int32),
        )

    def decode(self, tokens, cache: KVCache, *, capture: bool = False):
        """Append tokens to a cache and return their outputs.

        Args:
            tokens: [b, t] (or [t] for a batch-1 cache) new token ids.
            cache: `KVCache` with batch b (per-row lengths may differ).
        Returns:
            (ForwardResult for the new tokens, updated KVCache).
        """
        tokens = self._check_tokens(tokens)
        unbatched = tokens.ndim == 1
        tb = tokens[None] if unbatched else tokens
        b, t = tb.shape
        if cache.keys.shape[1] != b:
            raise ValueError(f"cache holds batch {cache.keys.shape[1]} but tokens have batch {b}")
        if _is_concrete(cache.length) and int(cache.length.max()) + t > cache.capacity:
            raise ValueError(
                f"cache of capacity {cache.capacity} cannot take {t} more tokens after "
                f"{int(cache.length.max())}"
            )
        out = self._extend(tb, cache.keys, cache.values, cache.length, capture=capture)
        slots = cache.length[:, None] + jnp.arange(t)  # [b, t]

        def write(buffer, new):  # buffer [L, b, S, g, d], new [L, b, t, g, d]
            rows = jnp.arange(b)[:, None]
            return buffer.at[:, rows, slots].set(new.astype(buffer.dtype))

        cache = KVCache(
            keys=write(cache.keys, out.new_keys),
            values=write(cache.values, out.new_values),
            length=cache.length + t,
        )
        if unbatched:
            out = _strip_batch(out)
        return out, cache

    def branch(self, cache: KVCache, tokens, prefix_lengths, *, capture: bool = False):
        """Continue many branches off one cached prefix, each from its own prefix length.

        Branch i sees cache slots [0, prefix_lengths[i]) and then its own tokens, placed at
        positions prefix_lengths[i] + 0..t-1. One call replaces len(prefix_lengths) full
        forwards (the length sweeps of R4-R6 use it).

        Args:
            cache: `KVCache` of batch 1 holding the shared prefix.
            tokens: [B, t] continuation ids (or [t]: the same continuation for every branch).
            prefix_lengths: [B] ints, each <= cache.length.
        Returns:
            `ForwardResult` with batch B (y [B, t, m], logits [B, t, v]).
        """
        if cache.keys.shape[1] != 1:
            raise ValueError(f"branch needs a batch-1 cache, got batch {cache.keys.shape[1]}")
        prefix_lengths = jnp.asarray(prefix_lengths)
        if prefix_lengths.ndim != 1 or not jnp.issubdtype(prefix_lengths.dtype, jnp.integer):
            raise ValueError(
                f"prefix_lengths must be a 1-D integer array, got shape {prefix_lengths.shape} "
                f"and dtype {prefix_lengths.dtype}"
            )
        tokens = self._check_tokens(tokens)
        if tokens.ndim == 1:
            tokens = jnp.broadcast_to(tokens, (prefix_lengths.shape[0], tokens.shape[0]))
        if tokens.shape[0] != prefix_lengths.shape[0]:
            raise ValueError(
                f"tokens have batch {tokens.shape[0]} but prefix_lengths has "
                f"{prefix_lengths.shape[0]} entries"
            )
        if _is_concrete(prefix_lengths) and _is_concrete(cache.length):
            if int(prefix_lengths.min()) < 0 or int(prefix_lengths.max()) > int(cache.length[0]):
                raise ValueError(
                    f"prefix_lengths must lie in [0, {int(cache.length[0])}] (the cached "
                    f"length), got [{int(prefix_lengths.min())}, {int(prefix_lengths.max())}]"
                )
        return self._extend(
            tokens, cache.keys, cache.values, prefix_lengths.astype(jnp.int32), capture=capture
        )

    def _extend(self, tokens, keys, values, prefix_lengths, *, capture):
        b, t = tokens.shape
        positions = prefix_lengths[:, None] + jnp.arange(t, dtype=jnp.int32)  # [b, t]
        self._check_positions(positions)
        valid = jnp.arange(keys.shape[2])[None, :] < prefix_lengths[:, None]  # [b, S]
        return self.forward_from_embeddings(
            self._embed(tokens, positions),
            capture=capture,
            positions=positions,
            context=(keys, values, valid),
        )


def _strip_batch(out: ForwardResult) -> ForwardResult:
    inter = out.intermediates
    if inter is not None:
        layer_fields = {
            f: getattr(inter, f)[:, 0]
            for f in ("resid_pre", "resid_mid", "resid_post", "attn_scores", "attn_pattern")
        }
        inter = Intermediates(**layer_fields, y=inter.y[0])
    return ForwardResult(
        y=out.y[0],
        logits=None if out.logits is None else out.logits[0],
        intermediates=inter,
        new_keys=out.new_keys,
        new_values=out.new_values,
    )


def count_params(model: nnx.Module) -> int:
    """Number of scalar parameters of a model."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))

