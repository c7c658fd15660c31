"""R10 -- Proposition 6.1 / B.9: without positions and causal mask, counting is lost."""

from __future__ import annotations

from analysis.counting import counting_contrast
import numpy as np

from theory_checks.context import Profile, RunContext
from theory_checks.report.plotting import new_figure, save
from theory_checks.result import Check, CheckResult
from theory_checks.synthetic.models import F64, describe, random_model

CHECK = Check(
    "R10", "No positions, no mask: counting is lost", "Proposition 6.1 / B.9",
    claim="Without positional encodings and without the causal mask, sequences with the "
    "same ratio of token types give every '1' and every '0' the same representation at "
    "every layer, though their counts differ.",
    criterion="max |difference| between the states of equal tokens across the sequences, "
    "over all layers, <= 1e-12 (float64) for the bidirectional NoPE model; > 1e-6 for the "
    "same weights with a causal mask, with sinusoidal positions and with RoPE.",
)

ONE, ZERO = 5, 6  # token ids playing "1" and "0"


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    k_max = profile.pick(quick=8, paper=64)
    # "10", "1100", "111000", ...: the same ratio of ones to zeros, different counts.
    sequences = [[ONE] * k + [ZERO] * k for k in (1, 2, 3, k_max)] + [[ONE, ZERO] * 4]
    n_layers = profile.pick(quick=3, paper=6)
    model = random_model(ctx.seed, std=0.3, n_layers=n_layers, causal=False,
                         pos_encoding="none", norm="layernorm", **F64)
    spreads = counting_contrast(model, sequences,
                                variants=("causal_nope", "bidirectional_sinusoidal",
                                          "bidirectional_rope"))
    invariant = spreads["bidirectional_nope"].max_diff
    contrasts = {name: s.max_diff for name, s in spreads.items() if name != "bidirectional_nope"}
    ok = invariant <= 1e-12 and min(contrasts.values()) > 1e-6

    path, rel = ctx.figure("r10_no_positions.png")
    fig, ax = new_figure()
    labels = {"bidirectional_nope": "bidirectional NoPE (the proposition's setting)",
              "causal_nope": "causal NoPE", "bidirectional_sinusoidal": "bidirectional APE",
              "bidirectional_rope": "bidirectional RoPE"}
    for name, spread in spreads.items():
        levels = np.asarray(spread.per_level, float)
        ax.semilogy(np.arange(len(levels)), np.maximum(levels, 1e-18), "o-", ms=4,
                    label=labels.get(name, name))
    ax.axhline(1e-12, color="k", ls=":", lw=0.8, label="criterion for NoPE: <= 1e-12")
    ax.axhline(1e-6, color="grey", ls="--", lw=0.8, label="criterion for the others: > 1e-6")
    ax.set_xlabel("level (layer 0, 1, ... output, then the final state y)")
    ax.set_ylabel("max |difference| between equal tokens' states (1e-18: exactly 0)")
    ax.set_title(f"R10: sequences 1^k 0^k and (10)^4, {n_layers} layers, float64", fontsize=9)
    ax.legend(fontsize=7)
    save(fig, path)
    return CHECK.result(
        ctx,
        measured={"sequences": [len(s) for s in sequences],
                  "bidirectional_nope_max_diff": invariant,
                  **{f"{k}_max_diff": v for k, v in contrasts.items()},
                  "per_level_nope": spreads["bidirectional_nope"].per_level},
        ok=ok,
        key_number=f"NoPE diff {invariant:.1e}, contrast min {min(contrasts.values()):.1e}",
        setup=f"{describe(model)}, bidirectional, weights N(0, 0.3^2); sequences 1^k 0^k for "
        f"k = 1, 2, 3, {k_max} and (10)^4.",
        figures=(rel,), dtypes=("float64",),
    )
