"""R12a on a real LLM, the paper's Figure 5 (c) and (d): "Can you copy the following number?"
then a run of ones, without and with a comma after every third one. The theory predicts
that the extra tokens keep the pair's representations apart.

Pairs: n vs n + 1 ones (the id of "1" repeated); with commas the run is "111,111,1..." at
the token level (ids of "1" and ","), so the n + 1 sequence adds ",1" when n is a multiple
of 3 and "1" otherwise; both end in "1". Lengths as R4's (Figure 5's, to 2001).

Premise (fixed here, before measuring): commas can only be seen to keep the pair apart if
the plain run's pair approaches collapse: its float32 distance (y) must decay with n, a
log-log least-squares slope over every swept n of at most `PREMISE_SLOPE` (or a pair that
is already bit-identical). Otherwise `inconclusive`: there is no collapse to prevent.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.fitting import loglog_slope
from theory_checks import llm as L
from theory_checks.context import Profile, RunContext
from theory_checks.llm.records import CommaCurves
from theory_checks.report.plotting import save
from theory_checks.result import Check, CheckResult

CHECK = Check(
    "R12", "Commas keep a real LLM's runs apart", "R12a (commas), Figure 5c-d",
    claim="Inserting a comma after every third one keeps the last-token states of the "
    "n and n + 1 runs further apart than the plain run does.",
)

DTYPES = ("float32", "bfloat16")
PREMISE_SLOPE = -0.1  # "decays": at least ~20% lower per decade of n
TAIL_FROM = 8  # the criterion's lengths: n >= n_max / TAIL_FROM


def plain_slope(lengths, distance: np.ndarray) -> float:
    """The premise's trend: log-log slope of the plain run's distance over every n (-inf
    when some pair is already bit-identical)."""
    distance = np.asarray(distance, float)
    if (distance == 0).any():
        return -np.inf
    return loglog_slope(np.asarray(lengths, float), distance)


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    llm = L.llm_for(ctx)
    lengths = L.collapse_sweep_lengths(ctx.reduced)
    n_max = max(lengths)
    plain, _ = L.figure5_sweep(llm, "5c", lengths, DTYPES, store=ctx.store)
    commas, _ = L.figure5_sweep(llm, "5d", lengths, DTYPES, store=ctx.store)
    n = np.asarray(lengths)
    sweeps = {"plain": plain, "commas": commas}
    y = {name: {dt: s.y_linf(dt) for dt in DTYPES} for name, s in sweeps.items()}
    heads = {name: {dt: s.head_band(dt)["mean"] for dt in DTYPES} for name, s in sweeps.items()}
    slope = plain_slope(lengths, y["plain"]["float32"])
    reached = bool(slope <= PREMISE_SLOPE)
    tail = n >= n_max / TAIL_FROM
    med = {name: float(np.median(v["float32"][tail])) for name, v in y.items()}
    ratio = med["commas"] / med["plain"] if med["plain"] > 0 else float("inf")
    ok = ratio > 1.0
    hmed = {name: float(np.median(v["float32"][tail])) for name, v in heads.items()}
    mult3 = tail & (n % L.COMMA_EVERY == 0)
    other = tail & (n % L.COMMA_EVERY != 0)

    path, rel = ctx.figure(L.figure_name(llm, "r12_fig5cd"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for ax, (reading, values) in zip(axes, (("y", y), ("per-head mean", heads))):
        for color, (name, v) in zip(("C0", "C1"), values.items()):
            for dt in DTYPES:
                d = v[dt]
                ax.loglog(n, np.where(d > 0, d, np.nan), "o-" if dt == "float32" else ":",
                          ms=2, lw=1, color=color, label=f"{name}, {dt}")
        ax.set_xlabel("n (ones in the run)")
        ax.set_ylabel(f"pair distance, {reading} (L-inf)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"R12a / Figure 5c-d: {llm.name}, {L.FIG5_COPY_QUESTION!r} + ones, "
                 f"with / without ',' every {L.COMMA_EVERY}", fontsize=9)
    save(fig, path)
    return CHECK.result(
        ctx,
        criterion=f"float32 L-inf distance of y, median over n >= n_max / {TAIL_FROM} "
        f"(n >= {n_max / TAIL_FROM:.0f}): with commas / without commas > 1.",
        measured={
            "median_ratio_commas_over_plain": ratio,
            "median_tail_plain_float32": med["plain"],
            "median_tail_commas_float32": med["commas"],
            "heads_median_ratio_commas_over_plain": hmed["commas"] / hmed["plain"]
            if hmed["plain"] > 0 else float("inf"),
            "plain_slope_float32": slope,
            "median_tail_commas_n_multiple_of_3": float(np.median(y["commas"]["float32"][mult3]))
            if mult3.any() else None,
            "median_tail_commas_other_n": float(np.median(y["commas"]["float32"][other])),
            "bit_identical_pairs_bfloat16_plain": int((plain.y_linf("bfloat16") == 0).sum()),
            "bit_identical_pairs_bfloat16_commas": int((commas.y_linf("bfloat16") == 0).sum()),
            "median_tail_plain_bfloat16": float(np.median(y["plain"]["bfloat16"][tail])),
            "median_tail_commas_bfloat16": float(np.median(y["commas"]["bfloat16"][tail])),
            "comma_id": llm.single_id(","),
            "tokenization_1_comma": llm.tokens("1,1,1,1"),
            "n_max": n_max,
            **CommaCurves(lengths=lengths, y_linf=y, heads_mean=heads).entries(),
        },
        ok=ok,
        key_number=f"commas/plain {ratio:.2f}" if reached
        else f"plain run not collapsing (slope {slope:.2f})",
        setup=f"{L.describe_model(llm)}; {llm.tokenizer_name}. Token-level runs after the "
        f"ids of {L.fig5_prefix(L.FIG5_COPY_QUESTION)!r}, {len(lengths)} lengths n = 1..{n_max}, "
        f"plain and with a ',' after every {L.COMMA_EVERY} ones; same weights in "
        f"{', '.join(DTYPES)}; one prefill per format and run.",
        figures=(rel,),
        dtypes=DTYPES,
        notes="With commas, the n + 1 sequence adds two tokens (',1') when n is a multiple of 3: "
        "those pairs differ by more than one repeated token; both subsets are reported. "
        f"The plain run's float32 distance has log-log slope {slope:.3g} over the sweep "
        f"(premise: <= {PREMISE_SLOPE:g}). Bit-identical bfloat16 pairs: plain "
        f"{int((plain.y_linf('bfloat16') == 0).sum())}, commas "
        f"{int((commas.y_linf('bfloat16') == 0).sum())} of {len(lengths)}.",
        premise="the plain run's pair approaches collapse: the log-log slope of its float32 "
        f"distance over the sweep is at most {PREMISE_SLOPE:g}",
        premise_reached=reached,
        to_reach_premise="" if reached else "a model whose plain-run pair distance decays with "
        "n (positions that decay with distance, e.g. RoPE or none, not added absolute ones), "
        "or longer runs",
        model=llm.name,
    )
