"""Premise tests of the quick-profile checks (issue 16): a case built not to reach a
check's premise gives `inconclusive` with the premise fields; the reduced runs of
tests/test_theory_checks.py are the same checks with the premise reached (pass)."""

import numpy as np
import pytest

from theory_checks import Profile, RunContext, run_check

QUICK = Profile("quick")


@pytest.fixture
def ctx(tmp_path):
    return RunContext(figure_dir=tmp_path / "figures", seed=0, reduced=True)


def _inconclusive(r):
    assert r.verdict == "inconclusive" and r.premise_reached is False
    assert r.premise and r.to_reach_premise
    assert r.to_json()["premise_reached"] is False
    return r.measured


def test_r5_sweep_too_short_for_a_collapsed_pair(ctx, monkeypatch):
    import theory_checks.synthetic.r05_counting_collapse as r05

    monkeypatch.setattr(r05, "sweep_lengths", lambda profile, ctx: [1, 2, 3, 4])
    r = run_check("R5", QUICK, ctx)
    m = _inconclusive(r)
    assert m["float16_identical_pairs"] == m["bfloat16_identical_pairs"] == 0
    assert not m["premise_bit_identical_pair"]
    # What would reach it: a longer sweep (bit-identity comes long after the predicted n
    # where the true distance falls below the resolution) and a model whose answers vary.
    for dtype in ("float16", "bfloat16"):
        predicted = m[f"{dtype}_predicted_below_resolution_n"]
        assert f"{dtype} n ~ {predicted:.3g}" in r.to_reach_premise
    assert "a sweep beyond n = 4" in r.to_reach_premise


def test_r6_sweep_shorter_than_the_float16_collapse(ctx, monkeypatch):
    import theory_checks.synthetic.r06_precision as r06

    monkeypatch.setattr(r06, "sweep_lengths", lambda profile, ctx: list(range(1, 33, 4)))
    r = run_check("R6", QUICK, ctx)
    m = _inconclusive(r)
    assert m["float16_collapse_length"] is None
    assert m["float16_predicted_length"] > m["n_max"] == 29
    assert m["sweep_reaches_collapse"]["float16"] is False
    assert "float16 n ~" in r.to_reach_premise


def test_r8_pattern_without_two_non_zeros_per_row(ctx, monkeypatch):
    """An attention pattern whose rows each hold one weight (the identity) is outside
    Proposition 5.2's assumption: its deep limit keeps every token, which the proposition
    does not contradict."""
    import theory_checks.synthetic.r08_deep_limit as r08

    monkeypatch.setattr(r08, "attention_matrix", lambda model, tokens: np.eye(len(tokens)))
    r = run_check("R8", QUICK, ctx)
    m = _inconclusive(r)
    assert m["min_nonzeros_below_first_row"] == 1
    assert m["distance_at_max_depth"] == pytest.approx(2.0)  # rows stay e_i: ||e_i - e_1||_1
    assert "found 1" in r.to_reach_premise


def test_r8_rate_too_slow_for_the_depth_cap(ctx, monkeypatch):
    """Two non-zeros per row, but lambda_2 = 1 - 1e-4: the predicted rate needs ~5e5 layers
    to show the limit, beyond the cap, so the sweep cannot judge the rate."""
    import theory_checks.synthetic.r08_deep_limit as r08

    def slow(model, tokens):
        n, eps = len(tokens), 1e-4
        lam = (1 - eps) * np.eye(n)
        lam[:, 0] += eps
        lam[0, 0] = 1.0
        return lam

    monkeypatch.setattr(r08, "attention_matrix", slow)
    r = run_check("R8", QUICK, ctx)
    m = _inconclusive(r)
    assert m["min_nonzeros_below_first_row"] == 2
    assert m["depth_needed"] == pytest.approx(np.log(1e-11) / np.log(1 - 0.5e-4), rel=1e-5)
    assert m["depth_needed"] > r08.MAX_DEPTH and "depth cap" in r.to_reach_premise
