"""S1, the real-model over-squashing study, on a tiny Hugging Face Llama checkpoint (reduced
sizes): prompts of exactly n tokens, the verdict recomputed from the measured numbers, the
estimate against the exact profile, the rank correlations recomputed with scipy."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import torch
import transformers

from analysis.sensitivity import sensitivity_profile
from theory_checks import llm as L
from theory_checks.studies import oversquashing as S
from theory_checks.context import Profile, RunContext
from theory_checks.runner import run_check

N = S.sizes_for("cpu", reduced=True).lengths[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = transformers.LlamaConfig(
        vocab_size=160, hidden_size=32, intermediate_size=48, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, num_hidden_layers=2, max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_llama")
    transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def result(checkpoint, tmp_path_factory):
    ctx = RunContext(figure_dir=tmp_path_factory.mktemp("s1") / "figures", seed=0,
                     reduced=True, model_path=checkpoint)
    return run_check("S1", Profile("llm-long"), ctx), ctx


def test_prompts_have_exactly_n_tokens(checkpoint):
    llm = L.load_llm(checkpoint)
    for kind in S.KINDS:
        ids, (b0, b1) = S.study_prompt(llm, kind, N, seed=0)
        assert len(ids) == N and 0 < b0 < b1 <= N
    ids, (b0, b1) = S.study_prompt(llm, "ones", N, seed=0)
    assert set(ids[b0:b1]) == {llm.single_id("1")}
    with pytest.raises(ValueError, match="body tokens"):
        S.study_prompt(llm, "passage", len(llm.encode(S.PREFIXES["passage"])) + 2, seed=0)
    with pytest.raises(ValueError, match="kind"):
        S.study_prompt(llm, "poem", N, seed=0)


def test_study_result(result, checkpoint):
    r, ctx = result
    assert r.id == "S1" and r.verdict in ("pass", "fail", "inconclusive")
    assert r.figures and (ctx.figure_dir.parent / r.figures[0]).stat().st_size > 1000
    json.dumps(r.to_json())
    (model,) = r.measured["models"].values()
    assert r.model == L.load_llm(checkpoint).name == next(iter(r.measured["models"]))
    llm = L.load_llm(checkpoint)
    finals = []
    for kind in S.KINDS:
        rec = model["kinds"][kind][str(N)]
        assert rec["method"] == S.method_for(rec["products"])
        est = np.asarray(rec["profile"]["estimate"])
        se = np.asarray(rec["profile"]["stderr"])
        mid, mid_se = np.median(est[N // 4 : 3 * N // 4]), np.median(se[N // 4 : 3 * N // 4])
        u = rec["u_shape"]
        assert u["first_over_middle"] == pytest.approx(est[0] / mid)
        assert u["u_shaped"] == bool(est[0] - 2 * se[0] > mid + 2 * mid_se
                                     and est[-1] - 2 * se[-1] > mid + 2 * mid_se)
        # Rank correlations, recomputed independently.
        lp = np.asarray(rec["profile"]["log_path"])
        assert rec["paths"]["spearman_path"] == pytest.approx(
            scipy.stats.spearmanr(est, lp).statistic, abs=1e-9)
        assert len(rec["sinks"]["sink_mass"]) == 2  # one per layer
        # The estimate against the exact profile of the same prompt (d_model VJPs).
        ids, _ = S.study_prompt(llm, kind, N, seed=0)
        exact = np.asarray(sensitivity_profile(llm.model, jnp.asarray(ids, jnp.int32))) ** 2
        assert np.mean(np.abs(est - exact) <= 3 * se) > 0.7
        finals.append(u)
    assert [S.method_for(k) for k in (12, 47, 48, 96)] == ["hutchinson"] * 2 + ["xtrace"] * 2
    premise = all(u["middle_rel_error"] < S.RESOLVED for u in finals)
    ok = all(u["u_shaped"] for u in finals)
    assert r.verdict == ("inconclusive" if not premise else "pass" if ok else "fail")
    assert premise and r.verdict in ("pass", "fail")  # this checkpoint reaches the premise


def test_readme_table_quotes_the_recorded_run():
    """The README's S1 table (n = 2048) against docs/s1_snapshot.json, the recorded run's
    numbers (`theory_checks.studies.oversquashing.snapshot` of its results.json)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    snap = json.loads((root / "docs" / "s1_snapshot.json").read_text())["models"]
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## Over-squashing measured in real models"):]
    names = {"SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct.Q4_1.gguf",
             "Gemma 3 270M": "gemma-3-270m-q4_k_m.gguf"}
    for label, name in names.items():
        row = re.search(rf"^\| {re.escape(label)} \| (.*) \|$", section, re.MULTILINE)
        assert row, f"no README row for {label}"
        cells = [c.strip() for c in row.group(1).split("|")]
        for kind, cell in zip(S.KINDS, cells[:3]):
            u = snap[name][kind]["2048"]["u_shape"]
            first, last = (float(x) for x in cell.split(" / "))
            assert first == pytest.approx(u["first_over_middle"], rel=0.03), (label, kind)
            assert last == pytest.approx(u["last_over_middle"], rel=0.03), (label, kind)
        rhos = [float(x) for x in cells[3].split(" / ")]
        assert rhos == pytest.approx(
            [snap[name][k]["2048"]["paths"]["spearman_path"] for k in S.KINDS], abs=0.006)
        assert all(snap[name][k]["2048"]["u_shape"]["u_shaped"] for k in S.KINDS)


def test_inconclusive_when_the_estimator_does_not_resolve_the_middle(checkpoint, tmp_path,
                                                                     monkeypatch):
    """A premise built not to be reached (a resolution no estimate meets): inconclusive, with
    what would reach it; never pass or fail."""
    monkeypatch.setattr(S, "RESOLVED", 1e-12)
    ctx = RunContext(figure_dir=tmp_path / "figures", seed=0, reduced=True,
                     model_path=checkpoint)
    r = run_check("S1", Profile("llm-long"), ctx)
    assert not r.premise_reached and r.verdict == "inconclusive"
    assert "budget" in r.to_reach_premise


def test_time_left_of_the_remaining_prompts():
    """S1's progress line: a length already measured takes its mean time, another scales
    the mean time per products x n^2; nothing done yet: unknown."""
    done = [(512, 24, 30.0), (2048, 12, 240.0), (512, 24, 20.0)]
    assert S.time_left(done, [(512, 24), (2048, 12)]) == pytest.approx(25.0 + 240.0)
    unit = np.mean([30 / (24 * 512**2), 240 / (12 * 2048**2), 20 / (24 * 512**2)])
    assert S.time_left(done, [(1024, 6)]) == pytest.approx(unit * 6 * 1024**2)
    assert np.isnan(S.time_left([], [(512, 24)]))
