"""Jacobians, sensitivity profiles and length sweeps spread over many devices (R4-R7, R11).

Every quantity here is a batch of independent rows: the d_out cotangents of a last-token
Jacobian (one VJP each), the k probes of a Hutchinson estimate, the branches of a collapse
sweep. The batch is laid along the one axis of a `Mesh` ("batch") with `NamedSharding` /
`shard_map`; the model and the input states are replicated, each device linearises the
forward pass itself (one forward per device: cheap next to d_out / n_devices VJPs) and
runs its share of rows, in chunks, with no communication. Results equal the one-device
functions of `analysis.jacobian` / `analysis.sensitivity` / `analysis.collapse` up to
float rounding (tests/test_sharding.py: 8 simulated CPU devices).

Long contexts: the same memory switches as the one-device functions (`query_block`,
`remat`; `analysis.memory.MemoryPlan`) make each device's memory linear in n, and the
Frobenius / inf-norm profiles are reduced per cotangent, never holding the
[d_out, n, d_model] Jacobian.

Multi-host (TPU pods, several GPU hosts): call `jax.distributed.initialize()` on every
host first; `jax.devices()` then lists the devices of all hosts and `device_mesh()` spans
them (see benchmarks/README.md).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from analysis.kernels import kernel_variants, pick_kernel
from analysis.memory import auto_chunk, chunk_budget, memory_plan
from analysis.runners import vjp_rows
from analysis.sensitivity import block_norms, check_norm
from analysis.validation import check_chunk, check_layer, check_result, states_at_layer

AXIS = "batch"

def device_mesh(devices=None) -> Mesh:
    """A one-axis ("batch") mesh over `devices` (default: every device, all hosts).

    Args:
        devices: a sequence of jax devices, or None for `jax.devices()`.
    Returns:
        `jax.sharding.Mesh` with axis name "batch".
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices is empty")
    return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading axis over the mesh's devices."""
    return NamedSharding(mesh, P(AXIS))


def _check_mesh(mesh) -> Mesh:
    if mesh is None:
        return device_mesh()
    if not isinstance(mesh, Mesh) or mesh.axis_names != (AXIS,):
        raise ValueError(f"mesh must be a one-axis Mesh named {AXIS!r} (see device_mesh)")
    return mesh


def _pad_rows(x: jax.Array, multiple: int) -> jax.Array:
    """Zero rows appended so the leading axis divides evenly over the devices."""
    pad = -x.shape[0] % multiple
    return jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x


def _sharded_vjps(graphdef, state, v, cot, *, mesh, start, stop, final_norm, freeze, chunk,
                  reduce, plan):
    """cot [R, d_out] (R divisible by the mesh size) -> `vjp_rows` per row, rows sharded."""

    def local(state, v, cot):
        model = nnx.merge(graphdef, state)
        return vjp_rows(model, v, cot, start_layer=start, stop_layer=stop,
                        final_norm=final_norm, freeze_attention=freeze, chunk=chunk,
                        reduce=reduce, plan=plan)

    # check_vma=False: the replicated forward's output is device-invariant while each
    # device's cotangents vary; the VJP of an invariant output by a varying cotangent is
    # exactly what each device should compute locally (no collective is needed).
    return jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P(), P(AXIS)), out_specs=P(AXIS), check_vma=False
    )(state, v, cot)


_SHARDED_VJPS = kernel_variants(
    _sharded_vjps,
    ("graphdef", "mesh", "start", "stop", "final_norm", "freeze", "chunk", "reduce", "plan"),
)


def _run_rows(model, v, cot, *, mesh, wrt_layer, stop, final_norm, freeze_attention,
              chunk_size, reduce, query_block, remat):
    """Shared driver: pad the rows, pick the chunk, place the inputs, run, drop the pad."""
    mesh = _check_mesh(mesh)
    n = v.shape[0]
    count = cot.shape[0]
    cot = _pad_rows(cot, mesh.size)
    per_device = cot.shape[0] // mesh.size
    plan = memory_plan(model, n, stop - wrt_layer, query_block=query_block, remat=remat)
    chunk = chunk_size or auto_chunk(model, n, stop - wrt_layer, per_device, plan,
                                     chunk_budget())
    chunk = min(chunk, per_device)
    graphdef, state = nnx.split(model)
    state = jax.device_put(state, replicated(mesh))
    v = jax.device_put(v, replicated(mesh))
    cot = jax.device_put(cot, batch_sharded(mesh))
    out = pick_kernel(_SHARDED_VJPS, model, n, v, cot, plan=plan)(
        graphdef, state, v, cot, mesh=mesh, start=wrt_layer, stop=stop, final_norm=final_norm,
        freeze=bool(freeze_attention), chunk=chunk, reduce=reduce, plan=plan,
    )
    return out[:count]


def sharded_last_token_jacobian(
    model,
    inputs,
    *,
    mesh: Mesh | None = None,
    wrt_layer: int = 0,
    of_layer: int | None = None,
    freeze_attention: bool = False,
    chunk_size: int | None = None,
    query_block: int | str | None = "auto",
    remat: bool | None = None,
) -> jax.Array:
    """d y_n / d v_i^(wrt_layer) for every i, its d_out VJPs split over the mesh (R7, R11).

    Same quantity as `analysis.jacobian.last_token_jacobian(mode="reverse")`.

    Args:
        model: a `transformer.Decoder` (not modified).
        inputs: token ids [n] or states v^(wrt_layer) [n, d_model].
        mesh: from `device_mesh` (None: all devices).
        wrt_layer, of_layer, freeze_attention: as in `last_token_jacobian`.
        chunk_size: VJPs batched together on each device (None: automatic).
        query_block, remat: memory switches, as in `last_token_jacobian`.
    Returns:
        [d_out, n, d_in], sharded over d_out.
    """
    c = model.config
    check_chunk(chunk_size)
    check_layer("wrt_layer", wrt_layer, 0, c.n_layers)
    if of_layer is not None:
        check_layer("of_layer", of_layer, wrt_layer, c.n_layers)
    v = states_at_layer(model, inputs, wrt_layer)
    stop = c.n_layers if of_layer is None else of_layer
    eye = jnp.eye(c.d_model, dtype=v.dtype)  # one cotangent per output coordinate
    return _run_rows(model, v, eye, mesh=mesh, wrt_layer=wrt_layer, stop=stop,
                     final_norm=of_layer is None, freeze_attention=freeze_attention,
                     chunk_size=chunk_size, reduce="none", query_block=query_block,
                     remat=remat)


