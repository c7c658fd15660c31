"""The `llm` profile's checks (R4, R5, R6, R11, R12) on the bundled SmolLM2-135M-Instruct at
reduced size: well-formed results, verdicts recomputed from the measured numbers, one
number per check recomputed independently (plain full forwards, the tokenizer itself,
`greedy_generate`, hand-written VJPs), and `--model` on a tiny Hugging Face Llama."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from theory_checks import llm as L
from theory_checks.context import Profile, RunContext
from theory_checks.runner import run_check

LLM_PROFILE = Profile("llm")
FIELDS = ("id", "title", "paper_ref", "claim", "criterion", "setup", "key_number")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return RunContext(figure_dir=tmp_path_factory.mktemp("llm") / "figures", seed=0, reduced=True)


@pytest.fixture(scope="module")
def llm():
    return L.load_llm()


@pytest.fixture(scope="module")
def results(ctx):
    return {cid: run_check(cid, LLM_PROFILE, ctx) for cid in ("R4", "R5", "R6", "R11", "R12")}


def _well_formed(r, ctx):
    for field in FIELDS:
        assert getattr(r, field), field
    assert r.verdict in ("pass", "fail")
    assert r.figures and r.runtime_s > 0 and r.device
    for fig in r.figures:
        assert (ctx.figure_dir.parent / fig).stat().st_size > 1000
    json.dumps(r.to_json())  # serialisable


def _greedy_reference(model, prompt: list[int], n_new: int) -> list[int]:
    """Greedy decoding one token at a time through the cache (the prompt too): one compiled
    batch-1 step, independent of the chunked, batched `greedy_batch`."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, token, cache):
        out, cache = nnx.merge(graphdef, state).decode(token[None, None], cache)
        return jnp.argmax(out.logits[0, -1]).astype(jnp.int32), cache

    cache = model.init_cache(1, 256)
    for token in prompt:
        nxt, cache = step(state, jnp.int32(token), cache)
    out = [int(nxt)]
    while len(out) < n_new:
        nxt, cache = step(state, nxt, cache)
        out.append(int(nxt))
    return out


def _pair_distance(model, a: list[int], b: list[int]) -> float:
    """||y_a - y_b||_inf at the two sequences' last tokens, from one plain full forward of
    both (no cache, no branching; a is right-padded, which the causal mask makes exact)."""
    tokens = jnp.asarray([a + [a[-1]] * (len(b) - len(a)), b], jnp.int32)
    _, inter = model(tokens, capture=True)
    y = np.asarray(inter.y, np.float64)  # [2, n, m]
    return float(np.abs(y[0, len(a) - 1] - y[1, len(b) - 1]).max())


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
    m = r.measured
    assert r.verdict == (
        "pass" if m["ones_slope_float32"] < 0 and m["digits_slope_float32"] < 0 else "fail"
    )
    # One distance recomputed by two plain float32 forwards of the pair's token ids.
    n = 20
    prompt = llm.encode(L.COUNT_PREFIX)
    one = llm.single_id("1")
    got = _pair_distance(llm.model, prompt + [one] * n, prompt + [one] * (n + 1))
    assert got == pytest.approx(m["ones_linf_float32"][n - 1], rel=1e-3, abs=1e-4)


def test_r6_precision(ctx, results):
    r = results["R6"]
    _well_formed(r, ctx)
    m = r.measured
    never = m["n_max"] + 1
    rank = {d: m[f"{d}_collapse_length"] or never for d in ("float32", "bfloat16")}
    assert r.verdict == ("pass" if rank["bfloat16"] < rank["float32"] else "fail")
    # float32 rounds like float64 up to a tiny floor; bfloat16 (weights cast) far above it.
    assert m["float32_noise_floor"] < 1e-3 * m["state_scale_linf"]
    assert m["bfloat16_noise_floor"] > 100 * m["float32_noise_floor"]


