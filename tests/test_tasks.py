"""Task generators (training.tasks): answers and layout recomputed from the tokens."""

import numpy as np
import pytest

from training import tasks
from training.tasks import (
    BOS,
    COUNT_0,
    DIGIT_0,
    EQUALS,
    MAX_COUNT,
    PAD,
    PLUS,
    QUERY,
    SEP,
    TaskSpec,
    batch_at_step,
    decode,
    make_batch,
    sequence_length,
)

COMBOS = [
    (task, pattern, k)
    for task in tasks.TASKS
    for pattern in tasks.PATTERNS
    for k in (None, 1, 3)
    if not (task == "count_bernoulli" and pattern != "constant")
]


def parse_row(row: np.ndarray):
    """Independent reading of one example: (elements, gaps between them, query id, answer).

    gaps[i] lists the non-digit tokens between element i and element i + 1.
    """
    row = [int(t) for t in row]
    assert row[0] == BOS
    q = next(i for i, t in enumerate(row) if t in (QUERY, EQUALS))
    answer = row[q + 1]
    assert all(t == PAD for t in row[q + 2 :])
    body = row[1:q]
    elements, gaps, gap = [], [], []
    for t in body:
        if DIGIT_0 <= t < DIGIT_0 + 10:
            if elements:
                gaps.append(gap)
            elements.append(t - DIGIT_0)
            gap = []
        else:
            gap.append(t)
    assert gap == [], "the prompt must end on an element"
    return elements, gaps, row[q], answer, q


@pytest.mark.parametrize("task,pattern,k", COMBOS)
def test_answers_and_layout_recomputed_from_tokens(task, pattern, k):
    spec = TaskSpec(task, min_len=2, max_len=11, sep_every=k, pattern=pattern)
    b = make_batch(spec, 7, 64)
    assert b.tokens.dtype == np.int32 and b.tokens.shape == (64, sequence_length(spec, 11))
    np.testing.assert_array_equal(b.mask, b.tokens != PAD)
    for r in range(64):
        elements, gaps, query, answer, q = parse_row(b.tokens[r])
        n = len(elements)
        assert n == b.length[r] and 2 <= n <= 11
        assert q == b.query_pos[r] and answer == b.answer[r]
        assert b.mask[r].sum() == sequence_length(spec, n)
        # Separators after every k-th element, then '+' for sums; nothing else.
        for i, g in enumerate(gaps):
            want = [SEP] if k and (i + 1) % k == 0 else []
            want += [PLUS] if task == "sum_ones" else []
            assert g == want, (i, g, want)
        assert query == (EQUALS if task == "sum_ones" else QUERY)
        filler = [1] if pattern == "constant" else [1, 0]
        if task == "copy_last":
            assert answer == DIGIT_0 + elements[-1]
            assert elements[:-1] == [filler[i % len(filler)] for i in range(n - 1)]
            assert elements[-1] not in filler
        elif task == "copy_first":
            assert answer == DIGIT_0 + elements[0]
            assert elements[1:] == [filler[i % len(filler)] for i in range(n - 1)]
            assert elements[0] not in filler
        elif task == "sum_ones":
            assert answer == COUNT_0 + sum(elements)
            assert elements == [filler[i % len(filler)] for i in range(n)]
        else:
            assert set(elements) <= {0, 1}
            assert answer == COUNT_0 + elements.count(1)
            if task == "count_ones":
                assert elements == [filler[i % len(filler)] for i in range(n)]


def test_exact_strings():
    # Hand-written expected layouts (an analytic check of the documented format).
    row = make_batch(TaskSpec("sum_ones", 3, 3, sep_every=2), 0, 1).tokens[0]
    assert decode(row) == "<s>1+1,+1=#3"
    row = make_batch(TaskSpec("count_ones", 5, 5, sep_every=2, pattern="alternating"), 0, 1)
    assert decode(row.tokens[0]) == "<s>10,10,1?#3"
    row = make_batch(TaskSpec("copy_first", 4, 4), 3, 1).tokens[0]
    text = decode(row)
    assert text[3:7] == text[3] + "111" and text[7] == "?" and text[8] == text[3]


