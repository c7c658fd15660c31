"""Llama (and SmolLM2): RoPE, RMSNorm, SwiGLU, GQA; Hugging Face and GGUF layouts.

The Llama-style tensor names (model.layers.N.self_attn.q_proj, mlp.gate_proj, ...) are
shared by Qwen2 and the Gemma family, so `layer_specs` here serves them too.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from transformer.config import TransformerConfig
from transformer.model import LAYOUTS
from transformer.loading.gguf_io import ArchMetadata, rope_scaling, tied_head
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

MODEL_TYPES = ("llama",)
GGUF_ARCHITECTURES = ("llama",)  # general.architecture of llama.cpp files
# Where the decoder's tensors sit: causal-LM checkpoints use "model.", a bare base model "".
PREFIXES = ("model.", "")
EMBED = "embed_tokens.weight"


def sizes(hf: Mapping) -> dict:
    """The size fields every Llama-style config shares."""
    n_heads = int(hf["num_attention_heads"])
    return dict(
        vocab_size=int(hf["vocab_size"]),
        d_model=int(hf["hidden_size"]),
        n_layers=int(hf["num_hidden_layers"]),
        n_heads=n_heads,
        n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
        d_head=int(hf.get("head_dim") or hf["hidden_size"] // n_heads),
        d_mlp=int(hf["intermediate_size"]),
        max_len=int(hf.get("max_position_embeddings", 2048)),
    )


# The switches every Llama-style architecture (Llama, Qwen2, Gemma 1-3) shares; each module
# states only what it changes, as a table of fixed switches plus fields read from its config.
SHARED = dict(pos_encoding="rope", norm="rmsnorm", norm_bias=False, gated=True)


def llama_style_config(
    hf: Mapping, *, fixed: Mapping, read: Mapping, tie_default: bool, rope=None, **precision
) -> TransformerConfig:
    """TransformerConfig of a Llama-style Hugging Face config dict.

    Args:
        hf: the config dict.
        fixed: the architecture's fixed switches (override `SHARED`).
        read: fields the architecture reads from its config (override everything else).
        tie_default: tie_word_embeddings when the config does not say.
        rope: (theta, linear factor) when the architecture reads them its own way (default:
            `rope_switches(hf)`: theta, linear or Llama 3 scaling, partial rotary).
        **precision: dtype, param_dtype, softmax_dtype, matmul_precision.
    """
    if rope is None:
        rope_fields = rope_switches(hf)
    else:
        rope_fields = dict(rope_theta=rope[0], rope_linear_factor=rope[1])
    bias = bool(hf.get("attention_bias", False))
    fields = dict(
        **sizes(hf),
        **SHARED,
        **rope_fields,
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        qkv_bias=bias,
        out_bias=bias,
        tie_embeddings=bool(hf.get("tie_word_embeddings", tie_default)),
    )
    fields.update(fixed)
    fields.update(read)
    return TransformerConfig(**fields, **precision)


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face LlamaConfig dict.

    Raises:
        ValueError: unsupported rope scaling, activation, or other settings.
    """
    where = "llama config"
    check_unsupported(hf, where, pretraining_tp=(1, None))
    read = dict(
        activation=activation(hf.get("hidden_act", "silu"), where),
        mlp_bias=bool(hf.get("mlp_bias", False)),
    )
    return llama_style_config(hf, fixed={}, read=read, tie_default=False, **precision)


def layer_specs(
    config: TransformerConfig,
    *,
    mlp_norm: str = "post_attention_layernorm",
    attn_post_norm: str | None = None,
    mlp_post_norm: str | None = None,
    norms: Mapping[str, str] | None = None,
) -> list[Spec]:
    """Specs of every decoder parameter for Llama-style tensor names (no prefix).

    Args:
        config: the decoder configuration.
        mlp_norm: name of the norm before the MLP (Llama: post_attention_layernorm; Gemma 2/3
            use that name for the norm after attention and call this one
            pre_feedforward_layernorm).
        attn_post_norm, mlp_post_norm: sandwich norm names (Gemma 2/3).
        norms: {decoder norm attribute: checkpoint name} replacing the three arguments
            above (OLMo-2 has post norms only); only the norms the block has are read.
    """
    if norms is None:
        norms = dict(attn_norm="input_layernorm", mlp_norm=mlp_norm,
                     attn_post_norm=attn_post_norm, mlp_post_norm=mlp_post_norm)
    c = config
    m, h, g, d, f, v = c.d_model, c.n_heads, c.n_kv_heads, c.d_head, c.d_mlp, c.vocab_size
    specs = [Spec(("embedding",), (EMBED,), ((v, m),))]
    for i in range(c.n_layers):
        p = f"layers.{i}."
        a = p + "self_attn."
        t = ("blocks", i)
        specs += [
            Spec((*t, "attn", "wq"), (a + "q_proj.weight",), ((h * d, m),), linear_to_heads(h, d)),
            Spec((*t, "attn", "wk"), (a + "k_proj.weight",), ((g * d, m),), linear_to_heads(g, d)),
            Spec((*t, "attn", "wv"), (a + "v_proj.weight",), ((g * d, m),), linear_to_heads(g, d)),
            Spec(
                (*t, "attn", "wo"), (a + "o_proj.weight",), ((m, h * d),), linear_to_out_heads(h, d)
            ),
            Spec((*t, "mlp", "w_gate"), (p + "mlp.gate_proj.weight",), ((f, m),), transpose),
            Spec((*t, "mlp", "w_up"), (p + "mlp.up_proj.weight",), ((f, m),), transpose),
            Spec((*t, "mlp", "w_down"), (p + "mlp.down_proj.weight",), ((m, f),), transpose),
        ]
        if c.qkv_bias:
            specs += [
                Spec((*t, "attn", "bq"), (a + "q_proj.bias",), ((h * d,),), bias_to_heads(h, d)),
                Spec((*t, "attn", "bk"), (a + "k_proj.bias",), ((g * d,),), bias_to_heads(g, d)),
                Spec((*t, "attn", "bv"), (a + "v_proj.bias",), ((g * d,),), bias_to_heads(g, d)),
            ]
        if c.out_bias:
            specs.append(Spec((*t, "attn", "bo"), (a + "o_proj.bias",), ((m,),)))
        if c.mlp_bias:
            specs += [
                Spec((*t, "mlp", "b_gate"), (p + "mlp.gate_proj.bias",), ((f,),)),
                Spec((*t, "mlp", "b_up"), (p + "mlp.up_proj.bias",), ((f,),)),
                Spec((*t, "mlp", "b_down"), (p + "mlp.down_proj.bias",), ((m,),)),
            ]
        if c.qk_norm:
            whole = c.qk_norm_over == "projection"  # OLMo-2: over all heads at once
            qn = ("q_norm", h * d if whole else d), ("k_norm", g * d if whole else d)
            for name, width in qn:
                specs += norm_specs((*t, "attn", name), a + name + ".weight", None, width, c)
        for name in block_norms(c):
            source = p + norms[name]
            specs += norm_specs((*t, name), source + ".weight", source + ".bias", m, c)
    specs += norm_specs(("final_norm",), "norm.weight", "norm.bias", m, c)
    return specs


