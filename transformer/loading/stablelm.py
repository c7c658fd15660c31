"""StableLM (StableLM-2, StableLM-3B-4E1T): the Llama tensor names with LayerNorms (with
biases), partial rotary, optional q/k/v biases, and optionally attention and MLP in
parallel on one input norm (use_parallel_residual)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from transformer.config import TransformerConfig
from transformer.loading import llama
from transformer.loading.gguf_io import ArchMetadata, tied_head
from transformer.loading.mapping import Spec, activation, check_unsupported, rope_switches

MODEL_TYPES = ("stablelm",)
GGUF_ARCHITECTURES = ("stablelm",)
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


def gguf_to_hf(meta: Mapping, tensors: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """A Hugging Face StableLmConfig dict and tensors from GGUF metadata and renamed tensors
    (llama.cpp's StableLM rotates halves; its norms are LayerNorms with biases).

    Raises:
        ValueError: metadata the decoder cannot represent (names the key).
    """
    m = ArchMetadata(meta)
    n_heads = m.integer("attention.head_count")
    d_model = m.integer("embedding_length")
    d_head = d_model // n_heads
    rope_dims = m.integer("rope.dimension_count", d_head)
    hf = dict(
        model_type="stablelm",
        vocab_size=m.integer("vocab_size", tensors["model.embed_tokens.weight"].shape[0]),
        hidden_size=d_model,
        num_hidden_layers=m.integer("block_count"),
        num_attention_heads=n_heads,
        num_key_value_heads=m.integer("attention.head_count_kv", n_heads),
        intermediate_size=m.integer("feed_forward_length"),
        max_position_embeddings=m.integer("context_length", 2048),
        layer_norm_eps=float(m["attention.layer_norm_epsilon"]),
        rope_theta=float(m.get("rope.freq_base", 10_000.0)),
        partial_rotary_factor=rope_dims / d_head,
        use_qkv_bias="model.layers.0.self_attn.q_proj.bias" in tensors,
        use_parallel_residual="model.layers.0.post_attention_layernorm.weight" not in tensors,
        tie_word_embeddings=tied_head(tensors, "model.embed_tokens.weight"),
        hidden_act="silu",
    )
    m.check_all_read()
    return hf, dict(tensors)
