"""The four verdicts, the premise fields, and the reproduction criterion (issues 14, 16)."""

import re
from pathlib import Path

import pytest

from theory_checks import report
from theory_checks.report.reproduction import (
    FACTOR,
    PAPER_VALUES,
    figure_reproduced,
    paper_values,
    readings_that_reproduce,
    reproduction,
    within_factor,
)
from theory_checks.result import VERDICTS, CheckResult, verdict_from

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _result(**kw):
    base = dict(id="R5", title="t", paper_ref="p", claim="c", criterion="k", measured={"x": 1})
    return CheckResult(**{**base, **kw})


def test_verdict_from_premise_first():
    assert verdict_from(True) == "pass" and verdict_from(False) == "fail"
    assert verdict_from(True, premise_reached=False) == "inconclusive"
    assert verdict_from(False, premise_reached=False) == "inconclusive"
    assert set(VERDICTS) == {"pass", "fail", "boundary", "inconclusive"}


def test_inconclusive_exactly_when_premise_not_reached():
    ok = _result(verdict="inconclusive", premise="a bit-identical pair", premise_reached=False,
                 to_reach_premise="n up to 400 (predicted n* = 310)")
    assert ok.to_json()["premise_reached"] is False
    with pytest.raises(ValueError, match="inconclusive exactly when"):
        _result(verdict="inconclusive", premise="p", to_reach_premise="q")
    with pytest.raises(ValueError, match="inconclusive exactly when"):
        _result(verdict="fail", premise="p", premise_reached=False, to_reach_premise="q")
    with pytest.raises(ValueError, match="what would reach it"):
        _result(verdict="inconclusive", premise="p", premise_reached=False)
    assert _result(verdict="pass").to_json()["premise_reached"] is True


def test_report_explains_verdicts_premise_and_reproduction():
    entry = reproduction("Figure 9", "paper protocol", "TV",
                         {500: 0.03, 2500: 0.008, 10000: 0.0019})
    results = [
        _result(verdict="inconclusive", premise="a bit-identical pair", premise_reached=False,
                to_reach_premise="n up to 400"),
        _result(id="R2", verdict="pass", reproduction=(entry,)),
    ]
    md = report.markdown(results, {})
    assert "**Premise** (**not reached**). a bit-identical pair" in md
    assert "**What would reach it.** n up to 400" in md
    assert "| Figure 9 | paper protocol | TV | 500, 2500, 10000 | 0.026, 0.0078, 0.002 |" in md
    for v in VERDICTS:
        assert f"- **{v}**:" in md
    assert "inconclusive: the check ran" in report.table(results)


def test_within_factor_judges_only_n_from_100():
    assert within_factor([1.0, 0.1], [100.0, 0.19], [10, 100])  # n = 10 not judged
    assert not within_factor([1.0, 0.1], [1.0, 0.21], [10, 100])
    assert within_factor([0.1], [0.1 / FACTOR], [100])  # the bounds are inclusive
    assert not within_factor([0.1], [0.0], [100])
    assert not within_factor([0.1], [None], [100])
    assert not within_factor([1.0], [1.0], [10])  # nothing judged: not reproduced


def test_reproduction_entry_carries_the_paper_values_and_recomputes():
    ours = {5: 2.0, 10: 0.6, 100: 0.07, 500: 0.02, 1000: 0.007, 5000: 0.0015}
    e = reproduction("Figure 10", "variance 1/d", "NoPE", ours)
    assert e["n"] == [5, 10, 100, 500, 1000, 5000]
    assert e["paper"] == paper_values("Figure 10", "NoPE")
    assert e["reproduced"] is True
    bad = reproduction("Figure 10", "variance 1", "NoPE", {**ours, 5000: 0.01})
    assert bad["reproduced"] is False
    entries = [e, reproduction("Figure 10", "variance 1/d", "ALiBi", ours), bad]
    assert not figure_reproduced(entries, "Figure 10", "variance 1/d")  # ALiBi at 5000: 2.3x
    assert readings_that_reproduce([e], "Figure 10") == ["variance 1/d"]


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_paper_values_are_the_ones_in_paper_md():
    """Every value in PAPER_VALUES appears in docs/paper_protocols.md (the verbatim copy of
    docs/paper_protocols.md) in the paragraph of its figure."""
    text = (DOCS / "paper_protocols.md").read_text()
    paragraphs = {
        "Figure 10": text[text.index("**Figure 10"):text.index("**Figure 8")],
        "Figure 8": text[text.index("**Figure 8"):text.index("**Figure 9")],
        "Figure 9": text[text.index("**Figure 9"):text.index("**Figure 5")],
        "Figure 5a": text[text.index("**Figure 5"):text.index("**Figures 2-4")],
    }
    paragraphs["Figure 5b"] = paragraphs["Figure 5d"] = paragraphs["Figure 5a"]
    bf16 = re.search(r"bf16 precision\" line at about ([\d.e-]+)", paragraphs["Figure 10"])
    bf16 = float(bf16.group(1))
    for figure, series in PAPER_VALUES.items():
        numbers = {_number(m) for m in re.findall(r"\d[\d,]*\.?\d*(?:e-?\d+)?", paragraphs[figure])}
        for name, table in series.items():
            for n, (value, (lo, hi)) in table.items():
                assert n in numbers, (figure, name, n)
                assert lo <= value <= hi
                assert (lo in numbers or lo == bf16) and (hi in numbers or hi == bf16), (
                    figure, name, n, lo, hi)
