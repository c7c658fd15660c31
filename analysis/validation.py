"""The input and result checks every analysis entry point shares (one copy, not one per
function): the bottom of the analysis stack with `analysis.kernels` and `analysis.memory`.

Inputs get the same checks as the model's own forward pass (token range, learned-position
table, widths), applied to the values the model will actually compute with: states are
cast to the compute dtype first, so finite float64 states that overflow a float32 model
are refused, not differentiated into NaN. Results are checked once they exist: a NaN or
inf computed from finite inputs is an error naming the format that overflowed, and an
all-zero result is an `UnderflowWarning` (in float32 the gradients of huge states
underflow to exactly zero, where float64 still resolves them).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from analysis.checks import check_computed_finite  # noqa: F401  (re-exported)
from analysis.kernels import kernel_variants, pick_kernel
from transformer.shapes import Array, ArrayLike, Float, Int, shape_checked


class UnderflowWarning(RuntimeWarning):
    """An analysis result is exactly zero everywhere although its inputs are finite."""


def check_layer(name: str, value, lo: int, hi: int) -> int:
    """`value` as a layer index in [lo, hi], or ValueError naming `name`."""
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def check_chunk(chunk_size) -> None:
    """ValueError unless chunk_size is None or a positive integer."""
    if chunk_size is not None and (
        not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")


def check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`, else ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")
    return value


def _prefix_kernel(graphdef, state, tokens, *, stop_layer):
    model = nnx.merge(graphdef, state)
    v0 = model.embed(tokens)
    if stop_layer == 0:
        return v0
    # The captured residual, not `.y`: at stop_layer = n_layers `.y` is final-normed.
    out = model.forward_from_embeddings(v0, stop_layer=stop_layer, capture=True)
    return out.intermediates.resid_post[-1]


_PREFIX = kernel_variants(_prefix_kernel, ("graphdef", "stop_layer"))


@shape_checked
def states_at_layer(
    model, inputs: Int[ArrayLike, "n"] | Float[ArrayLike, "n m"], layer: int
) -> Float[Array, "n m"]:
    """The residual states v^(layer) [n, d_model] that the Jacobians differentiate against,
    checked as the model's forward pass checks its inputs.

    Args:
        model: a `transformer.Decoder`.
        inputs: token ids [n] (embedded, then run through layers < `layer`), or states
            v^(layer) [n, d_model] (cast to the model's compute dtype, then checked).
        layer: which residual stream the states belong to (0 = embeddings).
    Returns:
        [n, d_model] in the model's compute dtype, every entry finite.
    Raises:
        ValueError: a shape, dtype or token id the forward pass would refuse; more positions
            than a learned positional table holds; a NaN or inf in the states (given, or
            computed from the token ids), or one the cast to the compute dtype makes.
    """
    c = model.config
    x = jnp.asarray(inputs)
    if x.ndim >= 1 and x.shape[0] == 0:
        raise ValueError("inputs is empty: need at least one position")
    if jnp.issubdtype(x.dtype, jnp.integer):
        if x.ndim != 1:
            raise ValueError(f"token ids must have shape [n], got shape {x.shape}")
        model._check_tokens(x)  # range check with a clear message
        graphdef, state = nnx.split(model)
        states = pick_kernel(_PREFIX, model, x.shape[0], x)(graphdef, state, x, stop_layer=layer)
        check_finite(states, f"v^({layer}) computed from the token ids (check the weights)")
        return states
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"inputs must be integer token ids or float states, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"states must have shape [n, d_model], got shape {x.shape}")
    if x.shape[1] != c.d_model:
        raise ValueError(f"states have width {x.shape[1]} but d_model={c.d_model}")
    model.default_positions(1, x.shape[0])  # a learned table must hold every position
    check_finite(x, "the input states")
    cast = x.astype(c.compute_dtype)
    if cast.dtype != x.dtype:
        check_finite(cast, f"the input states cast to the model's compute dtype {c.dtype} "
                           f"(largest magnitude {_largest(x):.3g})")
    return cast


def _largest(x) -> float:
    return float(jnp.max(jnp.abs(x.astype(jnp.promote_types(x.dtype, jnp.float32)))))


def check_finite(states: jax.Array, what: str) -> None:
    """ValueError naming the first position whose state [n, ...] holds NaN or inf (concrete
    values only: under the caller's jit the check is skipped). A NaN would otherwise flow
    into every Jacobian row and reach a check's verdict as a number."""
    if isinstance(states, jax.core.Tracer):
        return
    host = np.asarray(states).astype(np.float64)  # bfloat16 / float16 too
    bad = ~np.isfinite(host.reshape(host.shape[0], -1)).all(axis=-1)  # [n]
    if bad.any():
        first = int(np.argmax(bad))
        kind = "NaN" if np.isnan(host[first]).any() else "inf"
        raise ValueError(
            f"{what} hold {kind} at position {first} (first of {int(bad.sum())} non-finite "
            "positions)"
        )


def check_result(model, result: jax.Array, what: str, *, zeros_possible: bool = False,
                 overflow_hint: str | None = None):
    """`result` unchanged, once it is known to mean something (finite inputs assumed, as
    `states_at_layer` guarantees).

    Args:
        model: the decoder the result was computed with (its compute dtype is named).
        result: any array; traced results (under the caller's jit) pass unchecked.
        what: the quantity, as the messages name it.
        zeros_possible: an all-zero result is a legitimate value (no warning).
        overflow_hint: where infinite entries are a true but useless value (an upper bound
            that overflowed), warn with this hint instead of raising.
    Raises:
        ValueError: the result holds NaN (or inf, unless `overflow_hint`): the computation
            overflowed in the model's compute dtype, or the weights are not finite.
    Warns:
        UnderflowWarning: every entry is exactly zero (unless `zeros_possible`): in a
            narrow format the gradients of huge states underflow to zero.
        RuntimeWarning: infinite entries, with `overflow_hint`.
    """
    if isinstance(result, jax.core.Tracer):
        return result
    dtype = model.config.dtype
    has_nan, has_inf, nonzero = jax.device_get(
        (jnp.isnan(result).any(), jnp.isinf(result).any(), jnp.any(result != 0)))
    if has_nan or (has_inf and overflow_hint is None):
        kind = "NaN" if has_nan else "inf"
        raise ValueError(
            f"{what} holds {kind} although the input states are finite: the computation "
            f"overflowed in {dtype} or the weights are not finite; check the weights, or "
            "rebuild the model in float64 (transformer.rebuild(model, dtype='float64', "
            "param_dtype='float64', softmax_dtype='float64'))"
        )
    if has_inf:
        warnings.warn(f"{what} overflowed to inf in {dtype}: {overflow_hint}",
                      RuntimeWarning, stacklevel=3)
    if not nonzero and not zeros_possible:
        warnings.warn(
            f"{what} is exactly zero everywhere although the input states are finite: the "
            f"gradients underflow in {dtype} (states of huge magnitude make every "
            "normalised derivative tiny), or the output does not depend on the input; "
            "compare with the model rebuilt in float64",
            UnderflowWarning, stacklevel=3,
        )
    return result

