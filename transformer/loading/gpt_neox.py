"""GPT-NeoX (Pythia): parallel attention and MLP on their own LayerNorms of the input
(use_parallel_residual; x + Attn(ln1(x)) + MLP(ln2(x))), partial rotary (rotary_pct),
biases everywhere, an untied head named embed_out, and a fused query_key_value whose
rows are laid out per head: [h, (q | k | v), d]."""

from __future__ import annotations

from collections.abc import Mapping

from transformer.config import TransformerConfig
from transformer.loading.mapping import (
    Spec,
    activation,
    linear_to_out_heads,
    norm_specs,
    rope_switches,
    transpose,
)

MODEL_TYPES = ("gpt_neox",)
GGUF_ARCHITECTURES = ()  # transformers' GGUF reader has no GPT-NeoX
PREFIXES = ("gpt_neox.", "")
EMBED = "embed_in.weight"
HEAD = "embed_out.weight"


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face GPTNeoXConfig dict (4.x: rotary_pct and
    rotary_emb_base at the top level; 5.x: rope_parameters)."""
    where = "gpt_neox config"
    m, h = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    bias = bool(hf.get("attention_bias", True))
    parallel = bool(hf.get("use_parallel_residual", True))
    return TransformerConfig(
        vocab_size=int(hf["vocab_size"]),
        d_model=m,
        n_layers=int(hf["num_hidden_layers"]),
        n_heads=h,
        d_mlp=int(hf["intermediate_size"]),
        max_len=int(hf.get("max_position_embeddings", 2048)),
        **rope_switches(hf),
        pos_encoding="rope",
        norm="layernorm",
        norm_bias=True,
        norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
        parallel_residual=parallel,
        activation=activation(hf.get("hidden_act", "gelu"), where),
        gated=False,
        mlp_bias=True,
        qkv_bias=bias,
        out_bias=bias,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        **precision,
    )


def _qkv(part: int, h: int, d: int):
    """q (0), k (1) or v (2) of query_key_value's weight [h 3 d, m] -> [m, h, d]."""
    return lambda w: w.reshape(h, 3, d, w.shape[1])[:, part].transpose(2, 0, 1)


def _qkv_bias(part: int, h: int, d: int):
    return lambda b: b.reshape(h, 3, d)[:, part]


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """Decoder parameters from a GPT-NeoX checkpoint (names without "gpt_neox.")."""
    del hf
    c = config
    m, h, d, f, v = c.d_model, c.n_heads, c.d_head, c.d_mlp, c.vocab_size
    specs = [Spec(("embedding",), (EMBED,), ((v, m),))]
    for i in range(c.n_layers):
        p, t = f"layers.{i}.", ("blocks", i)
        qkv = p + "attention.query_key_value."
        for part, name in enumerate("qkv"):
            specs.append(Spec((*t, "attn", "w" + name), (qkv + "weight",), ((3 * h * d, m),),
                              _qkv(part, h, d)))
            if c.qkv_bias:
                specs.append(Spec((*t, "attn", "b" + name), (qkv + "bias",), ((3 * h * d,),),
                                  _qkv_bias(part, h, d)))
        specs.append(Spec((*t, "attn", "wo"), (p + "attention.dense.weight",), ((m, h * d),),
                          linear_to_out_heads(h, d)))
        if c.out_bias:
            specs.append(Spec((*t, "attn", "bo"), (p + "attention.dense.bias",), ((m,),)))
        specs += [
            Spec((*t, "mlp", "w_up"), (p + "mlp.dense_h_to_4h.weight",), ((f, m),), transpose),
            Spec((*t, "mlp", "b_up"), (p + "mlp.dense_h_to_4h.bias",), ((f,),)),
            Spec((*t, "mlp", "w_down"), (p + "mlp.dense_4h_to_h.weight",), ((m, f),), transpose),
            Spec((*t, "mlp", "b_down"), (p + "mlp.dense_4h_to_h.bias",), ((m,),)),
        ]
        for name, source in (("attn_norm", "input_layernorm"),
                             ("mlp_norm", "post_attention_layernorm")):
            specs += norm_specs((*t, name), p + source + ".weight", p + source + ".bias", m, c)
    specs += norm_specs(("final_norm",), "final_layer_norm.weight", "final_layer_norm.bias", m, c)
    return specs


def is_buffer(name: str) -> bool:
    """Non-parameter buffers older GPT-NeoX checkpoints store (mask tables, rotary)."""
    return name.endswith((".attention.bias", ".attention.masked_bias",
                          ".rotary_emb.inv_freq"))
