"""R4 on a real LLM, the paper's Figure 5 (a) and (b) with its prompts and lengths:
representational collapse of a run of ones, and of uniform digits ending in one vs two ones.

(a) "How many ones are in the following sequences?" then n vs n + 1 copies of the token "1";
(b) the same question then k digits drawn uniformly from 0-9 (fixed seed) ending in a single
"1", vs the same with a second "1". Figure 5's lengths 1, 2, 6, 11, 51, 101, 501, 1001, 2001
plus a geometric grid, all branched off one prefill per format (`analysis.pair_sweep`).
Pairs are built from token ids, so s_n and s*_n differ by exactly one repeated token. The
prompt is plain text (a document, no chat turn), as in the paper's figure.

Two readings of each pair, from the same pass (named in results.json):
- "y": the L-infinity distance of the last token's final-normed state y (what the
  unembedding reads): the check's criterion;
- "per-head mean": the paper's metric, the L-infinity distance of the last layer's per-head
  attention outputs, averaged over heads, with the min and max over heads as a band.
The paper's values for Figure 5a (Gemma 7B, read from its plot) go beside ours as
`reproduction` entries, for each reading in float32 and bfloat16 (the paper does not say
which precision Gemma ran in).

The theorem assumes positional information that decays with distance; RoPE satisfies it
only approximately (docs/results.md, R4), so the criterion asks for a decreasing trend, not
the NoPE rate n^-1.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.fitting import loglog_slope
from theory_checks import llm as L
from theory_checks.context import Profile, RunContext
from theory_checks.llm.records import CollapseCurves
from theory_checks.report.plotting import save
from theory_checks.report.reproduction import FIG5_LENGTHS, draw_paper_markers, reproduction
from theory_checks.result import Check, CheckResult

CHECK = Check(
    "R4", "Representational collapse in a real LLM", "Theorem 4.2, Figure 5a-b",
    claim="In a trained LLM, a prompt followed by n ones and the same with n + 1 ones (the "
    "last token repeated) get last-token final states that approach each other as n grows.",
)

FIT_FROM = 8  # fit the trend past the first few tokens, where the prompt still dominates
DTYPES_A = L.COLLAPSE_DTYPES  # panel (a) is also R6's data: float64 is its reference
DTYPES_B = ("float32", "bfloat16")
READINGS = ("y", "per-head mean")


def _summary(x: np.ndarray, sweep, dtypes) -> dict:
    fit = x >= FIT_FROM
    out = {"slope_float32": loglog_slope(x[fit], sweep.y_linf("float32")[fit])}
    out["heads_slope_float32"] = loglog_slope(x[fit], sweep.head_band("float32")["mean"][fit])
    for dt in dtypes:
        row = sweep.y_linf(dt)
        out[f"linf_first_{dt}"] = float(row[0])
        out[f"linf_last_{dt}"] = float(row[-1])
        out[f"first_bit_identical_{dt}"] = L.first_identical(sweep, dt)
    return out


def curves(lengths, sweeps: dict, dtypes: dict) -> CollapseCurves:
    """The record of both panels' readings: sweeps and dtypes per kind ("ones", "digits")."""
    bands = {kind: {dt: s.head_band(dt) for dt in dtypes[kind]} for kind, s in sweeps.items()}
    return CollapseCurves(
        lengths=lengths,
        y_linf={kind: {dt: s.y_linf(dt) for dt in dtypes[kind]} for kind, s in sweeps.items()},
        **{f"heads_{stat}": {kind: {dt: b[stat] for dt, b in by_dt.items()}
                             for kind, by_dt in bands.items()}
           for stat in ("mean", "min", "max")},
    )


def plot_panel(ax_y, ax_h, x, sweep, dtypes, xlabel, *, paper: bool):
    """Left: the y reading per format; right: the per-head mean with its min-max band."""
    for dt in dtypes:
        d = sweep.y_linf(dt)
        ax_y.loglog(x, np.where(d > 0, d, np.nan), "o-", ms=2, lw=1,
                    label=dt + (" (zeros not drawn)" if (d == 0).any() else ""))
    for dt in (d for d in dtypes if d != "float64"):
        band = sweep.head_band(dt)
        line = ax_h.loglog(x, band["mean"], "o-", ms=2, lw=1, label=f"{dt}: mean over heads")[0]
        ax_h.fill_between(x, np.maximum(band["min"], 1e-12), band["max"], alpha=0.2,
                          color=line.get_color(), label=f"{dt}: min-max over heads")
    if paper:
        draw_paper_markers(ax_h, "Figure 5a", "ones")
    ax_y.set_ylabel("||y_n - y*_(n+1)||_inf  (final state)")
    ax_h.set_ylabel("||o_h - o*_h||_inf, last layer's heads")
    for ax in (ax_y, ax_h):
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)


def _figure(ctx, llm, stem, x, sweep, dtypes, title, xlabel, *, paper: bool) -> str:
    path, rel = ctx.figure(L.figure_name(llm, stem))
    fig, (ax_y, ax_h) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    plot_panel(ax_y, ax_h, x, sweep, dtypes, xlabel, paper=paper)
    fig.suptitle(title, fontsize=9)
    save(fig, path)
    return rel


