"""Jacobians of the last token's state with respect to every input position (R7, R11).

The quantity is d y_n / d v_i^(l): how the final-normed state of the last position (the one
next-token prediction reads) moves when the residual state of position i entering layer l
moves. Only one position's output is differentiated, so reverse mode is the natural choice:
one forward linearisation, then one vector-Jacobian product per output coordinate (d_out of
them), batched with `vmap` in chunks so memory stays bounded (`analysis.runners`,
`analysis.memory`); forward mode (one JVP per input coordinate) where d_out >= n * d_in.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from analysis.kernels import kernel_variants, pick_kernel
from analysis.last_state import last_state
from analysis.memory import auto_chunk, chunk_budget, memory_plan
from analysis.runners import batched_map, vjp_rows
from analysis.validation import check_chunk, check_choice, check_layer, check_result, states_at_layer
from transformer.shapes import Array, ArrayLike, Float, Int, shape_checked

MODES = ("auto", "reverse", "forward")


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


@shape_checked
def last_token_jacobian(
    model,
    inputs: Int[ArrayLike, "n"] | Float[ArrayLike, "n m"],
    *,
    wrt_layer: int = 0,
    mode: str = "auto",
    chunk_size: int | None = None,
    of_layer: int | None = None,
    freeze_attention: bool = False,
    query_block: int | str | None = "auto",
    remat: bool | None = None,
) -> Float[Array, "m n m"]:
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
            None: never), so attention memory is linear in n (`analysis.memory`).
        remat: rematerialise layer by layer in reverse mode (None: automatic, when the
            saved residuals would pass ~2 GiB). Neither switch changes the numbers.
    Returns:
        [d_out, n, d_in] (= [d_model, n, d_model]) in the compute dtype; block [:, i, :] is
        d y_n / d v_i^(wrt_layer).
    """
    c = model.config
    check_choice("mode", mode, MODES)
    check_chunk(chunk_size)
    check_layer("wrt_layer", wrt_layer, 0, c.n_layers)
    if of_layer is not None:
        check_layer("of_layer", of_layer, wrt_layer, c.n_layers)
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
    chunk = chunk_size or auto_chunk(model, n, stop - wrt_layer, count, plan, chunk_budget())
    graphdef, state = nnx.split(model)
    jac = pick_kernel(_JACOBIAN, model, n, v, plan=plan)(
        graphdef, state, v, start_layer=wrt_layer, stop_layer=stop,
        final_norm=of_layer is None, freeze_attention=bool(freeze_attention), mode=mode,
        chunk=min(chunk, count), plan=plan,
    )
    return check_result(model, jac, "the last-token Jacobian")
