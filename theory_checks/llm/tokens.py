"""Tokenisation in the `llm` profile: the fallback for checkpoints without a tokenizer, and
the facts the checks report about how a tokenizer splits the paper's sequences.

Tokenisation matters for R4-R6 (docs/results.md, R6: "tokenisation can hide the effect"):
the collapse pairs are built from token ids directly (`theory_checks.llm.pairs`: a run is
the id of "1" repeated), so s_n and s*_n differ by exactly one repeated token whatever the
tokenizer would have made of the text; `tokenization_facts` reports how the tokenizer itself
splits runs of digits.

A checkpoint without a tokenizer (a tiny test model, a directory without tokenizer.json)
gets a documented fallback, `ByteTokenizer`: UTF-8 bytes taken modulo the vocabulary size.
Its prompts are not text the model knows, but the collapse and sensitivity measurements
(R4, R6, R11, R12), which are statements about token-id sequences, stay well defined. The
task-accuracy check (R5) needs the model's own tokenizer and raises a ValueError without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class ByteTokenizer:
    """Fallback for checkpoints without a tokenizer: id = UTF-8 byte mod vocab_size.

    Not the model's tokenizer (see the module docstring): every character of an ASCII
    prompt is one token, so a run of digits is one token per digit by construction.
    """

    def __init__(self, vocab_size: int):
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        self.vocab_size = int(vocab_size)

    def encode(self, text: str) -> list[int]:
        return [b % self.vocab_size for b in text.encode("utf-8")]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) % 256 for i in ids).decode("utf-8", errors="replace")


class Tokenized(Protocol):
    """What the facts below need of a loaded checkpoint (`theory_checks.llm.models.LLM`)."""

    def encode(self, text: str, *, special: bool = True) -> list[int]: ...

    def tokens(self, text: str) -> list[str]: ...

    def single_id(self, text: str) -> int: ...


# Texts whose tokenisation the llm checks report (R6's tokenisation caveat, R12a's commas).
PROBE_TEXTS = ("1111", "1 1 1 1", "1,1,1,1", "111,111,111", "0123456789")


def tokenization_facts(llm: Tokenized, texts: Sequence[str] = PROBE_TEXTS) -> dict[str, list[str]]:
    """How the tokenizer splits each text: {text: [token strings]}."""
    return {text: llm.tokens(text) for text in texts}


def one_token_per_digit(llm: Tokenized, digit: str = "1", n: int = 12) -> bool:
    """Whether the text of n copies of `digit` tokenises as n copies of its single id."""
    return llm.encode(digit * n, special=False) == [llm.single_id(digit)] * n


def matches_text(llm: Tokenized, prefix: str, ids_after: Sequence[int], text_after: str) -> bool:
    """Whether encode(prefix) + ids_after is what the tokenizer makes of prefix + text_after
    (the token-level pair is then exactly the model's view of the text)."""
    return llm.encode(prefix) + list(ids_after) == llm.encode(prefix + text_after)


