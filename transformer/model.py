"""The decoder: embed, a residual loop of blocks, final norm, unembed.

The forward pass is the paper's Pre-LN model (shared/PAPER.md) by default:
    z^(l)     = v^(l) + Attn(norm1(v^(l)))        (resid_mid)
    v^(l+1)   = z^(l) + MLP(norm2(z^(l)))         (resid_post)
    y         = norm3(v^(L)),   logits = y E^T
with `post` and `sandwich` placements as alternatives. Shapes use the einsum vocabulary
of `transformer.layers`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from transformer import placement
from transformer.config import TransformerConfig
from transformer.layers import MLP, Attention, Norm, _normal, sinusoidal_encoding


@struct.dataclass
class Intermediates:
    """Captured activations, stacked over the layers that ran (L' = stop - start).

    Shapes (batch axis b absent for unbatched input; k = keys seen, = n without a cache):
        resid_pre:    [L', b, n, m]  v^(l), the input of each layer
        resid_mid:    [L', b, n, m]  z^(l), after the attention sublayer
        resid_post:   [L', b, n, m]  v^(l+1), the output of each layer
        attn_scores:  [L', b, h, n, k] scaled, soft-capped, biased, masked pre-softmax scores
        attn_pattern: [L', b, h, n, k] Lambda^(l), the softmax per head (accum dtype)
        y:            [b, n, m]      final-normed states (= resid_post[-1] if stop_layer < L)
    """

    resid_pre: jax.Array
    resid_mid: jax.Array
    resid_post: jax.Array
    attn_scores: jax.Array
    attn_pattern: jax.Array
    y: jax.Array


@struct.dataclass
class ForwardResult:
    """Output of `Decoder.forward_from_embeddings`.

    y: [b, n, m] final-normed states (the residual v^(stop_layer) when stopping early);
    logits: [b, n, v] or None when stopping early; intermediates: `Intermediates` or None;
    new_keys / new_values: [L, b, n, g, d] keys and values of these tokens (for caching).
    """

    y: jax.Array
    logits: jax.Array | None
    intermediates: Intermediates | None = None
    new_keys: jax.Array | None = None
    new_values: jax.Array | None = None


@struct.dataclass
class KVCache:
    """Key/value cache: slot j of every layer holds the key/value of position j.

    keys, values: [L, b, capacity, g, d]; length: [b] int32 number of filled slots.
    """

    keys: jax.Array
    values: jax.Array
    length: jax.Array

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]


class Block(nnx.Module):
    """One decoder layer: attention and MLP sublayers with residuals and norms."""

    def __init__(self, config: TransformerConfig, layer: int, *, rngs: nnx.Rngs):
        self.placement = config.norm_placement
        self.attn = Attention(config, layer, rngs=rngs)
        self.mlp = MLP(config, rngs=rngs)
        self.attn_norm = Norm(config, rngs=rngs)
        self.mlp_norm = Norm(config, rngs=rngs)
        if self.placement == "sandwich":
            self.attn_post_norm = Norm(config, rngs=rngs)
            self.mlp_post_norm = Norm(config, rngs=rngs)
        else:
            self.attn_post_norm = self.mlp_post_norm = None

    def __call__(
        self, v, positions, context=None, *, freeze_attention=False, query_block=None,
        causal_blocks=1, pos_vectors=None,
    ):
        """v: [b, t, m] -> (v_next [b, t, m], z [b, t, m], keys, values, scores, pattern).

        query_block, causal_blocks, pos_vectors: see `Attention.__call__` (scores and
        pattern are None when either of the first two applies).
        """
        options = dict(
            freeze_attention=freeze_attention, query_block=query_block,
            causal_blocks=causal_blocks, pos_vectors=pos_vectors,
        )
        if self.placement == "pre":
            a, k, val, scores, pattern = self.attn(self.attn_norm(v), positions, context, **options)
            z = v + a
            v_next = z + self.mlp(self.mlp_norm(z))
        elif self.placement == "post":
            a, k, val, scores, pattern = self.attn(v, positions, context, **options)
            z = self.attn_norm(v + a)
            v_next = self.mlp_norm(z + self.mlp(z))
        else:  # sandwich
            a, k, val, scores, pattern = self.attn(self.attn_norm(v), positions, context, **options)
            z = v + self.attn_post_norm(a)
            v_next = z + self.mlp_post_norm(self.mlp(self.mlp_norm(z)))
        return v_next, z, k, val, scores, pattern


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

    def _default_positions(self, batch: int, n: int, offset: int = 0) -> jax.Array:
        if self.config.pos_encoding == "learned" and offset + n > self.config.max_len:
            raise ValueError(
                f"sequence length {offset + n} exceeds max_len={self.config.max_len} of the "
                "learned positional embedding"
            )
        return jnp.broadcast_to(jnp.arange(offset, offset + n, dtype=jnp.int32), (batch, n))

    # ---- pieces of the forward pass -----------------------------------------------------

    def embed(self, tokens, positions=None) -> jax.Array:
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
            return self._default_positions(b, n)
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
        return v0

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

    def unembed(self, y: jax.Array) -> jax.Array:
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
        if c.final_logit_softcap is not None:
            cap = jnp.asarray(c.final_logit_softcap, dt)
            logits = cap * jnp.tanh(logits / cap)
        return logits

    # ---- the forward pass ------------------------------------------------------------------

    def forward_from_embeddings(
        self,
        v0,
        *,
        capture: bool = False,
        freeze_attention: bool = False,
        start_layer: int = 0,
        stop_layer: int | None = None,
        positions=None,
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
            v_next, z, k, val, scores, pattern = self.blocks[layer](
                v, pos, layer_context, freeze_attention=freeze_attention, query_block=query_block,
                pos_vectors=pos_vectors,
            )
            keys.append(k)
            values.append(val)
            if capture:
                layers.append((v, z, v_next, scores, pattern))
            v = v_next

        if stop == c.n_layers:
            y = self.final_norm(v) if self.final_norm is not None else v
            logits = self.unembed(y)
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

    def __call__(self, tokens, *, capture: bool = False, freeze_attention: bool = False):
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

