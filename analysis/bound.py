"""Theorem 5.1 (R7): the attention-path bound on ||d y_n / d v_i^(0)||, for the model as built.

With attention frozen (its patterns held constant), the chain rule writes d y_n / d v_i^(0) as
a sum over attention paths i -> k_1 -> ... -> n of products of local Jacobians: the final
norm, per layer a diagonal MLP/residual factor and an attention/residual factor per edge.
Bounding every factor by a norm (triangle inequality, submultiplicativity) turns the path sum
into the (n, i) entry of a product of n x n non-negative matrices

    bound_i = c_3 * [ D^(L-1) A^(L-1) ... D^(0) A^(0) ]_(n, i),
    A^(l)_(qk) = a_q (delta_qk + p_q * sum_h c_h Lambda^(l,h)_(qk) * r_k),  D^(l) = diag(M^(l)),

with c_h = ||W_V^h W_O^h|| (the value/output projections the paper omits), the norm factors
a, p, r and MLP factor M depending on the norm placement, and c_3 the final norm's factor.
It is evaluated as a row vector times matrices (never by enumerating paths): O(L n^2).
analysis/BOUND.md gives the derivation. With the `constant` norm every norm factor is exactly
1/beta and the bound is the paper's (R7) with the projections' norms carried in.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from analysis.kernels import kernel_variants, pick_kernel
from analysis.validation import check_choice, check_result, states_at_layer
from transformer.shapes import Array, ArrayLike, Float, Int, shape_checked
from transformer.layers import ACTIVATION_FNS

BOUND_NORMS = ("spectral", "fro", "l1", "linf")
CONSTANTS = ("auto", "global", "local")


def _silu_prime(x):
    s = 1.0 / (1.0 + np.exp(-x))
    return s * (1.0 + x * (1.0 - s))


def _gelu_tanh_prime(x):
    k = math.sqrt(2.0 / math.pi)
    inner = k * (x + 0.044715 * x**3)
    t = np.tanh(inner)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3 * 0.044715 * x**2)


def _grid_max(derivative) -> float:
    # sup |act'| is attained in [-10, 10] for these activations (act' -> 0 or 1 outside).
    # The grid misses the maximiser by at most 5e-5 where act'' = 0, so the error is
    # O(|act'''| * 1e-9); the margin covers it.
    x = np.linspace(-10.0, 10.0, 400_001)
    return float(np.abs(derivative(x)).max()) + 1e-8


@functools.lru_cache(maxsize=None)
def activation_lipschitz(activation: str) -> float:
    """sup_x |act'(x)|: the Lipschitz constant of an elementwise activation.

    relu: 1; gelu (exact): Phi(sqrt 2) + sqrt 2 phi(sqrt 2) = 1.1289 (act'' = phi (2 - x^2));
    silu and gelu_tanh: maximum of the analytic derivative on a fine grid, plus a margin.
    """
    if activation == "relu":
        return 1.0
    if activation == "gelu":
        r2 = math.sqrt(2.0)
        return 0.5 * (1 + math.erf(1.0)) + r2 * math.exp(-1.0) / math.sqrt(2 * math.pi)
    if activation == "silu":
        return _grid_max(_silu_prime)
    if activation == "gelu_tanh":
        return _grid_max(_gelu_tanh_prime)
    raise ValueError(f"no Lipschitz constant for activation {activation!r}")


def matrix_norm(a: jax.Array, norm: str) -> jax.Array:
    """Operator norm of [..., out, in] matrices (maps in -> out).

    norm: "spectral" (largest singular value), "l1" (largest column abs-sum), "linf"
    (largest row abs-sum). Returns [...].
    """
    if norm == "spectral":
        return jnp.linalg.svd(a, compute_uv=False)[..., 0]
    if norm == "l1":
        return jnp.abs(a).sum(-2).max(-1)
    if norm == "linf":
        return jnp.abs(a).sum(-1).max(-1)
    raise ValueError(f"norm={norm!r} is not one of 'spectral', 'l1', 'linf'")


def _norm_factor(module, x, norm: str):
    """[n] bound on the operator norm of a norm layer's Jacobian at each row of x [1, n, m].

    constant: exactly 1/beta; none: 1. LayerNorm / RMSNorm (local, at the captured state):
    J = diag(scale) P / s with s = sqrt(var + eps) (or mean square + eps) and P a product of
    symmetric contractions (centring; I - x x^T / (d s^2)), so ||J||_2 <= max|scale| / s;
    the induced 1/inf norms of a d x d matrix are at most sqrt(d) times its spectral norm.
    """
    n, m = x.shape[1], x.shape[2]
    if module is None or module.kind == "none":
        return jnp.ones((n,), x.dtype)
    if module.kind == "constant":
        return jnp.full((n,), 1.0 / module.beta, x.dtype)
    xf = x[0].astype(module.accum_dtype)
    if module.kind == "layernorm":
        xf = xf - xf.mean(-1, keepdims=True)
    inv = jax.lax.rsqrt((xf * xf).mean(-1) + module.eps)  # [n]
    scale = module.scale[...].astype(module.accum_dtype)
    if module.unit_offset and module.kind == "rmsnorm":
        scale = 1.0 + scale
    factor = jnp.abs(scale).max() * inv
    if norm != "spectral":
        factor = factor * math.sqrt(m)
    return factor.astype(x.dtype)


def _mlp_factor(mlp, x, norm: str, local: bool):
    """[n] bound on ||J_psi|| at each row of the MLP input x [1, n, m].

    Jacobian ([out, in] layout) of act(x W_up) W_down: W_down^T diag(act'(u)) W_up^T, so
    ||J|| <= ||W_down^T|| * max|act'(u)| * ||W_up^T|| (global: sup|act'| instead of the
    local max). Gated act(x W_gate) * (x W_up) W_down, only locally:
    ||W_down^T|| (max|act'(g) up| ||W_gate^T|| + max|act(g)| ||W_up^T||).
    """
    c = mlp.config
    dt = x.dtype
    up_w = mlp.w_up[...].astype(dt)
    down_n = matrix_norm(mlp.w_down[...].astype(dt).T, norm)
    up_n = matrix_norm(up_w.T, norm)
    act = ACTIVATION_FNS[c.activation]
    act_prime = jnp.vectorize(jax.grad(act))
    n = x.shape[1]
    if not local:
        return jnp.full((n,), activation_lipschitz(c.activation), dt) * down_n * up_n
    up = x[0] @ up_w  # [n, f]
    if mlp.b_up is not None:
        up = up + mlp.b_up[...].astype(dt)
    if mlp.w_gate is None:
        return down_n * jnp.abs(act_prime(up)).max(-1) * up_n
    gate_w = mlp.w_gate[...].astype(dt)
    gate = x[0] @ gate_w
    if mlp.b_gate is not None:
        gate = gate + mlp.b_gate[...].astype(dt)
    gate_n = matrix_norm(gate_w.T, norm)
    return down_n * (
        jnp.abs(act_prime(gate) * up).max(-1) * gate_n + jnp.abs(act(gate)).max(-1) * up_n
    )


def head_constants(attn, norm: str) -> jax.Array:
    """c_h = ||(W_V^g(h) W_O^h)^T|| for each query head h (GQA: heads share W_V). [h]."""
    c = attn.config
    wv = jnp.repeat(attn.wv[...], c.n_groups, axis=1)  # [m, h, d]: head h uses group h // r
    wvo = jnp.einsum("mhd,hdn->hnm", wv, attn.wo[...])  # [h, out, in]
    return matrix_norm(wvo, norm)


def _capture_layers(model, v0):
    """Run the layers once, keeping what the factors are evaluated at.

    Returns (per-layer list of (block, `BlockOutput` on [1, n, m]), v^(L) [1, n, m]).
    """
    n = v0.shape[0]
    positions = jnp.arange(n, dtype=jnp.int32)[None]
    pos_vectors = model.score_positions(positions)  # None unless positions enter the scores
    v = v0[None]  # [1, n, m]
    layers = []
    for block in model.blocks:
        out = block(v, positions, pos_vectors=pos_vectors)
        layers.append((block, out))
        v = out.resid_post
    return layers, v


def _layer_factors(block, out, op_norm: str, local: bool, dtype):
    """One layer's factors of the bound (module docstring) from its `BlockOutput`: (left a,
    post p, right r, mixed S = sum_h c_h Lambda^(h) [n, n], diag M), the vectors [n].

    Each sub-layer computes outer(x + post(f(pre(x)))), so its Jacobian's norm is bounded
    by a(x) (I + p J_f r): for attention a = left, p = post, r = right per edge; for the
    MLP (one position) M = a_m (1 + p_m sigma_psi r_m)."""
    if block.parallel:
        raise NotImplementedError(
            "the path bound is derived for sequential sub-layers (z = v + Attn, then the MLP "
            "on z); a parallel_residual block (GPT-NeoX, Phi-2) adds both branches to v and "
            "has no such factorisation here"
        )
    pattern = out.attn.pattern[0]  # [h, n, n]
    n = pattern.shape[-1]
    ones = jnp.ones((n,), dtype)
    attn_layout, mlp_layout = block.layouts

    def factors(layout):
        return tuple(ones if name is None else _norm_factor(getattr(block, name),
                                                            out.taps[name], op_norm)
                     for name in (layout.pre, layout.post, layout.outer))

    right, post, left = factors(attn_layout)
    mlp_pre, mlp_post, mlp_outer = factors(mlp_layout)
    # Each branch is scaled by residual_scale (Granite) before the add: part of "post".
    post, mlp_post = post * block.residual_scale, mlp_post * block.residual_scale
    lip = _mlp_factor(block.mlp, out.mlp_in, op_norm, local)
    diag = mlp_outer * (1.0 + mlp_post * lip * mlp_pre)
    heads = head_constants(block.attn, op_norm).astype(dtype)  # [h]
    mixed = jnp.einsum("h,hqk->qk", heads, pattern.astype(dtype))  # [n, n] = S
    return left, post, right, mixed, diag


def _bound_row(model, layers, v_last, op_norm: str, local: bool):
    """Row n of c_3 D^(L-1) A^(L-1) ... D^(0) A^(0) (see the module docstring): [n]."""
    n = v_last.shape[1]
    dtype = v_last.dtype
    factors = [_layer_factors(block, out, op_norm, local, dtype) for block, out in layers]
    final = _norm_factor(model.final_norm, v_last[:, -1:], op_norm)[0]
    # Row n of the product, built from the output back: row <- row D^(l) A^(l).
    row = jnp.zeros((n,), dtype).at[-1].set(final)
    for left, post, right, mixed, diag in reversed(factors):
        row = row * diag * left
        row = row + right * ((row * post) @ mixed)
    return row


def _bound_kernel(graphdef, state, v0, *, op_norms, local):
    """Bound rows for each operator norm in op_norms, and y_n (to check the replay)."""
    model = nnx.merge(graphdef, state)
    layers, v_last = _capture_layers(model, v0)
    y_last = model.final_norm(v_last)[0, -1] if model.final_norm is not None else v_last[0, -1]
    rows = tuple(_bound_row(model, layers, v_last, op, local) for op in op_norms)
    return rows, y_last


_BOUND = kernel_variants(_bound_kernel, ("graphdef", "op_norms", "local"))


def _needs_local(model) -> list[str]:
    c = model.config
    reasons = []
    if c.gated:
        reasons.append(
            "a gated MLP act(x W_gate) * (x W_up) is not globally Lipschitz (it is quadratic)"
        )
    if c.norm in ("layernorm", "rmsnorm"):
        reasons.append(
            f"a live {c.norm}'s Jacobian norm max|scale| / sqrt(var + eps) has no useful global "
            "bound (it grows to max|scale| / sqrt(eps) as the variance vanishes)"
        )
    return reasons


def use_local_constants(model, constants: str) -> bool:
    """Whether `constants` ("auto", "global", "local") means local factors for this model.

    Raises:
        ValueError: an unknown choice. NotImplementedError: "global" where no global bound
            exists (gated MLP, live LayerNorm / RMSNorm).
    """
    check_choice("constants", constants, CONSTANTS)
    reasons = _needs_local(model)
    if constants == "global" and reasons:
        raise NotImplementedError(
            "no global bound for this model: " + "; ".join(reasons)
            + ". Use constants='local' for a bound at this input's captured states."
        )
    return constants == "local" or (constants == "auto" and bool(reasons))


@shape_checked
def path_bounds(
    model,
    inputs: Int[ArrayLike, "n"] | Float[ArrayLike, "n m"],
    *,
    norms: tuple[str, ...] = ("spectral",),
    constants: str = "auto",
    freeze_attention: bool = True,
) -> dict[str, Float[Array, "n"]]:
    """`path_bound` for several norms at once (one forward replay, one compilation).

    Returns:
        {norm: [n] bounds} for each requested norm.
    """
    norms = tuple(norms)
    if not norms:
        raise ValueError("norms is empty")
    for norm in norms:
        check_choice("norm", norm, BOUND_NORMS)
    if freeze_attention is not True:
        raise ValueError(
            "path_bound bounds the frozen-attention Jacobian only (Theorem 5.1's assumption); "
            "pass freeze_attention=True"
        )
    local = use_local_constants(model, constants)
    v0 = states_at_layer(model, inputs, 0)
    op_norms = tuple(dict.fromkeys("spectral" if nm == "fro" else nm for nm in norms))
    graphdef, state = nnx.split(model)
    kernel = pick_kernel(_BOUND, model, v0.shape[0], v0)
    rows, _ = kernel(graphdef, state, v0, op_norms=op_norms, local=local)
    for op, row in zip(op_norms, rows):
        check_result(model, row, f"the {op} path bound",
                     overflow_hint="the bound is true but uninformative there; "
                     "analysis.log_path_terms computes it in log space")
    by_op = dict(zip(op_norms, rows))
    # ||J||_F <= sqrt(rank J) ||J||_2 <= sqrt(d_model) ||J||_2.
    root_d = math.sqrt(model.config.d_model)
    return {nm: by_op["spectral"] * root_d if nm == "fro" else by_op[nm] for nm in norms}


@shape_checked
def path_bound(
    model,
    inputs: Int[ArrayLike, "n"] | Float[ArrayLike, "n m"],
    *,
    norm: str = "spectral",
    constants: str = "auto",
    freeze_attention: bool = True,
) -> Float[Array, "n"]:
    """Right-hand side of Theorem 5.1 (R7) for every input position i: a bound on
    ||d y_n / d v_i^(0)|| with frozen attention, from the captured attention patterns.

    Args:
        model: a `transformer.Decoder` (not modified); any norm placement.
        inputs: token ids [n] or embeddings v^(0) [n, d_model].
        norm: the norm bounded: "spectral", "l1", "linf" (induced), or "fro" (bounded as
            sqrt(d_model) times the spectral bound, since rank <= d_model).
        constants: "global": Lipschitz constants from the weights alone (the theorem's
            sigma_psi; exact 1/beta for the constant norm); raises NotImplementedError for
            gated MLPs and live LayerNorm/RMSNorm. "local": norm-Jacobian and MLP factors
            evaluated at this input's captured states -- valid for the frozen-attention
            Jacobian at this input (the quantity measured), not a Lipschitz constant.
            "auto": global where it exists, else local.
        freeze_attention: must be True: the bound holds for the Jacobian with attention
            patterns frozen (the theorem's assumption); none is claimed for live attention.
    Returns:
        [n] bounds, entry i for d y_n / d v_i^(0).
    """
    return path_bounds(
        model, inputs, norms=(norm,), constants=constants, freeze_attention=freeze_attention
    )[norm]
