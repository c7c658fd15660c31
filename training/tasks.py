"""Synthetic copying and counting tasks of the paper (docs/results.md, "task probes"; R12).

Every generator is pure: a batch is a deterministic function of (task, seed or numpy
Generator, sizes), built with vectorised numpy over the batch, so the training stream of
`training.train` is a function of (seed, step) alone and a resumed run sees the same
data as an uninterrupted one.

Token layout (`VOCAB_SIZE` = 528 ids):

    id      token      use
    0       PAD        right padding after the answer (never a target, never attended to by
                       the answer query because the model is causal)
    1       BOS        first token of every prompt
    2       ','        separator (R12a), inserted after every k-th element
    3       '+'        joiner between the terms of `sum_ones`
    4       '='        query token of `sum_ones`
    5       '?'        query token of every other task
    6..15   '0'..'9'   digits (DIGIT_0 + d); copy answers are digit tokens
    16..527 '#0'..'#511'  count answers (COUNT_0 + c), c <= MAX_COUNT

An example is  BOS e_1 [,] [+] e_2 ... e_n  QUERY  ANSWER  PAD ... : n "elements" (digits)
with, after element i < n, a separator when i % k == 0 (`sep_every` = k) and then the
joiner '+' (sum_ones only). Its *length* is n, the number of elements (separators, joiners
and framing do not count), which is what accuracy-per-length curves are plotted against.

Tasks (n = length; the filler is 1 1 1 ... for pattern "constant" and 1 0 1 0 ... for
"alternating", R12c):
    copy_last:        filler of n - 1 elements, then a special digit s; answer s.
                      ("1...10", answer 0, in the paper.)
    copy_first:       a special digit s, then n - 1 filler elements; answer s. ("01...1")
    count_ones:       n filler elements; answer #(number of ones) (= n when constant).
    count_bernoulli:  n i.i.d. digits, 1 with probability p_one (0.7), else 0; answer
                      #(number of ones). Pattern must be "constant" (it has no filler).
    sum_ones:         "1+1+...+1=" (filler joined by '+', query '='); answer #(sum).
The special digit s of the copy tasks is drawn uniformly from the digits that the filler
does not use ({0, 2, ..., 9} for constant, {2, ..., 9} for alternating), so the answer
varies and the model cannot succeed by always answering 0.

Padding: right padding to a fixed width (`Batch.tokens` [b, W]), so compiled shapes never
change; the answer is predicted from the logits at `Batch.query_pos` (the last prompt
token), which under the causal mask sees exactly the real prompt. Training therefore needs
`causal=True` (`training.train` checks it).
"""

from __future__ import annotations

import dataclasses

import numpy as np

PAD, BOS, SEP, PLUS, EQUALS, QUERY = 0, 1, 2, 3, 4, 5
DIGIT_0 = 6
COUNT_0 = 16
MAX_COUNT = 511
VOCAB_SIZE = COUNT_0 + MAX_COUNT + 1

