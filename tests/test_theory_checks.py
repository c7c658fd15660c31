"""Each theory check in a reduced setting: verdicts, key numbers against independent values,
deliberate breakage, and the CLI's report."""

import json
import math

import numpy as np
import pytest

from theory_checks import Profile, RunContext, run_check
from theory_checks.__main__ import main

QUICK = Profile("quick")


@pytest.fixture
def ctx(tmp_path):
    return RunContext(figure_dir=tmp_path / "figures", seed=0, reduced=True)


def _check(cid, ctx):
    result = run_check(cid, QUICK, ctx)
    assert result.id == cid
    for fig in result.figures:
        assert (ctx.figure_dir.parent / fig).stat().st_size > 1000
    return result


def test_r1_gap_positive_and_decays_at_the_analytic_rate(ctx):
    r = _check("R1", ctx)
    assert r.verdict == "pass"
    assert r.measured["all_gaps_positive"]
    assert r.measured["loglog_slope"] == pytest.approx(-2.0, abs=0.2)


def test_r1_analysis_gap_matches_the_closed_form():
    from analysis.softmax import last_weight_gap

    rng = np.random.default_rng(3)
    a, (b, c) = rng.uniform(-1, 1, 40), rng.uniform(-1, 1, 2)
    s = np.exp(a).sum()
    closed = math.exp(b + c) / ((s + math.exp(c)) * (s + math.exp(b) + math.exp(c)))
    assert last_weight_gap(a, b, c).gap == pytest.approx(closed, rel=1e-12)


def test_r2_total_variation_decays_like_k_over_n(ctx):
    r = _check("R2", ctx)
    assert r.verdict == "pass"
    assert all(-1.3 < s < -0.8 for s in r.measured["slopes_per_seed"])


def test_r3_is_a_boundary_at_the_analytic_value(ctx):
    r = _check("R3", ctx)
    assert r.verdict == "boundary"
    assert r.measured["tv_at_n_max"] == pytest.approx(2 * (math.e - 1) / (math.e + 1), abs=1e-12)


def test_r4_collapse_inside_the_theorem_and_none_for_ape(ctx):
    r = _check("R4", ctx)
    m = r.measured
    assert r.verdict == "pass"
    assert m["slope_none"] <= -0.5 and m["slope_rope"] < 0
    assert m["ape_shows_no_collapse"]
    # Independent: the NoPE pair at one length, measured by two plain forwards.
    import jax.numpy as jnp

    from theory_checks.checks.r04_collapse import _distances

    d, model = _distances("none", 0, 64, [10])
    seq = np.random.default_rng(0).integers(0, 64, 64)
    y = model(jnp.asarray(seq[:10]), capture=True)[1].y[-1]
    y_star = model(jnp.asarray(np.append(seq[:10], seq[9])), capture=True)[1].y[-1]
    assert d[0] == pytest.approx(float(jnp.abs(y - y_star).sum()), rel=1e-9)


def test_r5_collapsed_pairs_give_identical_answers(ctx):
    r = _check("R5", ctx)
    assert r.verdict == "pass" and r.premise_reached  # premise reached (tests/test_premises.py)
    m = r.measured
    identical = m["float16_identical_pairs"] + m["bfloat16_identical_pairs"]
    assert identical > 0
    assert m["float32_identical_pairs"] == 0  # float32 keeps the pairs apart at these lengths


def test_r6_low_precision_collapses_first_and_as_predicted(ctx):
    r = _check("R6", ctx)
    m = r.measured
    assert r.verdict == "pass" and r.premise_reached
    assert m["bfloat16_collapse_length"] < 512 and m["float16_collapse_length"] < 512
    assert m["float32_collapse_length"] is None  # not within the reduced sweep
    # The prediction in the report follows from the fitted decay and u = 2^-8 (independently
    # recomputed here from the reported slope, scale and the float16 prediction).
    s, scale = m["decay_slope_float64"], m["state_scale_linf"]
    ratio = m["bfloat16_predicted_length"] / m["float16_predicted_length"]
    assert ratio == pytest.approx((2.0**-8 / 2.0**-11) ** (1 / s), rel=1e-9)
    assert scale > 0


def test_r7_bound_holds_with_frozen_attention_and_is_not_vacuous(ctx):
    r = _check("R7", ctx)
    assert r.verdict == "pass"
    assert r.measured["theorem_violations"] == 0
    assert r.measured["theorem_positions_compared"] > 50
    assert 1e-6 < r.measured["best_tightness"] <= 1.0


