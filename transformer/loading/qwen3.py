"""Qwen3 (dense): Qwen2's sliding-layer rules, no q/k/v biases, and RMSNorm on every query
and key head (self_attn.q_norm / k_norm, before RoPE). Qwen3-MoE is refused as MoE."""

from __future__ import annotations

from collections.abc import Mapping


from transformer.config import TransformerConfig
from transformer.loading import llama, qwen2
from transformer.loading.mapping import Spec

MODEL_TYPES = ("qwen3",)
GGUF_ARCHITECTURES = ()  # GGUF not read yet (transformers' reader reads it: issue 22, open)
PREFIXES = llama.PREFIXES
EMBED = llama.EMBED

# Qwen3's switches on top of llama.SHARED: per-head q/k RMSNorm; biases as attention_bias says.
FIXED = dict(qk_norm=True, qk_norm_over="head")


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face Qwen3Config dict."""
    base = qwen2.to_config(hf, **precision)  # sizes, sliding layers, activation
    bias = bool(hf.get("attention_bias", False))
    return base.replace(**FIXED, qkv_bias=bias, out_bias=bias)


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """The Llama names plus self_attn.q_norm / k_norm (without the "model." prefix)."""
    del hf
    return llama.layer_specs(config)

