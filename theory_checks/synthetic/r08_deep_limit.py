"""R8 -- Proposition 5.2 / B.8: in the deep limit only the first token survives."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from analysis.spectral import convergence_rate, deep_limit, distance_to_first_column
from theory_checks.context import Profile, RunContext
from theory_checks.report.plotting import new_figure, save
from theory_checks.result import Check, CheckResult
from theory_checks.synthetic.models import F64, describe, random_model, random_tokens

CHECK = Check(
    "R8", "Deep limit: only the first token survives", "Proposition 5.2 / B.8",
    claim="With the same causal attention Lambda in every layer (every row but the first "
    "with >= 2 non-zeros), ((Lambda + I)/2)^L tends to the matrix whose first column is 1: "
    "y_n becomes sensitive to the first token only.",
    criterion="the fitted geometric rate of the distance to 1 e_1^T matches (1 + lambda_2)/2 "
    "(relative error of log-rates <= 5%) and the distance at the largest depth is <= 1e-8.",
)


MAX_DEPTH = 20_000
PREMISE = ("every row of Lambda but the first has >= 2 non-zero entries (Proposition 5.2's "
           "assumption), and the predicted rate (1 + lambda_2)/2 brings the distance to 1e-11 "
           f"within the depth cap L <= {MAX_DEPTH}")


def attention_matrix(model, tokens) -> np.ndarray:
    """Lambda: layer 0, head 0 of the model's captured pattern on `tokens`, [n, n] float64."""
    _, inter = model(jnp.asarray(tokens), capture=True)
    return np.asarray(inter.attn_pattern[0, 0], np.float64)


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    n = profile.pick(quick=16, paper=64)
    model = random_model(ctx.seed, std=0.4, n_layers=1, pos_encoding="rope", **F64)
    tokens = random_tokens(ctx.seed, n, model.config.vocab_size)
    lam = attention_matrix(model, tokens)
    # Premise test (fixed before measuring): the proposition's support assumption, and a
    # depth at which its rate can be seen within the cap.
    min_nonzeros = int((lam[1:] != 0).sum(axis=1).min())
    rate_guess = 0.5 * (1.0 + np.sort(np.diag(lam))[-2])
    depth_needed = (math.inf if rate_guess >= 1.0
                    else float(np.ceil(np.log(1e-11) / np.log(rate_guess))))
    premise_reached = min_nonzeros >= 2 and depth_needed <= MAX_DEPTH
    # Depths long enough to reach float64 noise at the predicted rate.
    l_max = int(min(MAX_DEPTH, depth_needed))
    depths = sorted({int(x) for x in np.linspace(max(1, l_max // 2), l_max, 12)})
    limit = deep_limit(lam, l_max)
    final = distance_to_first_column(limit)
    if premise_reached:
        fit = convergence_rate(lam, depths, min_distance=1e-13)
        fitted, predicted, lam2 = fit.fitted_rate, fit.predicted_rate, fit.lambda_2
        rel_err = float(abs(np.log(fitted) / np.log(predicted) - 1.0))
    else:  # the rate is 1 (or too close to it to fit): nothing to compare
        fitted, predicted = math.nan, float(rate_guess)
        lam2, rel_err = float(np.sort(np.diag(lam))[-2]), math.nan
    ok = rel_err <= 0.05 and final <= 1e-8

    plot_depths = np.unique(np.geomspace(1, l_max, 40).astype(int))
    dist = [distance_to_first_column(deep_limit(lam, int(d))) for d in plot_depths]
    path, rel = ctx.figure("r08_deep_limit.png")
    fig, ax = new_figure()
    ax.semilogy(plot_depths, dist, "o-", ms=3, label="max_i ||row_i - e_1||_1")
    ax.semilogy(plot_depths, dist[0] * predicted ** (plot_depths - plot_depths[0]),
                "--", label=f"predicted rate (1+lambda_2)/2 = {predicted:.4f}")
    ax.set_xlabel("L (depth)")
    ax.set_ylabel("distance of ((Lambda+I)/2)^L to 1 e_1^T")
    ax.set_title(f"R8: Lambda from a random 1-layer RoPE decoder, n = {n}, float64, seed {ctx.seed}")
    ax.legend()
    save(fig, path)
    return CHECK.result(
        ctx,
        measured={
            "n": n, "lambda_2": lam2, "predicted_rate": predicted,
            "fitted_rate": fitted, "log_rate_relative_error": rel_err,
            "max_depth": l_max, "distance_at_max_depth": final,
            "first_column_at_max_depth_min": float(limit[:, 0].min()),
            "min_nonzeros_below_first_row": min_nonzeros, "depth_needed": depth_needed,
        },
        ok=ok,
        premise=PREMISE,
        premise_reached=premise_reached,
        to_reach_premise="" if premise_reached else (
            f"an attention pattern with >= 2 non-zeros in every row but the first (found "
            f"{min_nonzeros})" if min_nonzeros < 2 else
            f"a depth cap of at least {depth_needed:.0f} (lambda_2 = {lam2:.6f})"),
        key_number=f"rate {fitted:.4f} vs {predicted:.4f}",
        setup=f"Lambda = head 0 of {describe(model)} on {n} random tokens (weights N(0, 0.4^2)); "
        f"depths {depths[0]}..{l_max}.",
        figures=(rel,), dtypes=("float64",),
    )
