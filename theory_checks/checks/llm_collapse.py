"""R4 on a real LLM (the paper's Figure 5a analog): representational collapse of a run of
ones and of random digits ending in one vs two ones.

(a) "How many ones are in the following sequence? " followed by n vs n + 1 copies of the
token "1"; (b) the same prefix followed by digits drawn uniformly from 0-9 (fixed seed),
cut at every position where a single "1" ends the sequence, vs the same with a second "1".
Pairs are built from token ids, so s_n and s*_n differ by exactly one repeated token; the
distance is the L-infinity norm of the last token's final-normed state y (what the
unembedding reads), in float64, float32 and bfloat16 (the same weights cast, parameters
included). The prompt is plain text (a document, no chat turn), as in the paper's figure.

The theorem assumes positional information that decays with distance; RoPE satisfies it
only approximately (shared/PAPER.md, R4), so the criterion asks for a decreasing trend, not
the NoPE rate n^-1.
"""

from __future__ import annotations

import numpy as np

from analysis.fitting import loglog_slope
from theory_checks import llm as L
from theory_checks.context import Profile, RunContext
from theory_checks.plotting import new_figure, save
from theory_checks.result import CheckResult, verdict_from

ID, TITLE, PAPER_REF = "R4", "Representational collapse in a real LLM", "Theorem 4.2, Figure 5a"

FIT_FROM = 8  # fit the trend past the first few tokens, where the prompt still dominates


def _summary(x: np.ndarray, sweep, dtypes) -> dict:
    d = sweep.linf[:, :, -1]
    fit = x >= FIT_FROM
    out = {"slope_float32": loglog_slope(x[fit], d[sweep.index("float32"), fit])}
    for dt in dtypes:
        row = d[sweep.index(dt)]
        out[f"linf_first_{dt}"] = float(row[0])
        out[f"linf_last_{dt}"] = float(row[-1])
        out[f"first_bit_identical_{dt}"] = L.first_identical(sweep, dt)
    return out


def _plot(ctx, name, x, sweep, dtypes, title, xlabel):
    path, rel = ctx.figure(name)
    fig, ax = new_figure()
    for dt in dtypes:
        d = sweep.linf[sweep.index(dt), :, -1]
        ax.semilogy(
            x,
            np.where(d > 0, d, np.nan),
            "o-" if len(x) < 60 else "-",
            ms=2,
            lw=1,
            label=dt + " (zero distances not drawn)" if (d == 0).any() else dt,
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("||y_n - y*_(n+1)||_inf  (last token, final norm)")
    ax.set_title(title)
    ax.legend()
    save(fig, path)
    return rel


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    L.require_x64()
    llm = L.load_llm(ctx.model_path)
    n_max = L.collapse_n_max(ctx.reduced)
    dtypes = L.COLLAPSE_DTYPES
    lengths = list(range(1, n_max + 1))
    ones = L.ones_family(llm, L.COUNT_PREFIX)
    sweep_a = L.shared_sweep(llm, ones, lengths, dtypes)
    xa = np.asarray(lengths, float)
    a = _summary(xa, sweep_a, dtypes)

    family_b, lengths_b, ks = L.random_digits_family(llm, L.COUNT_PREFIX, n_max, ctx.seed)
    sweep_b = L.shared_sweep(llm, family_b, lengths_b, dtypes)
    xb = np.asarray(ks, float)
    b = _summary(xb, sweep_b, dtypes)
    ok = a["slope_float32"] < 0 and b["slope_float32"] < 0

    one = llm.single_id("1")
    facts = L.tokenization_facts(llm)
    per_digit = L.one_token_per_digit(llm)
    exact_text = L.matches_text(llm, L.COUNT_PREFIX, [one] * 5, "1" * 5)
    figures = (
        _plot(
            ctx,
            "llm_r04_ones.png",
            xa,
            sweep_a,
            dtypes,
            f"R4 / Fig. 5a analog: {llm.name}, prompt + n vs n+1 '1' tokens, same weights",
            "n (copies of the token '1')",
        ),
        _plot(
            ctx,
            "llm_r04_random_digits.png",
            xb,
            sweep_b,
            dtypes,
            f"R4: {llm.name}, uniform digits (seed {ctx.seed}) ending in '1' vs '11'",
            "k (digits after the prompt, the k-th a single '1')",
        ),
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
        "The paper reports the bfloat16 distance of Gemma 7B reaching machine precision "
        "around n = 50; here the bfloat16 pair of the ones run is "
        + (
            f"first bit-identical at n = {bf_ident}."
            if bf_ident is not None
            else f"never bit-identical up to n = {n_max} (distance at n_max "
            f"{a['linf_last_bfloat16']:.3g})."
        )
    )
    return CheckResult(
        id=ID,
        title=TITLE,
        paper_ref=PAPER_REF,
        claim="In a trained LLM, a prompt followed by n ones and the same with n + 1 ones (the "
        "last token repeated) get last-token final states that approach each other as n grows.",
        criterion=f"float32 L-inf distance of y at the last token falls with n: log-log slope "
        f"fitted over n >= {FIT_FROM} negative, for (a) the run of ones and (b) the "
        "random-digit pairs (a trend only: RoPE is not the theorem's decaying positional "
        "information, so no rate is required).",
        measured={
            **{f"ones_{k}": v for k, v in a.items()},
            **{f"digits_{k}": v for k, v in b.items()},
            "n_max": n_max,
            "digits_pairs": len(ks),
            "token_id_of_1": one,
            "one_token_per_digit": per_digit,
            "pair_equals_tokenised_text": exact_text,
            "tokenization": facts,
            "ones_linf_float32": sweep_a.linf[sweep_a.index("float32"), :, -1],
            "ones_linf_bfloat16": sweep_a.linf[sweep_a.index("bfloat16"), :, -1],
        },
        verdict=verdict_from(ok),
        key_number=f"slope f32 ones {a['slope_float32']:.2f}, digits {b['slope_float32']:.2f}",
        setup=f"{L.describe_model(llm)}; {llm.tokenizer_name}. Pairs at the token level: prompt "
        f"ids of {L.COUNT_PREFIX!r} then (a) n = 1..{n_max} vs n + 1 copies of id {one} ('1'); "
        f"(b) {n_max} uniform digits (seed {ctx.seed}), {len(ks)} cut points. Same weights in "
        f"{', '.join(dtypes)} (parameters cast), states y of the last token via one prefill "
        "and cache branches per format (analysis.collapse_sweep).",
        figures=figures,
        seeds=(ctx.seed,),
        dtypes=dtypes,
        notes=" ".join(notes),
    )
