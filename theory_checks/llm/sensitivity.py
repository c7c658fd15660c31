"""R11 on a real LLM: the sensitivity profile ||d y_n / d v_i^(0)||_F over input positions i
of a long prompt (the U-shape question).

The prompt asks, in the paper's Figure 5 (c) words, "Can you copy the following number?"
then a string of uniformly drawn digits (fixed seed), as a one-turn chat (plain text for a
model without a chat template). ||J_i||_F^2 is estimated for every position at once with
Hutchinson probes (`analysis.estimate_sensitivity`: k VJPs instead of d_model), with its
standard error.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from analysis.sensitivity import estimate_sensitivity
from theory_checks import llm as L
from theory_checks.context import Profile, RunContext
from theory_checks.report.plotting import new_figure, save
from theory_checks.result import Check, CheckResult

CHECK = Check(
    "R11", "U-shaped sensitivity of a real LLM", "Section 5 (U-shape)",
    claim="y_n is more sensitive to the first and the last input positions than to the "
    "middle of the context.",
)

Z = 2.0  # an end counts as above the middle when estimate - Z * stderr exceeds it


def sensitivity_prompt(llm: L.LLM, n_digits: int, seed: int) -> tuple[list[int], tuple[int, int]]:
    """Prompt ids and the [start, stop) positions of the digits inside it."""
    digits = "".join(str(d) for d in np.random.default_rng(seed).integers(0, 10, n_digits))
    text = llm.chat(L.fig5_prefix(L.FIG5_COPY_QUESTION) + digits)
    ids = llm.encode(text)
    before = len(llm.encode(text[: text.index(digits)]))
    after = len(llm.encode(text[: text.index(digits) + len(digits)]))
    return ids, (before, after)


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    llm = L.llm_for(ctx)
    n_digits, n_probes = (24, 4) if ctx.reduced else (160, 8)
    ids, (d0, d1) = sensitivity_prompt(llm, n_digits, ctx.seed)
    est, se = estimate_sensitivity(
        llm.model, jnp.asarray(ids, jnp.int32), n_probes=n_probes, seed=ctx.seed
    )
    est, se = np.asarray(est, np.float64), np.asarray(se, np.float64)
    n = len(ids)
    mid = float(np.median(est[n // 4 : 3 * n // 4]))
    first_low, last_low = est[0] - Z * se[0], est[-1] - Z * se[-1]
    ok = first_low > mid and last_low > mid
    digit = est[d0:d1]
    dm = float(np.median(digit[len(digit) // 4 : 3 * len(digit) // 4]))

    path, rel = ctx.figure(L.figure_name(llm, "r11_sensitivity"))
    fig, ax = new_figure()
    pos = np.arange(1, n + 1)
    ax.semilogy(pos, est / mid, "-", lw=1, label="estimate")
    ax.fill_between(
        pos,
        np.maximum(est - Z * se, est * 1e-3) / mid,
        (est + Z * se) / mid,
        alpha=0.25,
        label=f"+/- {Z:g} stderr",
    )
    ax.axvspan(d0 + 1, d1, color="grey", alpha=0.1, label="digits")
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xlabel("input position i")
    ax.set_ylabel("||dy_n/dv_i^(0)||_F^2 / median of the middle half")
    ax.set_title(
        f"R11: {llm.name}, n = {n}, float32, {n_probes} Hutchinson probes, seed {ctx.seed}"
    )
    ax.legend()
    save(fig, path)
    return CHECK.result(
        ctx,
        criterion=f"Hutchinson estimate of ||dy_n/dv_i^(0)||_F^2 at i = 1 and at i = n, each "
        f"minus {Z:g} standard errors, above the median over the middle half of positions.",
        measured={
            "first_over_middle": float(est[0] / mid),
            "last_over_middle": float(est[-1] / mid),
            "first_lower_over_middle": float(first_low / mid),
            "last_lower_over_middle": float(last_low / mid),
            "first_digit_over_digit_middle": float(digit[0] / dm),
            "last_digit_over_digit_middle": float(digit[-1] / dm),
            "argmax_position": int(est.argmax()) + 1,
            "n": n,
            "digit_span": [d0 + 1, d1],
            "estimate": est,
            "stderr": se,
        },
        ok=ok,
        key_number=f"first/mid {est[0] / mid:.3g}, last/mid {est[-1] / mid:.3g}",
        setup=f"{L.describe_model(llm)}; {llm.tokenizer_name}; prompt ({llm.prompt_style}): "
        f"{L.fig5_prefix(L.FIG5_COPY_QUESTION)!r} + {n_digits} uniform digits (seed "
        f"{ctx.seed}), {n} tokens; float32; "
        f"{n_probes} Gaussian probes (seed {ctx.seed}).",
        figures=(rel,),
        dtypes=("float32",),
        model=llm.name,
        notes="Position 1 is the prompt's first token (an attention sink in most LLMs) and "
        "position n its last (template) token, not the digits; the digit-only ratios are "
        "reported as well (first_digit / last_digit over the digits' middle).",
    )
