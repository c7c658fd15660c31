"""`load_pretrained` on GGUF files of every architecture we claim (Llama, Qwen2, GPT-2,
Gemma, Gemma 2, Gemma 3), each written small from a random transformers model the way
llama.cpp's converter writes it (tests/gguf_tiny.py).

Each file must give the decoder the safetensors converter gives the same model (already
cross-checked against transformers in tests/test_loading.py), and logits within 1e-4 of
the original model and of transformers reading the same file, where transformers' GGUF
reader can (it has no Gemma 1 support and drops some Gemma 2/3 keys: tested too, so that
the day it reads them the comparison is switched on). The GGUF-specific conversions (Llama's
q/k permutation, Gemma's 1 + w norm weights) are shown to matter, and every setting a file
may hold that the decoder cannot represent is a clear error naming it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from tests.gguf_tiny import (
    gguf_hf_configs,
    gguf_metadata,
    gguf_tensors,
    tiny_model,
    write_gguf,
    write_model_gguf,
)
from tests.hf_tiny import VOCAB
from transformer.loading import ARCHITECTURES, gemma, llama, load_pretrained

VARIANTS = gguf_hf_configs()
SEQ = 24  # longer than the sliding window, so sliding layers differ from global ones
TOLERANCE = 1e-4  # float32, unquantised: accumulation error only


def _load(path):
    with warnings.catch_warnings():  # placeholder vocabulary: no tokenizer, by design
        warnings.filterwarnings("ignore", message="GGUF tokenizer model='none'")
        return load_pretrained(path)


def _ids(seed=0, shape=(2, SEQ)):
    return np.random.default_rng(seed).integers(0, VOCAB, size=shape)


def _ours(model, ids) -> np.ndarray:
    return np.asarray(model(jnp.asarray(ids, dtype=jnp.int32)))


def _torch(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(ids)).logits.numpy()


def _transformers_gguf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()


@pytest.fixture(scope="module", params=list(VARIANTS))
def tiny(request, tmp_path_factory):
    """(variant, original HF model, .gguf path, our model loaded from it)."""
    variant = request.param
    hf = tiny_model(variant)
    path = write_model_gguf(hf, tmp_path_factory.mktemp(variant) / f"{variant}.gguf")
    model, tokenizer = _load(path)
    assert tokenizer is None
    return variant, hf, path, model


def test_config_matches_safetensors_converter(tiny):
    """The GGUF metadata maps onto the switches the config.json of the same model maps onto
    (floats to float32 storage precision: GGUF keeps them in float32)."""
    _, hf, _, model = tiny
    expected = ARCHITECTURES[hf.config.model_type].to_config(hf.config.to_dict())
    for field, want in dataclasses.asdict(expected).items():
        got = getattr(model.config, field)
        if isinstance(want, float):
            assert math.isclose(got, want, rel_tol=1e-6), (field, got, want)
        else:
            assert got == want, (field, got, want)


def test_logits_match_original_model(tiny):
    _, hf, _, model = tiny
    ids = _ids()
    ref, ours = _torch(hf, ids), _ours(model, ids)
    assert ours.shape == ref.shape == (2, SEQ, VOCAB)
    assert np.std(ref) > 0.1, "degenerate reference logits would hide mistakes"
    np.testing.assert_array_less(np.abs(ours - ref).max(), TOLERANCE)


def test_logits_match_transformers_reading_the_file(tiny):
    variant, hf, path, model = tiny
    ids = _ids(seed=1)
    if variant == "gemma":
        with pytest.raises(ValueError, match="architecture gemma is not supported"):
            _transformers_gguf(path)
        return
    theirs = _torch(_transformers_gguf(path), ids)
    if VARIANTS[variant][1]:
        np.testing.assert_array_less(np.abs(_ours(model, ids) - theirs).max(), TOLERANCE)
    else:  # transformers drops the soft-cap / rope-scaling keys this variant sets
        assert np.abs(theirs - _torch(hf, ids)).max() > 1e-3


@pytest.mark.parametrize(
    "variant, module, name, skip",
    [
        ("llama", llama, "unpermute_rotary", lambda w, n_heads: w),
        ("gemma3", gemma, "gguf_norms_to_hf", dict),
    ],
)
def test_gguf_conversions_matter(variant, module, name, skip, tmp_path, monkeypatch):
    """Without undoing llama.cpp's q/k permutation, or its 1 + w Gemma norms, the logits
    leave the original model's (so the agreement above is not trivial)."""
    hf = tiny_model(variant)
    path = write_model_gguf(hf, tmp_path / "m.gguf")
    monkeypatch.setattr(module, name, skip)
    model, _ = _load(path)
    ids = _ids(seed=2)
    assert np.abs(_ours(model, ids) - _torch(hf, ids)).max() > 1e-2


@pytest.fixture(scope="module")
def llama_hf():
    return tiny_model("llama")


@pytest.mark.parametrize(
    "edits, extra, message",
    [
        ({"rope.scaling.type": "yarn", "rope.scaling.factor": 4.0}, {}, "rope scaling 'yarn'"),
        ({"expert_count": 8}, {}, "cannot represent.*'llama'.*llama.expert_count=8"),
        ({"attention.head_count_kv": [2, 2]}, {}, "head_count_kv.*not a single integer"),
        ({"attention.value_length": 8}, {}, "unsupported llama.attention.value_length=8"),
        ({"rope.dimension_count": 8}, {}, "partial rotary"),
        ({"block_count": None}, {}, "required metadata key 'llama.block_count'"),
        ({}, {"rope_freqs.weight": np.ones(8, np.float32)}, "unexpected tensors.*rope_freqs"),
    ],
)
def test_unrepresentable_file_is_a_clear_error(llama_hf, tmp_path, edits, extra, message):
    path = write_model_gguf(llama_hf, tmp_path / "bad.gguf", edits, extra)
    with pytest.raises(ValueError, match=message):
        _load(path)


def test_unclaimed_architecture_is_a_clear_error(llama_hf, tmp_path):
    path = write_gguf(
        tmp_path / "phi3.gguf", "phi3", gguf_metadata(llama_hf.config), gguf_tensors(llama_hf)
    )
    with pytest.raises(ValueError, match="GGUF architecture 'phi3' is not supported.*gemma3"):
        _load(path)


def test_gemma3_without_sliding_window_is_all_global(tmp_path):
    """llama.cpp runs a Gemma 3 file without attention.sliding_window with every layer
    global (and so every layer on the file's RoPE base)."""
    hf = tiny_model("gemma3")
    model, _ = _load(write_model_gguf(hf, tmp_path / "g.gguf", {"attention.sliding_window": None}))
    assert model.config.window is None
    assert model.config.rope_theta == 500.0


def test_gguf_bad_file(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 10)
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        load_pretrained(bad)
