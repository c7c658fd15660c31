"""Gemma (1): RMSNorm with (1 + w) scale, GeGLU (tanh GELU), embeddings times sqrt(d_model)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from transformer.config import TransformerConfig
from transformer.loading import llama
from transformer.loading.gguf_io import ArchMetadata
from transformer.loading.mapping import Spec, activation, check_unsupported

MODEL_TYPES = ("gemma",)
GGUF_ARCHITECTURES = ("gemma",)
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


# Gemma's switches on top of llama.SHARED (Gemma 2 and 3 extend this table).
FIXED = dict(rmsnorm_unit_offset=True)


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face GemmaConfig dict."""
    where = "gemma config"
    check_unsupported(hf, where, use_bidirectional_attention=(False, None))
    read = dict(activation=gemma_activation(hf, where), embedding_scale=embedding_scale(hf))
    return llama.llama_style_config(hf, fixed=FIXED, read=read, tie_default=True, **precision)


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """Decoder parameters from a Gemma checkpoint (names without the "model." prefix)."""
    del hf
    return llama.layer_specs(config)


# ---- GGUF (llama.cpp) -------------------------------------------------------------------


def gguf_norms_to_hf(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Undo llama.cpp's Gemma norm convention: its converter stores every RMSNorm weight as
    1 + w (llama.cpp then runs a plain RMSNorm), Hugging Face stores w for a (1 + w) norm.

    Verified on the real Gemma 3 270M file (tests/test_gemma3_gguf.py): with 1 subtracted
    the logits match transformers (which subtracts 1 too); read as w instead, they are off
    by tens and the model gives ordinary text a likelihood below the uniform one.
    """
    return {
        name: w - np.float32(1.0) if name.endswith("norm.weight") else w
        for name, w in tensors.items()
    }


def gguf_query_scalar(m: ArchMetadata, hf: Mapping, big_layers: int) -> float:
    """query_pre_attn_scalar as llama.cpp sets it for Gemma 2/3, which has no key for it: the
    head width, except d_model / n_heads for the 27B models (recognised by their depth)."""
    if hf["num_hidden_layers"] == big_layers:
        return hf["hidden_size"] / hf["num_attention_heads"]
    return float(hf["head_dim"])


def gguf_to_hf(meta: Mapping, tensors: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """A Hugging Face Gemma config dict and tensors from GGUF metadata and renamed tensors.

    Raises:
        ValueError: metadata the decoder cannot represent (names the key).
    """
    m = ArchMetadata(meta)
    hf = llama.gguf_hf_config(m, tensors, "gemma")
    hf["hidden_activation"] = "gelu_pytorch_tanh"  # ggml_gelu is the tanh approximation
    m.check_all_read()
    return hf, gguf_norms_to_hf(tensors)
