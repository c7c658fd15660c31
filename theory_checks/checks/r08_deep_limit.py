"""R8 -- Proposition 5.2 / B.8: in the deep limit only the first token survives."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from analysis.spectral import convergence_rate, deep_limit, distance_to_first_column
from theory_checks.checks._models import F64, describe, random_model, random_tokens
from theory_checks.context import Profile, RunContext
from theory_checks.plotting import new_figure, save
from theory_checks.result import CheckResult, verdict_from

ID, TITLE, PAPER_REF = "R8", "Deep limit: only the first token survives", "Proposition 5.2 / B.8"


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    n = profile.pick(quick=16, paper=64)
    model = random_model(ctx.seed, std=0.4, n_layers=1, pos_encoding="rope", **F64)
    tokens = random_tokens(ctx.seed, n, model.config.vocab_size)
    _, inter = model(jnp.asarray(tokens), capture=True)
    lam = np.asarray(inter.attn_pattern[0, 0], np.float64)  # [n, n], layer 0, head 0
    # Depths long enough to reach float64 noise at the predicted rate.
    rate_guess = 0.5 * (1.0 + np.sort(np.diag(lam))[-2])
    l_max = int(min(20_000, np.ceil(np.log(1e-11) / np.log(rate_guess))))
    depths = sorted({int(x) for x in np.linspace(max(1, l_max // 2), l_max, 12)})
    fit = convergence_rate(lam, depths, min_distance=1e-13)
    rel_err = abs(np.log(fit.fitted_rate) / np.log(fit.predicted_rate) - 1.0)
    limit = deep_limit(lam, l_max)
    final = distance_to_first_column(limit)
    ok = rel_err <= 0.05 and final <= 1e-8

    plot_depths = np.unique(np.geomspace(1, l_max, 40).astype(int))
    dist = [distance_to_first_column(deep_limit(lam, int(d))) for d in plot_depths]
    path, rel = ctx.figure("r08_deep_limit.png")
    fig, ax = new_figure()
    ax.semilogy(plot_depths, dist, "o-", ms=3, label="max_i ||row_i - e_1||_1")
    ax.semilogy(plot_depths, dist[0] * fit.predicted_rate ** (plot_depths - plot_depths[0]),
                "--", label=f"predicted rate (1+lambda_2)/2 = {fit.predicted_rate:.4f}")
    ax.set_xlabel("L (depth)")
    ax.set_ylabel("distance of ((Lambda+I)/2)^L to 1 e_1^T")
    ax.set_title(f"R8: Lambda from a random 1-layer RoPE decoder, n = {n}, float64, seed {ctx.seed}")
    ax.legend()
    save(fig, path)
    return CheckResult(
        id=ID, title=TITLE, paper_ref=PAPER_REF,
        claim="With the same causal attention Lambda in every layer (every row but the first "
        "with >= 2 non-zeros), ((Lambda + I)/2)^L tends to the matrix whose first column is 1: "
        "y_n becomes sensitive to the first token only.",
        criterion="the fitted geometric rate of the distance to 1 e_1^T matches (1 + lambda_2)/2 "
        "(relative error of log-rates <= 5%) and the distance at the largest depth is <= 1e-8.",
        measured={
            "n": n, "lambda_2": fit.lambda_2, "predicted_rate": fit.predicted_rate,
            "fitted_rate": fit.fitted_rate, "log_rate_relative_error": float(rel_err),
            "max_depth": l_max, "distance_at_max_depth": final,
            "first_column_at_max_depth_min": float(limit[:, 0].min()),
        },
        verdict=verdict_from(ok),
        key_number=f"rate {fit.fitted_rate:.4f} vs {fit.predicted_rate:.4f}",
        setup=f"Lambda = head 0 of {describe(model)} on {n} random tokens (weights N(0, 0.4^2)); "
        f"depths {depths[0]}..{l_max}.",
        figures=(rel,), seeds=(ctx.seed,), dtypes=("float64",),
    )
