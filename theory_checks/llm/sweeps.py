"""Figure 5's sweeps (R4, R6, R12, R12b): the lengths, each panel's pairs swept in every
format (`analysis.pair_sweep`, kept in the run's store so that checks reading the same pairs
share one prefill per format), and readings of a sweep."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from analysis.pair_sweep import PairSweep, pair_sweep, sweep_lengths
from theory_checks.context import RunStore
from theory_checks.llm.models import LLM
from theory_checks.llm.pairs import digits_pairs, ones_pairs
from theory_checks.llm.prompts import FIG5_PANELS
from theory_checks.report.reproduction import FIG5_LENGTHS
from transformer.model import Decoder

COLLAPSE_DTYPES = ("float64", "float32", "bfloat16")


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
