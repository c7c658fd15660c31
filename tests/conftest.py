"""Test-suite set-up: float64 available everywhere (tests pass explicit dtypes)."""

import os

import jax

# Several tests compare against float64 references; x64 is process-global, so enable it once.
jax.config.update("jax_enable_x64", True)
os.environ.setdefault("MPLBACKEND", "Agg")
# Nothing may reach a model hub: transformers reads local files only (tiny models, GGUFs).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