def test_r8_deep_limit_rate(ctx):
    r = _check("R8", ctx)
    m = r.measured
    assert r.verdict == "pass" and r.premise_reached
    assert m["min_nonzeros_below_first_row"] >= 2
    assert m["predicted_rate"] == pytest.approx((1 + m["lambda_2"]) / 2, rel=1e-15)
    assert m["fitted_rate"] == pytest.approx(m["predicted_rate"], rel=1e-3)
    assert m["first_column_at_max_depth_min"] == pytest.approx(1.0, abs=1e-8)


def test_r9_spectra(ctx):
    r = _check("R9", ctx)
    assert r.verdict == "pass"
    assert r.measured["max_ones_residual"] <= 1e-12


def test_r10_same_ratio_same_representation(ctx):
    r = _check("R10", ctx)
    assert r.verdict == "pass"
    assert r.measured["bidirectional_nope_max_diff"] <= 1e-12
    assert r.measured["causal_nope_max_diff"] > 1e-3


def test_r11_u_shape(ctx):
    r = _check("R11", ctx)
    assert r.verdict == "pass"
    for first, last in r.measured["rope_end_ratios(first,last)"]:
        assert first > 1 and last > 1


def test_r12_mitigations(ctx):
    r = _check("R12", ctx)
    m = r.measured
    assert r.verdict == "pass"
    assert m["separator_distance_ratio_at_n_max"] > 1
    assert m["window_slope_far"] > -0.2 and m["window_distance_median_ratio_far"] > 1


# ---- breaking things on purpose makes the relevant check fail ------------------------


def test_a_bound_constant_that_is_too_small_fails_r7(ctx, monkeypatch):
    import theory_checks.checks.r07_path_bound as r07

    real = r07.path_bound
    monkeypatch.setattr(r07, "path_bound", lambda *a, **k: real(*a, **k) * 1e-3)
    r = run_check("R7", QUICK, ctx)
    assert r.verdict == "fail"
    assert r.measured["theorem_violations"] > 0


def test_a_mask_that_sees_the_future_fails_r9(ctx, monkeypatch):
    import transformer.layers as layers

    real = layers.attention_mask
    monkeypatch.setattr(
        layers, "attention_mask", lambda *a, causal, window: real(*a, causal=False, window=window)
    )
    r = run_check("R9", QUICK, ctx)
    assert r.verdict == "fail"
    assert not r.measured["products_triangular_row_stochastic"]


def test_a_softmax_without_the_decay_fails_r2(ctx, monkeypatch):
    import theory_checks.checks.r02_total_variation as r02
    from analysis.softmax import TVDecay

    def no_decay(lengths, k, noise, seeds):  # a "softmax" whose TV never shrinks
        return TVDecay(tuple(lengths), tuple(seeds), np.full((len(seeds), len(lengths)), 0.5))

    monkeypatch.setattr(r02, "tv_decay_experiment", no_decay)
    assert run_check("R2", QUICK, ctx).verdict == "fail"


# ---- the command line and the report --------------------------------------------------


def test_cli_writes_report_json_and_figures(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["--only", "R1,R3", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["id"] for r in results] == ["R1", "R3"]
    for r in results:
        assert {"id", "title", "paper_ref", "verdict", "criterion", "measured"} <= set(r)
        for fig in r["figures"]:
            assert (out / fig).exists()
    text = (out / "report.md").read_text()
    assert "## R1" in text and "## R3" in text and "![R1" in text
    printed = capsys.readouterr().out
    assert "R3" in printed and "boundary" in printed


def test_interrupted_run_leaves_the_previous_report(tmp_path, monkeypatch):
    out = tmp_path / "report"
    assert main(["--only", "R3", "--out", str(out), "--no-progress"]) == 0
    before = (out / "results.json").read_text()
    import theory_checks.checks.r01_last_weight as r01

    def interrupted(profile, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(r01, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["--only", "R3,R1", "--out", str(out), "--no-progress"])
    assert (out / "results.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no partial folder left


def test_failing_check_gives_non_zero_exit(tmp_path, monkeypatch):
    import theory_checks.checks.r02_total_variation as r02
    from analysis.softmax import TVDecay

    monkeypatch.setattr(
        r02, "tv_decay_experiment",
        lambda lengths, k, noise, seeds: TVDecay(
            tuple(lengths), tuple(seeds), np.full((len(seeds), len(lengths)), 0.5)
        ),
    )
    assert main(["--only", "R2", "--out", str(tmp_path / "r"), "--no-progress"]) == 1


def test_unknown_ids_and_profiles_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["--only", "R99", "--out", str(tmp_path / "x")])
    assert err.value.code == 2
    assert "R99" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown profile"):
        Profile("huge")
