"""Gemma 3 (text): Gemma 2's layout plus q/k RMSNorm, a local RoPE base on sliding layers,
linear RoPE scaling on global layers, and a 5-local : 1-global layer pattern."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

from transformer.config import TransformerConfig
from transformer.loading import gemma, gemma2, llama
from transformer.loading.mapping import (
    Spec,
    check_unsupported,
    rope_parameters,
    windows_from_layer_types,
)

MODEL_TYPES = ("gemma3_text",)
PREFIXES = llama.PREFIXES
EMBED = llama.EMBED


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face Gemma3TextConfig dict.

    Rope: transformers>=5 configs hold rope_parameters per layer type; older ones hold
    rope_theta (global), rope_local_base_freq (sliding) and rope_scaling (global only).
    """
    where = "gemma3_text config"
    check_unsupported(hf, where, use_bidirectional_attention=(False, None))
    size = llama.sizes(hf)
    hf = dict(hf)
    if hf.get("layer_types") is None:
        pattern = int(hf.get("sliding_window_pattern", 6))
        hf["layer_types"] = [
            "sliding_attention" if (i + 1) % pattern else "full_attention"
            for i in range(size["n_layers"])
        ]
    hf.setdefault("sliding_window", 4096)
    if isinstance(hf.get("rope_parameters"), Mapping) and "full_attention" in hf["rope_parameters"]:
        theta, factor = rope_parameters(hf, "full_attention")
        theta_local, local_factor = rope_parameters(hf, "sliding_attention")
    else:
        theta, factor = rope_parameters(hf, default_theta=1_000_000.0)
        theta_local, local_factor = float(hf.get("rope_local_base_freq", 10_000.0)), 1.0
    if hf.get("attn_logit_softcapping") is not None:
        warnings.warn(
            f"{where}: attn_logit_softcapping={hf['attn_logit_softcapping']} is ignored, as "
            "in transformers' Gemma 3",
            stacklevel=3,
        )
    if local_factor != 1.0:
        raise ValueError(f"{where}: rope scaling on sliding layers is not supported")
    bias = bool(hf.get("attention_bias", False))
    return TransformerConfig(
        **size,
        pos_encoding="rope",
        rope_theta=theta,
        rope_theta_local=theta_local,
        rope_linear_factor=factor,
        norm="rmsnorm",
        norm_placement="sandwich",
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        norm_bias=False,
        rmsnorm_unit_offset=True,
        qk_norm=True,
        activation=gemma.gemma_activation(hf, where),
        gated=True,
        qkv_bias=bias,
        out_bias=bias,
        window=windows_from_layer_types(hf, size["n_layers"], where),
        # transformers' Gemma 3 attention never applies attn_logit_softcapping (the field
        # exists, released configs set it to null); follow the reference and ignore it.
        attn_logit_softcap=None,
        final_logit_softcap=gemma2._optional(hf, "final_logit_softcapping", None),
        query_scale=float(hf.get("query_pre_attn_scalar", 256)) ** -0.5,
        embedding_scale=gemma.embedding_scale(hf),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        **precision,
    )


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """Same names as Gemma 2, plus self_attn.q_norm / k_norm."""
    return gemma2.weight_specs(config, hf)
