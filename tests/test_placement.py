"""transformer.placement: float64 on the host, the formats under study on the accelerator.

Two simulated CPU devices play the two roles (`placement.simulate`); they must exist before
JAX initialises, so the worker runs in a subprocess and reports where each array lives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import json
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from flax import nnx
from analysis import Reading, synthetic_pair_distances
from analysis.collapse import SequenceFamily, collapse_sweep
from transformer import Decoder, TransformerConfig, placement
from transformer.rebuild import rebuild

host, acc = jax.devices()[:2]
out = {"devices": [placement.describe(d) for d in jax.devices()]}
where = lambda tree: sorted({placement.describe(d) for a in jax.tree.leaves(tree)
                             for d in a.devices()})
F64 = dict(dtype="float64", param_dtype="float64", softmax_dtype="float64")
cfg = TransformerConfig.tiny(pos_encoding="none", **F64)
tokens = jnp.arange(6)
out["unsimulated"] = where(nnx.state(Decoder(cfg, rngs=nnx.Rngs(0))))
with placement.simulate(accelerator=acc, host=host):
    placement.reset_log()
    m64 = Decoder(cfg, rngs=nnx.Rngs(0))
    m32 = rebuild(m64, dtype="float32", param_dtype="float32")
    m16 = rebuild(m64, dtype="bfloat16", param_dtype="bfloat16")
    out["params64"], out["params32"], out["params16"] = (
        where(nnx.state(m)) for m in (m64, m32, m16))
    out["logits64"], out["logits32"], out["logits16"] = (
        where(m(tokens)) for m in (m64, m32, m16))
    same = np.asarray(m32(tokens)) - np.asarray(rebuild(m64, dtype="float32",
                                                        param_dtype="float32")(tokens))
    out["same_numbers"] = float(np.abs(same).max())
    sweep = collapse_sweep(m32, SequenceFamily((1, 2, 3, 4, 5, 6)), [3, 5],
                           dtypes=("float64", "float32", "bfloat16"))
    out["sweep_finite"] = bool(np.isfinite(sweep.l1).all())
    d = synthetic_pair_distances("none", Reading(), [4, 8], [0], d=8)
    out["synthetic"] = d.tolist()
    out["log"] = placement.placements()
print("RESULT" + json.dumps(out))
"""


def test_float64_runs_on_the_host_and_other_formats_on_the_accelerator():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", WORKER], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.split("RESULT", 1)[1])
    assert out["devices"] == ["cpu:0", "cpu:1"]
    # without simulate: one CPU plays both roles, nothing is committed elsewhere
    assert out["unsimulated"] == ["cpu:0"]
    # cpu:0 plays the host, cpu:1 the accelerator
    assert out["params64"] == ["cpu:0"] and out["logits64"] == ["cpu:0"]
    assert out["params32"] == ["cpu:1"] and out["logits32"] == ["cpu:1"]
    assert out["params16"] == ["cpu:1"] and out["logits16"] == ["cpu:1"]
    assert out["same_numbers"] == 0.0
    assert out["sweep_finite"]
    assert out["log"]["float64"] == "cpu:0"
    assert out["log"]["float32"] == "cpu:1" and out["log"]["bfloat16"] == "cpu:1"
