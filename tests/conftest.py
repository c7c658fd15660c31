"""Test-suite set-up: float64 available everywhere (tests pass explicit dtypes); shape hints
checked at run time; compiled programs released after each test module."""

import gc
import os

import jax
import pytest

# Several tests compare against float64 references; x64 is process-global, so enable it once.
jax.config.update("jax_enable_x64", True)
os.environ.setdefault("MPLBACKEND", "Agg")
# The forward pass and the analysis functions check their jaxtyping shape hints at run time
# (transformer.shapes); read when the packages are imported, which happens after this file.
os.environ["TRANSFORMER_CHECK_SHAPES"] = "1"
# Nothing may reach a model hub: transformers reads local files only (tiny models, GGUFs).
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Every CPU executable holds memory mappings; kept for the whole suite they passed the
    kernel's per-process limit (vm.max_map_count, 65530), and XLA then segfaulted while
    compiling (CI, 2026-12-01, in tests/test_theory_checks.py). Measured: 19,157 mappings
    after three modules (test_jacobian, test_bound, test_collapse) without this, 1,126 with
    it, at the same run time."""
    yield
    jax.clear_caches()
    gc.collect()
