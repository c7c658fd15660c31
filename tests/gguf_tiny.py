"""Tiny GGUF files written from tiny random Hugging Face models, as llama.cpp's
convert_hf_to_gguf.py writes them, for the GGUF cross-checks (tests/test_gguf.py).

Tensor names come from the `gguf` package's own HF -> ggml name map (the one llama.cpp's
converter and transformers' GGUF reader use), not from the loader's table, so a wrong entry
in the loader cannot round-trip unnoticed. The converter's per-architecture quirks are
reproduced: Llama's q/k row permutation, Gemma's norm weights stored as 1 + w, GPT-2's
Conv1D weights transposed and its head stored as a copy of the embedding. Tensors stay
float32 (the real Gemma 3 file covers quantised blocks).

The configs here are ones a llama.cpp file can express (e.g. Gemma's query scale is the
head width); the flag beside each config says whether transformers' GGUF reader also
reproduces the model (it supports no Gemma 1 file, and reads neither the Gemma 2 soft-cap
keys nor Gemma 3's rope scaling, final soft-cap, local RoPE base or layer pattern).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np
import torch
import transformers

from tests.hf_tiny import VOCAB, WINDOW, hf_configs, tiny_hf_model
from transformer.loading import llama

# Sizes llama.cpp's Gemma 2/3 need to agree with transformers' GGUF reader: that reader
# leaves query_pre_attn_scalar at its default 256, llama.cpp uses the head width.
_GEMMA_GGUF = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=256,
    query_pre_attn_scalar=256,
    max_position_embeddings=128,
    initializer_range=0.15,
    sliding_window=WINDOW,
)


def gguf_hf_configs() -> dict[str, tuple[transformers.PretrainedConfig, bool]]:
    """{variant: (HF config, whether transformers' GGUF reader reproduces the model)}."""
    tiny = hf_configs()
    return {
        "llama": (tiny["llama"], True),
        "qwen2": (  # llama.cpp's Qwen2 has no sliding window
            transformers.Qwen2Config(
                vocab_size=VOCAB,
                hidden_size=64,
                intermediate_size=96,
                num_attention_heads=4,
                num_key_value_heads=2,
                num_hidden_layers=2,
                max_position_embeddings=128,
                initializer_range=0.15,
                rope_parameters={"rope_type": "default", "rope_theta": 2000.0},
                tie_word_embeddings=False,
            ),
            True,
        ),
        # transformers' reader ignores feed_forward_length (n_inner = 4 n_embd) and maps
        # context_length to n_ctx, not n_positions (which must stay at its default 1024).
        "gpt2": (
            transformers.GPT2Config(
                vocab_size=VOCAB,
                n_positions=1024,
                n_embd=64,
                n_layer=2,
                n_head=4,
                activation_function="gelu_new",
                initializer_range=0.15,
            ),
            True,
        ),
        "gemma": (tiny["gemma"], False),
        "gemma2": (transformers.Gemma2Config(**_GEMMA_GGUF, num_hidden_layers=2), True),
        "gemma2_softcaps": (
            transformers.Gemma2Config(
                **_GEMMA_GGUF,
                num_hidden_layers=2,
                attn_logit_softcapping=3.0,
                final_logit_softcapping=4.0,
            ),
            False,
        ),
        "gemma3": (
            transformers.Gemma3TextConfig(
                **_GEMMA_GGUF,
                num_hidden_layers=6,  # the fixed pattern: 5 sliding, then 1 global
                rope_parameters={
                    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                    "full_attention": {"rope_type": "default", "rope_theta": 500.0},
                },
            ),
            True,
        ),
        "gemma3_linear_rope": (
            transformers.Gemma3TextConfig(
                **_GEMMA_GGUF,
                num_hidden_layers=6,
                rope_parameters={
                    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                    "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 500.0},
                },
                final_logit_softcapping=5.0,
            ),
            False,
        ),
        # The keys newer converters write: a local RoPE base and a per-layer pattern.
        "gemma3_pattern_keys": (
            transformers.Gemma3TextConfig(
                **_GEMMA_GGUF,
                num_hidden_layers=3,
                layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                rope_parameters={
                    "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                    "full_attention": {"rope_type": "default", "rope_theta": 500.0},
                },
            ),
            False,
        ),
    }


_GGUF_ARCH = {"gemma3_text": "gemma3"}


def tiny_model(variant: str, seed: int = 0) -> transformers.PreTrainedModel:
    """The variant's float32 HF model with randomised norms and biases (eval mode)."""
    return tiny_hf_model(variant, seed, config=gguf_hf_configs()[variant][0])


def gguf_metadata(config: transformers.PretrainedConfig) -> dict:
    """The `{arch}.*` metadata llama.cpp's converter writes for this config (keys without
    the architecture prefix)."""
    c = config
    if c.model_type == "gpt2":
        return {
            "block_count": c.n_layer,
            "context_length": c.n_positions,
            "embedding_length": c.n_embd,
            "feed_forward_length": c.n_inner or 4 * c.n_embd,
            "attention.head_count": c.n_head,
            "attention.layer_norm_epsilon": c.layer_norm_epsilon,
        }
    meta = {
        "block_count": c.num_hidden_layers,
        "context_length": c.max_position_embeddings,
        "embedding_length": c.hidden_size,
        "feed_forward_length": c.intermediate_size,
        "attention.head_count": c.num_attention_heads,
        "attention.head_count_kv": c.num_key_value_heads,
        "attention.layer_norm_rms_epsilon": c.rms_norm_eps,
        "vocab_size": c.vocab_size,
    }
    head_dim = getattr(c, "head_dim", None)
    if head_dim is not None:  # written only when the config has one (Qwen2's has none)
        meta["attention.key_length"] = meta["attention.value_length"] = head_dim
    rope = c.rope_parameters
    if c.model_type == "gemma3_text":
        # Newer converters write the local base (llama.cpp assumes 10,000 without it) and,
        # for a layer pattern other than 5 local : 1 global, one flag per layer.
        meta["rope.freq_base_swa"] = rope["sliding_attention"]["rope_theta"]
        rope = rope["full_attention"]
        meta["attention.sliding_window"] = c.sliding_window
        sliding = [kind == "sliding_attention" for kind in c.layer_types]
        if sliding != [(i + 1) % 6 != 0 for i in range(c.num_hidden_layers)]:
            meta["attention.sliding_window_pattern"] = sliding
        if c.final_logit_softcapping is not None:
            meta["final_logit_softcapping"] = c.final_logit_softcapping
    if c.model_type == "gemma2":
        meta["attention.sliding_window"] = c.sliding_window
        meta["attn_logit_softcapping"] = c.attn_logit_softcapping
        meta["final_logit_softcapping"] = c.final_logit_softcapping
    if c.model_type in ("llama", "qwen2", "gemma3_text"):  # Gemma 1/2 write no base
        meta["rope.freq_base"] = rope["rope_theta"]
    if c.model_type == "llama":
        meta["rope.dimension_count"] = head_dim
    if rope.get("rope_type") == "linear":
        meta["rope.scaling.type"] = "linear"
        meta["rope.scaling.factor"] = rope["factor"]
    return meta


def gguf_tensors(model: transformers.PreTrainedModel) -> dict[str, np.ndarray]:
    """{ggml name: float32 array} as llama.cpp's converter stores the model's weights."""
    c = model.config
    arch = _GGUF_ARCH.get(c.model_type, c.model_type)
    arch_enum = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[arch]
    n_layers = c.n_layer if c.model_type == "gpt2" else c.num_hidden_layers
    names = gguf.get_tensor_name_map(arch_enum, n_layers)
    out = {}
    for key, tensor in model.state_dict().items():
        w = tensor.detach().to(torch.float32).numpy()
        if key == "lm_head.weight" and c.tie_word_embeddings:
            continue  # llama.cpp drops the tied head (GPT-2's copy is added below)
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # GPT-2 mask buffers
        if c.model_type.startswith("gemma") and key.endswith("norm.weight"):
            w = w + np.float32(1.0)
        if c.model_type == "llama" and key.endswith(("q_proj.weight", "k_proj.weight")):
            heads = c.num_attention_heads if "q_proj" in key else c.num_key_value_heads
            w = llama.permute_rotary(w, heads)
        if c.model_type == "gpt2" and key.endswith(
            ("c_attn.weight", "c_proj.weight", "c_fc.weight")
        ):
            w = w.T  # Conv1D [in, out] -> [out, in]
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise KeyError(f"gguf's tensor map has no name for {key}")
        out[name] = np.ascontiguousarray(w)
    if c.model_type == "gpt2":
        out["output.weight"] = out["token_embd.weight"]
    return out


def write_gguf(
    path: Path,
    arch: str,
    metadata: Mapping,
    tensors: Mapping[str, np.ndarray],
    *,
    vocab_size: int = VOCAB,
) -> Path:
    """Write a GGUF file: `{arch}.` + each metadata key, a placeholder vocabulary of
    `vocab_size` tokens (tokenizer model "none": the loader returns no tokenizer), the
    tensors as float32."""
    writer = gguf.GGUFWriter(path, arch=arch)
    for key, value in metadata.items():
        full = f"{arch}.{key}"
        if isinstance(value, bool):
            writer.add_bool(full, value)
        elif isinstance(value, int):
            writer.add_uint32(full, value)
        elif isinstance(value, float):
            writer.add_float32(full, value)
        elif isinstance(value, str):
            writer.add_string(full, value)
        else:
            writer.add_array(full, list(value))
    writer.add_tokenizer_model("none")
    writer.add_token_list([f"<t{i}>" for i in range(vocab_size)])
    for name, array in tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_model_gguf(
    model: transformers.PreTrainedModel,
    path: Path,
    edits: Mapping | None = None,
    extra_tensors: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """The model as llama.cpp would write it; `edits` changes metadata keys (without the
    architecture prefix; a value None removes the key), `extra_tensors` adds tensors."""
    c = model.config
    meta = gguf_metadata(c)
    for key, value in (edits or {}).items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    tensors = {**gguf_tensors(model), **(extra_tensors or {})}
    return write_gguf(path, _GGUF_ARCH.get(c.model_type, c.model_type), meta, tensors)
