"""Read llama.cpp GGUF files: metadata and dequantised tensors in the Hugging Face layout.

Tensors are dequantised to float32 with `gguf.quants.dequantize` and renamed to the
Hugging Face layout, so the architecture converters (and their checks) serve both formats.
Architecture quirks of llama.cpp's converter (Llama's q/k row permutation, Gemma's norm
weights stored as 1 + w, GPT-2's transposed Conv1D weights) are undone by the architecture
module's `gguf_to_hf`, which reads the metadata through `ArchMetadata` so that a key no
converter understands is an error rather than silently ignored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

import numpy as np

# ggml names -> Hugging Face names, per architecture (llama.cpp's gguf-py tensor map).
_LLAMA_LAYER = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Gemma 2/3: HF's post_attention_layernorm is the norm *after* attention (ggml's
# post_attention_norm); ggml's ffn_norm is the norm before the MLP.
_GEMMA2_LAYER = {
    **_LLAMA_LAYER,
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_GEMMA3_LAYER = {
    **_GEMMA2_LAYER,
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}
_GPT2_LAYER = {
    "attn_norm": "ln_1",
    "attn_qkv": "attn.c_attn",
    "attn_output": "attn.c_proj",
    "ffn_norm": "ln_2",
    "ffn_up": "mlp.c_fc",
    "ffn_down": "mlp.c_proj",
}
_LLAMA_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_GPT2_GLOBAL = {
    "token_embd.weight": "transformer.wte.weight",
    "position_embd.weight": "transformer.wpe.weight",
    "output_norm.weight": "transformer.ln_f.weight",
    "output_norm.bias": "transformer.ln_f.bias",
    "output.weight": "lm_head.weight",
}
# architecture -> (global names, layer prefix, per-layer names)
_LAYOUTS = {
    "llama": (_LLAMA_GLOBAL, "model.layers.{}.", _LLAMA_LAYER),
    "qwen2": (_LLAMA_GLOBAL, "model.layers.{}.", _LLAMA_LAYER),
    "gemma": (_LLAMA_GLOBAL, "model.layers.{}.", _LLAMA_LAYER),
    "gemma2": (_LLAMA_GLOBAL, "model.layers.{}.", _GEMMA2_LAYER),
    "gemma3": (_LLAMA_GLOBAL, "model.layers.{}.", _GEMMA3_LAYER),
    "gpt2": (_GPT2_GLOBAL, "transformer.h.{}.", _GPT2_LAYER),
}
_BLOCK = re.compile(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_REQUIRED = object()


def read_gguf(path: str | os.PathLike, *, accept: Callable[[dict], None] | None = None):
    """Metadata and float32 tensors of a GGUF file.

    Args:
        path: the .gguf file.
        accept: called with the metadata before any tensor is dequantised; raises to refuse
            the file early (an unsupported architecture).
    Returns:
        (metadata {key: value}, {ggml tensor name: float32 array in NumPy (row-major) order,
        e.g. [out, in] for a projection}).
    Raises:
        ValueError: the file cannot be parsed, or holds a tensor type `gguf` cannot
            dequantise (names the tensor).
    """
    import gguf  # optional dependency: only GGUF loading needs it

    try:
        reader = gguf.GGUFReader(os.fspath(path))
    except Exception as err:  # the reader raises many kinds on corrupt input
        raise ValueError(f"{path}: not a readable GGUF file ({type(err).__name__}: {err})") from err
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        meta[key] = field.contents()
    if accept is not None:
        accept(meta)
    tensors = {}
    for t in reader.tensors:
        if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            array = np.asarray(t.data, dtype=np.float32)
        else:
            try:
                array = gguf.quants.dequantize(t.data, t.tensor_type)
            except NotImplementedError as err:
                raise ValueError(
                    f"{path}: tensor {t.name!r} has type {t.tensor_type.name}, which the gguf "
                    f"package cannot dequantise ({err})"
                ) from err
            array = array.astype(np.float32, copy=False)
        shape = tuple(int(s) for s in reversed(t.shape))  # ggml lists dims innermost first
        tensors[t.name] = array.reshape(shape)
    return meta, tensors


def rename_tensors(arch: str, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GGUF tensor names -> Hugging Face names (ValueError naming any unknown tensor)."""
    global_names, layer_prefix, names = _LAYOUTS[arch]
    out, unknown = {}, []
    for name, array in tensors.items():
        if name in global_names:
            out[global_names[name]] = array
            continue
        match = _BLOCK.match(name)
        if match and match.group(2) in names:
            layer, kind, suffix = match.groups()
            out[f"{layer_prefix.format(layer)}{names[kind]}.{suffix}"] = array
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"GGUF: unexpected tensors for architecture {arch!r}: {unknown[:8]}")
    return out


