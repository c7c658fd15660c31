"""R12 -- mitigations the theory points to: separators in long runs, sliding windows."""

from __future__ import annotations

import numpy as np

from analysis.collapse import PairFamily, SequenceFamily, collapse_lengths, collapse_sweep
from analysis.fitting import loglog_slope
from theory_checks.context import Profile, RunContext
from theory_checks.report.plotting import plt, save
from theory_checks.result import Check, CheckResult
from theory_checks.synthetic.models import describe, random_model


ONE, SEP, PROMPT = 7, 9, (1, 2, 3, 4)
EVERY = 3  # a comma every third digit, as in the paper's Gemma experiment
WINDOW = 32


CHECK = Check(
    "R12", "Separators and sliding windows keep pairs apart", "Section 6",
    claim="Extra tokens in long repetitive runs (a comma every third digit) keep the "
    "representations apart, and a sliding window bounds how far the softmax spreads.",
    criterion="(a) at the largest n the pair distance with separators exceeds the plain "
    f"run's; (b) with a window of {WINDOW} the repeated-last-token distance at the largest "
    f"n exceeds the global model's and stops decaying (slope over n >= {4 * WINDOW} above "
    "-0.2).",
)


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    n_max = 512 if ctx.reduced else profile.pick(quick=1024, paper=8192)
    seed = ctx.seed

    # (a) a run of ones, n vs n + 1, with and without a separator every EVERY digits.
    lengths_a = list(range(8, n_max + 1, 8))
    model_a = random_model(seed, n_layers=2, pos_encoding="rope", norm="layernorm",
                           max_len=2 * n_max, dtype="float64", param_dtype="float64",
                           softmax_dtype="float64")
    runs = {}
    for name, fam in (
        ("plain", PairFamily(repeat_id=ONE, prompt_ids=PROMPT)),
        ("separators", PairFamily(repeat_id=ONE, prompt_ids=PROMPT, sep_id=SEP, sep_every=EVERY)),
    ):
        sweep = collapse_sweep(model_a, fam, lengths_a, dtypes=("float64", "bfloat16"))
        rep = collapse_lengths(sweep, norm="linf")
        runs[name] = (sweep.linf[0, :, -1], rep.per_dtype["bfloat16"].collapse_length)
    sep_ratio = float(runs["separators"][0][-1] / runs["plain"][0][-1])

    # (b) the repeated-last-token pair of R4 (NoPE, inside the theorem), with a window,
    # averaged over a few random sequences (single sequences are noisy, see R4).
    lengths_b = sorted({int(x) for x in np.geomspace(2, n_max, 30)})
    seeds_b = tuple(seed + s for s in range(2 if ctx.reduced else 4))
    dist_b: dict[str, list] = {"global": [], f"window {WINDOW}": []}
    model_b = None
    for s in seeds_b:
        seq = tuple(int(t) for t in np.random.default_rng(s).integers(0, n_max, n_max))
        for name, window in (("global", None), (f"window {WINDOW}", WINDOW)):
            model_b = random_model(s, std=1 / 8, n_layers=1, n_heads=1, n_kv_heads=1,
                                   d_model=64, d_head=64, d_mlp=256, vocab_size=n_max,
                                   max_len=n_max + 8, pos_encoding="none", norm="layernorm",
                                   window=window, dtype="float64", param_dtype="float64",
                                   softmax_dtype="float64")
            sweep = collapse_sweep(model_b, SequenceFamily(seq), lengths_b, dtypes=("float64",))
            dist_b[name].append(sweep.l1[0, :, -1])
    dist_b = {name: np.mean(d, axis=0) for name, d in dist_b.items()}
    far = np.asarray(lengths_b) >= 4 * WINDOW
    window_slope = loglog_slope(np.asarray(lengths_b)[far], dist_b[f"window {WINDOW}"][far])
    global_slope = loglog_slope(np.asarray(lengths_b)[far], dist_b["global"][far])
    window_ratio = float(
        np.median(dist_b[f"window {WINDOW}"][far]) / np.median(dist_b["global"][far])
    )

    ok = sep_ratio > 1.0 and window_ratio > 1.0 and window_slope > -0.2

    path, rel = ctx.figure("r12_mitigations.png")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    for name, (d, _) in runs.items():
        ax1.loglog(lengths_a, d, "-", label=name if name == "plain" else f"comma every {EVERY}")
    ax1.set_title(f"run of ones, n vs n+1 (2 layers, RoPE, seed {seed})")
    ax1.set_ylabel("||y_n - y*_(n+1)||_inf")
    for name, d in dist_b.items():
        ax2.loglog(lengths_b, d, "o-", ms=2, label=name)
    ax2.axvline(WINDOW, color="k", lw=0.8, ls=":", label=f"n = window ({WINDOW} tokens)")
    ax2.set_title(f"repeated last token (1 layer NoPE, d = 64, mean of seeds {list(seeds_b)})")
    ax2.set_ylabel("||y_n - y*_(n+1)||_1")
    for ax in (ax1, ax2):
        ax.set_xlabel("n")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("R12: mitigations against the unmitigated run, float64", fontsize=10)
    save(fig, path)
    return CHECK.result(
        ctx,
        measured={
            "separator_distance_ratio_at_n_max": sep_ratio,
            "plain_bf16_collapse_length": runs["plain"][1],
            "separators_bf16_collapse_length": runs["separators"][1],
            "window_distance_median_ratio_far": window_ratio,
            "window_slope_far": window_slope, "global_slope_far": global_slope,
            "n_max": n_max,
        },
        ok=ok,
        key_number=f"sep x{sep_ratio:.1f}, window x{window_ratio:.1f}",
        setup=f"(a) {describe(model_a)}, prompt + n ones with/without a separator every "
        f"{EVERY}; (b) {describe(model_b)} vs the same weights without a window, random "
        f"sequences; n up to {n_max}.",
        figures=(rel,), seeds=seeds_b, dtypes=("float64", "bfloat16"),
        notes="bfloat16 collapse lengths are reported for (a): the paper's Gemma experiment "
        "is in bf16, where the rounding floor may hide the separators' gain at these sizes.",
    )
