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
from theory_checks.report.plotting import plt, save
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
    drawn = []  # (diagonal, eigenvalues) of the first seed's matrices, for the figure
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
                if seed == seeds[0]:
                    drawn.append((np.asarray(s.diagonal), np.linalg.eigvals(lam).real))
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
    path, rel = ctx.figure("r09_spectra.png")
    fig, (ax, ax_err) = plt.subplots(1, 2, figsize=(8.4, 3.8), dpi=110)
    for diag, eig in drawn:
        ax.plot(np.sort(diag), np.sort(eig), ".", ms=3, color="C0")
        gap = np.abs(np.sort(diag) - np.sort(eig))
        ax_err.semilogy(np.sort(diag), np.maximum(gap, 1e-18), ".", ms=3, color="C0")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="eigenvalue = diagonal entry")
    ax.plot([], [], ".", color="C0", label=f"{len(drawn)} matrices of seed {seeds[0]}")
    ax.set_xlabel("diagonal entry Lambda_ii (sorted)")
    ax.set_ylabel("eigenvalue, LAPACK (sorted)")
    ax.legend(fontsize=7)
    ax_err.axhline(1e-10, color="C3", ls="--", lw=0.8, label="criterion 1e-10")
    ax_err.set_xlabel("diagonal entry Lambda_ii")
    ax_err.set_ylabel("|eigenvalue - diagonal| (1e-18: exactly equal)")
    ax_err.legend(fontsize=7)
    fig.suptitle(f"R9: captured attention matrices, n = {n}, float64", fontsize=9)
    save(fig, path)
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
        figures=(rel,), seeds=seeds, dtypes=("float64",),
    )
