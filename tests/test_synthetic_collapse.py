"""The paper-protocol synthetic collapse (R4, Figures 8 and 10) against a float64 NumPy
reference written from the protocol: whole sequences built explicitly, one query at a time."""

import math

import jax
import numpy as np
import pytest

from analysis.synthetic_collapse import (
    ENCODINGS,
    Reading,
    all_readings,
    reading_applies,
    sample_elements,
    synthetic_pair_distances,
)
from theory_checks.report.reproduction import reproduction

jax.config.update("jax_enable_x64", True)


def _pe(t, d):
    return np.array([math.sin(t / 10000 ** (2 * (i // 2) / d)) if i % 2 == 0
                     else math.cos(t / 10000 ** (2 * (i // 2) / d)) for i in range(d)])


def _rope(a, t):
    half = a.size // 2
    out = a.copy()
    for j in range(half):
        ang = t * 10000.0 ** (-2.0 * j / a.size)
        out[j] = a[j] * math.cos(ang) - a[j + half] * math.sin(ang)
        out[j + half] = a[j + half] * math.cos(ang) + a[j] * math.sin(ang)
    return out


def _last_output(elements, positions, encoding, placement, sigma):
    """The one-layer output of the LAST token of a sequence given as a list of element
    dicts (x, q, k, v) and their positions."""
    d = elements[0]["q"].size
    hat = []
    for e, t in zip(elements, positions):
        q, k, v, x = e["q"].copy(), e["k"].copy(), e["v"].copy(), e["x"].copy()
        if encoding == "sinusoidal":
            q, k = q + sigma * _pe(t, d), k + sigma * _pe(t, d)
            if placement == "residual":
                v, x = v + sigma * _pe(t, d), x + _pe(t, d)
        elif encoding == "rope":
            q, k = _rope(q, t), _rope(k, t)
        hat.append((q, k, v, x))
    q_i, _, _, x_i = hat[-1]
    t_i = positions[-1]
    scores = []
    for (_, k, _, _), t in zip(hat, positions):
        s = q_i @ k / math.sqrt(d)
        if encoding == "alibi":
            s -= 2.0**-8 * abs(t_i - t)
        scores.append(s)
    w = np.exp(np.array(scores) - max(scores))
    w /= w.sum()
    z = x_i + sum(wj * h[2] for wj, h in zip(w, hat))
    z = z - z.mean()
    return z / math.sqrt((z * z).mean() + 1e-5)


def _reference(encoding, reading, n, seed, d, appended="repeat"):
    sigma = reading.sigma(d)
    el = {k: np.asarray(a) for k, a in sample_elements(jax.random.key(seed), n, d, sigma).items()}
    elements = [{k: el[k][j] for k in el} for j in range(n)]
    seq = elements
    last = elements[-1] if appended == "repeat" else {k: el[k][n] for k in el}
    seq_star = elements + [last]
    pos = list(range(n))
    pos_star = pos + [n if reading.repeat_at == "new" else n - 1]
    y = _last_output(seq, pos, encoding, reading.placement, sigma)
    y_star = _last_output(seq_star, pos_star, encoding, reading.placement, sigma)
    return np.abs(y - y_star).sum()


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_matches_the_numpy_reference_in_every_reading(encoding):
    d, lengths, seeds = 8, [1, 2, 5, 9], [3, 4]
    for reading in filter(lambda r: reading_applies(encoding, r), all_readings()):
        ours = synthetic_pair_distances(encoding, reading, lengths, seeds, d=d)
        for s, seed in enumerate(seeds):
            # the reference samples exactly n elements; ours samples max(lengths) and masks:
            # the same draw only at n = max(lengths)
            ref = _reference(encoding, reading, lengths[-1], seed, d)
            assert ours[s, -1] == pytest.approx(ref, rel=1e-10, abs=1e-12), (reading, seed)


def test_prefix_lengths_use_the_same_draw_as_the_full_sequence():
    """Distances at shorter n are those of the first n elements of the same draw."""
    reading, d = Reading("1", "scores", "new"), 8
    full = synthetic_pair_distances("rope", reading, [3, 7], [0], d=d)
    el = {k: np.asarray(a) for k, a in sample_elements(jax.random.key(0), 7, d, 1.0).items()}
    elements = [{k: el[k][j] for k in el} for j in range(3)]
    y = _last_output(elements, [0, 1, 2], "rope", "scores", 1.0)
    y_star = _last_output(elements + [elements[-1]], [0, 1, 2, 3], "rope", "scores", 1.0)
    assert full[0, 0] == pytest.approx(np.abs(y - y_star).sum(), rel=1e-10)


def test_fresh_element_control_matches_reference_and_does_not_collapse():
    reading, d = Reading(), 8
    ours = synthetic_pair_distances("none", reading, [6], [1], d=d, appended="fresh")
    assert ours[0, 0] == pytest.approx(_reference("none", reading, 6, 1, d, "fresh"), rel=1e-10)


def test_nope_collapses_like_one_over_n_and_a_wrong_protocol_does_not_reproduce():
    """Inside the theorem the distance falls like 1/n; appending a fresh element instead
    of repeating the n-th (a deliberately wrong protocol) keeps the pair O(1) apart, and
    the Figure 10 reproduction criterion then says `reproduced: false` for every series."""
    reading, lengths, seeds = Reading("1/d", "scores", "new"), [100, 500, 1000, 5000], range(4)
    good = synthetic_pair_distances("none", reading, lengths, seeds).mean(0)
    ratio = good[0] / good[-1]
    assert 30 < ratio < 70  # n^-1 over a factor 50 in n
    for encoding, series in (("none", "NoPE"), ("rope", "RoPE"), ("sinusoidal", "APE"),
                             ("alibi", "ALiBi")):
        bad = synthetic_pair_distances(encoding, reading, lengths, seeds, appended="fresh")
        entry = reproduction("Figure 10", "fresh element (wrong protocol)", series,
                             dict(zip(lengths, bad.mean(0))))
        assert entry["reproduced"] is False
        assert bad.mean(0).min() > 0.5


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="encoding"):
        synthetic_pair_distances("learned", Reading(), [4], [0])
    with pytest.raises(ValueError, match="variance"):
        Reading(variance="2")
    with pytest.raises(ValueError, match="positive integers"):
        synthetic_pair_distances("none", Reading(), [0, 4], [0])
    with pytest.raises(ValueError, match="appended"):
        synthetic_pair_distances("none", Reading(), [4], [0], appended="other")