def test_sequence_length_closed_form():
    for task in tasks.TASKS:
        for n in (2, 5, 9, 12):
            for k in (None, 1, 2, 4):
                joiners = n - 1 if task == "sum_ones" else 0
                seps = (n - 1) // k if k else 0
                assert sequence_length(task, n, k) == 1 + n + joiners + seps + 2


def test_answers_vary_and_lengths_cover_range():
    for task in ("copy_last", "copy_first"):
        b = make_batch(TaskSpec(task, 2, 6), 0, 512)
        digits = set((b.answer - DIGIT_0).tolist())
        assert digits == {0, 2, 3, 4, 5, 6, 7, 8, 9}  # every non-filler digit shows up
        assert set(b.length.tolist()) == {2, 3, 4, 5, 6}
    b = make_batch(TaskSpec("copy_last", 2, 6, pattern="alternating"), 0, 512)
    assert set((b.answer - DIGIT_0).tolist()) == set(range(2, 10))


def test_bernoulli_frequency():
    p = 0.7
    b = make_batch(TaskSpec("count_bernoulli", 50, 50, p_one=p), 1, 400)
    ones = (b.answer - COUNT_0).sum()
    total = 50 * 400
    sigma = np.sqrt(total * p * (1 - p))
    assert abs(ones - p * total) < 5 * sigma


def test_width_padding_and_determinism():
    spec = TaskSpec("count_ones", 3, 7, sep_every=2)
    a = make_batch(spec, 5, 16)
    wide = make_batch(spec, 5, 16, width=40)
    np.testing.assert_array_equal(wide.tokens[:, : a.tokens.shape[1]], a.tokens)
    assert np.all(wide.tokens[:, a.tokens.shape[1] :] == PAD)
    again = make_batch(spec, np.random.default_rng(5), 16)
    np.testing.assert_array_equal(again.tokens, a.tokens)
    s0 = batch_at_step(spec, 0, 3, 16)
    np.testing.assert_array_equal(s0.tokens, batch_at_step(spec, 0, 3, 16).tokens)
    assert not np.array_equal(s0.length, batch_at_step(spec, 0, 4, 16).length)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(task="reverse"), "unknown task"),
        (dict(task="count_ones", min_len=5, max_len=4), "below min_len"),
        (dict(task="count_ones", min_len=0), "min_len"),
        (dict(task="copy_last", min_len=1), "min_len"),
        (dict(task="count_ones", sep_every=0), "sep_every"),
        (dict(task="count_ones", max_len=MAX_COUNT + 1), "MAX_COUNT"),
        (dict(task="count_ones", pattern="zigzag"), "pattern"),
        (dict(task="count_bernoulli", pattern="alternating"), "constant"),
        (dict(task="count_bernoulli", p_one=1.5), "p_one"),
        (dict(task="count_ones", min_len=2.5), "min_len"),
    ],
)
def test_bad_specs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TaskSpec(**kwargs)


def test_bad_batch_arguments_raise():
    spec = TaskSpec("copy_last", 4, 8)
    with pytest.raises(ValueError, match="batch_size"):
        make_batch(spec, 0, 0)
    with pytest.raises(ValueError, match="width"):
        make_batch(spec, 0, 4, width=5)
    with pytest.raises(ValueError, match="unknown task"):
        sequence_length("nope", 4)
    with pytest.raises(ValueError, match="sep_every"):
        sequence_length("copy_last", 4, 0)
    with pytest.raises(ValueError, match="step"):
        batch_at_step(spec, 0, -1, 4)
    with pytest.raises(ValueError, match="TaskSpec"):
        make_batch("copy_last", 0, 4)
