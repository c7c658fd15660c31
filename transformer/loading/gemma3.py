"""Gemma 3 (text): Gemma 2's layout plus q/k RMSNorm, a local RoPE base on sliding layers,
linear RoPE scaling on global layers, and a 5-local : 1-global layer pattern."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from transformer.config import TransformerConfig
from transformer.loading import gemma, gemma2, llama
from transformer.loading.gguf_io import ArchMetadata
from transformer.loading.mapping import (
    Spec,
    check_unsupported,
    rope_parameters,
    windows_from_layer_types,
)

MODEL_TYPES = ("gemma3_text",)
GGUF_ARCHITECTURES = ("gemma3",)  # the text model only: llama.cpp keeps vision apart
PREFIXES = llama.PREFIXES
EMBED = llama.EMBED


# Gemma 3's switches on top of Gemma 2's. transformers' Gemma 3 attention never applies
# attn_logit_softcapping (the field exists, released configs set it to null): follow the
# reference and ignore it.
FIXED = dict(gemma2.FIXED, qk_norm=True, attn_logit_softcap=None)


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face Gemma3TextConfig dict.

    Rope: transformers>=5 configs hold rope_parameters per layer type; older ones hold
    rope_theta (global), rope_local_base_freq (sliding) and rope_scaling (global only).
    """
    where = "gemma3_text config"
    check_unsupported(hf, where, use_bidirectional_attention=(False, None))
    hf = gemma2.layer_types_or_pattern(hf, int(hf.get("sliding_window_pattern", 6)))
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
    read = dict(
        rope_theta_local=theta_local,
        activation=gemma.gemma_activation(hf, where),
        window=windows_from_layer_types(hf, int(hf["num_hidden_layers"]), where),
        final_logit_softcap=gemma2._optional(hf, "final_logit_softcapping", None),
        query_scale=float(hf.get("query_pre_attn_scalar", 256)) ** -0.5,
        embedding_scale=gemma.embedding_scale(hf),
    )
    return llama.llama_style_config(
        hf, fixed=FIXED, read=read, tie_default=True, rope=(theta, factor), **precision
    )


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """Same names as Gemma 2, plus self_attn.q_norm / k_norm."""
    return gemma2.weight_specs(config, hf)


# llama.cpp's Gemma 3 defaults where a file has no key: every sixth layer global, the others
# sliding with RoPE base 10,000 and no RoPE scaling.
_GGUF_PATTERN = 6
_GGUF_LOCAL_THETA = 10_000.0


def _sliding_layers(pattern, n_layers: int) -> list[bool]:
    """Which layers slide, from llama.cpp's attention.sliding_window_pattern: one bool per
    layer, or a period P (layer i slides unless i % P == P - 1; P = 0: all slide)."""
    if isinstance(pattern, (list, tuple)):
        if len(pattern) != n_layers:
            raise ValueError(
                f"GGUF: gemma3.attention.sliding_window_pattern has {len(pattern)} entries, "
                f"expected {n_layers}"
            )
        return [bool(p) for p in pattern]
    period = int(pattern)
    return [period == 0 or i % period < period - 1 for i in range(n_layers)]


def gguf_to_hf(meta: Mapping, tensors: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """A Hugging Face Gemma3TextConfig dict and tensors from GGUF metadata and tensors.

    The file's rope.freq_base and rope scaling belong to the global layers; the sliding ones
    take rope.freq_base_swa (newer converters write it) or 10,000. Without a sliding_window
    (or with 0) every layer is global, as llama.cpp runs it.

    Raises:
        ValueError: metadata the decoder cannot represent (names the key).
    """
    m = ArchMetadata(meta)
    hf = llama.gguf_hf_config(m, tensors, "gemma3_text")
    window = m.integer("attention.sliding_window", 0)
    sliding = _sliding_layers(
        m.get("attention.sliding_window_pattern", _GGUF_PATTERN), hf["num_hidden_layers"]
    )
    hf["layer_types"] = [
        "sliding_attention" if window and slides else "full_attention" for slides in sliding
    ]
    global_rope = {"rope_type": "default", "rope_theta": hf.pop("rope_theta")}
    global_rope.update(hf.pop("rope_scaling", {}))
    local_theta = float(m.get("rope.freq_base_swa", _GGUF_LOCAL_THETA))
    hf.update(
        hidden_activation="gelu_pytorch_tanh",
        sliding_window=window or None,
        rope_parameters={
            "full_attention": global_rope,
            "sliding_attention": {"rope_type": "default", "rope_theta": local_theta},
        },
        # llama.cpp's Gemma 3 reads no attention soft-cap; to_config warns if one is set.
        attn_logit_softcapping=m.get("attn_logit_softcapping") or None,
        final_logit_softcapping=m.get("final_logit_softcapping") or None,  # 0: none
        query_pre_attn_scalar=gemma.gguf_query_scalar(m, hf, big_layers=62),
    )
    m.check_all_read()
    return hf, gemma.gguf_norms_to_hf(tensors)
