"""Qwen3 (dense): Qwen2's sliding-layer rules, no q/k/v biases, and RMSNorm on every query
and key head (self_attn.q_norm / k_norm, before RoPE). Qwen3-MoE is refused as MoE."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from transformer.config import TransformerConfig
from transformer.loading import llama, qwen2
from transformer.loading.gguf_io import ArchMetadata
from transformer.loading.mapping import Spec

MODEL_TYPES = ("qwen3",)
GGUF_ARCHITECTURES = ("qwen3",)
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


def gguf_to_hf(meta: Mapping, tensors: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """A Hugging Face Qwen3 config dict and tensors from GGUF metadata and renamed tensors
    (llama.cpp's Qwen3 rotates halves: nothing to un-permute; no sliding window).

    Raises:
        ValueError: metadata the decoder cannot represent (names the key).
    """
    m = ArchMetadata(meta)
    hf = llama.gguf_hf_config(m, tensors, "qwen3")
    hf.update(hidden_act="silu", use_sliding_window=False)
    m.check_all_read()
    return hf, dict(tensors)
