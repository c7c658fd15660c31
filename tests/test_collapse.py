"""R4 (collapse), R5 (counting on collapsed pairs), R6 (precision) on a tiny NoPE decoder.

The fast sweep (one prefill + chunked `Decoder.branch`) is checked against one full forward
per sequence; its compilations are counted; the decay and the collapse lengths are
measured against a float64 run of the same weights.
"""

import jax
import numpy as np
import pytest
from flax import nnx

from analysis import collapse as col
from transformer import Decoder, TransformerConfig, rebuild

jax.config.update("jax_enable_x64", True)

# Paper's R4 setting scaled down: NoPE, layernorm, two layers, d_model 32.
CONFIG = TransformerConfig.tiny(pos_encoding="none", n_layers=2, vocab_size=8, max_len=1024)
ONE, ZERO, SEP = 1, 0, 5
PROMPT = (2, 3, 4)
LENGTHS = tuple(range(1, 257))
DTYPES = ("float64", "float32", "bfloat16")
CHUNK = 48  # unusual on purpose: no other caller shares these compiled shapes


@pytest.fixture(scope="module")
def model():
    return Decoder(CONFIG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def counting_sweep(model):
    """prompt + n ones vs prompt + (n + 1) ones, n = 1..256, three formats, one sweep."""
    before = col.trace_counts()
    family = col.PairFamily(repeat_id=ONE, prompt_ids=PROMPT)
    sweep = col.collapse_sweep(model, family, LENGTHS, DTYPES, chunk_size=CHUNK)
    after = col.trace_counts()
    traces = {k: after.get(k, 0) - before.get(k, 0) for k in ("prefill", "branch")}
    return family, sweep, traces


# ---- pair builders -----------------------------------------------------------------------


def test_pair_builders():
    assert col.repeated_last_pair([7, 1, 2]) == ([7, 1, 2], [7, 1, 2, 2])
    assert col.counting_pairs([9], ONE, 3) == ([9, 1, 1, 1], [9, 1, 1, 1, 1])
    assert col.ones_then_zero_pairs(ONE, ZERO, [2, 0]) == [
        ([1, 1, 0], [1, 1, 0, 0]),
        ([0], [0, 0]),
    ]
    assert col.separated_digits([1] * 7, SEP, 3) == [1, 1, 1, 5, 1, 1, 1, 5, 1]
    assert col.separated_digits([1, 1, 1], SEP, 3) == [1, 1, 1]
    fam = col.PairFamily(repeat_id=ONE, prompt_ids=PROMPT, sep_id=SEP, sep_every=2)
    for n in range(1, 9):
        a, b = fam.pair(n)
        assert a == list(PROMPT) + col.separated_digits([ONE] * n, SEP, 2)
        assert b[: len(a)] == a and b.count(ONE) == n + 1


@pytest.mark.parametrize(
    "call",
    [
        lambda: col.repeated_last_pair([]),
        lambda: col.repeated_last_pair([[1, 2]]),
        lambda: col.repeated_last_pair([1.5]),
        lambda: col.counting_pairs([], ONE, 0),  # empty s_0
        lambda: col.counting_pairs([], -1, 2),
        lambda: col.separated_digits([1, 1], SEP, 0),
        lambda: col.PairFamily(repeat_id=ONE, sep_id=SEP),  # sep_every missing
    ],
)
def test_pair_builders_bad_inputs(call):
    with pytest.raises(ValueError):
        call()


def test_sweep_bad_inputs(model):
    fam = col.PairFamily(repeat_id=ONE, prompt_ids=PROMPT)
    with pytest.raises(ValueError, match="causal"):
        col.collapse_sweep(Decoder(CONFIG.replace(causal=False), rngs=nnx.Rngs(0)), fam, [1])
    with pytest.raises(ValueError):
        col.collapse_sweep(model, fam, [1], ["float8"])
    with pytest.raises(ValueError):
        col.collapse_sweep(model, fam, [])
    with pytest.raises(ValueError):
        col.collapse_sweep(model, fam, [1], chunk_size=0)
    with pytest.raises(ValueError, match="vocabulary"):
        col.collapse_sweep(model, col.PairFamily(repeat_id=8), [1])
    with pytest.raises(ValueError):
        col.collapse_sweep(model, col.PairFamily(repeat_id=ONE), [0])


# ---- the fast path -----------------------------------------------------------------------


def test_fast_sweep_equals_slow_reference(model, counting_sweep):
    family, fast, _ = counting_sweep
    subset = LENGTHS[::15] + (LENGTHS[-1],)
    slow = col.collapse_sweep_slow(model, family, subset, ("float64", "float32"))
    idx = [LENGTHS.index(n) for n in subset]
    assert slow.seq_lengths == tuple(fast.seq_lengths[i] for i in idx)
    for d, dtype in enumerate(("float64", "float32")):
        f = fast.index(dtype)
        tol = {"float64": 1e-12, "float32": 1e-5}[dtype]
        scale = np.abs(slow.states[d]).max()
        np.testing.assert_allclose(fast.states[f][idx], slow.states[d], atol=tol * scale, rtol=0)
        np.testing.assert_allclose(
            fast.states_star[f][idx], slow.states_star[d], atol=tol * scale, rtol=0
        )
        np.testing.assert_allclose(fast.linf[f][idx], slow.linf[d], atol=tol * scale, rtol=0)


def test_fast_branch_plan_with_tail_and_separators_equals_slow(model):
    # Tail (continuation branches) and separators (s_n, s*_n one or two positions apart).
    # Up to 256 so the cache shape matches the counting sweep's (fewer compilations).
    lengths = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 256)
    for family in (
        col.PairFamily(repeat_id=ONE, prompt_ids=PROMPT, tail_ids=(ZERO,)),
        col.PairFamily(repeat_id=ONE, prompt_ids=PROMPT, sep_id=SEP, sep_every=3),
    ):
        fast = col.collapse_sweep(model, family, lengths, ("float64",), chunk_size=CHUNK)
        slow = col.collapse_sweep_slow(model, family, lengths, ("float64",))
        np.testing.assert_allclose(fast.states, slow.states, atol=1e-12, rtol=0)
        np.testing.assert_allclose(fast.states_star, slow.states_star, atol=1e-12, rtol=0)
    # And the last family against a plain per-pair measurement (per layer, L1 and L-inf).
    a, b = family.pair(8)
    m64 = rebuild(model, dtype="float64", param_dtype="float64", softmax_dtype="float64")
    pd = col.pair_distance(m64, a, b)
    np.testing.assert_allclose(pd.l1, fast.l1[0, lengths.index(8)], rtol=1e-9)
    np.testing.assert_allclose(pd.linf, fast.linf[0, lengths.index(8)], rtol=1e-9)