def test_r12_commas(llm, ctx, results):
    r = results["R12"]
    _well_formed(r, ctx)
    m = r.measured
    assert r.verdict == ("pass" if m["median_ratio_commas_over_plain"] > 1 else "fail")
    assert m["median_ratio_commas_over_plain"] == pytest.approx(
        m["median_tail_commas_float32"] / m["median_tail_plain_float32"]
    )
    # The comma pair at n = 4 ("111,1" vs "111,11") by two plain float32 forwards.
    prompt = llm.encode(L.COPY_PREFIX)
    one, comma = llm.single_id("1"), llm.single_id(",")
    got = _pair_distance(
        llm.model, prompt + [one] * 3 + [comma, one], prompt + [one] * 3 + [comma, one, one]
    )
    sweep = L.shared_sweep(
        llm,
        L.ones_family(llm, L.COPY_PREFIX, commas=True),
        list(range(1, L.collapse_n_max(True) + 1)),
        ("float32", "bfloat16"),
    )
    assert got == pytest.approx(sweep.linf[0, 3, -1], rel=1e-3, abs=1e-4)


def test_r5_tasks(llm, ctx, results):
    from theory_checks.checks.llm_tasks import parse_answer

    r = results["R5"]
    _well_formed(r, ctx)
    m = r.measured
    lengths = m["lengths"]
    half = len(lengths) // 2
    count = np.asarray(m["accuracy_count_ones"])
    assert r.verdict == ("pass" if count[:half].mean() > count[-half:].mean() else "fail")
    # Accuracy recomputed from the recorded answers.
    for rec in m["outputs"]:
        assert rec["correct"] == (parse_answer(rec["task"], rec["output"]) == rec["expected"])
    # The shortest and the longest prompt regenerated independently, one token at a time
    # (greedy_batch ran them in different batches, prefilled in padded chunks).
    from theory_checks.checks.llm_tasks import N_NEW, task_prompts

    prompts = task_prompts(llm, lengths)
    by_len = sorted(range(len(prompts)), key=lambda i: len(prompts[i]["ids"]))
    for k in (by_len[0], by_len[-1]):
        again = _greedy_reference(llm.model, prompts[k]["ids"], N_NEW)
        key = (prompts[k]["task"], prompts[k]["n"], prompts[k]["phrasing"])
        rec = next(o for o in m["outputs"] if (o["task"], o["n"], o["phrasing"]) == key)
        assert llm.decode(again) == rec["output"]


def test_parse_answer():
    from theory_checks.checks.llm_tasks import parse_answer

    assert parse_answer("count_ones", " 12 ones") == "12"
    assert parse_answer("copy_last", " 10.") == "1"
    assert parse_answer("copy_first", " none") is None


def test_r11_sensitivity(llm, ctx, results):
    from theory_checks.checks.llm_sensitivity import Z, sensitivity_prompt

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


def test_bad_inputs(llm, tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        L.load_llm(tmp_path / "missing")
    with pytest.raises(ValueError, match="non-empty"):
        L.greedy_batch(llm.model, [[1, 2], []], 2)
    with pytest.raises(ValueError, match="n_new"):
        L.greedy_batch(llm.model, [[1, 2]], 0)
    with pytest.raises(ValueError, match="not a single token"):
        llm.single_id("Hello world")
    with pytest.raises(ValueError, match="vocab_size"):
        L.ByteTokenizer(1)


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


def test_model_option_runs_a_tiny_checkpoint(tmp_path):
    from theory_checks.__main__ import main

    ckpt = _tiny_llama_dir(tmp_path / "tiny")
    out = tmp_path / "report"
    code = main(
        [
            "--profile",
            "llm",
            "--model",
            str(ckpt),
            "--only",
            "R4",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    results = {r["id"]: r for r in json.loads((out / "results.json").read_text())}
    assert set(results) == {"R4"}
    assert "ByteTokenizer" in results["R4"]["setup"] and "tiny" in results["R4"]["setup"]
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
