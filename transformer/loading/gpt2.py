"""GPT-2: learned positions, LayerNorm with bias, tanh GELU, biases everywhere, tied head.

GPT-2's `Conv1D` stores weights as [in, out] (the transpose of torch.nn.Linear), and
c_attn fuses q, k and v along its output axis.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from transformer.config import TransformerConfig
from transformer.loading.gguf_io import ArchMetadata, tied_head
from transformer.loading.mapping import Spec, activation, check_unsupported, norm_specs

MODEL_TYPES = ("gpt2",)
GGUF_ARCHITECTURES = ("gpt2",)
PREFIXES = ("transformer.", "")
EMBED = "wte.weight"


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face GPT2Config dict.

    Raises:
        ValueError: scale_attn_by_inverse_layer_idx, cross-attention, or an unsupported
            activation.
    """
    where = "gpt2 config"
    check_unsupported(hf, where, scale_attn_by_inverse_layer_idx=False, add_cross_attention=False)
    m, h = int(hf["n_embd"]), int(hf["n_head"])
    return TransformerConfig(
        vocab_size=int(hf["vocab_size"]),
        d_model=m,
        n_layers=int(hf["n_layer"]),
        n_heads=h,
        d_mlp=int(hf.get("n_inner") or 4 * m),
        max_len=int(hf.get("n_positions", 1024)),
        pos_encoding="learned",
        norm="layernorm",
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        norm_bias=True,
        activation=activation(hf.get("activation_function", "gelu_new"), where),
        gated=False,
        mlp_bias=True,
        qkv_bias=True,
        out_bias=True,
        # scale_attn_weights=False: raw q.k scores.
        query_scale=None if hf.get("scale_attn_weights", True) else 1.0,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        **precision,
    )


def _qkv(part: int, h: int, d: int):
    """Slice q (0), k (1) or v (2) out of the fused c_attn weight [m, 3m] -> [m, h, d]."""
    return lambda w: w[:, part * h * d : (part + 1) * h * d].reshape(w.shape[0], h, d)


def _qkv_bias(part: int, h: int, d: int):
    return lambda b: b[part * h * d : (part + 1) * h * d].reshape(h, d)


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """Decoder parameters from a GPT-2 checkpoint (names without "transformer.")."""
    del hf
    c = config
    m, h, d, f, v = c.d_model, c.n_heads, c.d_head, c.d_mlp, c.vocab_size
    specs = [
        Spec(("embedding",), (EMBED,), ((v, m),)),
        Spec(("pos_embedding",), ("wpe.weight",), ((c.max_len, m),)),
    ]
    for i in range(c.n_layers):
        p, t = f"h.{i}.", ("blocks", i)
        w, b = p + "attn.c_attn.weight", p + "attn.c_attn.bias"
        for part, (wn, bn) in enumerate((("wq", "bq"), ("wk", "bk"), ("wv", "bv"))):
            specs.append(Spec((*t, "attn", wn), (w,), ((m, 3 * h * d),), _qkv(part, h, d)))
            specs.append(Spec((*t, "attn", bn), (b,), ((3 * h * d,),), _qkv_bias(part, h, d)))
        specs += [
            Spec(
                (*t, "attn", "wo"),
                (p + "attn.c_proj.weight",),
                ((h * d, m),),
                lambda w, h=h, d=d: w.reshape(h, d, w.shape[1]),
            ),
            Spec((*t, "attn", "bo"), (p + "attn.c_proj.bias",), ((m,),)),
            Spec((*t, "mlp", "w_up"), (p + "mlp.c_fc.weight",), ((m, f),)),
            Spec((*t, "mlp", "b_up"), (p + "mlp.c_fc.bias",), ((f,),)),
            Spec((*t, "mlp", "w_down"), (p + "mlp.c_proj.weight",), ((f, m),)),
            Spec((*t, "mlp", "b_down"), (p + "mlp.c_proj.bias",), ((m,),)),
        ]
        specs += norm_specs((*t, "attn_norm"), p + "ln_1.weight", p + "ln_1.bias", m, c)
        specs += norm_specs((*t, "mlp_norm"), p + "ln_2.weight", p + "ln_2.bias", m, c)
    specs += norm_specs(("final_norm",), "ln_f.weight", "ln_f.bias", m, c)
    return specs


def is_buffer(name: str) -> bool:
    """Non-parameter buffers older GPT-2 checkpoints store (causal mask tables)."""
    return name.endswith((".attn.bias", ".attn.masked_bias"))


# ---- GGUF (llama.cpp) -------------------------------------------------------------------

# llama.cpp's converter stores these Conv1D weights transposed, as [out, in].
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gguf_to_hf(meta: Mapping, tensors: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """A Hugging Face GPT2Config dict and tensors from GGUF metadata and renamed tensors.

    The file stores the (tied) head as a copy of the embedding; a copy is recognised as
    tied.

    Raises:
        ValueError: metadata the decoder cannot represent (names the key).
    """
    m = ArchMetadata(meta)
    n_heads = m.integer("attention.head_count")
    m.require("attention.head_count_kv", n_heads, n_heads)
    embed = "transformer.wte.weight"
    hf = dict(
        model_type="gpt2",
        vocab_size=m.integer("vocab_size", tensors[embed].shape[0]),
        n_embd=m.integer("embedding_length"),
        n_layer=m.integer("block_count"),
        n_head=n_heads,
        n_inner=m.integer("feed_forward_length"),
        n_positions=m.integer("context_length"),
        layer_norm_epsilon=float(m["attention.layer_norm_epsilon"]),
        activation_function="gelu_new",  # ggml_gelu: the tanh approximation
        tie_word_embeddings=tied_head(tensors, embed),
    )
    m.check_all_read()
    out = {name: w.T if name.endswith(_CONV1D) else w for name, w in tensors.items()}
    return hf, out
