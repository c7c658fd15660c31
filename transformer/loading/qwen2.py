"""Qwen2: the Llama layout with q/k/v biases (no output bias) and optional sliding layers."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from transformer.config import TransformerConfig
from transformer.loading import llama
from transformer.loading.gguf_io import ArchMetadata
from transformer.loading.mapping import Spec, activation, windows_from_layer_types

MODEL_TYPES = ("qwen2",)
GGUF_ARCHITECTURES = ("qwen2",)
PREFIXES = llama.PREFIXES
EMBED = llama.EMBED


# Qwen2's switches on top of llama.SHARED: q/k/v biases, no output bias.
FIXED = dict(qkv_bias=True, out_bias=False)


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face Qwen2Config dict.

    Sliding layers: transformers>=5 configs list `layer_types`; older ones imply them from
    use_sliding_window / max_window_layers (layers >= max_window_layers slide).
    """
    where = "qwen2 config"
    size = llama.sizes(hf)
    hf = dict(hf)
    if hf.get("layer_types") is None:
        sliding = bool(hf.get("use_sliding_window", False)) and hf.get("sliding_window")
        top = int(hf.get("max_window_layers", 28))
        hf["layer_types"] = [
            "sliding_attention" if sliding and i >= top else "full_attention"
            for i in range(size["n_layers"])
        ]
    elif not hf.get("use_sliding_window", False):
        hf["sliding_window"] = None  # HF ignores sliding_window unless this is set
    read = dict(
        activation=activation(hf.get("hidden_act", "silu"), where),
        window=windows_from_layer_types(hf, size["n_layers"], where),
    )
    return llama.llama_style_config(hf, fixed=FIXED, read=read, tie_default=False, **precision)


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """Decoder parameters from a Qwen2 checkpoint (names without the "model." prefix)."""
    del hf
    return llama.layer_specs(config)


def gguf_to_hf(meta: Mapping, tensors: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """A Hugging Face Qwen2 config dict and tensors from GGUF metadata and renamed tensors.

    llama.cpp's Qwen2 rotates halves (no q/k permutation to undo) and has no sliding
    window: every layer is global.

    Raises:
        ValueError: metadata the decoder cannot represent (names the key).
    """
    m = ArchMetadata(meta)
    hf = llama.gguf_hf_config(m, tensors, "qwen2")
    hf.update(hidden_act="silu", use_sliding_window=False)
    m.check_all_read()
    return hf, dict(tensors)