def sharded_sensitivity_profile(
    model,
    inputs,
    *,
    norm: str = "fro",
    mesh: Mesh | None = None,
    wrt_layer: int = 0,
    freeze_attention: bool = False,
    chunk_size: int | None = None,
    query_block: int | str | None = "auto",
    remat: bool | None = None,
) -> jax.Array:
    """||d y_n / d v_i^(wrt_layer)|| for every position i, over the mesh (R7, R11).

    "fro" and "linf" are reduced per cotangent row (memory O(d_out * n), never the
    [d_out, n, d_in] Jacobian: the long-context path); "l1" and "spectral" need whole
    blocks and go through `sharded_last_token_jacobian`.

    Args:
        model, inputs, wrt_layer, freeze_attention, chunk_size: as in
            `analysis.sensitivity.sensitivity_profile`.
        norm: "fro", "spectral", "l1" or "linf".
        mesh: from `device_mesh` (None: all devices).
        query_block, remat: memory switches, as in `last_token_jacobian`.
    Returns:
        [n] sensitivities.
    """
    check_norm(norm)
    c = model.config
    check_chunk(chunk_size)
    check_layer("wrt_layer", wrt_layer, 0, c.n_layers)
    if norm in ("l1", "spectral"):
        jac = sharded_last_token_jacobian(
            model, inputs, mesh=mesh, wrt_layer=wrt_layer, freeze_attention=freeze_attention,
            chunk_size=chunk_size, query_block=query_block, remat=remat,
        )
        return block_norms(jac, norm)
    v = states_at_layer(model, inputs, wrt_layer)
    eye = jnp.eye(c.d_model, dtype=v.dtype)
    rows = _run_rows(model, v, eye, mesh=mesh, wrt_layer=wrt_layer, stop=c.n_layers,
                     final_norm=True, freeze_attention=freeze_attention, chunk_size=chunk_size,
                     reduce="sq" if norm == "fro" else "abs", query_block=query_block,
                     remat=remat)  # [d_out, n]
    # Row k of J_i is e_k^T J_i: Frobenius^2 sums the rows' squares; inf-norm is the
    # largest row abs-sum.
    return jnp.sqrt(rows.sum(0)) if norm == "fro" else rows.max(0)


def sharded_estimate_sensitivity(
    model,
    inputs,
    *,
    n_probes: int = 32,
    seed: int = 0,
    squared: bool = True,
    mesh: Mesh | None = None,
    wrt_layer: int = 0,
    freeze_attention: bool = False,
    chunk_size: int | None = None,
    query_block: int | str | None = "auto",
    remat: bool | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Hutchinson estimate of ||d y_n / d v_i||_F^2 (R11), its probes split over the mesh.

    The same probes as `analysis.sensitivity.estimate_sensitivity` with the same seed, so
    the two agree up to rounding.

    Args:
        model, inputs, n_probes, seed, squared, wrt_layer, freeze_attention, chunk_size:
            as in `estimate_sensitivity`.
        mesh: from `device_mesh` (None: all devices).
        query_block, remat: memory switches, as in `last_token_jacobian`.
    Returns:
        (estimate [n], standard error [n]).
    """
    if not isinstance(n_probes, int) or isinstance(n_probes, bool) or n_probes < 2:
        raise ValueError(f"n_probes must be an integer >= 2, got {n_probes!r}")
    c = model.config
    check_chunk(chunk_size)
    check_layer("wrt_layer", wrt_layer, 0, c.n_layers)
    v = states_at_layer(model, inputs, wrt_layer)
    probes = jax.random.normal(jax.random.key(seed), (n_probes, c.d_model), v.dtype)
    samples = _run_rows(model, v, probes, mesh=mesh, wrt_layer=wrt_layer, stop=c.n_layers,
                        final_norm=True, freeze_attention=freeze_attention,
                        chunk_size=chunk_size, reduce="sq", query_block=query_block,
                        remat=remat)  # [k, n]
    mean = samples.mean(0)
    stderr = samples.std(0, ddof=1) / jnp.sqrt(n_probes)
    if squared:
        return mean, stderr
    root = jnp.sqrt(mean)
    return root, stderr / (2 * jnp.maximum(root, jnp.finfo(root.dtype).tiny))


def sharded_collapse_sweep(model, family, lengths, dtypes=("float32",), *,
                           mesh: Mesh | None = None, softmax_dtype: str | None = None,
                           chunk_size: int = 64):
    """`analysis.collapse.collapse_sweep` (R4-R6) with each chunk of branches split over
    the mesh (the KV cache of the shared prefix is replicated).

    Args:
        as `collapse_sweep`; mesh: from `device_mesh` (None: all devices); chunk_size is
        rounded up to a multiple of the number of devices.
    Returns:
        `CollapseSweep`.
    """
    from analysis.collapse import collapse_sweep

    return collapse_sweep(model, family, lengths, dtypes, softmax_dtype=softmax_dtype,
                          chunk_size=chunk_size, mesh=_check_mesh(mesh))
