"""The `trained` profile's checks (R5, R11, R12) at reduced size: well-formed results,
verdicts recomputed from the measured numbers, and numbers recomputed independently."""

import json
import math

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

from theory_checks.trained import copying as trained_copy  # noqa: E402
from theory_checks.trained import counting as trained_counting  # noqa: E402
from theory_checks.trained import mitigations as trained_mitigations  # noqa: E402
from theory_checks.result import combined  # noqa: E402
from theory_checks.context import Profile, RunContext  # noqa: E402
from theory_checks.result import VERDICTS  # noqa: E402
from theory_checks.runner import PROFILE_CHECKS  # noqa: E402
from theory_checks.trained.recipes import (  # noqa: E402
    RECIPES,
    QueryStates,
    in_format,
    nearest_state_count,
    query_states,
    recipe,
    trained_model,
)
from training.tasks import COUNT_0, SEP, TaskSpec, make_batch  # noqa: E402
from training.train import evaluate  # noqa: E402

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
        "R5": "trained.counting", "R11": "trained.copying", "R12": "trained.mitigations"}


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
    # Failure lengths and the premise follow from the reported accuracies.
    learned = {}
    for name, acc in m["accuracy"].items():
        rec = recipe(name, reduced=True)
        bad = [int(n) for n, a in acc.items() if int(n) > rec.task.max_len and a < 0.9]
        assert m["failure_length"][name] == (min(bad) if bad else None)
        learned[name] = all(a >= 0.9 for n, a in acc.items() if int(n) <= rec.task.max_len)
    assert learned == m["learned_in_range"]
    reached = all(learned.values()) and any(v is not None for v in m["failure_length"].values())
    order_ok = f["copy_last"] <= f["copy_first"]
    if all(learned.values()) and not all(u.values()):
        expected = "fail"
    elif not reached:
        expected = "inconclusive"
    else:
        expected = "pass" if order_ok and all(u.values()) else "fail"
    assert r.verdict == expected
    # The reduced models learn and copy-first fails within the sweep: the premise is
    # reached, so the check judges the order (pass or fail, not inconclusive).
    assert r.premise_reached and r.verdict in ("pass", "fail")
    assert m["sweep_max"] >= 4 * recipe("copy_first", reduced=True).task.max_len
    # Independent: the cached model re-evaluated on fresh examples (another seed) agrees
    # within sampling error at the training length.
    rec = recipe("copy_last", reduced=True)
    model, info = trained_model(rec, results[1].store)  # the run's own copy
    assert info["cached"] == "memory"
    n = rec.task.max_len
    fresh = evaluate(model, rec.task, [n], 64, seed=7)[n]
    assert abs(fresh - m["accuracy"]["copy_last"][str(n)]) <= 0.35


def test_r11_inconclusive_when_no_model_fails_within_the_sweep(results, monkeypatch):
    """A sweep that stops before either copy model fails cannot order their failures."""
    monkeypatch.setitem(trained_copy.LENGTHS, "reduced", ([2, 4, 8], {16: 8}))
    r = trained_copy.run(PROFILE, results[1])
    assert r.measured["failure_length"] == {"copy_first": None, "copy_last": None}
    assert r.verdict == "inconclusive" and not r.premise_reached
    assert r.premise and "beyond n = 16" in r.to_reach_premise
    assert r.measured["parts(ok,premise_reached)"]["copy_last_fails_first"][1] is False


def test_r5_verdict_and_corollary(results):
    r = results[0]["R5"]
    m = r.measured
    models = m["models"]
    consistent = all(b["identical_n"] == b["same_answer_n"] == b["one_wrong_n"]
                     for mm in models.values() for b in mm["corollary_b10"].values())
    assert consistent == m["b10_consistent"]
    chain = models[trained_counting.CHAIN]
    identical = chain["corollary_b10"]["bfloat16"]["identical_n"]
    reached = chain["train_accuracy_float32"] >= 0.9 and len(identical) > 0
    assert r.premise_reached == reached
    expected = "pass" if consistent and m["decay_slope_float64"] < 0 else "fail"
    assert r.verdict == (expected if reached else "inconclusive")
    # The reduced NoPE counter learns and collapses within the sweep: the premise is
    # reached, the first bit-identical pair is n*, and its two answers agree.
    assert r.premise_reached and r.verdict in ("pass", "fail")
    n_star = m["n_star_bfloat16"]
    assert n_star == identical[0]
    assert n_star in chain["corollary_b10"]["bfloat16"]["same_answer_n"]
    # Independent: count_ones has one example per length, so training.train.evaluate
    # (padded batches, another code path) must reproduce the per-length correctness (every
    # fourth length, the training range and n*, at the sweep's padded width).
    lengths = m["lengths"]
    some = sorted(set(lengths[::4]) | set(range(1, 13)) | {n_star, n_star + 1, lengths[-1]})
    for name in trained_counting.MODELS:
        rec = recipe(name, reduced=True)
        model, _ = trained_model(rec, results[1].store)
        for dtype in ("float32", "bfloat16"):
            acc = evaluate(in_format(model, dtype), rec.task, some, 1)
            np.testing.assert_array_equal([acc[n] == 1.0 for n in some],
                                          np.asarray(models[name]["correct"][dtype])[
                                              np.asarray(some) - 1])
        t = models[name]["train_max"]
        assert math.isclose(models[name]["train_accuracy_float32"],
                            float(np.mean(models[name]["correct"]["float32"][:t])))
    # The state readout's bfloat16 accuracy from n* on: every bit-identical pair reads one
    # count for two lengths, so at most len(lengths from n*) - len(identical) are right.
    region = [k for k in m["accuracy_by_region"]["state_readout"]["bfloat16"]
              if k.startswith(f"{n_star}..")][0]
    from_star = len(lengths) - n_star + 1
    right = m["accuracy_by_region"]["state_readout"]["bfloat16"][region] * from_star
    assert right <= from_star - len([k for k in identical if k >= n_star]) + 1e-9


