"""An independent float64 NumPy forward pass of the decoder equations (docs/results.md).

Written from the equations, not from transformer/: loops over heads and queries, its own
positional encodings and norms. It reads the weights from a plain dict (nnx.to_pure_dict).
"""

from __future__ import annotations

import math

import numpy as np

from tests.reference_softmax import ref_attention_weights


def _gelu_exact(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


ACT = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": _gelu_exact,
    "gelu_tanh": _gelu_tanh,
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}


def ref_alibi_slopes(n_heads: int) -> np.ndarray:
    """Slopes for a power-of-two head count: 2^(-8/n), 2^(-16/n), ..., 2^(-8)."""
    assert n_heads & (n_heads - 1) == 0, "reference slopes only for powers of two"
    return np.array([2.0 ** (-8.0 * (i + 1) / n_heads) for i in range(n_heads)])


def ref_norm(cfg, p, x):
    if cfg.norm == "none":
        return x
    if cfg.norm == "constant":
        return x / cfg.norm_beta
    out = np.empty_like(x)
    for i, row in enumerate(x):
        if cfg.norm == "layernorm":
            mu = row.sum() / row.size
            var = ((row - mu) ** 2).sum() / row.size
            out[i] = (row - mu) / math.sqrt(var + cfg.norm_eps) * p["scale"]
            if "bias" in p:
                out[i] += p["bias"]
        else:
            rms = math.sqrt((row**2).sum() / row.size + cfg.norm_eps)
            scale = (1.0 + p["scale"]) if cfg.rmsnorm_unit_offset else p["scale"]
            out[i] = row / rms * scale
    return out


def ref_llama3_frequency(freq, factor, low, high, original):
    """One RoPE frequency under Llama 3.1's scaling (Meta's reference `apply_scaling`):
    short wavelengths kept, long ones divided by factor, a linear blend in between."""
    wavelength = 2.0 * math.pi / freq
    if wavelength < original / high:
        return freq
    if wavelength > original / low:
        return freq / factor
    smooth = (original / wavelength - low) / (high - low)
    return (1.0 - smooth) * freq / factor + smooth * freq


def ref_rope(x, pos, rope_dims, theta, linear=1.0, llama3=None):
    """x: [d] one head at position pos; rotate pairs (j, j + half) of the first rope_dims."""
    out = x.copy()
    half = rope_dims // 2
    for j in range(half):
        freq = theta ** (-2.0 * j / rope_dims) / linear
        if llama3 is not None:
            freq = ref_llama3_frequency(freq, *llama3)
        angle = pos * freq
        a, b = x[j], x[j + half]
        out[j] = a * math.cos(angle) - b * math.sin(angle)
        out[j + half] = b * math.cos(angle) + a * math.sin(angle)
    return out


def _rms(row, scale, eps, unit_offset):
    rms = math.sqrt((row**2).sum() / row.size + eps)
    return row / rms * ((1.0 + scale) if unit_offset else scale)


def ref_qk_norm(cfg, p, q_all, k_all):
    """q_all [n, h, d], k_all [n, g, d] through RMSNorm per head or, with qk_norm_over
    "projection", over all heads of a position at once (OLMo-2)."""
    if not cfg.qk_norm:
        return q_all, k_all
    eps, off = cfg.norm_eps, cfg.rmsnorm_unit_offset
    q_out, k_out = np.empty_like(q_all), np.empty_like(k_all)
    for i in range(q_all.shape[0]):
        if getattr(cfg, "qk_norm_over", "head") == "projection":
            q_out[i] = _rms(q_all[i].ravel(), p["q_norm"]["scale"], eps, off).reshape(
                q_all[i].shape)
            k_out[i] = _rms(k_all[i].ravel(), p["k_norm"]["scale"], eps, off).reshape(
                k_all[i].shape)
        else:
            for j in range(q_all.shape[1]):
                q_out[i, j] = _rms(q_all[i, j], p["q_norm"]["scale"], eps, off)
            for j in range(k_all.shape[1]):
                k_out[i, j] = _rms(k_all[i, j], p["k_norm"]["scale"], eps, off)
    return q_out, k_out


def _uses_rope(cfg, layer):
    return cfg.pos_encoding == "rope" and layer not in getattr(cfg, "no_rope_layers", ())


def ref_attention(cfg, p, x, layer, pe=None):
    """pe: [n, m] absolute positions added to the query/key inputs only (placement "scores")."""
    n = x.shape[0]
    xqk = x if pe is None else x + pe
    h, g, d = cfg.n_heads, cfg.n_kv_heads, cfg.d_head
    window = cfg.window[layer] if isinstance(cfg.window, tuple) else cfg.window
    scale = cfg.query_scale if cfg.query_scale is not None else 1.0 / math.sqrt(d)
    out = np.zeros_like(x)
    slopes = ref_alibi_slopes(h) if cfg.pos_encoding == "alibi" else None
    q_all = np.einsum("nm,mhd->nhd", xqk, p["wq"]) + (p["bq"] if "bq" in p else 0.0)
    k_all = np.einsum("nm,mgd->ngd", xqk, p["wk"]) + (p["bk"] if "bk" in p else 0.0)
    v_all = np.einsum("nm,mgd->ngd", x, p["wv"]) + (p["bv"] if "bv" in p else 0.0)
    q_all, k_all = ref_qk_norm(cfg, p, q_all, k_all)
    local = window is not None and cfg.rope_theta_local is not None
    theta = cfg.rope_theta_local if local else cfg.rope_theta
    linear = 1.0 if local else cfg.rope_linear_factor
    llama3 = None if local else getattr(cfg, "rope_llama3", None)
    for head in range(h):
        kv = head // (h // g)
        q, k, v = q_all[:, head], k_all[:, kv], v_all[:, kv]
        if _uses_rope(cfg, layer):
            rd = int(d * cfg.rope_fraction) // 2 * 2
            q = np.stack([ref_rope(q[i], i, rd, theta, linear, llama3) for i in range(n)])
            k = np.stack([ref_rope(k[i], i, rd, theta, linear, llama3) for i in range(n)])
        mixed = np.zeros((n, d))
        for i in range(n):
            visible = [
                j for j in range(n)
                if (not cfg.causal or j <= i) and (window is None or abs(i - j) < window)
            ]
            s = np.array([q[i] @ k[j] * scale for j in visible])
            if cfg.attn_logit_softcap:
                s = cfg.attn_logit_softcap * np.tanh(s / cfg.attn_logit_softcap)
            if slopes is not None:
                s = s - slopes[head] * np.array([abs(i - j) for j in visible])
            w = ref_attention_weights(s, getattr(cfg, "attn_softmax", "standard"),
                                      getattr(cfg, "ssmax_s", 1.0))
            mixed[i] = sum(wj * v[j] for wj, j in zip(w, visible))
        out += mixed @ p["wo"][head]
    if "bo" in p:
        out += p["bo"]
    return out


