"""Tiny random Hugging Face models, built offline from config objects, for cross-checks.

Every norm weight and bias is randomised (transformers initialises them to ones/zeros,
which would hide a missing +1 offset or a swapped norm), and the weights are drawn wider
than the default so soft-caps and windows change the logits visibly.
"""

from __future__ import annotations

import torch
import transformers

VOCAB = 160
# Windows shorter than the test sequences, so sliding layers matter.
WINDOW = 5

_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=128,
    initializer_range=0.15,
)


def hf_configs() -> dict[str, transformers.PretrainedConfig]:
    """One small config per architecture variant under test."""
    c = _COMMON
    return {
        "gpt2": transformers.GPT2Config(
            vocab_size=VOCAB,
            n_positions=64,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_inner=96,
            activation_function="gelu_new",
            initializer_range=0.15,
        ),
        "llama": transformers.LlamaConfig(
            **c,
            num_hidden_layers=2,
            tie_word_embeddings=False,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        ),
        # Tied, biases everywhere, linear RoPE scaling (the rope_linear_factor switch).
        "llama_bias_linear_rope": transformers.LlamaConfig(
            **c,
            num_hidden_layers=2,
            tie_word_embeddings=True,
            attention_bias=True,
            mlp_bias=True,
            rope_parameters={"rope_type": "linear", "factor": 3.0, "rope_theta": 1000.0},
        ),
        "qwen2": transformers.Qwen2Config(
            **c,
            num_hidden_layers=3,
            tie_word_embeddings=False,
            use_sliding_window=True,
            sliding_window=WINDOW,
            max_window_layers=1,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        "gemma": transformers.GemmaConfig(
            **{**c, "num_key_value_heads": 1, "head_dim": 32},
            num_hidden_layers=2,
            hidden_act="gelu_pytorch_tanh",
        ),
        "gemma2": transformers.Gemma2Config(
            **c,
            num_hidden_layers=2,
            sliding_window=WINDOW,
            query_pre_attn_scalar=24,
            attn_logit_softcapping=3.0,
            final_logit_softcapping=4.0,
        ),
        "gemma3": transformers.Gemma3TextConfig(
            **c,
            num_hidden_layers=3,
            sliding_window=WINDOW,
            query_pre_attn_scalar=24,
            layer_types=[
                "sliding_attention",
                "full_attention",
                "sliding_attention",
            ],
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 5000.0},
            },
            final_logit_softcapping=5.0,
        ),
    }


def tiny_hf_model(
    name: str, seed: int = 0, config: transformers.PretrainedConfig | None = None
) -> transformers.PreTrainedModel:
    """A float32 causal LM of the named variant (or of `config`) with randomised norms and
    biases (eval mode)."""
    config = config if config is not None else hf_configs()[name]
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(
        config, attn_implementation="eager", dtype=torch.float32
    )
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.ndim == 1:  # norm scales and biases
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model.eval()
