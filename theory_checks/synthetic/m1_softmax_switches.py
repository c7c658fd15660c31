"""M1 -- beyond the paper: softmax switches that are meant not to disperse, on Figure 10's
protocol.

"Softmax is not enough (for sharp out-of-distribution)" (Velickovic, Perivolaropoulos,
Barbero, Pascanu, arXiv 2410.01104) proves that a softmax over n bounded logits must spread
as n grows (the mechanism of R4's collapse) and proposes an inference-time adaptive
temperature; Scalable-Softmax (Nakanishi, arXiv 2501.19399) multiplies the scores by
s log n. Both are the decoder's `attn_softmax` switch (`transformer.layers.attention_softmax`),
and the Figure 10 protocol (`analysis.synthetic_collapse`, R4) calls that same function.

What the theory predicts, decided before measuring:
- adaptive temperature: its inverse temperature beta = max(poly(H), 1) never exceeds about
  2.42 (the fit's peak), so the logits stay bounded and Lemmas B.1-B.2 still apply: the
  repeated-last pair still collapses (log-log slope <= -0.5, R4's criterion). Worse, beta
  falls back to 1 once the entropy passes ~6.2 nats (about 500 equally weighted keys).
- Scalable-Softmax: the factor s log n is unbounded, outside Lemmas B.1-B.2; it is proposed
  to keep attention from fading with n, so the pair should decay more slowly than with the
  standard softmax (slope at least 0.25 shallower).
s = 1 / ln 10 (fixed here, before measuring): the switch equals the standard softmax at
n = 10 keys, the protocol's second length, and sharpens beyond. (Nakanishi learns s per layer
and head; an untrained model has nothing to learn it from.)

Settings: NoPE and RoPE (the encodings R4 judges), q/k/v variance 1 and 1/d (R4's readings
with positions in the scores and the copy at n + 1), float64. The premise of each part: the
standard softmax collapses there (slope <= -0.5); otherwise there is nothing to remedy.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.fitting import loglog_slope
from analysis.synthetic_collapse import Reading, synthetic_pair_distances
from theory_checks.context import Profile, RunContext
from theory_checks.report.plotting import plt, save
from theory_checks.report.reproduction import BF16_LINE, FIG10_LENGTHS
from theory_checks.result import Check, CheckResult, combined, unreached

ENCODINGS = {"none": "NoPE", "rope": "RoPE"}
VARIANCES = ("1", "1/d")
SWITCHES = ("standard", "adaptive_temperature", "scalable")
SSMAX_S = 1 / math.log(10)
FIT_FROM = 50  # as R4's protocol fit: past the first few tokens
COLLAPSE_SLOPE = -0.5  # R4's criterion of a collapse
SLOWER_BY = 0.25  # Scalable-Softmax: its slope at least this much shallower


CHECK = Check(
    "M1", "Softmax that does not disperse (beyond the paper)",
    "arXiv 2410.01104 and 2501.19399 on Figure 10's protocol",
    claim="A bounded adaptive temperature cannot stop the dispersion, so the repeated-last "
    "pair still collapses with it; Scalable-Softmax's unbounded s log n factor keeps the pair "
    "apart for longer than the standard softmax.",
    criterion=f"per setting (NoPE/RoPE x variance 1 and 1/d), slopes of the mean L1 "
    f"distance fitted over n >= {FIT_FROM}: adaptive temperature slope <= "
    f"{COLLAPSE_SLOPE} (still collapses); Scalable-Softmax (s = 1/ln 10) slope >= the "
    f"standard softmax's + {SLOWER_BY} (decays more slowly). Every setting must hold.",
)


def _part_name(pe: str, variance: str) -> str:
    return f"{ENCODINGS[pe]}, var {variance}"


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    # 8 seeds (one compiled chunk) and 12 lengths keep the quick profile under its 4 minutes.
    n_seeds = 2 if ctx.reduced else profile.pick(quick=8, paper=128)
    seeds = tuple(ctx.seed + s for s in range(n_seeds))
    grid = () if ctx.reduced else tuple(int(x) for x in np.geomspace(5, 5000, 12))
    lengths = [5, 10, 60, 100, 500] if ctx.reduced else sorted(set(FIG10_LENGTHS) | set(grid))
    fit = np.asarray(lengths) >= FIT_FROM
    encodings = ("none",) if ctx.reduced else tuple(ENCODINGS)  # the test suite's run: NoPE
    dist, slopes = {}, {}
    for pe in encodings:
        for variance in VARIANCES:
            for switch in SWITCHES:
                runs = synthetic_pair_distances(
                    pe, Reading(variance), lengths, seeds, softmax=switch, ssmax_s=SSMAX_S)
                dist[(pe, variance, switch)] = runs
                slopes[(pe, variance, switch)] = loglog_slope(
                    np.asarray(lengths)[fit], runs.mean(0)[fit])

    parts, part_verdicts = {}, {}
    for pe in encodings:
        for variance in VARIANCES:
            std = slopes[(pe, variance, "standard")]
            reached = std <= COLLAPSE_SLOPE
            name = _part_name(pe, variance)
            parts[f"adaptive temperature | {name}"] = (
                slopes[(pe, variance, "adaptive_temperature")] <= COLLAPSE_SLOPE, reached)
            parts[f"scalable | {name}"] = (
                slopes[(pe, variance, "scalable")] >= std + SLOWER_BY, reached)
    ok, premise_reached = combined(parts)
    for key, (part_ok, reached) in parts.items():
        part_verdicts[key] = ("inconclusive" if not reached else "pass" if part_ok else "fail")

    figure = _figure(ctx, lengths, dist, seeds, encodings)
    at_max = {
        f"{switch} | {_part_name(pe, v)}": float(dist[(pe, v, switch)].mean(0)[-1])
        for pe in encodings for v in VARIANCES for switch in SWITCHES
    }
    ratio = {
        f"{switch} | {_part_name(pe, v)}": float(
            dist[(pe, v, switch)].mean(0)[-1] / dist[(pe, v, "standard")].mean(0)[-1])
        for pe in encodings for v in VARIANCES for switch in SWITCHES[1:]
    }
    nope = {s: slopes[("none", "1", s)] for s in SWITCHES}
    not_reached = unreached(parts)
    return CHECK.result(
        ctx,
        ok=ok, premise_reached=premise_reached,
        premise=f"the standard softmax collapses in the setting (slope <= {COLLAPSE_SLOPE}, "
        "R4's criterion): otherwise there is no dispersion to remedy",
        to_reach_premise="" if premise_reached else
        f"longer sweeps for {', '.join(not_reached)} (the standard softmax did not collapse)",
        measured={
            "slopes": {f"{s} | {_part_name(pe, v)}": slopes[(pe, v, s)]
                       for pe in encodings for v in VARIANCES for s in SWITCHES},
            "part_verdicts": part_verdicts,
            "mean_distance_at_n_max": at_max,
            "distance_ratio_to_standard_at_n_max": ratio,
            "mean_distance": {
                f"{s} | {_part_name(pe, v)}": dict(zip(lengths, dist[(pe, v, s)].mean(0)))
                for pe in encodings for v in VARIANCES for s in SWITCHES},
            "n_max": lengths[-1], "ssmax_s": SSMAX_S, "n_seeds": len(seeds),
        },
        key_number=f"NoPE var 1 slopes: standard {nope['standard']:.2f}, adaptive "
        f"{nope['adaptive_temperature']:.2f}, scalable {nope['scalable']:.2f}",
        setup=f"Figure 10's protocol (R4, analysis.synthetic_collapse): d = 64, one head, "
        f"q/k/v drawn directly, y = LN(x + attention), copy at n + 1, positions in the scores; "
        f"n = {lengths[0]}..{lengths[-1]} ({len(lengths)} lengths), {len(seeds)} seeds, "
        "float64; the softmax of transformer.layers.attention_softmax with attn_softmax = "
        f"standard, adaptive_temperature, scalable (s = 1/ln 10 = {SSMAX_S:.4f}).",
        figures=(figure,), seeds=seeds, dtypes=("float64",),
        notes="Beyond the paper: neither switch was in the paper; their authors' models are "
        "trained with (Scalable-Softmax) or tuned for (adaptive temperature) the switch, ours "
        "are random. The adaptive temperature's fit returns beta = 1 once the entropy exceeds "
        "about 6.2 nats, so at n of several hundred and more with near-uniform attention "
        "(variance 1/d) it is the standard softmax.",
    )


def _figure(ctx, lengths, dist, seeds, encodings) -> str:
    path, rel = ctx.figure("m1_softmax_switches.png")
    fig, axes = plt.subplots(len(VARIANCES), len(encodings), figsize=(7.0, 5.6), dpi=110,
                             sharex=True, squeeze=False)
    labels = {"standard": "softmax", "adaptive_temperature": "adaptive temperature",
              "scalable": "Scalable-Softmax (s = 1/ln 10)"}
    for row, variance in enumerate(VARIANCES):
        for col, pe in enumerate(encodings):
            ax = axes[row, col]
            for switch in SWITCHES:
                runs = dist[(pe, variance, switch)]
                ax.fill_between(lengths, runs.min(0), runs.max(0), alpha=0.12)
                ax.loglog(lengths, runs.mean(0), "o-", ms=2, lw=1, label=labels[switch])
            ax.axhline(BF16_LINE, color="grey", ls="--", lw=0.8, label="bf16 line (as read)")
            ax.set_title(f"{ENCODINGS[pe]}, q/k/v variance {variance}", fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("n")
    for ax in axes[:, 0]:
        ax.set_ylabel("||y_n - y*_(n+1)||_1")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"M1: Figure 10's protocol with each attention softmax; mean and min/max "
                 f"over {len(seeds)} seeds, float64", fontsize=9)
    save(fig, path)
    return rel
