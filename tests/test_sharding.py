"""`analysis.sharding`: results over 8 devices equal the one-device functions.

XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set before jax initialises, and
this pytest process has initialised jax already, so the sharded computations run in a
subprocess, which also computes the one-device references (`analysis.jacobian`,
`analysis.sensitivity`, `analysis.collapse`: written separately, no mesh) and an
independent finite-difference check of one Jacobian entry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from flax import nnx
from analysis import sharding
from analysis.collapse import SequenceFamily, collapse_sweep
from analysis.jacobian import last_token_jacobian
from analysis.sensitivity import estimate_sensitivity, sensitivity_profile
from transformer import Decoder, TransformerConfig

out = {"n_devices": len(jax.devices())}
mesh = sharding.device_mesh()
out["mesh_size"] = mesh.size
cfg = TransformerConfig.tiny(dtype="float64", param_dtype="float64", softmax_dtype="float64")
model = Decoder(cfg, rngs=nnx.Rngs(3))
tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, 11), jnp.int32)

def diff(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))

ref = last_token_jacobian(model, tokens, mode="reverse", chunk_size=3)
got = sharding.sharded_last_token_jacobian(model, tokens, mesh=mesh, chunk_size=3)
assert got.shape == ref.shape
out["jac_rel"] = diff(got, ref)
out["jac_sharded_over"] = len(got.sharding.device_set)
# Checkpointed layers (the long-context path) and another layer pair, in one call.
out["jac_remat_layer1_rel"] = diff(
    sharding.sharded_last_token_jacobian(model, tokens, mesh=mesh, wrt_layer=1, of_layer=2,
                                         remat=True, chunk_size=3),
    last_token_jacobian(model, tokens, wrt_layer=1, of_layer=2, mode="reverse", chunk_size=3))
# The long-context plan (query blocks, layer-by-layer remat) on every device.
out["jac_blocked_remat_rel"] = diff(
    sharding.sharded_last_token_jacobian(model, tokens, mesh=mesh, query_block=4, remat=True,
                                         chunk_size=3), ref)

# Finite differences of y_n against one input coordinate (independent of any VJP).
v0 = model.embed(tokens)
def y_last(v):
    return model.forward_from_embeddings(v).y[-1]
i, j, eps = 4, 5, 1e-6
e = jnp.zeros_like(v0).at[i, j].set(eps)
fd = (y_last(v0 + e) - y_last(v0 - e)) / (2 * eps)
out["fd_rel"] = diff(got[:, i, j], fd)

for norm in ("fro", "linf", "l1", "spectral"):
    out[f"profile_{norm}_rel"] = diff(
        sharding.sharded_sensitivity_profile(model, tokens, norm=norm, mesh=mesh, chunk_size=3),
        sensitivity_profile(model, tokens, norm=norm, chunk_size=3))

est, err = sharding.sharded_estimate_sensitivity(model, tokens, n_probes=13, seed=2, mesh=mesh)
est1, err1 = estimate_sensitivity(model, tokens, n_probes=13, seed=2)
out["est_rel"] = diff(est, est1)
out["err_rel"] = diff(err, err1)

fam = SequenceFamily(tuple(int(t) for t in np.random.default_rng(1).integers(0, cfg.vocab_size, 30)))
lengths = list(range(1, 30))
s8 = sharding.sharded_collapse_sweep(model, fam, lengths, ("float32",), mesh=mesh, chunk_size=5)
s1 = collapse_sweep(model, fam, lengths, ("float32",), chunk_size=8)
out["sweep_rel"] = diff(s8.states, s1.states)
out["sweep_star_rel"] = diff(s8.states_star, s1.states_star)
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def sharded_results():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", WORKER], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_eight_devices(sharded_results):
    assert sharded_results["n_devices"] == 8
    assert sharded_results["mesh_size"] == 8
    # The Jacobian really is spread over the devices, not gathered on one.
    assert sharded_results["jac_sharded_over"] == 8


@pytest.mark.parametrize(
    "key",
    ["jac_rel", "jac_remat_layer1_rel", "jac_blocked_remat_rel", "profile_fro_rel",
     "profile_linf_rel", "profile_l1_rel", "profile_spectral_rel", "est_rel", "err_rel",
     "sweep_rel", "sweep_star_rel"],
)
def test_sharded_equals_one_device(sharded_results, key):
    assert sharded_results[key] <= 1e-6, (key, sharded_results[key])


def test_sharded_jacobian_matches_finite_differences(sharded_results):
    np.testing.assert_array_less(sharded_results["fd_rel"], 1e-6)


def test_bad_mesh_rejected():
    import jax
    from flax import nnx

    from analysis import sharding
    from transformer import Decoder, TransformerConfig

    model = Decoder(TransformerConfig.tiny(), rngs=nnx.Rngs(0))
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("x",))
    with pytest.raises(ValueError, match="mesh"):
        sharding.sharded_last_token_jacobian(model, np.arange(4), mesh=mesh)
    with pytest.raises(ValueError, match="devices is empty"):
        sharding.device_mesh([])
    with pytest.raises(ValueError, match="n_probes"):
        sharding.sharded_estimate_sensitivity(model, np.arange(4), n_probes=1)
