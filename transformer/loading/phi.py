"""Phi (Phi-1.5, Phi-2): attention and MLP in parallel on one LayerNorm of the input
(x + Attn(ln(x)) + MLP(ln(x))), partial rotary, biases everywhere (the head's too), a
GELU MLP without gate."""

from __future__ import annotations

from collections.abc import Mapping

from transformer.config import TransformerConfig
from transformer.loading import llama
from transformer.loading.mapping import (
    Spec,
    activation,
    bias_to_heads,
    check_unsupported,
    linear_to_heads,
    linear_to_out_heads,
    norm_specs,
    rope_switches,
    transpose,
)

MODEL_TYPES = ("phi",)
GGUF_ARCHITECTURES = ()  # transformers' GGUF reader has no Phi-2
PREFIXES = llama.PREFIXES
EMBED = llama.EMBED
HEAD_BIAS = "lm_head.bias"

FIXED = dict(
    pos_encoding="rope", norm="layernorm", norm_bias=True, norm_placement="shared_pre",
    parallel_residual=True, gated=False, mlp_bias=True, qkv_bias=True, out_bias=True,
    lm_head_bias=True,
)


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face PhiConfig dict.

    Raises:
        ValueError: qk_layernorm (per-head LayerNorms on q and k) is not implemented.
    """
    where = "phi config"
    check_unsupported(hf, where, qk_layernorm=(False, None))
    return TransformerConfig(
        **llama.sizes(hf),
        **rope_switches(hf),
        **FIXED,
        norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
        activation=activation(hf.get("hidden_act", "gelu_new"), where),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        **precision,
    )


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """Decoder parameters from a Phi checkpoint (names without the "model." prefix)."""
    del hf
    c = config
    m, h, g, d, f, v = c.d_model, c.n_heads, c.n_kv_heads, c.d_head, c.d_mlp, c.vocab_size
    specs = [Spec(("embedding",), (EMBED,), ((v, m),))]
    for i in range(c.n_layers):
        p, t = f"layers.{i}.", ("blocks", i)
        a = p + "self_attn."
        for name, heads, proj in (("q", h, "q_proj"), ("k", g, "k_proj"), ("v", g, "v_proj")):
            specs += [
                Spec((*t, "attn", "w" + name), (a + proj + ".weight",), ((heads * d, m),),
                     linear_to_heads(heads, d)),
                Spec((*t, "attn", "b" + name), (a + proj + ".bias",), ((heads * d,),),
                     bias_to_heads(heads, d)),
            ]
        specs += [
            Spec((*t, "attn", "wo"), (a + "dense.weight",), ((m, h * d),),
                 linear_to_out_heads(h, d)),
            Spec((*t, "attn", "bo"), (a + "dense.bias",), ((m,),)),
            Spec((*t, "mlp", "w_up"), (p + "mlp.fc1.weight",), ((f, m),), transpose),
            Spec((*t, "mlp", "b_up"), (p + "mlp.fc1.bias",), ((f,),)),
            Spec((*t, "mlp", "w_down"), (p + "mlp.fc2.weight",), ((m, f),), transpose),
            Spec((*t, "mlp", "b_down"), (p + "mlp.fc2.bias",), ((m,),)),
        ]
        specs += norm_specs((*t, "attn_norm"), p + "input_layernorm.weight",
                            p + "input_layernorm.bias", m, c)
    specs += norm_specs(("final_norm",), "final_layernorm.weight", "final_layernorm.bias", m, c)
    return specs