def block_norms(config: TransformerConfig) -> tuple[str, ...]:
    """The norm attributes a decoder block of this config has (model.LAYOUTS decides)."""
    attn, mlp = LAYOUTS[config.norm_placement]
    return tuple(dict.fromkeys(attn.norms() + mlp.norms()))


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """Decoder parameters from a Llama checkpoint (names without the "model." prefix)."""
    del hf
    return layer_specs(config)


# ---- GGUF (llama.cpp) -------------------------------------------------------------------


def unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation for its interleaved-pair rotary layout.

    convert_hf_to_gguf.py stores W.reshape(h, 2, d/2, m).swapaxes(1, 2) so that each
    rotated pair is adjacent; the Hugging Face layout rotates halves.

    Args:
        w: [h*d, m] rows as stored in the GGUF file.
        n_heads: heads of this projection (key/value heads for k).
    Returns:
        [h*d, m] in the Hugging Face (rotate-half) row order.
    """
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's q/k permutation (the inverse of `unpermute_rotary`), for writing GGUF."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_hf_config(m: ArchMetadata, tensors: Mapping[str, np.ndarray], model_type: str) -> dict:
    """The Hugging Face config fields every Llama-style GGUF file (Llama, Qwen2, the Gemma
    family) holds under the same llama.cpp keys.

    Args:
        m: the file's metadata (each key read is marked as understood).
        tensors: the renamed tensors (for the vocabulary size and a tied head).
        model_type: the Hugging Face model_type of the result.
    Returns:
        A config dict with sizes, RMSNorm epsilon, rope_theta (and linear rope_scaling when
        the file has it) and tie_word_embeddings.
    Raises:
        ValueError: partial rotary, a value width other than the key width, or an
            unsupported rope scaling.
    """
    n_heads = m.integer("attention.head_count")
    d_model = m.integer("embedding_length")
    d_head = m.integer("attention.key_length", d_model // n_heads)
    m.require("attention.value_length", d_head, d_head)  # one d_head for k and v
    rope_dims = m.integer("rope.dimension_count", d_head)
    if rope_dims != d_head:
        raise ValueError(f"GGUF: partial rotary ({rope_dims} of {d_head} dims) is not supported")
    vocab = m.integer("vocab_size", tensors["model.embed_tokens.weight"].shape[0])
    hf = dict(
        model_type=model_type,
        vocab_size=vocab,
        hidden_size=d_model,
        num_hidden_layers=m.integer("block_count"),
        num_attention_heads=n_heads,
        num_key_value_heads=m.integer("attention.head_count_kv", n_heads),
        head_dim=d_head,
        intermediate_size=m.integer("feed_forward_length"),
        max_position_embeddings=m.integer("context_length", 2048),
        rms_norm_eps=float(m["attention.layer_norm_rms_epsilon"]),
        rope_theta=float(m.get("rope.freq_base", 10_000.0)),
        tie_word_embeddings=tied_head(tensors, "model.embed_tokens.weight"),
    )
    factor = rope_scaling(m)
    if factor != 1.0:
        hf["rope_scaling"] = {"rope_type": "linear", "factor": factor}
    return hf


def gguf_to_hf(meta: Mapping, tensors: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """A Hugging Face Llama config dict and tensors from a GGUF file's metadata and tensors.

    Args:
        meta: GGUF key/value metadata ("llama.block_count", ...).
        tensors: GGUF tensors already renamed to Hugging Face names and dequantised, q/k
            still in llama.cpp's permuted row order.
    Returns:
        (config dict, tensors with q/k rows un-permuted).
    Raises:
        ValueError: metadata the decoder cannot represent (names the key).
    """
    m = ArchMetadata(meta)
    hf = gguf_hf_config(m, tensors, "llama")
    hf["hidden_act"] = "silu"
    m.check_all_read()
    n_heads, n_kv = hf["num_attention_heads"], hf["num_key_value_heads"]
    out = dict(tensors)
    for name, w in tensors.items():
        if name.endswith("self_attn.q_proj.weight"):
            out[name] = unpermute_rotary(w, n_heads)
        elif name.endswith("self_attn.k_proj.weight"):
            out[name] = unpermute_rotary(w, n_kv)
    return hf, out
