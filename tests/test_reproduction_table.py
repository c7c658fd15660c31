"""README's "Does the paper reproduce?" table agrees with the recorded results (issue 14)."""

import json

from theory_checks.report.reproduction import paper_values, reproduction, within_factor
from theory_checks.report.reproduction_table import (
    README,
    SNAPSHOT,
    main,
    readme_table,
    render,
    summary_rows,
)


def test_readme_table_is_the_rendering_of_the_recorded_snapshot():
    snapshot = json.loads(SNAPSHOT.read_text())
    assert readme_table(README.read_text()) == render(snapshot)
    figures = {e["figure"] for e in snapshot["entries"]}
    assert {"Figure 10", "Figure 8", "Figure 9"} <= figures


def test_snapshot_entries_carry_the_paper_values_and_recompute():
    for e in json.loads(SNAPSHOT.read_text())["entries"]:
        assert e["paper"] == paper_values(e["figure"], e["series"], e["n"])
        assert e["reproduced"] == within_factor(e["paper"], e["ours"], e["n"])


def test_rows_say_reproduces_partly_or_not():
    good = {5: 1, 10: 0.5, 100: 0.06, 500: 0.013, 1000: 0.0065, 5000: 0.0015}
    far = {**good, 5000: 0.03}
    entries = [reproduction("Figure 10", "A", s, good) for s in ("NoPE", "RoPE", "APE")]
    entries.append(reproduction("Figure 10", "A", "ALiBi", far))
    entries += [reproduction("Figure 10", "B", s, far) for s in ("NoPE", "RoPE", "APE", "ALiBi")]
    (row,) = summary_rows(entries)
    assert row[3] == "none"
    assert row[4].startswith("partly: NoPE, RoPE, APE reproduce; ALiBi under no reading")
    assert "ALiBi 0.03 vs 0.0035 at n = 5000 (8.6x)" in row[4]
    entries.append(reproduction("Figure 10", "C", "NoPE", good))
    entries += [reproduction("Figure 10", "C", s, {**good, 5000: 0.003})
                for s in ("RoPE", "APE", "ALiBi")]
    assert summary_rows(entries)[0][3:] == ("C", "reproduces")
    (row,) = summary_rows([reproduction("Figure 9", "X", "TV", {500: 1, 2500: 1, 10000: 1})])
    assert row[4].startswith("does not reproduce under any reading")


def test_cli_rewrites_readme_and_snapshot(tmp_path):
    results = [{"id": "R2", "device": "cpu", "seeds": [0],
                "reproduction": [reproduction("Figure 9", "X", "TV",
                                              {500: 0.026, 2500: 0.008, 10000: 0.002})]}]
    (tmp_path / "run").mkdir()
    res = tmp_path / "run" / "results.json"
    res.write_text(json.dumps(results))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- reproduction-table:start -->\nold\n"
                      "<!-- reproduction-table:end -->\nafter\n")
    snap = tmp_path / "snap.json"
    assert main([str(res), "--snapshot", str(snap), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("after\n") and "old" not in text
    assert readme_table(text) == render(json.loads(snap.read_text()))
    assert "| Figure 9 |" in text and "reproduces" in text
