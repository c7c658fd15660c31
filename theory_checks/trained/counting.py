"""R5 (Corollary B.10) on trained counters, in the theorem's own setting: a NoPE counter
(causal mask, no positional information) run in float64, float32 and bfloat16 (the same
weights cast), with the RoPE counter for contrast.

The chain on one trained model: the distance of the counting pair (n vs n + 1 ones, read at
the query token of the task's own layout) falls with n; in bfloat16 the pair becomes bit
for bit identical from some n*; the two answers there are then identical, so one is wrong;
and what the model and its states can still count around n*.
"""

from __future__ import annotations

import numpy as np

from analysis.collapse import collapse_lengths
from theory_checks.context import Profile, RunContext
from theory_checks.report.plotting import UNIT_ROUNDOFF, plt, save
from theory_checks.result import Check, CheckResult
from theory_checks.trained.recipes import (
    corollary_b10,
    nearest_state_count,
    recipe,
    recipe_query_states,
    trained_model,
)
from training.tasks import COUNT_0

CHECK = Check(
    "R5", "Trained counter: collapse and Corollary B.10", "Corollary B.10",
    claim="Once the last-token states of n and n + 1 ones are equal in the model's float "
    "format, the model gives both the same answer, so at least one is wrong; low "
    "precision (bfloat16) reaches that point within a few hundred ones.",
)

CHAIN = "count_ones_nope"  # the judged model: the theorem's setting
CONTRAST = "count_ones"  # RoPE, reported for contrast
MODELS = (CHAIN, CONTRAST)
FORMATS = ("float64", "float32", "bfloat16")  # float64: the reference of collapse_lengths
JUDGED = ("float32", "bfloat16")
MIN_TRAIN_ACC = 0.9
N_MAX = {"full": 256, "reduced": 150}  # pairs (n, n + 1) for n = 1..N_MAX
WINDOW = 8  # lengths per point of the figure's accuracy curves
PREMISE = (
    f"the NoPE counter counts where it was taught (float32 accuracy >= {MIN_TRAIN_ACC} on its "
    "training lengths), and at least one of its counting pairs y(n), y(n + 1) is bit-identical "
    "in bfloat16 within the sweep (Corollary B.10 speaks of collapsed pairs only)"
)


def sweep_max(ctx: RunContext) -> int:
    """The largest n of the pairs (n, n + 1) measured."""
    return N_MAX["reduced" if ctx.reduced else "full"]


def _accuracy(correct: np.ndarray, where: np.ndarray) -> float | None:
    return float(correct[where].mean()) if where.any() else None


def _regions(n: np.ndarray, t_max: int, n_star: int | None) -> dict[str, np.ndarray]:
    """Length ranges the accuracies are reported on: the training lengths, beyond them up
    to n*, and from n* on (without n*: everything beyond training)."""
    if n_star is None:
        return {f"1..{t_max}": n <= t_max, f"{t_max + 1}..{n[-1]}": n > t_max}
    return {f"1..{t_max}": n <= t_max, f"{t_max + 1}..{n_star - 1}": (n > t_max) & (n < n_star),
            f"{n_star}..{n[-1]}": n >= n_star}


