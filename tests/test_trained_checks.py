"""The `trained` profile's checks (R5, R11, R12) at reduced size: well-formed results,
verdicts recomputed from the measured numbers, and numbers recomputed independently."""

import json
import math

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

from theory_checks.checks import trained_copy, trained_counting, trained_mitigations  # noqa: E402
from theory_checks.context import Profile, RunContext  # noqa: E402
from theory_checks.result import VERDICTS  # noqa: E402
from theory_checks.runner import PROFILE_CHECKS  # noqa: E402
from theory_checks.trained import (  # noqa: E402
    RECIPES,
    in_format,
    query_states,
    recipe,
    trained_model,
)
from transformer.tasks import COUNT_0, TaskSpec  # noqa: E402
from transformer.train import evaluate  # noqa: E402

PROFILE = Profile("trained")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    ctx = RunContext(figure_dir=tmp_path_factory.mktemp("figures"), seed=0, reduced=True)
    return {
        "R11": trained_copy.run(PROFILE, ctx),
        "R5": trained_counting.run(PROFILE, ctx),
        "R12": trained_mitigations.run(PROFILE, ctx),
    }, ctx


def test_profile_lists_the_trained_checks():
    assert PROFILE_CHECKS["trained"] == {
        "R5": "trained_counting", "R11": "trained_copy", "R12": "trained_mitigations"}


@pytest.mark.parametrize("cid", ["R5", "R11", "R12"])
def test_results_are_well_formed(results, cid):
    res, ctx = results
    r = res[cid]
    assert r.id == cid and r.verdict in VERDICTS and r.verdict != "boundary"
    assert r.title and r.claim and r.criterion and r.key_number and r.setup
    assert r.seeds == (0,) and r.dtypes
    json.dumps(r.to_json())  # serialisable
    for rel in r.figures:
        path = ctx.figure_dir.parent / rel
        assert path.is_file() and path.stat().st_size > 1000
    if r.verdict == "fail":
        assert r.notes  # a failed prediction says why


def test_r11_verdict_and_accuracy(results):
    r = results[0]["R11"]
    m = r.measured
    beyond = m["sweep_max"] + 1
    f = {k: (v or beyond) for k, v in m["failure_length"].items()}
    u = {k: a > 1.0 and b > 1.0 for k, (a, b) in m["end_ratios(first,last)"].items()}
    assert u == m["u_shaped"]
    assert r.verdict == ("pass" if f["copy_last"] <= f["copy_first"] and all(u.values()) else "fail")
    # Failure lengths follow from the reported accuracies.
    for name, acc in m["accuracy"].items():
        rec = recipe(name, reduced=True)
        bad = [int(n) for n, a in acc.items() if int(n) > rec.task.max_len and a < 0.9]
        assert m["failure_length"][name] == (min(bad) if bad else None)
    # Independent: the cached model re-evaluated on fresh examples (another seed) agrees
    # within sampling error at the training length.
    rec = recipe("copy_last", reduced=True)
    model, info = trained_model(rec)
    assert info["cached"] == "memory"
    n = rec.task.max_len
    fresh = evaluate(model, rec.task, [n], 64, seed=7)[n]
    assert abs(fresh - m["accuracy"]["copy_last"][str(n)]) <= 0.35


def test_r5_verdict_and_corollary(results):
    r = results[0]["R5"]
    m = r.measured
    b10 = m["corollary_b10"]
    consistent = all(b["identical_n"] == b["same_answer_n"] == b["one_wrong_n"] for b in b10.values())
    assert consistent == m["b10_consistent"]
    ok = consistent and len(b10["bfloat16"]["identical_n"]) > 0 and m["train_accuracy_float32"] >= 0.9
    assert r.verdict == ("pass" if ok else "fail")
    # Independent: count_ones has one example per length, so transformer.train.evaluate
    # (padded batches, another code path) must reproduce the per-length correctness.
    rec = recipe("count_ones", reduced=True)
    model, _ = trained_model(rec)
    lengths = m["lengths"]
    for dtype in ("float32", "bfloat16"):
        acc = evaluate(in_format(model, dtype), rec.task, lengths, 1)
        np.testing.assert_array_equal([acc[n] == 1.0 for n in lengths], m["correct"][dtype])
    t = m["train_max"]
    assert math.isclose(m["train_accuracy_float32"], float(np.mean(m["correct"]["float32"][:t])))


def test_r12_verdict(results):
    r = results[0]["R12"]
    m = r.measured
    beyond = len(m["lengths"])  # n_max + 1
    col = {k: (v or beyond) for k, v in m["collapse_length_bfloat16"].items()}
    med = {k: float(np.median(v)) for k, v in m["relative_distance_float64"].items()}
    assert med == pytest.approx(m["median_relative_distance"], rel=1e-12)
    n = np.asarray(m["lengths"][:-1])
    n_rf = m["window_receptive_start"]
    assert n_rf == 2 * (4 - 1)  # 2 layers, window 4
    far = n >= n_rf
    rel_w = np.asarray(m["relative_distance_float64"]["count_ones_window4"])
    rel_p = np.asarray(m["relative_distance_float64"]["count_ones"])
    window_equal = bool(np.all(rel_w[far] <= 1e-9))
    correct_far = int(np.asarray(m["correct"]["count_ones_window4"]["float32"])[:-1][far].sum())
    apart = bool(np.all(rel_p[far & (n <= m["train_max"])] > 1e-9))
    ok = (col["count_ones_sep4"] >= col["count_ones"]
          and med["count_ones_sep4"] >= med["count_ones"]
          and window_equal and correct_far <= 1 and apart)
    assert r.verdict == ("pass" if ok else "fail")
    # The window's exact collapse is structural: it must hold whatever training did.
    assert window_equal


def test_query_states_bit_identity_implies_same_answer():
    """Corollary B.10 in its sharpest form, on a model whose window makes pairs equal up to
    rounding: wherever y(n) == y(n+1) bit for bit, the argmax answers agree."""
    rec = recipe("count_ones_window4", reduced=True)
    model, _ = trained_model(rec)
    qs = query_states(model, rec.task, range(1, 30), ("float64", "bfloat16"))
    assert qs.y.shape == (2, 29, model.config.d_model)
    np.testing.assert_array_equal(qs.target, COUNT_0 + np.arange(1, 30))
    for d in range(2):
        same = np.all(qs.y[d, :-1] == qs.y[d, 1:], axis=-1)
        assert np.all(qs.answer[d, :-1][same] == qs.answer[d, 1:][same])
    # float64 state vs bfloat16 state of the same sequence: rounding, not content.
    rel = np.abs(qs.y[1] - qs.y[0]).max() / np.abs(qs.y[0]).max()
    assert 0 < rel < 0.2


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe("copy_middle")
    with pytest.raises(ValueError, match="seed"):
        recipe("copy_first", seed=-1)
    assert set(RECIPES) >= {"copy_first", "copy_last", "count_ones"}
    rec = recipe("count_ones", reduced=True)
    model, _ = trained_model(rec)
    with pytest.raises(ValueError, match="lengths is empty"):
        query_states(model, rec.task, [])
    with pytest.raises(ValueError, match="TaskSpec"):
        query_states(model, "count_ones", [1, 2])
    with pytest.raises(ValueError, match="consecutive"):
        query_states(model, TaskSpec("count_ones", 1, 4), [1, 3, 4]).counting_sweep()
