"""theory_checks.report.compare on small hand-made result lists: one that agrees, one with a
changed verdict, one with a changed number, and files that are not reports."""

from __future__ import annotations

import copy
import json

import pytest

from theory_checks.report.compare import compare, main

BASE = [
    {"id": "R1", "model": "", "verdict": "pass", "premise_reached": True, "runtime_s": 1.0,
     "measured": {"slope": -2.0, "gaps": [0.5, 0.25, 0.125], "ok": True, "label": "x",
                  "noise": 1e-17, "none": None, "nested": {"a": 3, "b": [1e-3]}},
     "reproduction": [{"figure": "Figure 9", "ours": [0.026, None]}]},
    {"id": "R4", "model": "m", "verdict": "fail", "premise_reached": True,
     "measured": {"slope": 0.1}, "reproduction": []},
]


def _write(tmp_path, name, results):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(results))
    return str(path)


def test_agreeing_reports_within_the_tolerances(tmp_path, capsys):
    other = copy.deepcopy(BASE)
    other[0]["measured"]["slope"] *= 1 + 3e-7  # within rtol 1e-6
    other[0]["measured"]["noise"] = 0.0  # rounding noise around zero: within atol
    other[0]["runtime_s"] = 99.0  # not compared
    got = compare(BASE, other)
    assert got.agree and got.numbers == 9
    assert got.largest[1] == "R1 measured.noise" and got.largest[0] == 1.0
    assert main([_write(tmp_path, "a", BASE), _write(tmp_path, "b", other)]) == 0
    assert "agree" in capsys.readouterr().out


def test_a_changed_verdict_disagrees(tmp_path, capsys):
    other = copy.deepcopy(BASE)
    other[1]["verdict"] = "pass"
    got = compare(BASE, other)
    assert got.disagreements == ["R4 (m): verdict 'fail' vs 'pass'"]
    assert main([_write(tmp_path, "a", BASE), _write(tmp_path, "b", other)]) == 1
    assert "verdict 'fail' vs 'pass'" in capsys.readouterr().out


def test_a_changed_number_disagrees_and_is_named(tmp_path, capsys):
    other = copy.deepcopy(BASE)
    other[0]["measured"]["gaps"][2] = 0.125 * (1 + 1e-5)
    other[0]["reproduction"][0]["ours"][0] = 0.027
    got = compare(BASE, other)
    assert [d.split(":")[0] for d in got.disagreements] == [
        "R1 measured.gaps[2]", "R1 reproduction[0].ours[0]"]
    assert got.largest[1] == "R1 reproduction[0].ours[0]"
    assert got.largest[0] == pytest.approx(0.001 / 0.027)
    assert main([_write(tmp_path, "a", BASE), _write(tmp_path, "b", other)]) == 1
    out = capsys.readouterr().out
    assert "DISAGREE (2)" in out and "measured.gaps[2]" in out


def test_structure_changes_disagree():
    other = copy.deepcopy(BASE)
    del other[0]["measured"]["label"]
    other[0]["measured"]["nested"]["b"].append(1.0)
    other[0]["measured"]["ok"] = 1  # a number is not a boolean
    other.pop(1)
    got = compare(BASE, other)
    assert sorted(d.split(":")[0] for d in got.disagreements) == [
        "R1 measured", "R1 measured.nested.b", "R1 measured.ok", "R4 on m"]


def test_unreadable_files_are_named(tmp_path, capsys):
    good = _write(tmp_path, "a", BASE)
    (tmp_path / "bad.json").write_text("{not json")
    assert main([good, str(tmp_path / "bad.json")]) == 2
    assert main([good, str(tmp_path / "missing.json")]) == 2
    assert main([good, _write(tmp_path, "dict", {"id": "R1"})]) == 2
    err = capsys.readouterr().err
    assert "bad.json: not JSON" in err and "missing.json: cannot read" in err
    assert "dict.json: not a results.json" in err
