"""A from-scratch Flax NNX decoder-only Transformer with exact control of its forward pass."""

from transformer.config import TransformerConfig
from transformer.generate import greedy_generate
from transformer.layers import alibi_slopes, apply_rope, sinusoidal_encoding
from transformer.loading import load_pretrained
from transformer.model import (
    Decoder,
    ForwardResult,
    Intermediates,
    KVCache,
    count_params,
)
from transformer.rebuild import rebuild

__all__ = [
    "Decoder",
    "ForwardResult",
    "Intermediates",
    "KVCache",
    "TransformerConfig",
    "alibi_slopes",
    "apply_rope",
    "count_params",
    "greedy_generate",
    "load_pretrained",
    "rebuild",
    "sinusoidal_encoding",
]
