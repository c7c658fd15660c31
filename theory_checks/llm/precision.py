"""R6 on a real LLM: the same weights in bfloat16 and float32 (float64 as the reference),
on Figure 5 (a)'s pairs ("How many ones are in the following sequences?" + n vs n + 1 ones,
lengths to 2001): does bfloat16 make the pair indistinguishable at a shorter n?

Premise (fixed here, before measuring): the question is answered only if the bfloat16 pair
collapses within the sweep, or the sweep reaches the bfloat16 collapse length predicted
from the pair's own float64 decay (`analysis.collapse_lengths`): bfloat16 collapses
(measured collapse length or a bit-identical pair), or predicted length <= n_max. Otherwise
`inconclusive`, with the predicted length as what would reach it.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.collapse import collapse_lengths
from theory_checks import llm as L
from theory_checks.context import Profile, RunContext
from theory_checks.llm.records import PrecisionCurves
from theory_checks.report.plotting import new_figure, save
from theory_checks.result import Check, CheckResult

CHECK = Check(
    "R6", "Low precision collapses a real LLM sooner", "Section 5, Figure 5a",
    claim="The same trained weights in bfloat16 make the n vs n + 1 ones pair "
    "indistinguishable at a shorter n than in float32.",
)

PREMISE = (
    "the bfloat16 pair collapses within the sweep (a measured collapse length or a "
    "bit-identical pair), or the sweep reaches the bfloat16 collapse length predicted from "
    "the fitted float64 decay"
)


def premise_reached(rep, n_max: int) -> bool:
    """The premise test of this check (module docstring), on a `CollapseReport`."""
    bf = rep.per_dtype["bfloat16"]
    collapsed = bf.collapse_length is not None or bf.first_identical is not None
    predicted = bf.predicted_length
    return collapsed or (predicted is not None and predicted <= n_max)


def to_reach(rep) -> str:
    bf = rep.per_dtype["bfloat16"]
    if bf.predicted_length is None:
        return (
            "a pair whose float64 distance decays with n (the fitted slope here is "
            f"{rep.fit.slope:.3g}, so no collapse length can be predicted)"
        )
    if math.isinf(bf.predicted_length):
        return f"a decay steeper than the fitted slope {rep.fit.slope:.3g} (predicted: never)"
    return (
        f"a sweep to n ~ {bf.predicted_length:.3g}, the bfloat16 collapse length predicted "
        f"from the fitted float64 decay (slope {rep.fit.slope:.3g})"
    )


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    L.require_x64()
    llm = L.llm_for(ctx)
    lengths = L.collapse_sweep_lengths(ctx.reduced)
    n_max = max(lengths)
    sweep, _ = L.figure5_sweep(llm, "5a", lengths, L.COLLAPSE_DTYPES, store=ctx.store)
    rep = collapse_lengths(sweep.collapse, norm="linf", reference="float64")
    reached = premise_reached(rep, n_max)
    never = n_max + 1  # not collapsing within the sweep ranks after every measured n
    got = {d: rep.per_dtype[d].collapse_length for d in ("float32", "bfloat16")}
    rank = {d: (v if v is not None else never) for d, v in got.items()}
    ok = rank["bfloat16"] < rank["float32"]
    x = np.asarray(lengths)
    second_half = x > n_max // 2
    bf_frac = float(rep.per_dtype["bfloat16"].indistinguishable[second_half].mean())

    path, rel = ctx.figure(L.figure_name(llm, "r06_precision"))
    fig, ax = new_figure()
    ref = rep.per_dtype["float64"].reference_distance
    ax.loglog(x, ref, "k-", lw=1.2, label="float64 (true distance)")
    for d in ("float32", "bfloat16"):
        c = rep.per_dtype[d]
        line = ax.loglog(
            x, np.where(c.distance > 0, c.distance, np.nan), "o-", ms=2, lw=1,
            label=f"{d} (collapse n = {got[d]}, predicted {_fmt_pred(c.predicted_length)})",
        )[0]
        ax.axhline(c.noise_floor, color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel("n (copies of the token '1')")
    ax.set_ylabel("||y_n - y*_(n+1)||_inf   (dotted: noise floor vs float64)")
    ax.set_title(f"R6: {llm.name}, same weights in three formats (Figure 5a's pairs)")
    ax.legend()
    save(fig, path)
    fmt = lambda v: "none" if v is None else str(v)
    bf = rep.per_dtype["bfloat16"]
    bf_indist = [int(n) for n, ok_n in zip(bf.lengths, bf.indistinguishable) if ok_n]
    low = int(np.argmin(ref))
    if reached:
        key = f"bfloat16 {fmt(got['bfloat16'])}, float32 {fmt(got['float32'])}"
    else:
        key = f"bf16 not collapsed to n = {n_max}; predicted {_fmt_pred(bf.predicted_length)}"
    return CHECK.result(
        ctx,
        criterion="collapse length (analysis.collapse_lengths, float64 reference, L-inf of y) "
        "of bfloat16 below that of float32; not collapsing within the sweep counts as beyond "
        f"n_max = {n_max}.",
        measured={
            **{f"{d}_collapse_length": got[d] for d in got},
            **{f"{d}_noise_floor": rep.per_dtype[d].noise_floor for d in got},
            **{f"{d}_first_bit_identical": rep.per_dtype[d].first_identical for d in got},
            **{f"{d}_predicted_length": rep.per_dtype[d].predicted_length for d in got},
            "float64_decay_slope": rep.fit.slope,
            "state_scale_linf": rep.scale,
            "float64_distance_at_n_max": float(ref[-1]),
            "n_max": n_max,
            "bfloat16_indistinguishable_fraction_second_half": bf_frac,
            "bfloat16_indistinguishable_lengths": bf_indist,
            "float64_distance_min": float(ref[low]),
            "float64_distance_argmin": int(x[low]),
            **PrecisionCurves(lengths=lengths, float64=ref,
                              float32=rep.per_dtype["float32"].distance,
                              bfloat16=bf.distance).entries(),
        },
        ok=ok,
        key_number=key,
        setup=f"{L.describe_model(llm)}; Figure 5a's pairs as in the llm R4 check, "
        f"{len(lengths)} lengths n = 1..{n_max}; float64, float32 and bfloat16 copies of the "
        "same weights.",
        figures=(rel,),
        dtypes=L.COLLAPSE_DTYPES,
        notes=f"In bfloat16, {bf_frac:.0%} of the pairs with n > {n_max // 2} are "
        "indistinguishable; a collapse length near n_max rests on the last few n only. "
        "bfloat16's noise floor here includes the rounding of the weights themselves "
        f"({bf.noise_floor:.3g} in L-inf against a typical ||y||_inf of {rep.scale:.3g}); "
        f"bit-identical bfloat16 pairs: first at n = {fmt(bf.first_identical)}. bfloat16 "
        f"cannot tell the pair from rounding noise at n = {bf_indist or 'none'}; the float64 "
        f"distance is smallest at n = {int(x[low])} ({float(ref[low]):.3g}) and "
        f"{float(ref[-1]):.3g} at n_max (a collapse length needs every later n "
        "indistinguishable).",
        premise=PREMISE,
        premise_reached=reached,
        to_reach_premise="" if reached else to_reach(rep),
        model=llm.name,
    )


def _fmt_pred(v) -> str:
    if v is None:
        return "none (no decay)"
    return "never" if math.isinf(v) else f"{v:.3g}"
