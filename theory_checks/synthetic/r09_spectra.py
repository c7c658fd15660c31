"""R9 -- Lemmas B.6, B.7: spectra of causal attention matrices and their products."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from analysis.spectral import (
    is_lower_triangular,
    is_row_stochastic,
    ordered_product,
    spectrum_check,
)
from theory_checks.context import Profile, RunContext
from theory_checks.result import Check, CheckResult
from theory_checks.synthetic.models import F64, describe, random_model, random_tokens

CHECK = Check(
    "R9", "Spectra of causal attention", "Lemmas B.6, B.7",
    claim="A lower-triangular row-stochastic matrix has its diagonal as eigenvalues, all in "
    "[0, 1], largest 1 with the all-ones eigenvector, simple when every row but the first "
    "has >= 2 non-zeros; products of such matrices are again triangular row-stochastic.",
    criterion="every captured attention matrix lower-triangular, and on each: |diagonal - LAPACK eigenvalues| <= 1e-10, "
    "||Lambda 1 - 1||_inf <= 1e-12, largest eigenvalue 1, eigenvalue 1 simple, eigenvalues in "
    "[0, 1]; every per-head product over layers triangular and row-stochastic (1e-12).",
)


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    n = profile.pick(quick=24, paper=128)
    seeds = tuple(ctx.seed + s for s in range(profile.pick(quick=3, paper=10)))
    worst_mismatch = worst_ones = 0.0
    largest_ok = simple_ok = in_unit_interval = products_ok = triangular = True
    matrices = 0
    for seed in seeds:
        model = random_model(seed, std=0.3, n_layers=3, pos_encoding="alibi", **F64)
        tokens = random_tokens(seed, n, model.config.vocab_size)
        _, inter = model(jnp.asarray(tokens), capture=True)
        patterns = np.asarray(inter.attn_pattern, np.float64)  # [L, h, n, n]
        for layer_patterns in patterns:
            for lam in layer_patterns:
                matrices += 1
                if not is_lower_triangular(lam):
                    triangular = False  # a causal pattern must be; the lemmas do not apply
                    continue
                s = spectrum_check(lam)
                worst_mismatch = max(worst_mismatch, s.max_mismatch)
                worst_ones = max(worst_ones, s.ones_residual)
                largest_ok &= abs(s.largest - 1.0) <= 1e-12
                in_unit_interval &= bool((s.diagonal >= 0).all() and (s.diagonal <= 1 + 1e-12).all())
                if s.min_nonzeros_below_first >= 2:
                    simple_ok &= s.multiplicity_of_one == 1
        for head in range(patterns.shape[1]):
            prod = ordered_product(patterns[:, head])
            products_ok &= is_row_stochastic(prod, atol=1e-12) and is_lower_triangular(prod)
    ok = (triangular and worst_mismatch <= 1e-10 and worst_ones <= 1e-12 and largest_ok
          and simple_ok and in_unit_interval and products_ok)
    return CHECK.result(
        ctx,
        measured={
            "matrices_checked": matrices, "all_lower_triangular": bool(triangular),
            "max_eig_mismatch": worst_mismatch,
            "max_ones_residual": worst_ones, "largest_is_one": bool(largest_ok),
            "one_is_simple": bool(simple_ok), "eigs_in_unit_interval": bool(in_unit_interval),
            "products_triangular_row_stochastic": bool(products_ok),
        },
        ok=ok,
        key_number=f"{matrices} matrices, eig err {worst_mismatch:.1e}",
        setup=f"captured patterns of {describe(model)} (weights N(0, 0.3^2)), n = {n}, "
        f"seeds {list(seeds)}.",
        figures=(), seeds=seeds, dtypes=("float64",),
    )
