"""Read llama.cpp GGUF files: metadata, dequantised tensors, and the tokenizer.

Tensors are dequantised to float32 with `gguf.quants.dequantize` and renamed to the
Hugging Face layout, so the architecture converters (and their checks) serve both formats.
Architecture quirks of llama.cpp's converter (Llama q/k row permutation, ...) are undone by
the architecture module's `gguf_to_hf`.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping

import numpy as np

# ggml names -> Hugging Face names, per architecture (llama.cpp's gguf-py tensor map).
_LAYER_NAMES = {
    "llama": {
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    },
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK = re.compile(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")


def read_gguf(path: str | os.PathLike):
    """Metadata and float32 tensors of a GGUF file.

    Args:
        path: the .gguf file.
    Returns:
        (metadata {key: value}, {ggml tensor name: float32 array in NumPy (row-major) order,
        e.g. [out, in] for a projection}).
    Raises:
        ValueError: the file cannot be parsed.
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
    tensors = {}
    for t in reader.tensors:
        if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            array = np.asarray(t.data, dtype=np.float32)
        else:
            array = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        shape = tuple(int(s) for s in reversed(t.shape))  # ggml lists dims innermost first
        tensors[t.name] = array.reshape(shape)
    return meta, tensors


def rename_tensors(arch: str, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GGUF tensor names -> Hugging Face names (ValueError naming any unknown tensor)."""
    names = _LAYER_NAMES[arch]
    out, unknown = {}, []
    for name, array in tensors.items():
        if name in _GLOBAL_NAMES:
            out[_GLOBAL_NAMES[name]] = array
            continue
        match = _BLOCK.match(name)
        if match and match.group(2) in names:
            layer, kind, suffix = match.groups()
            out[f"model.layers.{layer}.{names[kind]}.{suffix}"] = array
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"GGUF: unexpected tensors for architecture {arch!r}: {unknown[:8]}")
    return out


def supported_architectures() -> tuple[str, ...]:
    return tuple(_LAYER_NAMES)


# ---- tokenizer ------------------------------------------------------------------------------

# llama.cpp pre-tokenizers that are the GPT-2 byte-level regex, optionally preceded by a
# split of every digit (llama-vocab.cpp groups "smollm" with starcoder/refact: "\p{N}" first).
_PRE_GPT2 = ("gpt2", "default")
_PRE_DIGITS_THEN_GPT2 = ("smollm", "starcoder", "refact")
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types


def gguf_tokenizer(meta: Mapping):
    """A `tokenizers.Tokenizer` from GGUF tokenizer metadata, or None.

    Supports the GPT-2-style byte-level BPE ("tokenizer.ggml.model" = "gpt2", SmolLM2's)
    with the pre-tokenizers listed above. Other kinds (SentencePiece "llama", ...) return
    None with a warning: the model still loads, the caller tokenises some other way.

    Args:
        meta: GGUF metadata.
    Returns:
        The tokenizer (control tokens such as <|im_start|> are special tokens), or None.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    kind = meta.get("tokenizer.ggml.model")
    pre = meta.get("tokenizer.ggml.pre", "default")
    if kind != "gpt2" or pre not in _PRE_GPT2 + _PRE_DIGITS_THEN_GPT2:
        warnings.warn(
            f"GGUF tokenizer model={kind!r} pre={pre!r} is not supported (only byte-level BPE "
            f"'gpt2' with pre-tokenizers {_PRE_GPT2 + _PRE_DIGITS_THEN_GPT2}); returning None",
            stacklevel=3,
        )
        return None
    tokens = list(meta["tokenizer.ggml.tokens"])
    vocab = {tok: i for i, tok in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _PRE_DIGITS_THEN_GPT2:
        digits = pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence([digits, byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    types = list(meta.get("tokenizer.ggml.token_type", []))
    special = [
        AddedToken(tokens[i], special=(t == _CONTROL), normalized=False)
        for i, t in enumerate(types)
        if t in (_CONTROL, _USER_DEFINED)
    ]
    if special:
        tok.add_tokens(special)
    if meta.get("tokenizer.ggml.add_bos_token", False):
        from tokenizers import processors

        bos = tokens[int(meta["tokenizer.ggml.bos_token_id"])]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, int(meta["tokenizer.ggml.bos_token_id"]))],
        )
    return tok