TASKS = ("copy_last", "copy_first", "count_ones", "count_bernoulli", "sum_ones")
PATTERNS = ("constant", "alternating")
_COPY_TASKS = ("copy_last", "copy_first")
_FILLER = {"constant": (1,), "alternating": (1, 0)}


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What to generate: a task, the range of lengths and the R12 variations.

    Attributes:
        task: one of `TASKS`.
        min_len, max_len: lengths n (number of elements) are drawn uniformly from
            [min_len, max_len]. Copy tasks need n >= 2; counts need n <= MAX_COUNT.
        sep_every: insert ',' after every k-th element (R12a); None for no separators.
        pattern: "constant" filler (1 1 1 ...) or "alternating" (1 0 1 0 ..., R12c).
        p_one: probability of a 1 in `count_bernoulli` (the paper's 0.7).
    """

    task: str
    min_len: int = 4
    max_len: int = 16
    sep_every: int | None = None
    pattern: str = "constant"
    p_one: float = 0.7

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern={self.pattern!r} is not one of {', '.join(PATTERNS)}")
        if self.task == "count_bernoulli" and self.pattern != "constant":
            raise ValueError(
                "count_bernoulli draws its digits at random: pattern must be 'constant'"
            )
        shortest = 2 if self.task in _COPY_TASKS else 1
        _check_int("min_len", self.min_len, shortest)
        _check_int("max_len", self.max_len, shortest)
        if self.max_len < self.min_len:
            raise ValueError(f"max_len={self.max_len} is below min_len={self.min_len}")
        if self.task not in _COPY_TASKS and self.max_len > MAX_COUNT:
            raise ValueError(
                f"max_len={self.max_len} exceeds MAX_COUNT={MAX_COUNT}: the count answer "
                "would have no token"
            )
        if self.sep_every is not None:
            _check_int("sep_every", self.sep_every, 1)
        if not 0.0 <= self.p_one <= 1.0:
            raise ValueError(f"p_one must lie in [0, 1], got {self.p_one}")

    def replace(self, **changes) -> "TaskSpec":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def at_length(self, length: int) -> "TaskSpec":
        """The same task with every example of length `length` (for evaluation)."""
        return self.replace(min_len=length, max_len=length)


@dataclasses.dataclass(frozen=True)
class Batch:
    """A padded batch of examples.

    Attributes:
        tokens: [b, W] int32 prompt, answer, then PAD.
        mask: [b, W] bool, True on real tokens (prompt and answer).
        query_pos: [b] int32 index of the query token; its logits predict the answer.
        answer: [b] int32 answer token (the target; also stored at tokens[query_pos + 1]).
        length: [b] int32 number of elements n of each example.
    """

    tokens: np.ndarray
    mask: np.ndarray
    query_pos: np.ndarray
    answer: np.ndarray
    length: np.ndarray


def _element_positions(n_max: int, joiner: bool, sep_every: int | None) -> np.ndarray:
    """[n_max] index of element i (0-based) in the sequence; it does not depend on n."""
    i = np.arange(n_max)
    step = 2 if joiner else 1  # element (+ joiner) per element
    seps = i // sep_every if sep_every else 0  # separators before element i
    return 1 + step * i + seps


def sequence_length(task: TaskSpec | str, length: int, sep_every: int | None = None) -> int:
    """Number of real tokens (prompt and answer) of an example of `length` elements.

    Args:
        task: a `TaskSpec` (its sep_every is used) or a task name (then pass sep_every).
        length: n >= 1.
        sep_every: separator period when `task` is a name.
    Returns:
        1 (BOS) + element/joiner/separator tokens + 1 (query) + 1 (answer).
    """
    if isinstance(task, TaskSpec):
        name, sep_every = task.task, task.sep_every
    else:
        name = task
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    _check_int("length", length, 1)
    if sep_every is not None:
        _check_int("sep_every", sep_every, 1)
    last = int(_element_positions(length, name == "sum_ones", sep_every)[-1])
    return last + 3


def _elements(spec: TaskSpec, rng: np.random.Generator, lengths: np.ndarray, n_max: int):
    """Element digits [b, n_max] (beyond each row's n: don't care) and answers [b]."""
    b = lengths.shape[0]
    i = np.arange(n_max)[None, :]
    filler_digits = np.asarray(_FILLER[spec.pattern])
    filler = np.broadcast_to(filler_digits[i % filler_digits.size], (b, n_max))
    if spec.task in _COPY_TASKS:
        # Filler of copy_first starts after the special element, so shift its phase by one.
        if spec.task == "copy_first":
            filler = np.broadcast_to(filler_digits[(i - 1) % filler_digits.size], (b, n_max))
        choices = np.setdiff1d(np.arange(10), filler_digits)
        special = choices[rng.integers(0, choices.size, size=b)]
        special_at = lengths - 1 if spec.task == "copy_last" else np.zeros(b, np.int64)
        elements = np.where(i == special_at[:, None], special[:, None], filler)
        return elements, DIGIT_0 + special
    if spec.task == "count_bernoulli":
        elements = (rng.random((b, n_max)) < spec.p_one).astype(np.int64)
    else:
        elements = np.array(filler)
    ones = np.sum((elements == 1) & (i < lengths[:, None]), axis=1)
    return elements, COUNT_0 + ones


def make_batch(
    spec: TaskSpec,
    seed: int | np.random.Generator,
    batch_size: int,
    *,
    width: int | None = None,
) -> Batch:
    """A batch of examples with lengths drawn uniformly from [spec.min_len, spec.max_len].

    Args:
        spec: the task.
        seed: an int seed or a `np.random.Generator` (consumed).
        batch_size: b >= 1.
        width: padded width W (default: the sequence length at spec.max_len); must be at
            least that, so a sweep over lengths can share one compiled shape.
    Returns:
        `Batch` with tokens [b, W].
    """
    if not isinstance(spec, TaskSpec):
        raise ValueError(f"spec must be a TaskSpec, got {type(spec).__name__}")
    _check_int("batch_size", batch_size, 1)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    need = sequence_length(spec, spec.max_len)
    if width is None:
        width = need
    _check_int("width", width, 1)
    if width < need:
        raise ValueError(f"width={width} is below the {need} tokens of length {spec.max_len}")

    n_max = spec.max_len
    lengths = rng.integers(spec.min_len, spec.max_len + 1, size=batch_size)  # [b]
    elements, answer = _elements(spec, rng, lengths, n_max)  # [b, n_max], [b]

    joiner = spec.task == "sum_ones"
    elem_pos = _element_positions(n_max, joiner, spec.sep_every)  # [n_max]
    # A template of the longest example; each row is then cut after its own n-th element.
    template = np.full((batch_size, width), PAD, np.int64)
    template[:, elem_pos] = DIGIT_0 + elements
    if spec.sep_every:
        i = np.arange(n_max)
        after = (i + 1) % spec.sep_every == 0
        template[:, elem_pos[after] + 1] = SEP
    if joiner:
        sep_here = (np.arange(n_max) + 1) % spec.sep_every == 0 if spec.sep_every else 0
        template[:, elem_pos + 1 + sep_here] = PLUS
    template[:, 0] = BOS

    query_pos = elem_pos[lengths - 1] + 1  # [b]
    col = np.arange(width)[None, :]
    tokens = np.where(col < query_pos[:, None], template, PAD)
    rows = np.arange(batch_size)
    tokens[rows, query_pos] = EQUALS if joiner else QUERY
    tokens[rows, query_pos + 1] = answer
    mask = col <= (query_pos + 1)[:, None]
    return Batch(
        tokens=tokens.astype(np.int32),
        mask=mask,
        query_pos=query_pos.astype(np.int32),
        answer=answer.astype(np.int32),
        length=lengths.astype(np.int32),
    )


def batch_at_step(spec: TaskSpec, seed: int, step: int, batch_size: int) -> Batch:
    """The training batch of a given step: a pure function of (seed, step).

    Resuming at step s therefore replays exactly the data an uninterrupted run would see.
    """
    _check_int("seed", seed, 0)
    _check_int("step", step, 0)
    return make_batch(spec, np.random.default_rng([seed, 0, step]), batch_size)


def decode(tokens) -> str:
    """Human-readable text of a token row (PAD dropped), e.g. '<s>1,1,10?0'."""
    names = {BOS: "<s>", SEP: ",", PLUS: "+", EQUALS: "=", QUERY: "?"}
    out = []
    for t in np.asarray(tokens).tolist():
        if t == PAD:
            continue
        if DIGIT_0 <= t < COUNT_0:
            out.append(str(t - DIGIT_0))
        elif t >= COUNT_0:
            out.append(f"#{t - COUNT_0}")
        else:
            out.append(names[t])
    return "".join(out)
