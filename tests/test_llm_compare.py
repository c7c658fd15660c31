"""The typed records between the llm checks' measurements and the side-by-side figure: what a
check writes is what the comparison reads, and a missing entry is an error naming it."""

from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pytest

from theory_checks.llm import compare
from theory_checks.llm.records import (
    CollapseCurves,
    CommaCurves,
    MissingEntry,
    PrecisionCurves,
    TaskAccuracy,
    WindowCurves,
)
from theory_checks.result import CheckResult

N = [1, 2, 4]


def _arr(k: float):
    return np.asarray(N, float) ** -1.0 * k


RECORDS = {
    "R4": CollapseCurves(
        lengths=N,
        y_linf={"ones": {"float32": _arr(1), "bfloat16": _arr(2)}, "digits": {"float32": _arr(3)}},
        heads_mean={"ones": {"float32": _arr(4)}, "digits": {"float32": _arr(5)}},
        heads_min={"ones": {"float32": _arr(6)}, "digits": {"float32": _arr(7)}},
        heads_max={"ones": {"float32": _arr(8)}, "digits": {"float32": _arr(9)}},
    ),
    "R6": PrecisionCurves(lengths=N, float64=_arr(1), float32=_arr(2), bfloat16=_arr(3)),
    "R12": CommaCurves(lengths=N, y_linf={"plain": {"float32": _arr(1)},
                                          "commas": {"float32": _arr(2)}},
                       heads_mean={"plain": {"float32": _arr(3)}, "commas": {"float32": _arr(4)}}),
    "R5": TaskAccuracy(lengths=N, accuracy={t: np.ones(3) for t in
                                             ("count_ones", "sum", "copy_last", "copy_first")}),
    "R12b": WindowCurves(lengths=N, y_linf={"windowed_(as_trained)": _arr(1),
                                            "windows_widened": _arr(2)},
                         heads_mean={"windowed_(as_trained)": _arr(3),
                                     "windows_widened": _arr(4)}),
}


def _result(cid: str, measured: dict) -> CheckResult:
    return CheckResult(id=cid, title="t", paper_ref="p", claim="c", criterion="c",
                       measured=measured, verdict="pass", model="m")


@pytest.mark.parametrize("cid", sorted(RECORDS))
def test_a_record_reads_back_what_it_wrote(cid):
    record = RECORDS[cid]
    measured = {"unrelated": 1.0, **record.entries()}
    back = type(record).read(measured)
    assert back.entries().keys() == record.entries().keys()
    for key, value in record.entries().items():
        np.testing.assert_array_equal(back.entries()[key], value)
    fig, ax = plt.subplots()
    compare.draw_panel(ax, cid, {"m": _result(cid, measured)})
    assert ax.get_lines(), f"{cid}'s panel drew nothing"
    plt.close(fig)


def _field_entries(record, field) -> set[str]:
    """The measured entries one field of a record writes."""
    if not isinstance(getattr(record, field.name), dict):
        return {field.metadata["entry"]}
    emptied = dataclasses.replace(record, **{field.name: {}})
    return record.entries().keys() - emptied.entries().keys()


@pytest.mark.parametrize("cid", sorted(RECORDS))
def test_a_missing_entry_is_an_error_naming_it(cid):
    record = RECORDS[cid]
    for field in dataclasses.fields(record):
        gone = _field_entries(record, field)
        assert gone
        measured = {k: v for k, v in record.entries().items() if k not in gone}
        with pytest.raises(MissingEntry, match=f"{field.name}: no entry"):
            compare.draw_panel(plt.figure().gca(), cid, {"m": _result(cid, measured)})
        plt.close("all")


def test_the_figure_notes_a_missing_panel_instead_of_dropping_it(tmp_path):
    results = [_result("R6", {"lengths": N}), _result("R12", RECORDS["R12"].entries())]
    assert compare.figure(results, tmp_path) == f"{tmp_path.name}/llm_models_side_by_side.png"
    assert (tmp_path / "llm_models_side_by_side.png").stat().st_size > 1000
