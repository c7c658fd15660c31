"""R6 -- low precision brings the collapse forward."""

from __future__ import annotations

import math

import numpy as np

from analysis.collapse import PairFamily, collapse_lengths, collapse_sweep
from theory_checks.context import Profile, RunContext
from theory_checks.report.plotting import FORMAT_COLORS, UNIT_ROUNDOFF, plt, save
from theory_checks.result import Check, CheckResult
from theory_checks.synthetic.models import describe, random_model


FORMATS = ("float64", "float32", "float16", "bfloat16")
MAX_PREDICTION_FACTOR = 4.0  # measured and predicted collapse lengths within this factor
LOW = ("float16", "bfloat16")
# Float8 by fake quantisation (beyond the paper, which ran nothing below bfloat16): float32
# weights and arithmetic, every stored activation rounded (TransformerConfig.activation_format).
FLOAT8 = ("float8_e4m3fn", "float8_e5m2")
PREMISE = ("the pair distance decays with n (fitted float64 slope < 0), and for float16 and "
           "bfloat16 the sweep reaches the collapse: a measured collapse length, or a "
           "predicted one within the sweep (n_pred <= n_max)")


CHECK = Check(
    "R6", "Low precision brings the collapse forward", "Section 5 (precision), Fig. 5",
    claim="Distances that shrink with n fall below a format's resolution sooner the fewer "
    "significant bits it has: bfloat16 (8) and float16 (11) collapse far earlier than "
    "float32 (24); quantised formats fare worse still: float8 (e4m3fn 4, e5m2 3 bits, "
    "activations stored in it) collapses no later than bfloat16.",
    criterion="measured collapse length (first n from which the pair is bit-identical or "
    "its true distance is below the format's measured rounding-noise floor) of bfloat16 and "
    "float16 below float32's (not collapsing within the sweep counts as beyond it), and "
    f"measured/predicted within a factor {MAX_PREDICTION_FACTOR:g} for both, the prediction "
    "being n where the fitted decay C n^s reaches u x typical ||y||_inf; and the float8 "
    "formats' (fake-quantised) collapse lengths no later than bfloat16's.",
)


def profile_n_max(profile: Profile, ctx: RunContext) -> int:
    return 512 if ctx.reduced else profile.pick(quick=1024, paper=8192)


