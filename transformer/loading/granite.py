"""Granite (IBM): the Llama layout with four scalar multipliers: embeddings
(embedding_multiplier), each residual branch (residual_multiplier), the attention scores
(attention_multiplier, replacing 1 / sqrt(d_head)) and the logits (divided by
logits_scaling)."""

from __future__ import annotations

from collections.abc import Mapping

from transformer.config import TransformerConfig
from transformer.loading import llama
from transformer.loading.mapping import Spec, activation

MODEL_TYPES = ("granite",)
GGUF_ARCHITECTURES = ()  # transformers' GGUF reader has no Granite
PREFIXES = llama.PREFIXES
EMBED = llama.EMBED


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face GraniteConfig dict."""
    where = "granite config"
    read = dict(
        activation=activation(hf.get("hidden_act", "silu"), where),
        mlp_bias=bool(hf.get("mlp_bias", False)),
        embedding_scale=float(hf.get("embedding_multiplier", 1.0)),
        residual_scale=float(hf.get("residual_multiplier", 1.0)),
        query_scale=float(hf.get("attention_multiplier", 1.0)),
        logit_scale=1.0 / float(hf.get("logits_scaling", 1.0)),
    )
    return llama.llama_style_config(hf, fixed={}, read=read, tie_default=True, **precision)


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """The Llama names (without the "model." prefix)."""
    del hf
    return llama.layer_specs(config)
