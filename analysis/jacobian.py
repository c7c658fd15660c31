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

import jax
import jax.numpy as jnp
from flax import nnx

MODES = ("auto", "reverse", "forward")

# Memory allowed for the batched cotangents/tangents of one chunk when chunk_size is None.
_CHUNK_BUDGET_BYTES = 1 << 30

# Below this much work (roughly: scalar parameters x positions x d_out) the XLA compile, not
# the run, dominates; such kernels are compiled without LLVM's expensive optimisation passes
# (about a third less compile time; the numbers are the same up to rounding).
_SMALL_WORK = 2e8
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def kernel_pair(fn, static_argnames):
    """(optimised, fast-compiling) jit versions of one kernel; pick with `pick_kernel`."""
    return (
        jax.jit(fn, static_argnames=static_argnames),
        jax.jit(fn, static_argnames=static_argnames, compiler_options=_FAST_COMPILE),
    )


def pick_kernel(pair, model, n: int):
    """The fast-compiling variant for tiny models and short inputs, else the optimised one."""
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    work = n_params * n * model.config.d_model
    return pair[1] if work < _SMALL_WORK else pair[0]


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


_PREFIX = kernel_pair(_prefix_kernel, ("graphdef", "stop_layer"))


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
        return pick_kernel(_PREFIX, model, x.shape[0])(graphdef, state, x, stop_layer=layer)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"inputs must be integer token ids or float states, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"states must have shape [n, d_model], got shape {x.shape}")
    if x.shape[1] != c.d_model:
        raise ValueError(f"states have width {x.shape[1]} but d_model={c.d_model}")
    if x.shape[0] == 0:
        raise ValueError("inputs is empty: need at least one position")
    return x.astype(c.compute_dtype)


# ---- the differentiated function ---------------------------------------------------------


def _last_layer_last_query(model, layer: int, v, positions, freeze_attention: bool):
    """Layer `layer` for the last position only. v: [1, n, m] -> v_n^(layer+1) [1, 1, m].

    Keys/values of positions < n come from the same projections the block uses and enter as
    attention context; the block itself then runs on the last position alone.
    """
    block = model.blocks[layer]
    prev = v[:, :-1]
    attn_in = prev if block.placement == "post" else block.attn_norm(prev)
    keys, values = block.attn.project_kv(attn_in, positions[:, :-1])  # [1, n-1, g, d]
    valid = jnp.ones(prev.shape[:2], bool)  # [1, n-1]
    out = block(
        v[:, -1:], positions[:, -1:], (keys, values, valid), freeze_attention=freeze_attention
    )
    return out[0]


def last_state(
    model,
    v,
    *,
    start_layer: int,
    stop_layer: int,
    final_norm: bool,
    freeze_attention: bool,
    deltas=None,
    remat: bool = False,
):
    """The last position's state after layers [start_layer, stop_layer) (then norm3 if asked).

    Args:
        model: a `Decoder`.
        v: [n, m] residual states v^(start_layer).
        deltas: optional [stop - start + 1, n, m] perturbations added to v^(l) before layer l
            (the last one to v^(stop_layer), only its last row matters); their gradients are
            the Jacobians with respect to every intermediate residual stream.
        remat: wrap each full layer in `jax.checkpoint`, so a VJP keeps only the layer
            inputs [n, m] and recomputes the [h, n, n] attention tensors in the backward
            pass (long contexts: the saved patterns would otherwise grow as L * h * n^2).
    Returns:
        [m]: v_n^(stop_layer), or y_n = norm3(v_n^(L)) when final_norm.
    """
    n = v.shape[0]
    positions = jnp.arange(n, dtype=jnp.int32)[None]  # [1, n]
    h = v[None]  # [1, n, m]
    for offset, layer in enumerate(range(start_layer, stop_layer)):
        if deltas is not None:
            h = h + deltas[offset][None]
        if layer < stop_layer - 1:
            run = lambda x, blk=model.blocks[layer]: blk(  # noqa: E731
                x, positions, freeze_attention=freeze_attention
            )[0]
            h = jax.checkpoint(run)(h) if remat else run(h)
        else:
            h = _last_layer_last_query(model, layer, h, positions, freeze_attention)
    out = h[0, -1]  # [m]
    if deltas is not None:
        out = out + deltas[-1][-1]
    if final_norm and model.final_norm is not None:
        out = model.final_norm(out[None, None])[0, 0]
    return out


