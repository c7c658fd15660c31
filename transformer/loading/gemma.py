"""Gemma (1): RMSNorm with (1 + w) scale, GeGLU (tanh GELU), embeddings times sqrt(d_model)."""

from __future__ import annotations

from collections.abc import Mapping

from transformer.config import TransformerConfig
from transformer.loading import llama
from transformer.loading.mapping import Spec, activation, check_unsupported, rope_parameters

MODEL_TYPES = ("gemma",)
PREFIXES = llama.PREFIXES
EMBED = llama.EMBED


def gemma_activation(hf: Mapping, where: str) -> str:
    """Gemma's MLP activation: `hidden_activation` or `hidden_act`; the legacy value
    "gelu" means the tanh approximation (as transformers' GemmaConfig decides)."""
    name = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    return "gelu_tanh" if name == "gelu" else activation(name, where)


def embedding_scale(hf: Mapping) -> float:
    # sqrt(d_model); the decoder casts it to the compute dtype, as Gemma does (in bfloat16
    # sqrt(3072) = 55.4256 becomes 55.5).
    return float(hf["hidden_size"]) ** 0.5


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face GemmaConfig dict."""
    where = "gemma config"
    check_unsupported(hf, where, use_bidirectional_attention=(False, None))
    theta, factor = rope_parameters(hf)
    bias = bool(hf.get("attention_bias", False))
    return TransformerConfig(
        **llama.sizes(hf),
        pos_encoding="rope",
        rope_theta=theta,
        rope_linear_factor=factor,
        norm="rmsnorm",
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        norm_bias=False,
        rmsnorm_unit_offset=True,
        activation=gemma_activation(hf, where),
        gated=True,
        qkv_bias=bias,
        out_bias=bias,
        embedding_scale=embedding_scale(hf),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        **precision,
    )


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """Decoder parameters from a Gemma checkpoint (names without the "model." prefix)."""
    del hf
    return llama.layer_specs(config)
