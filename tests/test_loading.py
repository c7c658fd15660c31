"""`transformer.loading`: checkpoints load into the decoder and reproduce Hugging Face.

Every architecture is cross-checked against `transformers` on a tiny random model built
offline from a config (norms and biases randomised): logits to 1e-4 in float32 and 20
greedy tokens (our KV-cached decode against HF full recomputation). The sensitivity tests
show the comparison can fail: flipping one switch the converter set breaks agreement.
"""

from __future__ import annotations

import copy
import json
import shutil

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import torch
from flax import nnx

from tests.hf_tiny import VOCAB, WINDOW, hf_configs, tiny_hf_model
from transformer import Decoder, greedy_generate
from transformer.loading import load_pretrained, read_safetensors

ARCHS = list(hf_configs())
SEQ = 24  # longer than WINDOW, so sliding layers differ from global ones


@pytest.fixture(scope="module", params=ARCHS)
def loaded(request, tmp_path_factory):
    """(name, HF model, checkpoint dir, our model) per architecture variant."""
    name = request.param
    hf = tiny_hf_model(name)
    path = tmp_path_factory.mktemp(name)
    hf.save_pretrained(path)
    model, tokenizer = load_pretrained(path)
    assert tokenizer is None  # no tokenizer.json saved
    return name, hf, path, model


def _tokens(seed=0, shape=(2, SEQ)):
    return np.random.default_rng(seed).integers(0, VOCAB, size=shape)


def _hf_logits(hf, ids) -> np.ndarray:
    with torch.no_grad():
        return hf(torch.as_tensor(ids)).logits.numpy()


def _ours(model, ids) -> np.ndarray:
    return np.asarray(model(jnp.asarray(ids, dtype=jnp.int32)))


def _rebuild(model: Decoder, **switches) -> Decoder:
    """The same parameters under a config with some switches changed."""
    target = nnx.eval_shape(lambda: Decoder(model.config.replace(**switches), rngs=nnx.Rngs(0)))
    nnx.update(target, nnx.state(model, nnx.Param))
    return target


def test_logits_match_transformers(loaded):
    _name, hf, _, model = loaded
    ids = _tokens()
    ref, ours = _hf_logits(hf, ids), _ours(model, ids)
    assert ours.shape == ref.shape == (2, SEQ, VOCAB)
    assert np.std(ref) > 0.1, "degenerate reference logits would hide mistakes"
    np.testing.assert_array_less(np.abs(ours - ref).max(), 1e-4)


