"""Mistral: the Llama layout with a sliding window on every layer (`sliding_window`; null
in Mistral v0.2+ checkpoints: every layer global)."""

from __future__ import annotations

from collections.abc import Mapping

from transformer.config import TransformerConfig
from transformer.loading import llama
from transformer.loading.mapping import Spec, activation

MODEL_TYPES = ("mistral",)
GGUF_ARCHITECTURES = ()  # llama.cpp writes Mistral 7B as general.architecture "llama"
PREFIXES = llama.PREFIXES
EMBED = llama.EMBED


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face MistralConfig dict (HF's window keeps keys with
    q - k < sliding_window: the decoder's `window`)."""
    where = "mistral config"
    window = hf.get("sliding_window")
    read = dict(
        activation=activation(hf.get("hidden_act", "silu"), where),
        window=int(window) if window else None,
    )
    return llama.llama_style_config(hf, fixed={}, read=read, tie_default=False, **precision)


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """The Llama names (without the "model." prefix)."""
    del hf
    return llama.layer_specs(config)