def test_sweep_compiles_a_bounded_number_of_times(model, counting_sweep):
    family, sweep, traces = counting_sweep
    # 256 lengths in 6 chunks per format: one prefill and one branch compilation each (the
    # fixture is the first caller of these shapes, so the counts are exact, not just bounds).
    assert traces == {"prefill": len(DTYPES), "branch": len(DTYPES)}
    # Another number of lengths (same cache quantum, same chunk) compiles nothing new...
    before = col.trace_counts()
    again = col.collapse_sweep(model, family, LENGTHS[::3], ("float32",), chunk_size=CHUNK)
    assert col.trace_counts() == before
    np.testing.assert_array_equal(again.states[0], sweep.states[1][::3])


# ---- R4: decay -----------------------------------------------------------------------------


def test_repeated_last_token_distance_decays(model, counting_sweep):
    _, sweep, _ = counting_sweep
    fit = col.fit_decay(sweep, "float64", norm="l1")
    print(f"R4 counting pair: log-log slope of ||y_n - y*_(n+1)||_1 = {fit.slope:.3f}")
    assert fit.slope < -0.3
    # Every layer decays too (levels: resid_post of both layers, then y).
    d = sweep.l1[sweep.index("float64")]  # [N, L + 1]
    assert np.all(d[-1] < 0.05 * d[0])


