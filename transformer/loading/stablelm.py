"""StableLM (StableLM-2, StableLM-3B-4E1T): the Llama tensor names with LayerNorms (with
biases), partial rotary, optional q/k/v biases, and optionally attention and MLP in
parallel on one input norm (use_parallel_residual)."""

from __future__ import annotations

from collections.abc import Mapping


from transformer.config import TransformerConfig
from transformer.loading import llama
from transformer.loading.mapping import Spec, activation, check_unsupported, rope_switches

MODEL_TYPES = ("stablelm",)
GGUF_ARCHITECTURES = ()  # GGUF not read yet (transformers' reader reads it: issue 22, open)
PREFIXES = llama.PREFIXES
EMBED = llama.EMBED


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face StableLmConfig dict.

    Raises:
        ValueError: qk_layernorm (a LayerNorm per head with its own weights) is not
            implemented.
    """
    where = "stablelm config"
    check_unsupported(hf, where, qk_layernorm=(False, None))
    parallel = bool(hf.get("use_parallel_residual", False))
    bias = bool(hf.get("use_qkv_bias", False))
    return TransformerConfig(
        **llama.sizes(hf),
        **rope_switches(hf),
        pos_encoding="rope",
        norm="layernorm",
        norm_bias=True,
        norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
        norm_placement="shared_pre" if parallel else "pre",
        parallel_residual=parallel,
        activation=activation(hf.get("hidden_act", "silu"), where),
        gated=True,
        qkv_bias=bias,
        out_bias=False,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        **precision,
    )


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """The Llama names, with LayerNorm biases (without the "model." prefix)."""
    del hf
    return llama.layer_specs(config)