def test_r5_inconclusive_when_the_sweep_stops_before_collapse(results, monkeypatch):
    """A sweep too short for any bit-identical bfloat16 pair never exercises B.10."""
    monkeypatch.setitem(trained_counting.N_MAX, "reduced", 10)
    r = trained_counting.run(PROFILE, results[1])
    assert r.measured["n_star_bfloat16"] is None
    assert r.verdict == "inconclusive" and not r.premise_reached
    predicted = r.measured["predicted_collapse_length_bfloat16"]
    assert predicted is not None and f"{predicted:.3g}" in r.to_reach_premise
    assert "beyond n = 10" in r.to_reach_premise


def test_r12_verdict(results):
    r = results[0]["R12"]
    m = r.measured
    beyond = len(m["lengths"])  # n_max + 1
    n = np.asarray(m["lengths"][:-1])
    rel = {k: np.asarray(v) for k, v in m["relative_distance_float64"].items()}
    judged = []
    for enc, (plain, sep) in trained_mitigations.SEPARATOR_PAIRS.items():
        s = m["separators"][enc]
        col = {k: (v or beyond) for k, v in s["collapse_length_bfloat16"].items()}
        fair = s["comparison"]["content_matched_all_steps"]
        assert fair["plain"] == pytest.approx(float(np.median(rel[plain])), rel=1e-12)
        assert fair["separators"] == pytest.approx(float(np.median(rel[sep])), rel=1e-12)
        acc = m["train_accuracy_float32"]
        reached = (m["collapse_length_bfloat16"][plain] is not None
                   and acc[plain] >= 0.9 and acc[sep] >= 0.9)
        assert s["premise_reached"] == reached
        ok = col["separators"] >= col["plain"] and fair["separators"] >= fair["plain"]
        assert s["ok"] == ok
        if reached:
            judged.append(ok)
    n_rf = m["window_receptive_start"]
    assert n_rf == 2 * (4 - 1)  # 2 layers, window 4
    far = n >= n_rf
    window_equal = bool(np.all(rel["count_ones_window4"][far] <= 1e-9))
    correct_far = int(np.asarray(m["correct"]["count_ones_window4"]["float32"])[:-1][far].sum())
    apart = bool(np.all(rel["count_ones"][far & (n <= m["train_max"]["count_ones"])] > 1e-9))
    window_ok = window_equal and correct_far <= 1 and apart
    if (judged and not all(judged)) or not window_ok:
        assert r.verdict == "fail"
    else:
        assert r.verdict == ("pass" if judged else "inconclusive")
    # The reduced NoPE counter collapses within the sweep: (a) is judged there.
    assert m["separators_judged_for"] == ["NoPE"] and r.verdict in ("pass", "fail")
    # The window's exact collapse is structural: it must hold whatever training did.
    assert window_equal


def test_r12_inconclusive_without_a_collapsing_plain_counter(results, monkeypatch):
    """Judged on RoPE counters alone, whose plain pair never collapses, separators have no
    collapse to delay: (a) is not reached and the check is inconclusive, not fail."""
    monkeypatch.setattr(trained_mitigations, "SEPARATOR_PAIRS",
                        {"RoPE": trained_mitigations.SEPARATOR_PAIRS["RoPE"]})
    r = trained_mitigations.run(PROFILE, results[1])
    assert r.measured["collapse_length_bfloat16"]["count_ones"] is None
    assert r.measured["separators_judged_for"] == []
    assert r.verdict == "inconclusive" and not r.premise_reached and r.to_reach_premise