def _windowed(correct: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = len(n) // WINDOW * WINDOW
    return n[:k].reshape(-1, WINDOW).mean(1), correct[:k].reshape(-1, WINDOW).mean(1)


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    n_max = sweep_max(ctx)
    lengths = list(range(1, n_max + 2))
    n = np.asarray(lengths)
    recs, info, qs, rep, b10 = {}, {}, {}, {}, {}
    for name in MODELS:
        recs[name] = recipe(name, seed=ctx.seed, reduced=ctx.reduced)
        _, info[name] = trained_model(recs[name], ctx.store)
        qs[name] = recipe_query_states(recs[name], lengths, FORMATS, store=ctx.store)
        rep[name] = collapse_lengths(qs[name].counting_sweep(), norm="linf", level=-1,
                                     reference="float64")
        b10[name] = {d: corollary_b10(qs[name], d) for d in FORMATS}

    t_max = {name: recs[name].task.max_len for name in MODELS}
    correct = {name: {d: qs[name].correct(d) for d in JUDGED} for name in MODELS}
    train_acc = {name: float(correct[name]["float32"][n <= t_max[name]].mean()) for name in MODELS}
    identical = b10[CHAIN]["bfloat16"]["identical_n"]

    # Premise test (fixed before measuring): a counter that counts, and a collapsed pair.
    learned = train_acc[CHAIN] >= MIN_TRAIN_ACC
    collapsed = len(identical) > 0
    premise_reached = learned and collapsed
    # Criterion: B.10 on every bit-identical pair of every model and format, and the NoPE
    # pair distance falls with n (the first link of the chain).
    consistent = all(b["identical_n"] == b["same_answer_n"] == b["one_wrong_n"]
                     for per_format in b10.values() for b in per_format.values())
    decays = rep[CHAIN].fit.slope < 0
    ok = consistent and decays

    n_star = identical[0] if collapsed else None
    bf16 = rep[CHAIN].per_dtype["bfloat16"]
    predicted = bf16.predicted_length
    read_counts = {d: nearest_state_count(qs[CHAIN], d) for d in JUDGED}
    readout = {d: read_counts[d] == n for d in JUDGED}
    regions = _regions(n, t_max[CHAIN], n_star)
    accuracy = {kind: {d: {r: _accuracy(c[d], w) for r, w in regions.items()} for d in JUDGED}
                for kind, c in (("model", correct[CHAIN]), ("state_readout", readout))}
    answers = {d: (qs[CHAIN].answer[qs[CHAIN].index(d)] - COUNT_0) for d in JUDGED}
    beyond = n > t_max[CHAIN]
    saturated = {d: sorted(set(answers[d][beyond].tolist())) for d in JUDGED}
    readout_first_wrong = {d: (int(n[~readout[d]][0]) if (~readout[d]).any() else None)
                           for d in JUDGED}

    path, rel = ctx.figure("trained_r05_counting.png")
    _figure(path, ctx, n, rep, b10, answers, read_counts, correct, readout, t_max, n_star)

    notes = [
        f"The chain is judged on the NoPE counter ({recs[CHAIN].describe()}); the RoPE counter "
        "is shown for contrast.",
        f"Beyond its training lengths (n > {t_max[CHAIN]}) the counter answers "
        f"{', '.join(f'#{a}' for a in saturated['float32'][:6])} (float32): count tokens it "
        "never saw as targets are never predicted, so its own accuracy falls at the end of the "
        "training range, in every format, whether or not the pair has collapsed. That "
        "bit-identical pairs get equal answers is therefore necessary (the answer is a "
        "function of y) but not visible in the answers alone; the state readout (the count "
        "whose float64 state is nearest to y, no unembedding) shows what the rounding "
        "removes: "
        + "; ".join(f"{d}: " + ", ".join(f"n in {r}: {_fmt(v)}" for r, v in
                                         accuracy["state_readout"][d].items()) for d in JUDGED)
        + ".",
        "Pairs are the task's own sequences 'BOS 1^n ?' and 'BOS 1^(n+1) ?', states read "
        "at the query token with one full forward per sequence.",
        f"The predicted collapse length (the fitted float64 decay, slope "
        f"{rep[CHAIN].fit.slope:.2f}, meeting bfloat16's u x typical |y|) is "
        f"n ~ {_fmt(predicted)}, and from n = {bf16.collapse_length} on the pair is within "
        "bfloat16's measured rounding noise; bit-identity of all coordinates of y comes "
        f"later (first at n = {n_star}). The bfloat16 state readout is first wrong at n = "
        f"{_fmt(readout_first_wrong['bfloat16'])} (float32: "
        f"{_fmt(readout_first_wrong['float32'])}): what "
        "the rounding removes goes from where the pair falls below bfloat16's resolution, "
        "before the pair is bit-identical.",
        f"RoPE contrast: float64 slope {rep[CONTRAST].fit.slope:.2f}, "
        f"{len(b10[CONTRAST]['bfloat16']['identical_n'])} bit-identical bfloat16 pairs up to "
        f"n = {n_max} (predicted collapse n ~ "
        f"{_fmt(rep[CONTRAST].per_dtype['bfloat16'].predicted_length)}).",
    ]
    if not learned:
        notes.append(f"The NoPE counter did not learn to count in range (float32 accuracy "
                     f"{train_acc[CHAIN]:.2f} < {MIN_TRAIN_ACC}).")
    if not consistent:
        notes.append("Corollary B.10 VIOLATED: a bit-identical pair got different answers.")
    if not decays:
        notes.append("The NoPE pair distance does not fall with n (fitted slope >= 0).")
    to_reach = []
    if not learned:
        to_reach.append(f"a longer training of the NoPE counter (float32 accuracy "
                        f"{train_acc[CHAIN]:.2f} on 1..{t_max[CHAIN]}, needs {MIN_TRAIN_ACC})")
    if not collapsed:
        to_reach.append(f"a sweep beyond n = {n_max}: no bit-identical bfloat16 pair up to there; "
                        f"the fitted decay meets bfloat16's round-off at n ~ {_fmt(predicted)} "
                        "(bit-identity of every coordinate needs a longer run still)")
    return CHECK.result(
        ctx,
        criterion="(1) for both counters, in every format, every n with y(n) == y(n+1) bit for "
        "bit has equal argmax answers and at least one of them wrong; (2) the NoPE counter's "
        f"float64 pair distance falls with n (log-log slope over n = 1..{n_max} < 0).",
        measured={
            "lengths": lengths,
            "n_star_bfloat16": n_star,
            "predicted_collapse_length_bfloat16": predicted,
            "collapse_length_bfloat16": bf16.collapse_length,
            "decay_slope_float64": rep[CHAIN].fit.slope,
            "b10_consistent": consistent,
            "accuracy_by_region": accuracy,
            "answers_beyond_training": saturated,
            "state_readout_first_wrong": readout_first_wrong,
            "models": {name: {
                "train_max": t_max[name],
                "train_accuracy_float32": train_acc[name],
                "correct": correct[name],
                "corollary_b10": b10[name],
                "first_identical": {d: rep[name].per_dtype[d].first_identical for d in JUDGED},
                "collapse_length": {d: rep[name].per_dtype[d].collapse_length for d in JUDGED},
                "predicted_length": {d: rep[name].per_dtype[d].predicted_length for d in JUDGED},
                "noise_floor": {d: rep[name].per_dtype[d].noise_floor for d in JUDGED},
                "decay_slope_float64": rep[name].fit.slope,
                "state_scale": rep[name].scale,
                "distance_float64": rep[name].per_dtype["float64"].distance,
                "final_loss": info[name]["final_loss"],
                "train_time_s": info[name]["train_time_s"],
            } for name in MODELS},
        },
        ok=ok,
        premise=PREMISE,
        premise_reached=premise_reached,
        to_reach_premise="; ".join(to_reach),
        key_number=f"NoPE bf16: collapse n = {bf16.collapse_length} (predicted "
        f"{_fmt(predicted)}), bit-identical from n* = {n_star}; B.10 "
        f"{'holds' if consistent else 'VIOLATED'} on {len(identical)} pairs; bf16 readout "
        "accuracy " + ", ".join(f"{r}: {_fmt(v)}"
                                for r, v in accuracy["state_readout"]["bfloat16"].items()),
        setup="; ".join(recs[name].describe() for name in MODELS)
        + f". Pairs n = 1..{n_max}; each format runs the same weights entirely in that dtype "
        "(softmax included); float64 is the reference.",
        figures=(rel,), dtypes=FORMATS,
        notes=" ".join(notes),
    )


def _fmt(value) -> str:
    if value is None:
        return "none"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _figure(path, ctx, n, rep, b10, answers, read_counts, correct, readout, t_max, n_star):
    """Three panels: the pair distance, the answers, the accuracy (chain model + contrast)."""
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.4), dpi=110)
    pairs = n[:-1]
    chain = rep[CHAIN]
    floor = 1e-9
    for d, style in zip(FORMATS, ("-", "--", "-")):
        rel = chain.per_dtype[d].distance / chain.scale
        ax1.semilogy(pairs, np.maximum(rel, floor), style, lw=1, label=f"NoPE {d}")
    ident = np.asarray(b10[CHAIN]["bfloat16"]["identical_n"])
    if ident.size:
        ax1.plot(ident, np.full(ident.size, floor), "|", ms=10, color="C2",
                 label="NoPE bf16: y(n) == y(n+1) bit for bit")
    contrast = rep[CONTRAST].per_dtype["float64"].distance / rep[CONTRAST].scale
    ax1.semilogy(pairs, contrast, ":", lw=1, color="0.4", label="RoPE float64 (contrast)")
    ax1.axhline(UNIT_ROUNDOFF["bfloat16"], color="r", ls=":", lw=0.8, label="bfloat16 u = 2^-8")
    ax1.set_ylim(floor / 3, None)
    ax1.set_xlabel("n (pair: n vs n + 1 ones, at the query token)")
    ax1.set_ylabel("||y(n) - y(n+1)||_inf / median ||y||_inf")
    ax1.set_title("pair distance (0 drawn at the bottom)")

    ax2.plot(n, n, "k-", lw=0.8, label="correct count n")
    ax2.plot(n, answers["float32"], ".", ms=4, label="NoPE answer, float32")
    ax2.plot(n, answers["bfloat16"], "x", ms=3, label="NoPE answer, bfloat16")
    for d, marker in zip(JUDGED, ("s", "+")):
        ax2.plot(n, read_counts[d], marker, ms=3, mfc="none", label=f"state readout, {d}")
    ax2.set_xlabel("number of ones n")
    ax2.set_ylabel("count")
    ax2.set_title("answers and the count readable from y")

    for label, c, style in (
        ("NoPE answer float32", correct[CHAIN]["float32"], "o-"),
        ("NoPE answer bfloat16", correct[CHAIN]["bfloat16"], "x-"),
        ("state readout float32", readout["float32"], "s--"),
        ("state readout bfloat16", readout["bfloat16"], "+--"),
        ("RoPE answer float32", correct[CONTRAST]["float32"], ":"),
    ):
        ax3.plot(*_windowed(c, n), style, ms=3, lw=1, label=label)
    ax3.set_ylim(-0.03, 1.05)
    ax3.set_xlabel(f"number of ones n (mean over windows of {WINDOW})")
    ax3.set_ylabel("fraction correct")
    ax3.set_title("accuracy")
    for ax in (ax1, ax2, ax3):
        ax.axvspan(1, t_max[CHAIN], color="0.92")
        if n_star is not None:
            ax.axvline(n_star, color="C2", lw=0.8, ls="--")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    star = "no bit-identical bf16 pair" if n_star is None else f"n* = {n_star} (dashed)"
    fig.suptitle(f"R5: trained 2-layer NoPE counter (training lengths 1..{t_max[CHAIN]} shaded), "
                 f"{star}, seed {ctx.seed}", fontsize=10)
    save(fig, path)