def sweep_lengths(profile: Profile, ctx: RunContext) -> list[int]:
    return list(range(1, profile_n_max(profile, ctx) + 1, 4 if ctx.reduced else 8))


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    lengths = sweep_lengths(profile, ctx)
    n_max = lengths[-1]  # the sweep's end (what the premise test asks it to reach)
    model = random_model(ctx.seed, n_layers=2, pos_encoding="none", norm="layernorm",
                         max_len=profile_n_max(profile, ctx) + 16, dtype="float64",
                         param_dtype="float64",
                         softmax_dtype="float64")
    family = PairFamily(repeat_id=7, prompt_ids=(1, 2, 3, 4))
    sweep = collapse_sweep(model, family, lengths, dtypes=FORMATS + FLOAT8)
    rep = collapse_lengths(sweep, norm="linf", reference="float64")
    never = n_max + 1  # "not within the sweep" ranks after every measured length
    length = {d: (c.collapse_length if c.collapse_length is not None else never)
              for d, c in rep.per_dtype.items()}
    predicted = {d: c.predicted_length for d, c in rep.per_dtype.items()}
    ratio = {}
    for d in ("float16", "bfloat16"):
        p, m = predicted[d], rep.per_dtype[d].collapse_length
        ratio[d] = (m / p) if (p and m) else float("nan")
    order_ok = length["bfloat16"] < length["float32"] and length["float16"] < length["float32"]
    float8_ok = all(length[d] <= length["bfloat16"] for d in FLOAT8)
    prediction_ok = all(
        math.isfinite(r) and abs(math.log(r)) <= math.log(MAX_PREDICTION_FACTOR) for r in ratio.values()
    )
    # Premise test (fixed before measuring): a claim about where a shrinking distance meets
    # each format's resolution needs a shrinking distance and a sweep that gets there.
    decays = rep.fit.slope < 0
    reaches = {d: rep.per_dtype[d].collapse_length is not None
               or (predicted[d] is not None and predicted[d] <= n_max) for d in LOW + FLOAT8}
    premise_reached = decays and all(reaches.values())
    ok = order_ok and prediction_ok and float8_ok

    path, rel = ctx.figure("r06_precision.png")
    fig, (ax, ax_noise) = plt.subplots(2, 1, figsize=(6.4, 6.4), dpi=110, sharex=True)
    for i, d in enumerate(FORMATS + FLOAT8):
        dist = sweep.linf[i, :, -1]
        color = FORMAT_COLORS[d]
        # float64 wide and underneath, so float32 (equal to it at this scale) shows on top.
        ax.semilogy(lengths, np.where(dist > 0, dist, np.nan), "-", color=color,
                    lw=3.5 if d == "float64" else 1, alpha=0.45 if d == "float64" else 1,
                    label=f"{d}: pair distance")
        c = rep.per_dtype[d]
        if c.collapse_length is not None and d != "float64":
            ax.axvline(c.collapse_length, color=color, ls="--", lw=1,
                       label=f"{d}: measured collapse length {c.collapse_length}")
        ax_noise.semilogy(lengths, np.where(c.noise > 0, c.noise, np.nan), "-", color=color,
                          lw=1, label=f"{d}: rounding error of one run")
        if d != "float64":
            ax_noise.axhline(UNIT_ROUNDOFF[d] * rep.scale, color=color, ls=":", lw=1,
                             label=f"{d}: u x typical ||y||_inf")
    ax.set_ylabel("||y_n - y*_(n+1)||_inf (state units)")
    ax.set_title(f"R6: same weights in six formats, 2-layer NoPE decoder, seed {ctx.seed}",
                 fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(True, which="both", alpha=0.3)
    ax_noise.set_xlabel("n (repeated tokens)")
    ax_noise.set_ylabel("||y_format(s_n) - y_float64(s_n)||_inf")
    ax_noise.legend(fontsize=6)
    ax_noise.grid(True, which="both", alpha=0.3)
    save(fig, path)
    fmt = lambda v: "none" if v is None else (f"{v:.0f}" if isinstance(v, float) else str(v))  # noqa
    return CHECK.result(
        ctx,
        measured={
            "decay_slope_float64": rep.fit.slope, "state_scale_linf": rep.scale,
            **{f"{d}_collapse_length": rep.per_dtype[d].collapse_length for d in FORMATS},
            **{f"{d}_predicted_length": predicted[d] for d in FORMATS},
            **{f"{d}_noise_floor": rep.per_dtype[d].noise_floor for d in FORMATS},
            **{f"{d}_measured_over_predicted": ratio[d] for d in ratio},
            **{f"{d}_collapse_length": rep.per_dtype[d].collapse_length for d in FLOAT8},
            **{f"{d}_predicted_length": predicted[d] for d in FLOAT8},
            **{f"{d}_noise_floor": rep.per_dtype[d].noise_floor for d in FLOAT8},
            "float8_no_later_than_bfloat16": float8_ok,
            "n_max": n_max,
            "sweep_reaches_collapse": reaches,
        },
        ok=ok,
        premise=PREMISE,
        premise_reached=premise_reached,
        to_reach_premise="" if premise_reached else (
            "a pair family whose distance decays (R4's setting)" if not decays else
            f"a sweep beyond n = {n_max} to the predicted collapse lengths: "
            + ", ".join(f"{d} n ~ {fmt(predicted[d])}" for d in LOW + FLOAT8
                        if not reaches[d])),
        key_number=", ".join(f"{d} {fmt(rep.per_dtype[d].collapse_length)}"
                             for d in FORMATS[1:] + FLOAT8),
        setup=f"{describe(model)} cast to each format (parameters, compute, softmax and norms); "
        f"pairs: 4 prompt tokens + n vs n+1 copies of a token, n = 1..{n_max}; float64 is the "
        "reference for the true distance and the rounding noise. float8_e4m3fn and "
        "float8_e5m2: fake quantisation (float32 weights and arithmetic, every stored "
        "activation rounded to the format, saturating, no scale).",
        figures=(rel,), dtypes=FORMATS + FLOAT8,
    )
