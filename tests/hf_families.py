"""Tiny configs of the families issue 22 added (Llama 3 rope scaling, Mistral, Qwen3, Phi-3,
Phi, OLMo-2, GPT-NeoX, StableLM, Granite, SmolLM3), 2 layers each, built offline; the
models come from `tests.hf_tiny.tiny_hf_model` (norm scales and biases randomised).

Each entry also names the switch the loader must set, as {field: value that turns it off},
and `copy` where turning it off needs a parameter the model lacks (the same weights moved
to the norm the other placement reads)."""

from __future__ import annotations

import transformers as T

from tests.hf_tiny import VOCAB, WINDOW

_C = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.15,
    num_hidden_layers=2, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)
_MHA = {k: v for k, v in _C.items() if k != "num_key_value_heads"}
_LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
           "high_freq_factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 500.0}


def family_configs() -> dict[str, T.PretrainedConfig]:
    return {
        "llama3": T.LlamaConfig(**_C, head_dim=16, rope_parameters=_LLAMA3),
        "mistral": T.MistralConfig(**_C, head_dim=16, sliding_window=WINDOW),
        "qwen3": T.Qwen3Config(**_C, head_dim=16, use_sliding_window=True,
                               sliding_window=WINDOW, max_window_layers=1),
        "phi3": T.Phi3Config(**_C, sliding_window=WINDOW),
        "phi": T.PhiConfig(**_MHA),
        "olmo2": T.Olmo2Config(**_C),
        "gpt_neox": T.GPTNeoXConfig(**_MHA),
        "stablelm": T.StableLmConfig(**_C, use_qkv_bias=True),
        "stablelm_parallel": T.StableLmConfig(**_C, use_parallel_residual=True),
        "granite": T.GraniteConfig(**_C, embedding_multiplier=3.0, residual_multiplier=0.4,
                                   attention_multiplier=0.3, logits_scaling=2.5),
        "smollm3": T.SmolLM3Config(**_C, no_rope_layers=[1, 0]),
    }


# {variant: [(switches that turn the family's new behaviour off, params to copy)]}
SWITCHES_OFF = {
    "llama3": [(dict(rope_llama3=None), {})],
    "mistral": [(dict(window=None), {})],
    "qwen3": [(dict(qk_norm=False), {}), (dict(window=None), {})],
    "phi3": [(dict(window=None), {})],
    "phi": [(dict(parallel_residual=False, norm_placement="pre"), {"mlp_norm": "attn_norm"}),
            (dict(rope_fraction=1.0), {})],
    "olmo2": [(dict(norm_placement="pre"), {"attn_norm": "attn_post_norm",
                                            "mlp_norm": "mlp_post_norm"}),
              (dict(qk_norm=False), {})],
    "gpt_neox": [(dict(parallel_residual=False), {}), (dict(rope_fraction=1.0), {})],
    "stablelm": [(dict(rope_fraction=1.0), {})],
    "stablelm_parallel": [(dict(parallel_residual=False, norm_placement="pre"),
                           {"mlp_norm": "attn_norm"})],
    "granite": [(dict(residual_scale=1.0), {}), (dict(logit_scale=1.0), {}),
                (dict(embedding_scale=None), {}), (dict(query_scale=None), {})],
    "smollm3": [(dict(no_rope_layers=()), {})],
}

# One model per new switch for the Jacobian against torch.func.jacrev.
# (Mistral's window and Phi-3's fused projections change no analysis path: the window is
# the switch Gemma 2 / 3 and Qwen2 already test, the split happens at load.)
JACOBIAN_VARIANTS = ("llama3", "olmo2", "gpt_neox", "granite", "smollm3")


def old_style(config: dict) -> dict:
    """A transformers>=5 config dict rewritten as transformers 4.x writes it: rope_theta,
    rope_scaling and partial_rotary_factor at the top level (GPT-NeoX: rotary_emb_base and
    rotary_pct)."""
    old = dict(config)
    rope = dict(old.pop("rope_parameters"))
    theta = rope.pop("rope_theta")
    partial = rope.pop("partial_rotary_factor", None)
    if old["model_type"] == "gpt_neox":
        old["rotary_emb_base"], old["rotary_pct"] = theta, partial
    else:
        old["rope_theta"] = theta
        if partial is not None:
            old["partial_rotary_factor"] = partial
    old["rope_scaling"] = None if rope.get("rope_type") == "default" else rope
    return old
