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
