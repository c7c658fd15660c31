"""R6 on a real LLM: the length at which the bfloat16 ones-run pair becomes
indistinguishable, against float32 (the R4 check's sweep, float64 as the reference).

`analysis.collapse_lengths` calls a pair indistinguishable in a format when its states are
bit-identical there, or when its true (float64) distance is at most the format's noise
floor: the median distance between that format's state and the float64 state of the same
sequence. For a model cast to bfloat16 that floor includes the rounding of the weights.
"""

from __future__ import annotations

import numpy as np

from analysis.collapse import collapse_lengths
from theory_checks import llm as L
from theory_checks.context import Profile, RunContext
from theory_checks.plotting import new_figure, save
from theory_checks.result import CheckResult, verdict_from

ID, TITLE, PAPER_REF = "R6", "Low precision collapses a real LLM sooner", "Section 5, Figure 5a"


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    L.require_x64()
    llm = L.load_llm(ctx.model_path)
    n_max = L.collapse_n_max(ctx.reduced)
    lengths = list(range(1, n_max + 1))
    sweep = L.shared_sweep(llm, L.ones_family(llm, L.COUNT_PREFIX), lengths, L.COLLAPSE_DTYPES)
    rep = collapse_lengths(sweep, norm="linf", reference="float64")
    never = n_max + 1  # not collapsing within the sweep ranks after every measured n
    got = {d: rep.per_dtype[d].collapse_length for d in ("float32", "bfloat16")}
    rank = {d: (v if v is not None else never) for d, v in got.items()}
    ok = rank["bfloat16"] < rank["float32"]
    second_half = np.asarray(lengths) > n_max // 2
    bf_frac = float(rep.per_dtype["bfloat16"].indistinguishable[second_half].mean())

    path, rel = ctx.figure("llm_r06_precision.png")
    fig, ax = new_figure()
    ref = rep.per_dtype["float64"].reference_distance
    ax.semilogy(lengths, ref, "k-", lw=1.2, label="float64 (true distance)")
    for d in ("float32", "bfloat16"):
        c = rep.per_dtype[d]
        line = ax.semilogy(
            lengths,
            np.where(c.distance > 0, c.distance, np.nan),
            "-",
            lw=1,
            label=f"{d} (collapse n = {got[d]})",
        )[0]
        ax.axhline(c.noise_floor, color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel("n (copies of the token '1')")
    ax.set_ylabel("||y_n - y*_(n+1)||_inf   (dotted: noise floor vs float64)")
    ax.set_title(f"R6: {llm.name}, same weights in three formats ('How many ones...' + n ones)")
    ax.legend()
    save(fig, path)
    fmt = lambda v: "none" if v is None else str(v)
    return CheckResult(
        id=ID,
        title=TITLE,
        paper_ref=PAPER_REF,
        claim="The same trained weights in bfloat16 make the n vs n + 1 ones pair "
        "indistinguishable at a shorter n than in float32.",
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
        },
        verdict=verdict_from(ok),
        key_number=f"bfloat16 {fmt(got['bfloat16'])}, float32 {fmt(got['float32'])}",
        setup=f"{L.describe_model(llm)}; pairs as in the llm R4 check (a), n = 1..{n_max}; "
        "float64, float32 and bfloat16 copies of the same weights.",
        figures=(rel,),
        seeds=(ctx.seed,),
        dtypes=L.COLLAPSE_DTYPES,
        notes=f"In bfloat16, {bf_frac:.0%} of the pairs with n > {n_max // 2} are "
        "indistinguishable; a collapse length near n_max rests on the last few n only. "
        "bfloat16's noise floor here includes the rounding of the weights themselves "
        f"({rep.per_dtype['bfloat16'].noise_floor:.3g} in L-inf against a typical ||y||_inf of "
        f"{rep.scale:.3g}); bit-identical bfloat16 pairs: first at n = "
        f"{fmt(rep.per_dtype['bfloat16'].first_identical)}.",
    )