def test_greedy_matches_transformers(loaded):
    """20 greedy tokens: ours decodes with the KV cache, HF recomputes the whole sequence."""
    _name, hf, _, model = loaded
    prompt = _tokens(seed=1, shape=(7,))
    ours = np.asarray(greedy_generate(model, jnp.asarray(prompt, dtype=jnp.int32), 20))
    seq = torch.as_tensor(prompt)[None]
    with torch.no_grad():
        for _ in range(20):
            nxt = hf(seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    np.testing.assert_array_equal(ours, seq[0, len(prompt) :].numpy())


# Switches each converter must get right; flipping one must break agreement with HF.
SENSITIVE = {
    "gpt2": dict(query_scale=1.0, norm_eps=1e-2),
    "llama": dict(rope_theta=10_000.0),
    "llama_bias_linear_rope": dict(rope_linear_factor=1.0),
    "qwen2": dict(window=None),
    "gemma": dict(rmsnorm_unit_offset=False),
    "gemma2": dict(window=None, attn_logit_softcap=None, query_scale=None),
    "gemma3": dict(rope_theta_local=None, rope_linear_factor=1.0, window=None),
}


def test_converted_switches_matter(loaded):
    name, hf, _, model = loaded
    ids = _tokens(seed=2)
    ref = _hf_logits(hf, ids)
    for field, value in SENSITIVE[name].items():
        flipped = _ours(_rebuild(model, **{field: value}), ids)
        assert np.abs(flipped - ref).max() > 1e-3, f"{name}: {field}={value} changed nothing"


def test_config_mapping():
    """The per-layer switches the converters derive (HF's W: keys with q - k < W)."""
    from transformer.loading import ARCHITECTURES

    def convert(name):
        d = hf_configs()[name].to_dict()
        return ARCHITECTURES[d["model_type"]].to_config(d)

    assert convert("gemma2").window == (WINDOW, None)
    g3 = convert("gemma3")
    assert g3.window == (WINDOW, None, WINDOW)
    assert (g3.rope_theta, g3.rope_theta_local, g3.rope_linear_factor) == (5000.0, 100.0, 4.0)
    assert g3.qk_norm and g3.norm_placement == "sandwich" and g3.query_scale == 24**-0.5
    assert convert("qwen2").window == (None, WINDOW, WINDOW)
    assert convert("gemma").embedding_scale == 8.0
    assert convert("llama").tie_embeddings is False


# ---- checkpoint formats -----------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    hf = tiny_hf_model("llama")
    path = tmp_path_factory.mktemp("llama_single")
    hf.save_pretrained(path)
    return hf, path


def test_reader_matches_safetensors_library(llama_dir):
    _, path = llama_dir
    ours = read_safetensors(path / "model.safetensors")
    ref = safetensors.numpy.load_file(path / "model.safetensors")
    assert sorted(ours) == sorted(ref)
    for key in ref:
        np.testing.assert_array_equal(ours[key], ref[key])


def test_sharded_checkpoint(llama_dir, tmp_path):
    hf, single = llama_dir
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 2
    ids = _tokens(seed=3)
    sharded, _ = load_pretrained(tmp_path)
    whole, _ = load_pretrained(single)
    np.testing.assert_array_equal(_ours(sharded, ids), _ours(whole, ids))


def test_bfloat16_checkpoint(tmp_path):
    """A bf16 checkpoint loads exactly: HF reference = float32 model with bf16-rounded weights
    (casting the HF model itself would also round its rotary buffers)."""
    hf = tiny_hf_model("gemma")
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    copy.deepcopy(hf).to(torch.bfloat16).save_pretrained(tmp_path)
    stored = read_safetensors(tmp_path / "model.safetensors")["model.embed_tokens.weight"]
    assert stored.dtype == ml_dtypes.bfloat16
    model, _ = load_pretrained(tmp_path, dtype="float32")
    ids = _tokens(seed=4)
    np.testing.assert_array_less(np.abs(_ours(model, ids) - _hf_logits(hf, ids)).max(), 1e-4)


def test_tokenizer_json(llama_dir, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    _, path = llama_dir
    shutil.copytree(path, tmp_path / "ckpt")
    vocab = {w: i for i, w in enumerate(["[UNK]", "the", "cat", "sat"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "ckpt" / "tokenizer.json"))
    _, loaded_tok = load_pretrained(tmp_path / "ckpt")
    assert loaded_tok.encode("the cat sat dog").ids == [1, 2, 3, 0]


# ---- bad checkpoints: clear errors naming the problem --------------------------------------


def _rewrite(src, dst, edit) -> None:
    """Copy a single-file checkpoint, editing its tensor dict."""
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    tensors = dict(safetensors.numpy.load_file(src / "model.safetensors"))
    edit(tensors)
    safetensors.numpy.save_file(tensors, dst / "model.safetensors")


def test_missing_tensor(llama_dir, tmp_path):
    name = "model.layers.1.mlp.up_proj.weight"
    _rewrite(llama_dir[1], tmp_path / "c", lambda t: t.pop(name))
    with pytest.raises(ValueError, match=f"missing tensors.*{name}"):
        load_pretrained(tmp_path / "c")


def test_wrong_shape(llama_dir, tmp_path):
    name = "model.layers.0.self_attn.k_proj.weight"
    _rewrite(llama_dir[1], tmp_path / "c", lambda t: t.update({name: t[name][:-1]}))
    with pytest.raises(
        ValueError, match=f"mis-shaped.*{name}.*\\[31, 64\\], expected \\[32, 64\\]"
    ):
        load_pretrained(tmp_path / "c")


def test_extra_tensor(llama_dir, tmp_path):
    name = "model.layers.0.self_attn.rotary.extra"
    _rewrite(llama_dir[1], tmp_path / "c", lambda t: t.update({name: np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match=f"unexpected tensors.*{name}"):
        load_pretrained(tmp_path / "c")


def test_untied_head_required(llama_dir, tmp_path):
    _rewrite(llama_dir[1], tmp_path / "c", lambda t: t.pop("lm_head.weight"))
    with pytest.raises(ValueError, match="missing tensors.*lm_head.weight"):
        load_pretrained(tmp_path / "c")


def test_tied_head_must_equal_embedding(tmp_path):
    hf = tiny_hf_model("gemma")
    hf.save_pretrained(tmp_path / "src")

    def add_head(t):
        t["lm_head.weight"] = t["model.embed_tokens.weight"] + 1.0

    _rewrite(tmp_path / "src", tmp_path / "c", add_head)
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        load_pretrained(tmp_path / "c")


def test_truncated_file(llama_dir, tmp_path):
    dst = tmp_path / "c"
    shutil.copytree(llama_dir[1], dst)
    data = (dst / "model.safetensors").read_bytes()
    (dst / "model.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated"):
        load_pretrained(dst)


def test_pickle_only_directory_refused(llama_dir, tmp_path):
    (tmp_path / "config.json").write_text((llama_dir[1] / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ValueError, match="pytorch_model.bin.*never loaded"):
        load_pretrained(tmp_path)
    with pytest.raises(ValueError, match="never loaded"):
        load_pretrained(tmp_path / "pytorch_model.bin")


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(model_type="mamba"), "unsupported model_type 'mamba'"),
        (dict(model_type="gemma3"), "multimodal"),
        (dict(hidden_act="tanh"), "unsupported activation 'tanh'"),
        (
            dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}),
            "unsupported rope scaling 'yarn'",
        ),
        (dict(pretraining_tp=2), "pretraining_tp=2"),
    ],
)
def test_unsupported_config(llama_dir, tmp_path, change, message):
    dst = tmp_path / "c"
    shutil.copytree(llama_dir[1], dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(change)
    (dst / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        load_pretrained(dst)


@pytest.mark.parametrize(
    "header, data, message",
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12),
         "invalid offset for tensor `b`"),  # overlapping byte ranges
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8),
         "invalid shape"),  # 3 float32 in 8 bytes
        ({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, bytes(8),
         "unknown variant `Q4`"),  # an unknown dtype
    ],
)
def test_corrupt_safetensors_are_clear_errors(tmp_path, header, data, message):
    import json
    import struct

    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    with pytest.raises(ValueError, match=rf"bad\.safetensors: not a readable.*{message}"):
        read_safetensors(path)
    path.write_bytes(b"abc")
    with pytest.raises(ValueError, match="bad.safetensors.*header too small"):
        read_safetensors(path)
    with pytest.raises(ValueError, match="no such safetensors file"):
        read_safetensors(tmp_path / "missing.safetensors")
