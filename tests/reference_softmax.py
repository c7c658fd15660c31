"""Float64 references, written from the papers' formulas with explicit loops, for the
decoder's softmax switches (`transformer.layers.attention_softmax`) and float8 rounding.

Nothing here is imported from transformer/ or analysis/.
"""

from __future__ import annotations

import math

import numpy as np

# Velickovic et al. (arXiv 2410.01104), their listing: beta = poly(H), highest degree first.
_POLY = (-0.037, 0.481, -2.3, 4.917, -1.791)


def _softmax(s):
    top = max(s)
    e = [math.exp(x - top) for x in s]
    total = sum(e)
    return [x / total for x in e]


def ref_attention_weights(s, kind: str = "standard", ssmax_s: float = 1.0) -> np.ndarray:
    """Weights over the visible keys of one query, scores s [n_visible] (float64).

    standard: softmax(s). scalable: softmax(s * ssmax_s * ln n), n = len(s).
    adaptive_temperature: H = -sum p ln(p + 1e-9) of p = softmax(s); beta = poly(H) by
    Horner, raised to 1 when below it, and 1 when H <= 0.5; softmax(beta * s).
    """
    s = [float(x) for x in s]
    if kind == "scalable":
        factor = ssmax_s * math.log(len(s))
        s = [x * factor for x in s]
    elif kind == "adaptive_temperature":
        p = _softmax(s)
        entropy = -sum(pj * math.log(pj + 1e-9) for pj in p)
        beta = 1.0
        if entropy > 0.5:
            poly = 0.0
            for c in _POLY:
                poly = poly * entropy + c
            beta = max(poly, 1.0)
        s = [x * beta for x in s]
    elif kind != "standard":
        raise ValueError(kind)
    return np.array(_softmax(s))


# ---- float8 rounding, from the formats' bit layouts ----------------------------------------

# (exponent bits, mantissa bits, bias, whether the all-ones exponent is reserved (IEEE-like))
_FLOAT8 = {"float8_e4m3fn": (4, 3, 7, False), "float8_e5m2": (5, 2, 15, True)}


def ref_float8_values(fmt: str) -> np.ndarray:
    """Every finite non-negative value of a float8 format, in code order (increasing)."""
    e_bits, m_bits, bias, ieee = _FLOAT8[fmt]
    values = []
    for e in range(2**e_bits):
        for m in range(2**m_bits):
            if ieee and e == 2**e_bits - 1:
                continue  # inf / NaN
            if not ieee and e == 2**e_bits - 1 and m == 2**m_bits - 1:
                continue  # e4m3fn: the one NaN code
            if e == 0:
                values.append(m / 2**m_bits * 2.0 ** (1 - bias))
            else:
                values.append((1 + m / 2**m_bits) * 2.0 ** (e - bias))
    return np.array(values)


def ref_round_float8(x, fmt: str) -> np.ndarray:
    """x (any shape) to the nearest float8 value, ties to the even code, after clipping to
    the largest finite value; a loop over the entries."""
    table = ref_float8_values(fmt)
    out = np.empty(np.shape(x))
    flat = np.asarray(x, np.float64).reshape(-1)
    for i, value in enumerate(flat):
        a = min(abs(value), table[-1])
        hi = int(np.searchsorted(table, a))  # table[hi - 1] < a <= table[hi]
        if table[hi] == a or hi == 0:
            code = hi
        else:
            below, above = a - table[hi - 1], table[hi] - a
            code = hi if above < below else hi - 1 if below < above else (
                hi if hi % 2 == 0 else hi - 1)
        out.reshape(-1)[i] = math.copysign(table[code], value)
    return out
