"""SmolLM3: the Llama layout with RoPE dropped on some layers (`no_rope_layers`, one flag
per layer, 0 = NoPE; by default every fourth layer) and optional sliding layers."""

from __future__ import annotations

from collections.abc import Mapping

from transformer.config import TransformerConfig
from transformer.loading import llama
from transformer.loading.mapping import Spec, activation, windows_from_layer_types

MODEL_TYPES = ("smollm3",)
GGUF_ARCHITECTURES = ()  # transformers' GGUF reader has no SmolLM3
PREFIXES = llama.PREFIXES
EMBED = llama.EMBED


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face SmolLM3Config dict.

    Raises:
        ValueError: a no_rope_layers list of the wrong length.
    """
    where = "smollm3 config"
    n_layers = int(hf["num_hidden_layers"])
    flags = hf.get("no_rope_layers")
    if flags is None:  # transformers' default: NoPE on every interval-th layer
        interval = int(hf.get("no_rope_layer_interval", 4))
        flags = [int((i + 1) % interval != 0) for i in range(n_layers)]
    if len(flags) != n_layers:
        raise ValueError(f"{where}: no_rope_layers has {len(flags)} entries, expected {n_layers}")
    hf = dict(hf)
    if hf.get("layer_types") is None or not hf.get("use_sliding_window", False):
        hf["layer_types"] = ["full_attention"] * n_layers  # HF slides only with the flag
    read = dict(
        activation=activation(hf.get("hidden_act", "silu"), where),
        mlp_bias=bool(hf.get("mlp_bias", False)),
        no_rope_layers=tuple(i for i, use in enumerate(flags) if not use),
        window=windows_from_layer_types(hf, n_layers, where),
    )
    return llama.llama_style_config(hf, fixed={}, read=read, tie_default=True, **precision)


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """The Llama names (without the "model." prefix)."""
    del hf
    return llama.layer_specs(config)
