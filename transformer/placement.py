"""Where each float format computes: the one place that decides it.

TPUs have no float64 hardware (XLA emulates some float64 operations there and refuses
others) and JAX's maintainers advise running float64 work on the CPU. So on any backend
other than CPU, float64 computations (the exact references of R1-R7's checks, collapse
noise floors) run on the host CPU device, and the formats under study (float32, bfloat16,
float16) run on the accelerator. On a CPU-only machine both are the same device and
nothing is moved.

Used by `Decoder` (its parameters are placed by its compute dtype, so every computation
with the model runs there) and by `analysis` functions that build float64 arrays of their
own. Each decision is logged, so a report can say which device ran what
(`placements()`; the theory-checks runner records it per check).

For tests (and for trying the policy on a CPU), `simulate(accelerator=..., host=...)`
makes any two devices play the two roles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp

_ROLES: dict[str, jax.Device] = {}  # set by `simulate`
_LOG: dict[str, set[str]] = {}


def accelerator() -> jax.Device:
    """The device the formats under study run on (JAX's default device)."""
    return _ROLES.get("accelerator") or jax.devices()[0]


def host() -> jax.Device:
    """The device float64 runs on: the host CPU."""
    return _ROLES.get("host") or jax.devices("cpu")[0]


def separate() -> bool:
    """Whether float64 runs on another device than the formats under study."""
    return host() != accelerator()


def describe(device: jax.Device) -> str:
    """'cpu:0', 'tpu:3', ... (platform and id)."""
    return f"{device.platform}:{device.id}"


def device_for(dtype) -> jax.Device:
    """The device computations in `dtype` run on (float64: the host; others: the
    accelerator), logged for the report."""
    name = jnp.dtype(dtype).name
    device = host() if name == "float64" else accelerator()
    _LOG.setdefault(name, set()).add(describe(device))
    return device


def place(tree, dtype):
    """`tree` (arrays, e.g. a model's state) on `device_for(dtype)`; unchanged (not even
    committed to a device) when host and accelerator are the same device."""
    device = device_for(dtype)
    if not separate():
        return tree
    return jax.device_put(tree, device)


@contextlib.contextmanager
def default_device_for(dtype) -> Iterator[jax.Device]:
    """Arrays created inside the block (without an explicit device) go to
    `device_for(dtype)`."""
    device = device_for(dtype)
    if not separate():
        yield device
        return
    with jax.default_device(device):
        yield device


def placements() -> dict[str, str]:
    """{dtype name: device(s)} of every decision since the last `reset_log()`."""
    return {name: ", ".join(sorted(devices)) for name, devices in sorted(_LOG.items())}


def reset_log() -> None:
    _LOG.clear()


@contextlib.contextmanager
def simulate(*, accelerator: jax.Device, host: jax.Device) -> Iterator[None]:
    """Let two devices play the accelerator and the host (e.g. two simulated CPU devices
    from XLA_FLAGS=--xla_force_host_platform_device_count=2)."""
    saved = dict(_ROLES)
    _ROLES.update(accelerator=accelerator, host=host)
    try:
        yield
    finally:
        _ROLES.clear()
        _ROLES.update(saved)
