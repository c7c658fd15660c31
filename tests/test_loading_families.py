"""The families issue 22 added (Llama 3's rope scaling, Mistral, Qwen3, Phi-3, Phi-2,
OLMo-2, GPT-NeoX, StableLM, Granite, SmolLM3) load from `save_pretrained` directories of
tiny random transformers models (2 layers, norms and biases randomised, windows shorter
than the sequence) and reproduce transformers: logits to 1e-4 in float32 on 33 tokens, 20
greedy tokens through our KV cache against transformers' full recomputation, and the
last-token Jacobian (the analysis path) against torch.func.jacrev of the transformers
model. Turning each family's new switch off breaks the agreement, so a loader that ignored
it would fail here; transformers 4.x configs (rope fields at the top level) give the same
decoder config as 5.x ones; MoE and unimplemented rope scalings are refused by name."""

from __future__ import annotations

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from analysis import last_token_jacobian
from tests.hf_families import JACOBIAN_VARIANTS, SWITCHES_OFF, family_configs, old_style
from tests.helpers import greedy_one_step_at_a_time
from tests.hf_tiny import VOCAB, tiny_hf_model
from transformer import Decoder
from transformer.loading import ARCHITECTURES, load_pretrained

SEQ = 33  # >= 32 tokens, longer than the windows (5)
CONFIGS = family_configs()
PARALLEL_STABLELM = CONFIGS.pop("stablelm_parallel")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """transformers on one thread: its tiny forwards spin idle threads otherwise (measured:
    20 greedy steps 5 CPU-s with the default threads, 0.12 with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=list(CONFIGS))
def family(request, tmp_path_factory):
    """(variant, HF model, checkpoint dir, our model)."""
    name = request.param
    hf = tiny_hf_model(name, config=CONFIGS[name])
    path = tmp_path_factory.mktemp(name)
    hf.save_pretrained(path)
    model, _ = load_pretrained(path)
    return name, hf, path, model


def _ids(seed=0, shape=(2, SEQ)):
    return np.random.default_rng(seed).integers(0, VOCAB, size=shape)


def _hf_logits(hf, ids):
    with torch.no_grad():
        return hf(torch.as_tensor(ids)).logits.numpy()


def _ours(model, ids):
    return np.asarray(model(jnp.asarray(ids, dtype=jnp.int32)))


def _switched_off(model: Decoder, switches: dict, copy: dict) -> Decoder:
    """The model's weights under a config with `switches`; a norm the new placement needs
    takes the weights of the one named in `copy`; parameters it lacks are dropped."""
    target = nnx.eval_shape(lambda: Decoder(model.config.replace(**switches), rngs=nnx.Rngs(0)))
    have = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    new = []
    for path, var in nnx.to_flat_state(nnx.state(target, nnx.Param)):
        source = tuple(copy.get(part, part) if isinstance(part, str) else part for part in path)
        new.append((path, var.replace(have[path if path in have else source].get_value())))
    nnx.update(target, nnx.from_flat_state(new))
    return target


def test_logits_match_transformers(family):
    name, hf, _, model = family
    ids = _ids()
    ref, ours = _hf_logits(hf, ids), _ours(model, ids)
    assert ours.shape == ref.shape == (2, SEQ, VOCAB)
    assert np.std(ref) > 0.1, "degenerate reference logits would hide mistakes"
    assert np.abs(ours - ref).max() < 1e-4, name
    for switches, copy in SWITCHES_OFF[name]:
        off = _ours(_switched_off(model, switches, copy), ids)
        assert np.abs(off - ref).max() > 1e-3, f"{name}: {switches} changed nothing"


def test_greedy_matches_transformers(family):
    """20 greedy tokens: ours decodes with the KV cache, transformers recomputes."""
    _, hf, _, model = family
    prompt = _ids(seed=1, shape=(7,))
    ours = np.asarray(greedy_one_step_at_a_time(model, [int(t) for t in prompt], 20))
    seq = torch.as_tensor(prompt)[None]
    with torch.no_grad():
        for _ in range(20):
            seq = torch.cat([seq, hf(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    np.testing.assert_array_equal(ours, seq[0, len(prompt):].numpy())


def test_old_style_config_gives_the_same_decoder(family):
    """transformers 4.x writes rope_theta / rope_scaling / partial_rotary_factor (GPT-NeoX:
    rotary_emb_base / rotary_pct) at the top level; the decoder config is the same."""
    name, hf, path, model = family
    new = json.loads((path / "config.json").read_text())
    old = old_style(new)
    assert "rope_parameters" not in old
    assert ARCHITECTURES[old["model_type"]].to_config(old) == model.config, name


def test_old_style_directory_loads(family, tmp_path):
    name, hf, path, model = family
    if name != "llama3":  # one end-to-end load is enough: the rest is the config above
        return
    shutil.copytree(path, tmp_path / "old")
    config = json.loads((path / "config.json").read_text())
    (tmp_path / "old" / "config.json").write_text(json.dumps(old_style(config)))
    assert json.loads((tmp_path / "old" / "config.json").read_text())["rope_scaling"][
        "rope_type"] == "llama3"
    old, _ = load_pretrained(tmp_path / "old")
    assert old.config == model.config


@pytest.mark.parametrize("name", JACOBIAN_VARIANTS)
def test_last_token_jacobian_matches_torch_jacrev(name, request):
    """analysis.last_token_jacobian (last layer on the last query through the KV-context
    path) against torch.func.jacrev of transformers' final-normed last state, both with
    respect to v^(0) (Granite: transformers multiplies its input embeddings by 3)."""
    _, hf, _, model = _family_for(name, request)
    n = 12
    tokens = _ids(seed=3, shape=(n,))
    v0 = model.embed(jnp.asarray(tokens, dtype=jnp.int32))
    ours = np.asarray(last_token_jacobian(model, v0))  # [m, n, m]
    scale = model.config.embedding_scale or 1.0

    def last_state(x):
        return hf.base_model(inputs_embeds=x[None] / scale).last_hidden_state[0, -1]

    theirs = torch.func.jacrev(last_state)(torch.as_tensor(np.asarray(v0))).detach().numpy()
    assert theirs.shape == ours.shape
    assert np.abs(theirs).max() > 1e-2
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())


_LOADED: dict = {}


def _family_for(name, request):
    """The family fixture's model for one variant (built again only when that variant's
    fixture is not the current one)."""
    if name not in _LOADED:
        hf = tiny_hf_model(name, config=CONFIGS[name])
        path = request.getfixturevalue("tmp_path")
        hf.save_pretrained(path)
        _LOADED.clear()
        _LOADED[name] = (name, hf, path, load_pretrained(path)[0])
    return _LOADED[name]


# ---- refusals name what is unsupported ---------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(model_type="mixtral", num_local_experts=8), "mixture-of-experts.*out of scope"),
        (dict(model_type="qwen3_moe"), "'qwen3_moe' is a mixture-of-experts"),
        (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}),
         "'yarn'.*YaRN scaling is not implemented"),
        (dict(rope_parameters={"rope_type": "dynamic", "factor": 4.0, "rope_theta": 1e4}),
         "dynamic NTK scaling is not implemented"),
        (dict(rope_parameters={"rope_type": "longrope", "rope_theta": 1e4}), "LongRoPE"),
        (dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "rope_theta": 1e4}),
         "llama3' without.*low_freq_factor"),
    ],
)
def test_unsupported_configs_are_refused_by_name(tmp_path, change, message):
    hf = tiny_hf_model("llama3", config=CONFIGS["llama3"])
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(change)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        load_pretrained(tmp_path)


def test_parallel_stablelm_loads_with_one_input_norm(tmp_path):
    """StableLM with use_parallel_residual (no post_attention_layernorm in the checkpoint):
    the parallel block on one shared input norm, every tensor used (its forward is the
    Phi-2 block tested against transformers above)."""
    hf = tiny_hf_model("stablelm", config=PARALLEL_STABLELM)
    hf.save_pretrained(tmp_path)
    model, _ = load_pretrained(tmp_path)
    c = model.config
    assert c.parallel_residual and c.norm_placement == "shared_pre" and c.rope_fraction == 0.25
    assert model.blocks[0].mlp_norm is None


@pytest.mark.parametrize("model_type", ["phi", "stablelm"])
def test_qk_layernorm_is_refused(model_type):
    config = CONFIGS[model_type].to_dict()
    config["qk_layernorm"] = True
    with pytest.raises(ValueError, match="unsupported setting qk_layernorm=True"):
        ARCHITECTURES[model_type].to_config(config)


# ---- the llm profile on a tiny checkpoint of each family ----------------------------------


def test_llm_profile_runs_on_every_family(tmp_path):
    """`python -m theory_checks --profile llm --model DIR ...` (in-process, reduced sizes)
    loads a tiny checkpoint of every family and writes one R12b result per model: the
    windowed Mistral runs the whole check (sweeps in three formats, sensitivity past its
    window), the others are reported as not applying (no windows). The other llm checks
    cost about 25 CPU-seconds per model each and are run on a tiny Llama in
    tests/test_llm_checks.py."""
    from theory_checks.__main__ import main

    names = [name for name in CONFIGS if name not in ("qwen3", "phi3")]  # one windowed
    args = ["--profile", "llm"]
    for name in names:
        config = CONFIGS[name].__class__(**{**CONFIGS[name].to_dict(),
                                            "max_position_embeddings": 512})
        path = tmp_path / f"tiny-{name}"
        tiny_hf_model(name, config=config).save_pretrained(path)
        args += ["--model", str(path)]
    out = tmp_path / "report"
    code = main([*args, "--only", "R12b", "--out", str(out), "--no-progress"], reduced=True)
    results = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in results] == [f"tiny-{name}" for name in names]
    assert code == (1 if any(r["verdict"] == "fail" for r in results) else 0)
    for r in results:
        windowed = r["model"] == "tiny-mistral"
        assert r["premise_reached"] == windowed, r["model"]
        if windowed:
            assert r["measured"]["window"] == 5 and r["measured"]["lengths_past_window"] >= 3
