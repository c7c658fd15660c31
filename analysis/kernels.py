"""Compiled kernels of the analysis: one jit function in three variants, chosen per call.

The bottom of the analysis stack (with `analysis.validation` and `analysis.memory`): every
compiled function of the package (Jacobian, product runners, bound, log-space path terms,
collapse sweeps) is built with `kernel_variants` and called through `pick_kernel`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

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


def pick_kernel(variants, model, n: int, *inputs, plan=None):
    """The fast-compiling variant for tiny models and short inputs, else the optimised one
    (with the CPU options where they apply, and not for a `plan` (`analysis.memory.MemoryPlan`)
    with query blocks). Called
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


