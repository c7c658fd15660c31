"""Tokenizers built from a GGUF file's own vocabulary (its `tokenizer.ggml.*` metadata).

Two kinds are supported, as llama.cpp names them in "tokenizer.ggml.model":
- "gpt2": byte-level BPE with the file's merge list (SmolLM2, GPT-2), under the GPT-2
  pre-tokenizer regex, optionally preceded by a split of every digit.
- "llama" for the Gemma family: SentencePiece BPE with byte fallback and no prefix space.
  The file lists no merges; they are rebuilt from the vocabulary in the order its tokens are
  stored (the file's scores are no merge order for Gemma: its user-defined tokens, the runs
  of spaces among them, all score -1000 although SentencePiece matches them first).
Other kinds return None with a warning: the model still loads, the caller tokenises some
other way. The BOS/EOS handling comes from the file's add_bos_token / add_eos_token.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

# llama.cpp pre-tokenizers that are the GPT-2 byte-level regex, optionally preceded by a
# split of every digit (llama-vocab.cpp groups "smollm" with starcoder/refact: "\p{N}" first).
_PRE_GPT2 = ("gpt2", "gpt-2", "default")
_PRE_DIGITS_THEN_GPT2 = ("smollm", "starcoder", "refact")
_SENTENCEPIECE_ARCHITECTURES = ("gemma", "gemma2", "gemma3")
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types
_SPACE = "\u2581"  # SentencePiece's visible space


def gguf_tokenizer(meta: Mapping):
    """A `tokenizers.Tokenizer` from GGUF tokenizer metadata, or None (with a warning).

    Args:
        meta: GGUF metadata.
    Returns:
        The tokenizer (control tokens such as <|im_start|> or <start_of_turn> are special
        tokens; BOS/EOS are added as the file's add_bos_token / add_eos_token say), or None
        for an unsupported kind.
    """
    kind = meta.get("tokenizer.ggml.model")
    pre = meta.get("tokenizer.ggml.pre", "default")
    arch = meta.get("general.architecture")
    if kind == "gpt2" and pre in _PRE_GPT2 + _PRE_DIGITS_THEN_GPT2:
        tok, tokens, added = _byte_level_bpe(meta, pre)
    elif (
        kind == "llama"
        and arch in _SENTENCEPIECE_ARCHITECTURES
        and not meta.get("tokenizer.ggml.add_space_prefix", True)
    ):
        tok, tokens, added = _sentencepiece_bpe(meta)
    else:
        warnings.warn(
            f"GGUF tokenizer model={kind!r} pre={pre!r} (architecture {arch!r}) is not "
            f"supported (only byte-level BPE 'gpt2' with pre-tokenizers "
            f"{_PRE_GPT2 + _PRE_DIGITS_THEN_GPT2}, and SentencePiece 'llama' without prefix "
            f"space for {_SENTENCEPIECE_ARCHITECTURES}); returning None",
            stacklevel=3,
        )
        return None
    _add_file_tokens(tok, tokens, meta, added)
    # llama.cpp adds BOS to a SentencePiece vocabulary whose file does not say otherwise.
    _add_bos_eos(tok, tokens, meta, default_bos=kind == "llama")
    return tok


def _byte_level_bpe(meta: Mapping, pre: str):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

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
    return tok, tokens, set(range(len(tokens)))


def _sentencepiece_bpe(meta: Mapping):
    """Gemma's SentencePiece BPE: spaces become U+2581, no pre-tokenisation, bytes fall back
    to <0xNN> tokens.

    Returns:
        (tokenizer, tokens as spelled in the model's vocabulary, ids that may become added
        tokens).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers

    stored = list(meta["tokenizer.ggml.tokens"])
    # Runs of spaces are stored with real spaces ("  "), which the space -> U+2581 normaliser
    # never lets BPE see; spelled with U+2581 they are ordinary pieces, merged first.
    tokens = [_SPACE * len(t) if t and not t.strip(" ") else t for t in stored]
    respelled = {i for i, (a, b) in enumerate(zip(stored, tokens, strict=True)) if a != b}
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("GGUF tokenizer: the vocabulary spells some token twice")
    merges = []
    for token in tokens:  # storage order is merge priority; longer left piece first
        for cut in range(len(token) - 1, 0, -1):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                merges.append((left, right))
    unk = meta.get("tokenizer.ggml.unknown_token_id")
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            unk_token=None if unk is None else tokens[int(unk)],
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    tok.normalizer = normalizers.Replace(" ", _SPACE)
    tok.decoder = decoders.Sequence(
        [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    return tok, tokens, set(range(len(tokens))) - respelled


def _add_file_tokens(tok, tokens: list[str], meta: Mapping, allowed: set[int]) -> None:
    """Control tokens as special tokens, user-defined ones (<think>, "\\n") as added tokens:
    llama.cpp matches both whole in the raw text, before any normalisation."""
    from tokenizers import AddedToken

    types = list(meta.get("tokenizer.ggml.token_type", []))
    added = [
        AddedToken(tokens[i], special=(t == _CONTROL), normalized=False)
        for i, t in enumerate(types)
        if t in (_CONTROL, _USER_DEFINED) and i in allowed
    ]
    if added:
        tok.add_tokens(added)


def _add_bos_eos(tok, tokens: list[str], meta: Mapping, *, default_bos: bool) -> None:
    from tokenizers import processors

    ends = []
    for which, default in (("bos", default_bos), ("eos", False)):
        if meta.get(f"tokenizer.ggml.add_{which}_token", default):
            index = meta.get(f"tokenizer.ggml.{which}_token_id")
            if index is None:
                raise ValueError(
                    f"GGUF tokenizer: add_{which}_token is set but {which}_token_id is missing"
                )
            ends.append((tokens[int(index)], int(index)))
        else:
            ends.append(None)
    bos, eos = ends
    if bos is None and eos is None:
        return

    def wrap(seq: str) -> str:
        return " ".join(p for p in (bos and bos[0], seq, eos and eos[0]) if p)

    tok.post_processor = processors.TemplateProcessing(
        single=wrap("$A"),
        pair=f"{wrap('$A')} {wrap('$B:1')}",
        special_tokens=sorted({e for e in ends if e is not None}, key=lambda e: e[1]),
    )
