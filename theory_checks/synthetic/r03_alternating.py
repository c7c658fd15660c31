"""R3 -- Proposition B.4: alternating sequences keep their distance (the counter-example)."""

from __future__ import annotations

import numpy as np

from analysis.softmax import ALTERNATING_TV, alternating_tv
from theory_checks.context import Profile, RunContext
from theory_checks.report.plotting import new_figure, save
from theory_checks.result import Check, CheckResult

CHECK = Check(
    "R3", "Alternating sequences keep their distance", "Proposition B.4",
    claim="For x = (1, 0, 1, 0, ...) and x* = (0, 1, 0, 1, ...) the total variation of "
    "their softmaxes is 2(e-1)/(e+1) for every even n: it does not vanish.",
    criterion="|TV - 2(e-1)/(e+1)| <= 1e-12 (float64) at every even n tested; the verdict "
    "is 'boundary' because this run lies outside R4's decay assumption on purpose.",
)


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    n_max = profile.pick(quick=100_000, paper=10_000_000)
    lengths = sorted({int(x) // 2 * 2 for x in np.geomspace(2, n_max, 30)})
    tv = np.array([alternating_tv(n) for n in lengths])
    err = float(np.abs(tv - ALTERNATING_TV).max())
    matches = err <= 1e-12
    # The analytic value holding for every n means TV does not vanish: the conclusion of
    # R2/R4 fails once positional information does not decay. That is this check's purpose.
    verdict = "boundary" if matches else "fail"

    path, rel = ctx.figure("r03_alternating_tv.png")
    fig, ax = new_figure()
    ax.semilogx(lengths, tv, "o", label="measured TV")
    ax.axhline(ALTERNATING_TV, color="k", ls="--", label="2(e-1)/(e+1)")
    ax.set_ylim(0, 1.2)
    ax.set_xlabel("n (even)")
    ax.set_ylabel("TV(softmax x, softmax x*)")
    ax.set_title("R3 Prop. B.4: x = (1,0,1,0,...), x* = (0,1,0,1,...), float64")
    ax.legend()
    save(fig, path)
    return CHECK.result(
        ctx,
        measured={"n_values": len(lengths), "n_max": lengths[-1], "max_abs_error": err,
                  "analytic": ALTERNATING_TV, "tv_at_n_max": float(tv[-1])},
        verdict=verdict,
        key_number=f"TV {tv[-1]:.12f}, err {err:.1e}",
        setup=f"{len(lengths)} even lengths from 2 to {lengths[-1]}, float64 NumPy.",
        figures=(rel,), seeds=(), dtypes=("float64",),
    )