def supported_architectures() -> tuple[str, ...]:
    return tuple(_LAYOUTS)


class ArchMetadata:
    """The `{arch}.*` metadata of a GGUF file, read by the key without its prefix.

    Remembers every key read, so that `check_all_read` can refuse the keys that no converter
    reads: a setting the loader does not know (a sliding-window pattern, expert counts, an
    attention scale...) is an error naming it, never silently dropped.
    """

    def __init__(self, meta: Mapping):
        self.arch = meta["general.architecture"]
        self._meta = meta
        self._read: set[str] = set()

    def _key(self, key: str) -> str:
        full = f"{self.arch}.{key}"
        self._read.add(full)
        return full

    def __contains__(self, key: str) -> bool:
        return f"{self.arch}.{key}" in self._meta

    def __getitem__(self, key: str):
        full = self._key(key)
        if full not in self._meta:
            raise ValueError(f"GGUF: required metadata key {full!r} is missing")
        return self._meta[full]

    def get(self, key: str, default=None):
        return self._meta.get(self._key(key), default)

    def integer(self, key: str, default=_REQUIRED) -> int:
        """An integer setting (ValueError naming it when it is per-layer or not an integer)."""
        value = self[key] if default is _REQUIRED else self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(
                f"GGUF: {self.arch}.{key}={value!r} is not a single integer (per-layer values "
                "are not supported)"
            )
        return int(value)

    def require(self, key: str, expected, default) -> None:
        """ValueError when a key is set to anything but the one value the decoder supports."""
        value = self.get(key, default)
        if value != expected:
            raise ValueError(
                f"GGUF: unsupported {self.arch}.{key}={value!r} (only {expected!r} is supported)"
            )

    def check_all_read(self) -> None:
        """ValueError naming every `{arch}.*` key that the converter did not read."""
        prefix = self.arch + "."
        unread = sorted(k for k in self._meta if k.startswith(prefix) and k not in self._read)
        if unread:
            shown = ", ".join(f"{k}={self._meta[k]!r}" for k in unread)
            raise ValueError(
                f"GGUF: metadata the loader cannot represent for architecture {self.arch!r}: "
                f"{shown}"
            )


def rope_scaling(m: ArchMetadata) -> float:
    """The linear RoPE scaling factor of `{arch}.rope.scaling.*` (1.0: none).

    Raises:
        ValueError: any other scaling type (yarn, longrope, ...), naming it.
    """
    kind = m.get("rope.scaling.type", "none")
    factor = float(m.get("rope.scaling.factor", 1.0))
    if kind == "linear":
        return factor
    if kind == "none" and factor == 1.0:
        return 1.0
    raise ValueError(
        f"GGUF: unsupported rope scaling {kind!r} (factor {factor}); only 'none' and 'linear' "
        "are implemented"
    )


def tied_head(tensors: Mapping[str, np.ndarray], embed: str, head: str = "lm_head.weight"):
    """Whether the head is the embedding: absent, or stored as an exact copy (GPT-2 files)."""
    return head not in tensors or (
        tensors[head].shape == tensors[embed].shape
        and np.array_equal(tensors[head], tensors[embed])
    )