def ref_mlp(cfg, p, x):
    act = ACT[cfg.activation]
    up = x @ p["w_up"] + p.get("b_up", 0.0)
    if cfg.gated:
        hidden = act(x @ p["w_gate"] + p.get("b_gate", 0.0)) * up
    else:
        hidden = act(up)
    return hidden @ p["w_down"] + p.get("b_down", 0.0)


def ref_sinusoidal(n, m):
    pe = np.zeros((n, m))
    for pos in range(n):
        for i in range(m // 2):
            pe[pos, 2 * i] = math.sin(pos / 10000 ** (2 * i / m))
            pe[pos, 2 * i + 1] = math.cos(pos / 10000 ** (2 * i / m))
    return pe


def ref_forward(cfg, params, tokens):
    """Returns (y [n, m], logits [n, v]) in float64 for one unbatched sequence."""
    P = _to_numpy(params)
    P.setdefault("final_norm", {})
    for block in P["blocks"].values():
        for name in ("attn_norm", "mlp_norm", "attn_post_norm", "mlp_post_norm"):
            block.setdefault(name, {})  # parameter-free norms (none, constant)
    tokens = np.asarray(tokens)
    n = len(tokens)
    v = P["embedding"][tokens].copy()
    if cfg.embedding_scale is not None:
        v *= cfg.embedding_scale
    pe = None
    if cfg.pos_encoding == "sinusoidal":
        pe = ref_sinusoidal(n, cfg.d_model)
    elif cfg.pos_encoding == "learned":
        pe = P["pos_embedding"][:n]
    if pe is not None and cfg.abs_pos_placement == "residual":
        v += pe
        pe = None  # in the residual stream only
    s = getattr(cfg, "residual_scale", 1.0)
    for layer in range(cfg.n_layers):
        b = P["blocks"][layer]

        def attn(x):
            return ref_attention(cfg, b["attn"], x, layer, pe)

        def norm(name, x):
            return ref_norm(cfg, b[name], x)

        if getattr(cfg, "parallel_residual", False):
            # v' = v + Attn(n1(v)) + MLP(n2(v)); Phi-2 / StableLM read n1 in both
            mlp_norm = "attn_norm" if cfg.norm_placement == "shared_pre" else "mlp_norm"
            v = v + s * attn(norm("attn_norm", v)) + s * ref_mlp(cfg, b["mlp"],
                                                                 norm(mlp_norm, v))
        elif cfg.norm_placement == "post_sublayer":  # OLMo-2: norm the branch, then add
            z = v + s * norm("attn_post_norm", attn(v))
            v = z + s * norm("mlp_post_norm", ref_mlp(cfg, b["mlp"], z))
        elif s != 1.0:  # Granite: pre-norm with scaled branches
            assert cfg.norm_placement == "pre"
            z = v + s * attn(norm("attn_norm", v))
            v = z + s * ref_mlp(cfg, b["mlp"], norm("mlp_norm", z))
        elif cfg.norm_placement == "pre":
            z = v + ref_attention(cfg, b["attn"], ref_norm(cfg, b["attn_norm"], v), layer, pe)
            v = z + ref_mlp(cfg, b["mlp"], ref_norm(cfg, b["mlp_norm"], z))
        elif cfg.norm_placement == "post":
            z = ref_norm(cfg, b["attn_norm"], v + ref_attention(cfg, b["attn"], v, layer, pe))
            v = ref_norm(cfg, b["mlp_norm"], z + ref_mlp(cfg, b["mlp"], z))
        else:
            a = ref_attention(cfg, b["attn"], ref_norm(cfg, b["attn_norm"], v), layer, pe)
            z = v + ref_norm(cfg, b["attn_post_norm"], a)
            m = ref_mlp(cfg, b["mlp"], ref_norm(cfg, b["mlp_norm"], z))
            v = z + ref_norm(cfg, b["mlp_post_norm"], m)
    y = ref_norm(cfg, P["final_norm"], v) if cfg.final_norm else v
    unembed = P["embedding"].T if cfg.tie_embeddings else P["unembedding"]
    logits = y @ unembed
    if "lm_head_bias" in P:
        logits = logits + P["lm_head_bias"]
    logits = logits * getattr(cfg, "logit_scale", 1.0)
    if cfg.final_logit_softcap:
        logits = cfg.final_logit_softcap * np.tanh(logits / cfg.final_logit_softcap)
    return y, logits


def _to_numpy(tree):
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree, dtype=np.float64)
