"""R5 -- Corollary B.10: once counting pairs collapse in a float format, one answer is wrong."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from analysis.collapse import PairFamily, collapse_lengths, collapse_sweep
from theory_checks.context import Profile, RunContext
from theory_checks.report.plotting import new_figure, save
from theory_checks.result import Check, CheckResult
from theory_checks.synthetic.models import describe, random_model
from transformer import rebuild

CHECK = Check(
    "R5", "Counting is impossible on collapsed pairs", "Corollary B.10",
    claim="Sequences with n and n + 1 copies of a token need different counts, but once "
    "their last-token representations are equal in the model's float format the model "
    "gives them the same output, so at least one answer is wrong.",
)

PROMPT, ONE = (1, 2, 3, 4), 7  # "How many ones ...?" stand-in, then the run of ones
FORMATS = ("float16", "bfloat16")
STEP = 16
PREMISE = ("at least one pair whose final states y(n), y(n+1) are bit-identical in float16 "
           "or bfloat16 within the sweep: Corollary B.10 speaks of collapsed pairs only")


def profile_n_max(profile: Profile, ctx: RunContext) -> int:
    return 1024 if ctx.reduced else profile.pick(quick=2048, paper=16384)


def sweep_lengths(profile: Profile, ctx: RunContext) -> list[int]:
    """n = 1, 1 + STEP, ... up to the profile's n_max."""
    return list(range(1, profile_n_max(profile, ctx) + 1, STEP))


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    lengths = sweep_lengths(profile, ctx)
    n_max, step = lengths[-1], STEP  # the sweep's end
    model = random_model(ctx.seed, n_layers=2, pos_encoding="none", norm="layernorm",
                         max_len=profile_n_max(profile, ctx) + 16, dtype="float32",
                         param_dtype="float32")
    family = PairFamily(repeat_id=ONE, prompt_ids=PROMPT)
    sweep = collapse_sweep(model, family, lengths, dtypes=("float32",) + FORMATS)
    measured: dict = {"n_max": n_max, "step": step}
    consistent = True
    collapsed_any = False
    first_identical = {}
    for dtype in FORMATS:
        i = sweep.index(dtype)
        y, y_star = sweep.states[i, :, -1], sweep.states_star[i, :, -1]  # [N, m] (float64 copies)
        identical = (y == y_star).all(-1)
        low = rebuild(model, dtype=dtype, param_dtype=dtype, softmax_dtype=dtype)
        # float64 copies of dtype values convert back exactly.
        answer = np.asarray(jnp.argmax(low.unembed(jnp.asarray(y, dtype)), -1))
        answer_star = np.asarray(jnp.argmax(low.unembed(jnp.asarray(y_star, dtype)), -1))
        same_answer = answer == answer_star
        consistent &= bool(same_answer[identical].all())
        collapsed_any |= bool(identical.any())
        first = int(np.asarray(lengths)[identical.argmax()]) if identical.any() else None
        first_identical[dtype] = first
        measured[f"{dtype}_identical_pairs"] = int(identical.sum())
        measured[f"{dtype}_first_identical_n"] = first
        measured[f"{dtype}_identical_pairs_with_same_answer"] = int(same_answer[identical].sum())
        measured[f"{dtype}_same_answer_pairs_total"] = int(same_answer.sum())
    f32 = sweep.index("float32")
    measured["float32_identical_pairs"] = int(
        (sweep.states[f32, :, -1] == sweep.states_star[f32, :, -1]).all(-1).sum()
    )
    # Premise test (fixed before measuring): the corollary is an implication "collapsed ->
    # same answer"; without a collapsed pair it was not exercised.
    premise_reached = collapsed_any
    ok = consistent
    # What would reach it: where the fitted decay of the float32 distance meets each
    # format's round-off (float32 is far above its own floor at these lengths).
    prediction = collapse_lengths(sweep, norm="linf", reference="float32")
    predicted = {d: prediction.per_dtype[d].predicted_length for d in FORMATS}
    measured["predicted_collapse_length"] = predicted
    measured["decay_slope_float32"] = prediction.fit.slope

    path, rel = ctx.figure("r05_counting_pairs.png")
    fig, ax = new_figure()
    for dtype in ("float32",) + FORMATS:
        d = sweep.linf[sweep.index(dtype), :, -1]
        ax.semilogy(lengths, np.where(d > 0, d, np.nan), "o", ms=2, label=f"{dtype} (0 = collapsed, not drawn)")
    ax.set_xlabel("n (ones in the prompt)")
    ax.set_ylabel("||y_n - y*_(n+1)||_inf")
    ax.set_title(f"R5: counting pairs n vs n+1 ones, 2-layer NoPE decoder, seed {ctx.seed}")
    ax.legend()
    save(fig, path)
    return CHECK.result(
        ctx,
        criterion="for every bit-identical pair (float16 and bfloat16) the model's argmax "
        "answers for n and n + 1 coincide (premise: at least one such pair in the sweep).",
        measured=measured,
        ok=ok,
        premise=PREMISE,
        premise_reached=premise_reached,
        to_reach_premise="" if premise_reached else (
            f"a sweep beyond n = {n_max} to the predicted collapse lengths (fitted float32 "
            f"decay slope {prediction.fit.slope:.2f} meeting u x typical |y|): "
            + ", ".join(f"{d} n ~ {_fmt(predicted[d])}" for d in FORMATS)),
        key_number="first identical n: " + ", ".join(f"{k} {v}" for k, v in first_identical.items()),
        setup=f"{describe(model)}, default init; prompt of {len(PROMPT)} tokens then n copies of "
        f"one token, n = 1..{n_max} step {step}; every format runs the same weights with "
        "softmax and norms in that format; states compared bit for bit.",
        figures=(rel,), dtypes=("float32",) + FORMATS,
        notes="The answer here is the argmax over the vocabulary of an untrained model; what "
        "the corollary needs is only that equal states give equal outputs, and that n and n+1 "
        "have different correct counts.",
    )


def _fmt(length) -> str:
    return "none (no decay)" if length is None else f"{length:.3g}"
