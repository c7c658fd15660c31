"""Gemma 2: Gemma plus sandwich norms, alternating local/global layers, soft-caps and
query_pre_attn_scalar."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from transformer.config import TransformerConfig
from transformer.loading import gemma, llama
from transformer.loading.gguf_io import ArchMetadata
from transformer.loading.mapping import Spec, check_unsupported, windows_from_layer_types

MODEL_TYPES = ("gemma2",)
GGUF_ARCHITECTURES = ("gemma2",)
PREFIXES = llama.PREFIXES
EMBED = llama.EMBED


def _optional(hf: Mapping, key: str, default):
    value = hf.get(key, default)
    return None if value is None else float(value)


# Gemma 2's switches on top of Gemma's (Gemma 3 extends this table).
FIXED = dict(gemma.FIXED, norm_placement="sandwich")


def layer_types_or_pattern(hf: Mapping, period: int) -> dict:
    """The config with `layer_types` filled where older configs leave it out: every
    `period`-th layer global, the others sliding (Gemma 2: period 2, Gemma 3: 6)."""
    hf = dict(hf)
    if hf.get("layer_types") is None:
        hf["layer_types"] = [
            "sliding_attention" if (i + 1) % period else "full_attention"
            for i in range(int(hf["num_hidden_layers"]))
        ]
    hf.setdefault("sliding_window", 4096)
    return hf


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face Gemma2Config dict.

    Without `layer_types` (configs older than transformers 4.54) even layers slide, as
    transformers' Gemma2Config assumes.
    """
    where = "gemma2 config"
    check_unsupported(hf, where, use_bidirectional_attention=(False, None))
    hf = layer_types_or_pattern(hf, 2)
    read = dict(
        activation=gemma.gemma_activation(hf, where),
        window=windows_from_layer_types(hf, int(hf["num_hidden_layers"]), where),
        attn_logit_softcap=_optional(hf, "attn_logit_softcapping", 50.0),
        final_logit_softcap=_optional(hf, "final_logit_softcapping", 30.0),
        query_scale=float(hf.get("query_pre_attn_scalar", 256)) ** -0.5,
        embedding_scale=gemma.embedding_scale(hf),
    )
    return llama.llama_style_config(hf, fixed=FIXED, read=read, tie_default=True, **precision)


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """Gemma 2/3 names: post_attention_layernorm is the norm *after* attention."""
    del hf
    return llama.layer_specs(
        config,
        mlp_norm="pre_feedforward_layernorm",
        attn_post_norm="post_attention_layernorm",
        mlp_post_norm="post_feedforward_layernorm",
    )


def gguf_to_hf(meta: Mapping, tensors: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """A Hugging Face Gemma 2 config dict and tensors from GGUF metadata and renamed tensors.

    llama.cpp's defaults where a key is absent: soft-caps 50 / 30, window 4096, even layers
    sliding (the pattern is fixed, it has no key).

    Raises:
        ValueError: metadata the decoder cannot represent (names the key).
    """
    m = ArchMetadata(meta)
    hf = llama.gguf_hf_config(m, tensors, "gemma2")
    hf.update(
        hidden_activation="gelu_pytorch_tanh",
        attn_logit_softcapping=float(m.get("attn_logit_softcapping", 50.0)),
        final_logit_softcapping=float(m.get("final_logit_softcapping", 30.0)),
        sliding_window=m.integer("attention.sliding_window", 4096),
        query_pre_attn_scalar=gemma.gguf_query_scalar(m, hf, big_layers=46),
    )
    m.check_all_read()
    return hf, gemma.gguf_norms_to_hf(tensors)
