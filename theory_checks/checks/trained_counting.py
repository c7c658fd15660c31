"""R5 (Corollary B.10) on a trained counter: count_ones accuracy against length, the
collapse length of the counting pairs (n vs n + 1 ones, the task's own layout) in float32
and bfloat16, and whether bit-identical pairs get identical (so partly wrong) answers."""

from __future__ import annotations

import numpy as np

from analysis.collapse import collapse_lengths
from theory_checks.context import Profile, RunContext
from theory_checks.plotting import UNIT_ROUNDOFF, plt, save
from theory_checks.result import CheckResult, verdict_from
from theory_checks.trained import corollary_b10, query_states, recipe, trained_model

ID, TITLE, PAPER_REF = "R5", "Trained counter: collapse and Corollary B.10", "Corollary B.10"

FORMATS = ("float64", "float32", "bfloat16")  # float64: the reference of collapse_lengths
JUDGED = ("float32", "bfloat16")
MIN_TRAIN_ACC = 0.9


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    rec = recipe("count_ones", seed=ctx.seed, reduced=ctx.reduced)
    model, info = trained_model(rec)
    n_max = 30 if ctx.reduced else 256
    lengths = list(range(1, n_max + 2))  # pairs (n, n + 1) for n = 1..n_max
    qs = query_states(model, rec.task, lengths, FORMATS)
    report = collapse_lengths(qs.counting_sweep(), norm="linf", level=-1, reference="float64")
    b10 = {d: corollary_b10(qs, d) for d in FORMATS}

    t_max = rec.task.max_len
    n = np.asarray(lengths)
    in_range = n <= t_max
    acc = {d: qs.correct(d) for d in JUDGED}
    train_acc = float(acc["float32"][in_range].mean())
    consistent = all(b["identical_n"] == b["same_answer_n"] == b["one_wrong_n"]
                     for b in b10.values())
    bf16_collapses = len(b10["bfloat16"]["identical_n"]) > 0
    learned = train_acc >= MIN_TRAIN_ACC
    ok = consistent and bf16_collapses and learned

    col = {d: report.per_dtype[d] for d in JUDGED}
    path, rel = ctx.figure("trained_r05_counting.png")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    ax1.axvspan(1, t_max, color="0.9", label="training lengths")
    for k, d in enumerate(JUDGED):
        ax1.plot(n, acc[d] + 0.03 * k, ".", ms=3, label=f"{d} (offset {0.03 * k:.2f})")
    ax1.set_xlabel("number of ones n")
    ax1.set_ylabel("answer correct (1) / wrong (0)")
    ax1.set_title(f"count_ones accuracy, seed {ctx.seed}")
    for d in FORMATS:
        dist = report.per_dtype[d].distance
        ax2.semilogy(np.asarray(report.per_dtype[d].lengths), np.maximum(dist, 1e-300), "-",
                     lw=1, label=f"{d}")
        ident = np.asarray(b10[d]["identical_n"])
        if ident.size:
            ax2.plot(ident, np.full(ident.size, 1e-20 if d == "bfloat16" else 1e-22), "|",
                     ms=6, label=f"{d}: y(n) == y(n+1) bit for bit")
    for d in JUDGED:
        ax2.axhline(UNIT_ROUNDOFF[d] * report.scale, ls=":", lw=0.8, color="k")
    ax2.set_ylim(1e-23, None)
    ax2.set_xlabel("n (pair: n vs n + 1 ones, at the query token)")
    ax2.set_ylabel("||y(n) - y(n+1)||_inf")
    ax2.set_title(f"counting pairs, dotted: u*scale (f32, bf16), seed {ctx.seed}")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("R5: trained 2-layer RoPE counter", fontsize=10)
    save(fig, path)

    notes = [
        f"Answers beyond the training range (n > {t_max}) are count tokens the model never saw "
        "as targets, so accuracy there is zero whatever the collapse does; Corollary B.10 is "
        "judged on bit-identical pairs, which does not depend on that.",
        "The pairs are the task's own sequences 'BOS 1^n ?' and 'BOS 1^(n+1) ?', states read "
        "at the query token with one full forward per sequence (not analysis.collapse's "
        "repeated-last PairFamily, whose tail would append a second query token).",
    ]
    if not bf16_collapses:
        notes.append(f"No bit-identical bfloat16 pair up to n = {n_max}: the predicted "
                     "low-precision collapse did not occur within the sweep, so Corollary B.10 "
                     "was not put to the test (it is not contradicted either). The trained "
                     f"counter keeps the pair far apart: float64 decay slope {report.fit.slope:.2f}, "
                     "extrapolated bfloat16 collapse at n ~ "
                     f"{col['bfloat16'].predicted_length or float('inf'):.3g}.")
    if not learned:
        notes.append(f"The model did not learn to count in range (accuracy {train_acc:.2f}).")
    return CheckResult(
        id=ID, title=TITLE, paper_ref=PAPER_REF,
        claim="Once the last-token states of n and n + 1 ones are equal in the model's float "
        "format, the model gives both the same answer, so at least one is wrong; low "
        "precision (bfloat16) reaches that point within a few hundred ones.",
        criterion="(1) in every format, every n with y(n) == y(n+1) bit for bit has equal "
        "argmax answers and at least one wrong; (2) at least one such bfloat16 pair for "
        f"n <= {n_max}; (3) float32 accuracy >= {MIN_TRAIN_ACC} on the training lengths "
        f"1..{t_max} (the model counts where it was taught).",
        measured={
            "lengths": lengths,
            "train_max": t_max,
            "train_accuracy_float32": train_acc,
            "correct": {d: acc[d] for d in JUDGED},
            "accuracy_beyond_training": {d: float(acc[d][~in_range].mean()) for d in JUDGED},
            "corollary_b10": b10,
            "b10_consistent": consistent,
            "collapse_length": {d: col[d].collapse_length for d in JUDGED},
            "first_identical": {d: col[d].first_identical for d in JUDGED},
            "noise_floor": {d: col[d].noise_floor for d in JUDGED},
            "predicted_length": {d: col[d].predicted_length for d in JUDGED},
            "decay_slope_float64": report.fit.slope,
            "state_scale": report.scale,
            "distance_float64": report.per_dtype["float64"].distance,
            "final_loss": info["final_loss"],
            "train_time_s": info["train_time_s"],
        },
        verdict=verdict_from(ok),
        key_number=f"bf16 first identical n = {col['bfloat16'].first_identical}, f32 "
        f"{col['float32'].first_identical}; B.10 {'holds' if consistent else 'VIOLATED'}",
        setup=f"{rec.describe()}. Pairs n = 1..{n_max}; each format runs the same weights "
        "entirely in that dtype (softmax included); float64 is the reference.",
        figures=(rel,), seeds=(ctx.seed,), dtypes=FORMATS,
        notes=" ".join(notes),
    )