def _chunk_budget() -> int:
    """Bytes for one chunk's temporaries: the CPU budget, or a quarter of an accelerator's
    memory (a GPU's memory is the computation's own; host memory is shared)."""
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return _CHUNK_BUDGET_BYTES
    stats = dev.memory_stats() or {}
    return max(_CHUNK_BUDGET_BYTES, int(stats.get("bytes_limit", 0)) // 4)


def _auto_chunk(model, n: int, n_layers_run: int, count: int) -> int:
    """Chunk of cotangents whose backward temporaries fit the budget (rough estimate)."""
    c = model.config
    itemsize = jnp.dtype(c.compute_dtype).itemsize
    layers = max(n_layers_run, 1)
    per_item = itemsize * (3 * c.n_heads * n * n + 6 * n * (c.d_model + 2 * c.d_mlp)) * 2
    per_item = per_item + itemsize * layers * n * c.d_model  # per-layer cotangent states
    chunk = int(max(1, min(count, _chunk_budget() // per_item)))
    return _even_chunk(chunk, count)


def _even_chunk(chunk: int, count: int) -> int:
    """Balance the chunks: the fewest chunks of at most `chunk` rows, as equal as possible
    (less zero padding in `batched_map`)."""
    n_chunks = -(-count // chunk)
    return -(-count // n_chunks)


def batched_map(fn, xs: jax.Array, chunk: int) -> jax.Array:
    """vmap `fn` over the rows of xs, `chunk` rows at a time (a scan over chunks).

    The rows are zero-padded to a multiple of `chunk` so the scan has one body (lax.map's
    own remainder handling compiles a second copy); the padded results are dropped.
    """
    count = xs.shape[0]
    if chunk >= count:
        return jax.vmap(fn)(xs)
    n_chunks = -(-count // chunk)
    pad = n_chunks * chunk - count
    xs = jnp.concatenate([xs, jnp.zeros((pad, *xs.shape[1:]), xs.dtype)]) if pad else xs
    out = jax.lax.map(jax.vmap(fn), xs.reshape(n_chunks, chunk, *xs.shape[1:]))
    out = jax.tree.map(lambda a: a.reshape(n_chunks * chunk, *a.shape[2:])[:count], out)
    return out


def _jacobian_kernel(
    graphdef, state, v, *, start_layer, stop_layer, final_norm, freeze_attention, mode, chunk
):
    model = nnx.merge(graphdef, state)
    n, m = v.shape

    def f(x):
        return last_state(
            model, x, start_layer=start_layer, stop_layer=stop_layer, final_norm=final_norm,
            freeze_attention=freeze_attention,
        )

    if mode == "reverse":
        y, vjp = jax.vjp(f, v)
        eye = jnp.eye(y.shape[0], dtype=y.dtype)  # [d_out, d_out] cotangents
        return batched_map(lambda u: vjp(u)[0], eye, chunk)  # [d_out, n, m]
    y, jvp = jax.linearize(f, v)

    def column(k):
        return jvp(jax.nn.one_hot(k, n * m, dtype=v.dtype).reshape(n, m))  # [d_out]

    cols = batched_map(column, jnp.arange(n * m), chunk)  # [n*m, d_out]
    return cols.T.reshape(y.shape[0], n, m)


_JACOBIAN = kernel_pair(
    _jacobian_kernel,
    ("graphdef", "start_layer", "stop_layer", "final_norm", "freeze_attention", "mode", "chunk"),
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
    chunk = chunk_size or _auto_chunk(model, n, stop - wrt_layer, count)
    graphdef, state = nnx.split(model)
    return pick_kernel(_JACOBIAN, model, n)(
        graphdef, state, v, start_layer=wrt_layer, stop_layer=stop,
        final_norm=of_layer is None, freeze_attention=bool(freeze_attention), mode=mode,
        chunk=min(chunk, count),
    )
