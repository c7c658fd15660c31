"""Figure 5's pairs (s_n, s*_n) at the token level (R4, R6, R12): a question, then a run of
ones (with or without commas) or uniform digits, n against n + 1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from theory_checks.llm.models import LLM
from theory_checks.llm.prompts import COMMA_EVERY, fig5_prefix
from theory_checks.report.reproduction import FIG5_LENGTHS


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


