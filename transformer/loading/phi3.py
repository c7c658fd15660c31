"""Phi-3: the Llama layout with fused projections in the checkpoint (self_attn.qkv_proj:
q, k, v stacked along the output rows; mlp.gate_up_proj: gate then up), split at load,
and an optional sliding window on every layer. LongRoPE (Phi-3 128k) is refused by name."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from transformer.config import TransformerConfig
from transformer.loading import llama
from transformer.loading.mapping import Spec, activation, linear_to_heads

MODEL_TYPES = ("phi3",)
GGUF_ARCHITECTURES = ()  # GGUF not read yet (transformers' reader reads it: issue 22, open)
PREFIXES = llama.PREFIXES
EMBED = llama.EMBED


def to_config(hf: Mapping, **precision) -> TransformerConfig:
    """TransformerConfig of a Hugging Face Phi3Config dict."""
    where = "phi3 config"
    window = hf.get("sliding_window")
    read = dict(
        activation=activation(hf.get("hidden_act", "silu"), where),
        window=int(window) if window else None,
        qkv_bias=False,
        out_bias=False,
    )
    return llama.llama_style_config(hf, fixed={}, read=read, tie_default=False, **precision)


def _rows(start: int, stop: int, convert):
    """Rows [start, stop) of a fused [out, in] weight, then `convert`."""
    return lambda w: convert(w[start:stop])


def weight_specs(config: TransformerConfig, hf: Mapping) -> list[Spec]:
    """The Llama specs with q/k/v taken from slices of qkv_proj and gate/up from slices of
    gate_up_proj (without the "model." prefix)."""
    del hf
    c = config
    m, h, g, d, f = c.d_model, c.n_heads, c.n_kv_heads, c.d_head, c.d_mlp
    fused = {  # rows of qkv_proj: q [0, h d), k [h d, (h + g) d), v [(h + g) d, (h + 2g) d)
        "wq": (0, h * d, h), "wk": (h * d, (h + g) * d, g), "wv": ((h + g) * d, (h + 2 * g) * d, g),
    }
    specs = []
    for spec in llama.layer_specs(c):
        target, i = spec.target, spec.target[1] if len(spec.target) > 1 else None
        if target[-1] in fused and target[-2] == "attn":
            start, stop, heads = fused[target[-1]]
            source = f"layers.{i}.self_attn.qkv_proj.weight"
            specs.append(Spec(target, (source,), (((h + 2 * g) * d, m),),
                              _rows(start, stop, linear_to_heads(heads, d))))
        elif target[-1] in ("w_gate", "w_up"):
            start = 0 if target[-1] == "w_gate" else f
            source = f"layers.{i}.mlp.gate_up_proj.weight"
            specs.append(Spec(target, (source,), ((2 * f, m),),
                              _rows(start, start + f, np.transpose)))
        else:
            specs.append(spec)
    return specs

