"""What the forward pass hands back: small typed pytrees with named fields.

Every layer reports what it computed by name (`BlockOutput.resid_mid`, `.attn.pattern`,
`.taps["mlp_norm"]`), so a caller never unpacks a tuple by position and the analysis reads
the block's own taps instead of re-deriving where the norms sit. Shapes use the einsum
vocabulary of `transformer.layers` (t: positions of this call, k: keys seen = cached + t).
"""

from __future__ import annotations

import jax
from flax import struct


@struct.dataclass
class AttentionOutput:
    """One attention sub-layer's results.

    out: [b, t, m] the sub-layer's output (after W_O, before any norm or residual);
    keys, values: [b, t, g, d] of this call's tokens (rotated keys: what a cache stores);
    scores: [b, h, t, k] scaled, soft-capped, biased, masked pre-softmax scores;
    pattern: [b, h, t, k] Lambda, the softmax per head (accumulation dtype).
    scores and pattern are None when the queries ran in blocks (query_block /
    causal_blocks), which never hold the whole matrices.
    """

    out: jax.Array
    keys: jax.Array
    values: jax.Array
    scores: jax.Array | None = None
    pattern: jax.Array | None = None


@struct.dataclass
class BlockOutput:
    """One decoder layer's results and the inputs its pieces saw (the block's taps).

    resid_post: [b, t, m] v^(l+1), the layer's output;
    resid_mid: [b, t, m] z^(l), the residual stream between the two sub-layers;
    attn: `AttentionOutput` of the attention sub-layer;
    attn_in, mlp_in: [b, t, m] what the attention and the MLP were applied to (their
        input norm's output where the placement has one, else the residual itself);
    taps: {norm attribute name: [b, t, m] the input that norm saw}, one entry per norm
        of the block ("attn_norm", "mlp_norm", and "attn_post_norm" / "mlp_post_norm"
        where they exist); `Block.layouts` says where each norm sits.
    """

    resid_post: jax.Array
    resid_mid: jax.Array
    attn: AttentionOutput
    attn_in: jax.Array
    mlp_in: jax.Array
    taps: dict[str, jax.Array]


@struct.dataclass
class Intermediates:
    """Captured activations, stacked over the layers that ran (L' = stop - start).

    Shapes (batch axis b absent for unbatched input; k = keys seen, = n without a cache):
        resid_pre:    [L', b, n, m]  v^(l), the input of each layer
        resid_mid:    [L', b, n, m]  z^(l), after the attention sublayer
        resid_post:   [L', b, n, m]  v^(l+1), the output of each layer
        attn_scores:  [L', b, h, n, k] scaled, soft-capped, biased, masked pre-softmax scores
                                       (times the `attn_softmax` factor when it is not standard)
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