def test_copy_pair_distance_decays(model):
    # "1...10" vs "1...100": the repeated token is the last one.
    family = col.PairFamily(repeat_id=ONE, prompt_ids=PROMPT, tail_ids=(ZERO,))
    sweep = col.collapse_sweep(model, family, LENGTHS, ("float64",), chunk_size=CHUNK)
    fit = col.fit_decay(sweep, "float64", norm="l1")
    print(f"R4 copy pair: log-log slope = {fit.slope:.3f}")
    assert fit.slope < -0.3


# ---- R5, R6: collapse lengths --------------------------------------------------------------


def test_bfloat16_collapses_far_earlier_than_float32(counting_sweep):
    _, sweep, _ = counting_sweep
    report = col.collapse_lengths(sweep, norm="linf", reference="float64")
    bf16, f32 = report.per_dtype["bfloat16"], report.per_dtype["float32"]
    print(
        f"R6: fit slope {report.fit.slope:.3f}, state scale {report.scale:.3f}; "
        f"bfloat16 floor {bf16.noise_floor:.3g} collapse n={bf16.collapse_length} "
        f"(predicted {bf16.predicted_length:.1f}, first bit-identical n={bf16.first_identical}); "
        f"float32 floor {f32.noise_floor:.3g} collapse n={f32.collapse_length} "
        f"(predicted {f32.predicted_length:.1f})"
    )
    assert bf16.collapse_length is not None
    assert f32.collapse_length is None or f32.collapse_length >= 8 * bf16.collapse_length
    # The format's measured rounding noise is a few unit round-offs of the state scale.
    for r in (bf16, f32):
        assert 0.1 * r.threshold < r.noise_floor < 100 * r.threshold
    # Prediction from the fitted decay and u: within a factor 4 of the measured length.
    assert bf16.predicted_length / 4 < bf16.collapse_length < 4 * bf16.predicted_length
    assert f32.predicted_length > 8 * bf16.predicted_length
    # float64 is its own reference: never collapsed within the sweep.
    assert report.per_dtype["float64"].collapse_length is None
    with pytest.raises(ValueError):
        col.collapse_lengths(sweep, reference="float16")
    with pytest.raises(ValueError):
        col.collapse_lengths(sweep, norm="l2")


def test_bit_identical_pairs_only_in_low_precision(counting_sweep):
    # R5: a bit-identical pair gets identical logits, so one of its two counts is wrong.
    _, sweep, _ = counting_sweep
    b, f = sweep.index("bfloat16"), sweep.index("float32")
    same_b = (sweep.states[b, :, -1] == sweep.states_star[b, :, -1]).all(-1)
    same_f = (sweep.states[f, :, -1] == sweep.states_star[f, :, -1]).all(-1)
    print(f"R5: bit-identical bfloat16 pairs at n = {np.asarray(LENGTHS)[same_b].tolist()}")
    assert same_b.any()
    assert not same_f.any()


def test_sequence_family_fast_equals_slow_and_is_the_repeated_last_pair(model):
    rng = np.random.default_rng(0)
    family = col.SequenceFamily(tuple(int(t) for t in rng.integers(0, CONFIG.vocab_size, 60)))
    assert family.pair(5) == (list(family.sequence[:5]), list(family.sequence[:5]) + [family.sequence[4]])
    lengths = (1, 2, 7, 30, 59, 60)
    fast = col.collapse_sweep(model, family, lengths, ("float64",), chunk_size=CHUNK)
    slow = col.collapse_sweep_slow(model, family, lengths, ("float64",))
    np.testing.assert_allclose(fast.states, slow.states, atol=1e-12, rtol=0)
    np.testing.assert_allclose(fast.states_star, slow.states_star, atol=1e-12, rtol=0)
    assert fast.seq_lengths == lengths
    with pytest.raises(ValueError, match="exceeds the sequence length"):
        col.collapse_sweep(model, family, (61,), ("float64",))
