"""OLMo-2: the Llama tensors with OLMo-2's placement (a norm on each sub-layer's output,
before the residual add; no input norms) and q/k RMSNorm over the whole query and key
projections (widths n_heads * d_head and n_kv_heads * d_head), before RoPE."""

from __future__ import annotations

from collections.abc import Mapping

from transformer.config import TransformerConfig
from transformer.loading import llama
from transformer.loading.mapping import Spec, activation

MODEL_TYPES = ("olmo2",)
GGUF_ARCHITECTURES = ()  # transformers' GGUF reader has no OLMo-2
PREFIXES = llama.PREFIXES
EMBED = llama.EMBED

FIXED = dict(norm_placement="post_sublayer", qk_norm=True, qk_norm_over="projection")
NORMS = dict(attn_post_norm="post_attention_layernorm",
             mlp_post_norm="post_feedforward_layernorm")


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face Olmo2Config dict."""
    where = "olmo2 config"
    read = dict(activation=activation(hf.get("hidden_act", "silu"), where))
    return llama.llama_style_config(hf, fixed=FIXED, read=read, tie_default=False, **precision)


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """The Llama names with OLMo-2's post norms (without the "model." prefix)."""
    del hf
    return llama.layer_specs(config, norms=NORMS)