def reproduction_entries(llm, lengths, sweep) -> list[dict]:
    """Figure 5a's paper values beside ours: two readings x two formats."""
    out = []
    for dt in ("float32", "bfloat16"):
        values = {"y": sweep.y_linf(dt), "per-head mean": sweep.head_band(dt)["mean"]}
        for reading in READINGS:
            ours = L.at_lengths(lengths, values[reading], FIG5_LENGTHS)
            out.append(reproduction("Figure 5a", f"{llm.name}: {reading}, {dt}", "ones", ours))
    return out


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    L.require_x64()
    llm = L.llm_for(ctx)
    lengths = L.collapse_sweep_lengths(ctx.reduced)
    n_max = max(lengths)
    sweep_a, _ = L.figure5_sweep(llm, "5a", lengths, DTYPES_A, store=ctx.store)
    xa = np.asarray(lengths, float)
    a = _summary(xa, sweep_a, DTYPES_A)
    sweep_b, ks = L.figure5_sweep(llm, "5b", lengths, DTYPES_B, seed=ctx.seed,
                                  store=ctx.store)
    xb = np.asarray(ks, float)
    b = _summary(xb, sweep_b, DTYPES_B)
    ok = a["slope_float32"] < 0 and b["slope_float32"] < 0
    entries = reproduction_entries(llm, lengths, sweep_a)

    one = llm.single_id("1")
    prefix = L.fig5_prefix(L.FIG5_COUNT_QUESTION)
    facts = L.tokenization_facts(llm)
    per_digit = L.one_token_per_digit(llm)
    exact_text = L.matches_text(llm, prefix, [one] * 5, "1" * 5)
    figures = (
        _figure(ctx, llm, "r04_fig5a", xa, sweep_a, DTYPES_A,
                f"R4 / Figure 5a: {llm.name}, {prefix!r} + n vs n + 1 ones, same weights",
                "n (copies of the token '1')", paper=True),
        _figure(ctx, llm, "r04_fig5b", xb, sweep_b, DTYPES_B,
                f"R4 / Figure 5b: {llm.name}, uniform digits (seed {ctx.seed}) ending in "
                "'1' vs '11'",
                "k (digits after the prompt, the k-th a single '1')", paper=False),
    )
    notes = []
    if not per_digit:
        notes.append(
            "The tokenizer does not split a run of ones into one token per digit: the pairs "
            "here (repeated id of '1') are not what the model would see for the text."
        )
    if not llm.has_tokenizer:
        notes.append("No tokenizer: the prompt ids are the byte fallback (see setup).")
    bf_ident = a["first_bit_identical_bfloat16"]
    notes.append(
        "The paper reports the distance of Gemma 7B reaching machine precision around n = 50 "
        "and touching the bf16 line near n = 2001; here the bfloat16 pair of the ones run is "
        + (
            f"first bit-identical at n = {bf_ident}."
            if bf_ident is not None
            else f"never bit-identical up to n = {n_max} (y distance at n_max "
            f"{a['linf_last_bfloat16']:.3g}, per-head mean "
            f"{sweep_a.head_band('bfloat16')['mean'][-1]:.3g})."
        )
    )
    notes.append(
        "Per-head reading: the paper's 'averaged over each head' read as the last layer's "
        "attention outputs per head (before W_O); the paper does not name the tensor."
    )
    return CHECK.result(
        ctx,
        criterion=f"float32 L-inf distance of y at the last token falls with n: log-log slope "
        f"fitted over n >= {FIT_FROM} negative, for (a) the run of ones and (b) the "
        "random-digit pairs (a trend only: RoPE is not the theorem's decaying positional "
        "information, so no rate is required). The per-head reading is reported beside it.",
        measured={
            **{f"ones_{k}": v for k, v in a.items()},
            **{f"digits_{k}": v for k, v in b.items()},
            "n_max": n_max,
            "digits_lengths": ks,
            "token_id_of_1": one,
            "one_token_per_digit": per_digit,
            "pair_equals_tokenised_text": exact_text,
            "tokenization": facts,
            **curves(lengths, {"ones": sweep_a, "digits": sweep_b},
                     {"ones": DTYPES_A, "digits": DTYPES_B}).entries(),
        },
        ok=ok,
        key_number=f"slope f32 ones {a['slope_float32']:.2f}, digits {b['slope_float32']:.2f}",
        setup=f"{L.describe_model(llm)}; {llm.tokenizer_name}. Pairs at the token level: the "
        f"ids of {prefix!r} then (a) n vs n + 1 copies of id {one} ('1'), {len(lengths)} "
        f"lengths from 1 to {n_max} (Figure 5's lengths and a geometric grid); (b) uniform "
        f"digits (seed {ctx.seed}) cut at {len(ks)} lengths k (adjacent k cannot both end in a "
        f"single one). Same weights in {', '.join(DTYPES_A)} (parameters cast; (b) in "
        f"{', '.join(DTYPES_B)}); one prefill per format, every length branched off it "
        "(analysis.pair_sweep).",
        figures=figures,
        dtypes=DTYPES_A,
        notes=" ".join(notes),
        reproduction=tuple(entries),
        model=llm.name,
    )
