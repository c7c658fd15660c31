"""R11 -- the U-shape: sensitivity is highest at both ends of the context, lowest inside."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from analysis.sensitivity import sensitivity_profile
from theory_checks.context import Profile, RunContext
from theory_checks.report.plotting import ENCODING_COLORS, ENCODING_NAMES, new_figure, save
from theory_checks.result import Check, CheckResult
from theory_checks.synthetic.models import F64, describe, random_model, random_tokens

CHECK = Check(
    "R11", "U-shaped sensitivity over positions", "Section 5 (U-shape)",
    claim="The topology of causal attention favours early tokens (more paths, R7) and the "
    "residual/recency favours the last ones, so y_n is least sensitive to the middle.",
    criterion="for every seed and every positional encoding without a recency bias (NoPE, "
    "RoPE): ||dy_n/dv_1|| and ||dy_n/dv_n|| both exceed the median over the middle half "
    "of the positions. ALiBi (a recency bias) is shown, not judged.",
)

JUDGED = ("none", "rope")  # no built-in recency bias: topology and residual only
SHOWN = ("alibi",)  # a recency bias, shown for contrast (favours the last tokens)


def _end_ratios(profile: np.ndarray) -> tuple[float, float]:
    n = len(profile)
    middle = float(np.median(profile[n // 4 : 3 * n // 4]))
    return float(profile[0] / middle), float(profile[-1] / middle)


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    n = profile.pick(quick=48, paper=512)
    n_layers = profile.pick(quick=4, paper=8)
    n_seeds = 2 if ctx.reduced else profile.pick(quick=3, paper=10)
    seeds = tuple(ctx.seed + s for s in range(n_seeds))
    ratios: dict[str, list] = {}
    curves: dict[str, list] = {}
    model = None
    for pe in JUDGED + SHOWN:
        ratios[pe] = []
        for seed in seeds:
            model = random_model(seed, std=0.3, n_layers=n_layers, norm="layernorm",
                                 pos_encoding=pe, **F64)
            tokens = jnp.asarray(random_tokens(seed, n, model.config.vocab_size))
            s = np.asarray(sensitivity_profile(model, tokens, norm="fro"))
            ratios[pe].append(_end_ratios(s))
            curves.setdefault(pe, []).append(s / np.median(s[n // 4 : 3 * n // 4]))
    judged = [r for pe in JUDGED for r in ratios[pe]]
    u_shaped = [first > 1.0 and last > 1.0 for first, last in judged]
    ok = all(u_shaped)

    path, rel = ctx.figure("r11_u_shape.png")
    fig, ax = new_figure()
    pos = np.arange(1, n + 1)
    lo_mid, hi_mid = n // 4, 3 * n // 4
    for pe, runs in curves.items():
        runs = np.asarray(runs)  # [seeds, n]
        name = ENCODING_NAMES[pe]
        color = ENCODING_COLORS[name]
        ax.fill_between(pos, runs.min(0), runs.max(0), color=color, alpha=0.15)
        ax.semilogy(pos, np.median(runs, 0), "o-", ms=2, color=color,
                    label=f"{name}{'' if pe in JUDGED else ' (shown, not judged)'}: median "
                    f"and min-max band over {len(seeds)} seeds")
    ax.axvspan(lo_mid + 1, hi_mid, color="grey", alpha=0.1,
               label="middle half (the verdict's reference: its median = 1)")
    ax.axhline(1.0, color="k", lw=0.8, ls=":", label="median of the middle half")
    ax.set_xlabel("input position i")
    ax.set_ylabel("||dy_n/dv_i||_F / median of the middle half")
    ax.set_title(f"R11: {n_layers}-layer decoders, LayerNorm, n = {n}, float64, seeds "
                 f"{seeds[0]}..{seeds[-1]}", fontsize=9)
    ax.legend(fontsize=7)
    save(fig, path)
    return CHECK.result(
        ctx,
        measured={f"{ENCODING_NAMES[pe]} end ratios (first, last) per seed": ratios[pe]
                  for pe in ratios}
        | {"u_shaped_runs": int(sum(u_shaped)), "judged_runs": len(u_shaped)},
        ok=ok,
        key_number=f"U-shape in {sum(u_shaped)}/{len(u_shaped)} runs",
        setup=f"{describe(model)} (and its NoPE, RoPE, ALiBi variants), weights N(0, 0.3^2), n = {n} "
        "random tokens, live attention, Frobenius norms.",
        figures=(rel,), seeds=seeds, dtypes=("float64",),
        notes="Random (untrained) models: the U-shape here comes from topology and the residual "
        "path alone; the paper's U-shape in trained LLMs also involves learned recency.",
    )
