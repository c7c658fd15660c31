"""R1 -- Lemma B.1: a new element lowers the last softmax weight, by a gap that vanishes."""

from __future__ import annotations

import numpy as np

from analysis.fitting import loglog_slope
from analysis.softmax import last_weight_gap
from theory_checks.context import Profile, RunContext
from theory_checks.report.plotting import new_figure, save
from theory_checks.result import Check, CheckResult

CHECK = Check(
    "R1", "A new element lowers the last softmax weight", "Lemma B.1",
    claim="For x = [a, c] and x* = [a, b, c] with bounded entries, softmax(x)_n > "
    "softmax(x*)_(n+1), and the gap tends to 0 as n grows.",
    criterion="gap > 0 in every trial at every n, and the fitted log-log slope of the mean "
    "gap against n is <= -1.5 (the analytic rate is -2).",
)


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    lengths = profile.pick(quick=[2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
                           paper=[2**k for k in range(1, 18)])
    trials = 3 if ctx.reduced else profile.pick(quick=20, paper=100)
    rng = np.random.default_rng(ctx.seed)
    gaps = np.empty((trials, len(lengths)))
    for t in range(trials):
        a_all = rng.uniform(-1.0, 1.0, max(lengths))
        b, c = rng.uniform(-1.0, 1.0, 2)
        for j, n in enumerate(lengths):
            gaps[t, j] = last_weight_gap(a_all[: n - 1], b, c).gap
    mean_gap = gaps.mean(axis=0)
    slope = loglog_slope(lengths, mean_gap)
    all_positive = bool((gaps > 0).all())
    # Theory: gap = e^(b+c) / ((S + e^c)(S + e^b + e^c)) with S growing like n: slope -2.
    ok = all_positive and slope <= -1.5

    path, rel = ctx.figure("r01_last_weight_gap.png")
    fig, ax = new_figure()
    ax.fill_between(lengths, gaps.min(0), gaps.max(0), alpha=0.3, label="min/max over trials")
    ax.loglog(lengths, mean_gap, "o-", label=f"mean gap (fitted slope {slope:.2f})")
    ax.set_xlabel("n (length of x)")
    ax.set_ylabel("softmax(x)_n - softmax(x*)_(n+1)")
    ax.set_title(f"R1 Lemma B.1: entries ~ U[-1,1], float64, seed {ctx.seed}")
    ax.legend()
    save(fig, path)
    return CHECK.result(
        ctx,
        measured={
            "lengths": lengths, "trials": trials, "all_gaps_positive": all_positive,
            "min_gap": float(gaps.min()), "mean_gap_first": float(mean_gap[0]),
            "mean_gap_last": float(mean_gap[-1]), "loglog_slope": slope,
        },
        ok=ok,
        key_number=f"slope {slope:.2f}, min gap {gaps.min():.1e}",
        setup=f"{trials} random trials, a, b, c ~ U[-1, 1], n up to {max(lengths)}, float64 NumPy.",
        figures=(rel,), dtypes=("float64",),
    )
