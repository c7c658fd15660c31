"""Jacobians of the last token's state with respect to every input position (R7, R11).

The quantity is d y_n / d v_i^(l): how the final-normed state of the last position (the one
next-token prediction reads, shared/PAPER.md) moves when the residual state of position i
entering layer l moves. Only one position's output is differentiated, so reverse mode is the
natural choice: one forward linearisation, then one vector-Jacobian product per output
coordinate (d_out of them), batched with `vmap` in chunks so memory stays bounded.

Structure exploited: the last layer only has to produce the last position. Layers before it
run on every position; the last layer computes keys and values for every position but the
query, attention row and MLP for position n only (the KV-context path of the model's
attention), which removes about one layer of work from every VJP.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from analysis.reverse import (
    MemoryPlan,
    auto_chunk,
    batched_map,
    last_state,
    memory_plan,
    vjp_rows,
)

MODES = ("auto", "reverse", "forward")

# Memory allowed for the batched cotangents/tangents of one chunk when chunk_size is None.
_CHUNK_BUDGET_BYTES = 1 << 30

# Below this much work (roughly: scalar parameters x positions x d_out) the XLA compile, not
# the run, dominates; such kernels are compiled without LLVM's expensive optimisation passes
# (about a third less compile time; the numbers are the same up to rounding).
_SMALL_WORK = 2e8
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


# On the CPU the optimised kernels leave XLA's YNNPACK library the matrix products alone
# (its fused reductions and elementwise ops ran slower than XLA's own loops here: 1.05-1.06x
# faster Jacobians at n = 128, benchmarks/README.md; the same numbers up to rounding), except
# under query blocks, where it measured ~1.08x slower (n = 512) and is left off. The option
# is experimental in XLA: where a jaxlib rejects it, the kernels compile without it.
_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def kernel_variants(fn, static_argnames):
    """Jit versions of one kernel: (optimised, fast-compiling, optimised with the CPU
    options); `pick_kernel` chooses at call time. Creating them initialises no backend."""
    return (
        jax.jit(fn, static_argnames=static_argnames),
        jax.jit(fn, static_argnames=static_argnames, compiler_options=_FAST_COMPILE),
        jax.jit(fn, static_argnames=static_argnames, compiler_options=_CPU_OPTIONS),
    )


@functools.cache
def cpu_options_apply() -> bool:
    """Whether the optimised kernels compile with `_CPU_OPTIONS`: the default backend is the
    CPU and this XLA accepts them (checked once, by compiling a one-op function)."""
    if jax.default_backend() != "cpu":
        return False
    try:
        jax.jit(lambda x: x + 1, compiler_options=_CPU_OPTIONS).lower(jnp.float32(0)).compile()
    except jax.errors.JaxRuntimeError:  # INVALID_ARGUMENT: an XLA without the option
        return False
    return True


def pick_kernel(variants, model, n: int, *inputs, plan: MemoryPlan | None = None):
    """The fast-compiling variant for tiny models and short inputs, else the optimised one
    (with the CPU options where they apply, and not for a `plan` with query blocks). Called
    under a caller's own `jax.jit` (the model's parameters or `inputs` are tracers), the
    plain variant: JAX accepts compiler options on top-level jits only, and the caller's
    compilation decides anyway."""
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    if any(isinstance(x, jax.core.Tracer) for x in (*params, *inputs)):
        return variants[0]
    work = sum(x.size for x in params) * n * model.config.d_model
    if work < _SMALL_WORK:
        return variants[1]
    blocked = plan is not None and plan.query_block is not None
    return variants[2] if cpu_options_apply() and not blocked else variants[0]


# ---- input handling ----------------------------------------------------------------------


def _check_layer(name: str, value, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _check_chunk(chunk_size) -> None:
    if chunk_size is not None and (
        not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")


def _prefix_kernel(graphdef, state, tokens, *, stop_layer):
    model = nnx.merge(graphdef, state)
    v0 = model.embed(tokens)
    if stop_layer == 0:
        return v0
    # The captured residual, not `.y`: at stop_layer = n_layers `.y` is final-normed.
    out = model.forward_from_embeddings(v0, stop_layer=stop_layer, capture=True)
    return out.intermediates.resid_post[-1]


_PREFIX = kernel_variants(_prefix_kernel, ("graphdef", "stop_layer"))


def states_at_layer(model, inputs, layer: int) -> jax.Array:
    """The residual states v^(layer) [n, d_model] that the Jacobians differentiate against.

    Args:
        model: a `transformer.Decoder`.
        inputs: token ids [n] (embedded, then run through layers < `layer`), or states
            v^(layer) [n, d_model] (returned in the model's compute dtype).
        layer: which residual stream the states belong to (0 = embeddings).
    Returns:
        [n, d_model] in the model's compute dtype.
    """
    c = model.config
    x = jnp.asarray(inputs)
    if jnp.issubdtype(x.dtype, jnp.integer):
        if x.ndim != 1:
            raise ValueError(f"token ids must have shape [n], got shape {x.shape}")
        if x.shape[0] == 0:
            raise ValueError("inputs is empty: need at least one position")
        model._check_tokens(x)  # range check with a clear message
        graphdef, state = nnx.split(model)
        states = pick_kernel(_PREFIX, model, x.shape[0], x)(graphdef, state, x, stop_layer=layer)
        _check_finite(states, f"v^({layer}) computed from the token ids (check the weights)")
        return states
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"inputs must be integer token ids or float states, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"states must have shape [n, d_model], got shape {x.shape}")
    if x.shape[1] != c.d_model:
        raise ValueError(f"states have width {x.shape[1]} but d_model={c.d_model}")
    if x.shape[0] == 0:
        raise ValueError("inputs is empty: need at least one position")
    _check_finite(x, "the input states")
    return x.astype(c.compute_dtype)


def _check_finite(states: jax.Array, what: str) -> None:
    """ValueError naming the first position whose state holds NaN or inf (concrete values
    only: under the caller's jit the check is skipped). A NaN would otherwise flow into
    every Jacobian row and reach a check's verdict as a number."""
    if isinstance(states, jax.core.Tracer):
        return
    host = np.asarray(states).astype(np.float64)  # bfloat16 / float16 too
    bad = ~np.isfinite(host).all(axis=-1)  # [n]
    if bad.any():
        first = int(np.argmax(bad))
        kind = "NaN" if np.isnan(host[first]).any() else "inf"
        raise ValueError(
            f"{what} hold {kind} at position {first} (first of {int(bad.sum())} non-finite "
            "positions)"
        )


# ---- chunking ----------------------------------------------------------------------------


def _chunk_budget() -> int:
    """Bytes for one chunk's temporaries: the CPU budget, or a quarter of an accelerator's
    memory (a GPU's memory is the computation's own; host memory is shared)."""
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return _CHUNK_BUDGET_BYTES
    stats = dev.memory_stats() or {}
    return max(_CHUNK_BUDGET_BYTES, int(stats.get("bytes_limit", 0)) // 4)


def _auto_chunk(model, n: int, n_layers_run: int, count: int, plan=MemoryPlan()) -> int:
    """Chunk of cotangents whose backward temporaries fit the budget (rough estimate)."""
    return auto_chunk(model, n, n_layers_run, count, plan, _chunk_budget())


def _jacobian_kernel(
    graphdef, state, v, *, start_layer, stop_layer, final_norm, freeze_attention, mode, chunk,
    plan,
):
    model = nnx.merge(graphdef, state)
    n, m = v.shape
    if mode == "reverse":
        eye = jnp.eye(model.config.d_model, dtype=v.dtype)  # [d_out, d_out] cotangents
        return vjp_rows(
            model, v, eye, start_layer=start_layer, stop_layer=stop_layer,
            final_norm=final_norm, freeze_attention=freeze_attention, chunk=chunk, plan=plan,
        )  # [d_out, n, m]

    def f(x):
        return last_state(
            model, x, start_layer=start_layer, stop_layer=stop_layer, final_norm=final_norm,
            freeze_attention=freeze_attention, plan=plan,
        )

    y, jvp = jax.linearize(f, v)

    def column(k):
        return jvp(jax.nn.one_hot(k, n * m, dtype=v.dtype).reshape(n, m))  # [d_out]

    cols = batched_map(column, jnp.arange(n * m), chunk)  # [n*m, d_out]
    return cols.T.reshape(y.shape[0], n, m)


_JACOBIAN = kernel_variants(
    _jacobian_kernel,
    ("graphdef", "start_layer", "stop_layer", "final_norm", "freeze_attention", "mode", "chunk",
     "plan"),
)


def last_token_jacobian(
    model,
    inputs,
    *,
    wrt_layer: int = 0,
    mode: str = "auto",
    chunk_size: int | None = None,
    of_layer: int | None = None,
    freeze_attention: bool = False,
    query_block: int | str | None = "auto",
    remat: bool | None = None,
) -> jax.Array:
    """d y_n / d v_i^(wrt_layer) for every input position i (R7, R11).

    Args:
        model: a `transformer.Decoder` (not modified).
        inputs: token ids [n], or residual states v^(wrt_layer) [n, d_model].
        wrt_layer: the residual stream differentiated against (0: the embeddings v^(0)).
        mode: "reverse" (one VJP per output coordinate), "forward" (one JVP per input
            coordinate), or "auto" (reverse unless d_out >= n * d_in).
        chunk_size: VJPs/JVPs batched together (None: chosen from a ~1 GiB budget).
        of_layer: differentiate the residual v_n^(of_layer) (no final norm) instead of y_n;
            must satisfy wrt_layer <= of_layer <= n_layers.
        freeze_attention: hold every attention pattern constant (Theorem 5.1's assumption).
        query_block: attend this many queries at a time ("auto": 256 from n = 2048 on;
            None: never), so attention memory is linear in n (`analysis.reverse`).
        remat: rematerialise layer by layer in reverse mode (None: automatic, when the
            saved residuals would pass ~2 GiB). Neither switch changes the numbers.
    Returns:
        [d_out, n, d_in] (= [d_model, n, d_model]) in the compute dtype; block [:, i, :] is
        d y_n / d v_i^(wrt_layer).
    """
    c = model.config
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(map(repr, MODES))}")
    _check_chunk(chunk_size)
    _check_layer("wrt_layer", wrt_layer, 0, c.n_layers)
    if of_layer is not None:
        _check_layer("of_layer", of_layer, wrt_layer, c.n_layers)
    v = states_at_layer(model, inputs, wrt_layer)
    n, m = v.shape
    stop = c.n_layers if of_layer is None else of_layer
    d_out = c.d_model
    if mode == "auto":
        mode = "reverse" if d_out < n * m else "forward"
    count = d_out if mode == "reverse" else n * m
    plan = memory_plan(model, n, stop - wrt_layer, query_block=query_block, remat=remat)
    if mode == "forward":
        plan = dataclasses.replace(plan, remat=False)  # rematerialising is a reverse-mode plan
    chunk = chunk_size or _auto_chunk(model, n, stop - wrt_layer, count, plan)
    graphdef, state = nnx.split(model)
    return pick_kernel(_JACOBIAN, model, n, v, plan=plan)(
        graphdef, state, v, start_layer=wrt_layer, stop_layer=stop,
        final_norm=of_layer is None, freeze_attention=bool(freeze_attention), mode=mode,
        chunk=min(chunk, count), plan=plan,
    )
