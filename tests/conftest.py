"""Test-suite set-up: float64 available everywhere (tests pass explicit dtypes)."""

import os

import jax

# Several tests compare against float64 references; x64 is process-global, so enable it once.
jax.config.update("jax_enable_x64", True)
os.environ.setdefault("MPLBACKEND", "Agg")