def test_separator_comparison_matches_the_token_layout():
    """Length matching pairs each one-token step of the separated run with the plain pair
    of as many tokens before the query, counted here on the generated sequences."""
    every, n_max = 4, 40
    task = TaskSpec("count_ones", 1, n_max, sep_every=every)
    n = np.arange(1, n_max + 1)
    rng = np.random.default_rng(0)
    rel_plain, rel_sep = rng.uniform(size=n_max), rng.uniform(size=n_max)
    got = trained_mitigations.separator_comparison(n, rel_plain, rel_sep, task, every)
    tokens = []
    for k in n:
        batch = make_batch(task.at_length(int(k)), 0, 1)
        tokens.append(int(batch.query_pos[0]) - 1)  # tokens strictly between BOS and '?'
        assert (batch.tokens[0, 1 : batch.query_pos[0]] == SEP).sum() == (k - 1) // every
    tokens = np.asarray(tokens)
    one = [k for k in n if k % every and tokens[k - 1] <= n_max]
    # a one-token step adds exactly one token; a two-token step two
    assert all(tokens[k] - tokens[k - 1] == 1 for k in one if k < n_max)
    lm = got["length_matched_one_token_steps"]
    assert lm["pairs"] == len(one)
    assert lm["separators"] == pytest.approx(np.median([rel_sep[k - 1] for k in one]))
    assert lm["plain"] == pytest.approx(np.median([rel_plain[tokens[k - 1] - 1] for k in one]))
    two = got["content_matched_two_token_steps"]
    assert two["pairs"] == n_max // every
    assert two["ratio"] == pytest.approx(np.median(rel_sep[every - 1 :: every])
                                         / np.median(rel_plain[every - 1 :: every]))


def test_nearest_state_count_reads_identical_states_alike():
    """Readout by the nearest reference state: exact on the reference itself, identical on
    identical states (one of the two then wrong), nearest on rounded ones."""
    ref = np.array([[0.0], [1.0], [1.5], [1.75]])
    low = np.array([[0.0], [1.1], [1.7], [1.7]])  # rows 2 and 3 bit-identical
    qs = QueryStates(lengths=(1, 2, 3, 4), dtypes=("float64", "bfloat16"),
                     y=np.stack([ref, low]), answer=np.zeros((2, 4), np.int64),
                     target=np.arange(4))
    np.testing.assert_array_equal(nearest_state_count(qs, "float64"), [1, 2, 3, 4])
    np.testing.assert_array_equal(nearest_state_count(qs, "bfloat16"), [1, 2, 4, 4])


def test_combined_parts():
    assert combined({"a": (True, True), "b": (True, True)}) == (True, True)
    assert combined({"a": (True, True), "b": (True, False)}) == (True, False)
    # a reached, failed part is never hidden by an unreached one
    assert combined({"a": (False, True), "b": (True, False)}) == (False, True)
    assert combined({"a": (False, False), "b": (True, True)}) == (True, False)
    with pytest.raises(ValueError, match="at least one part"):
        combined({})


def test_query_states_bit_identity_implies_same_answer(results):
    """Corollary B.10 in its sharpest form, on a model whose window makes pairs equal up to
    rounding: wherever y(n) == y(n+1) bit for bit, the argmax answers agree."""
    rec = recipe("count_ones_window4", reduced=True)
    model, _ = trained_model(rec, results[1].store)
    qs = query_states(model, rec.task, range(1, 30), ("float64", "bfloat16"))
    assert qs.y.shape == (2, 29, model.config.d_model)
    np.testing.assert_array_equal(qs.target, COUNT_0 + np.arange(1, 30))
    for d in range(2):
        same = np.all(qs.y[d, :-1] == qs.y[d, 1:], axis=-1)
        assert np.all(qs.answer[d, :-1][same] == qs.answer[d, 1:][same])
    # float64 state vs bfloat16 state of the same sequence: rounding, not content.
    rel = np.abs(qs.y[1] - qs.y[0]).max() / np.abs(qs.y[0]).max()
    assert 0 < rel < 0.2


def test_bad_inputs_raise(results):
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe("copy_middle")
    with pytest.raises(ValueError, match="seed"):
        recipe("copy_first", seed=-1)
    assert set(RECIPES) >= {"copy_first", "copy_last", "count_ones"}
    rec = recipe("count_ones", reduced=True)
    model, _ = trained_model(rec, results[1].store)
    with pytest.raises(ValueError, match="lengths is empty"):
        query_states(model, rec.task, [])
    with pytest.raises(ValueError, match="TaskSpec"):
        query_states(model, "count_ones", [1, 2])
    with pytest.raises(ValueError, match="consecutive"):
        query_states(model, TaskSpec("count_ones", 1, 4), [1, 3, 4]).counting_sweep()
