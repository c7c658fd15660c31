"""S1: over-squashing measured directly in real LLMs at long context (R7, R11 on real models;
the paper's "how to directly measure over-squashing", left as future work).

For each model and each prompt of the paper's kinds -- a run of ones to count, uniform
random digits to copy, a natural-language passage in which to count a word, each a chat
turn cut to exactly n tokens -- at every length of the device's sizes:

- the sensitivity profile t_i = ||d y_n / d v_i^(0)||_F^2 for every position i, estimated
  with `analysis.estimate_sensitivity` and its error estimate: the variance-reduced XTrace
  from 48 products, Hutchinson below (where XTrace measured worse: benchmarks/README.md,
  table (5)); the U-shape quantified: t_1 and t_n against the median
  over the middle half of positions, with error bars;
- Theorem 5.1 from the model's own captured attention, in log space
  (`analysis.log_bound.log_path_terms`): the paper's path term [prod_l (Lambda-bar^(l) + I)]_(n,i)
  (head-averaged attention, beta = 1) and the bound for the model as built (per-head
  patterns weighted by ||W_V W_O||, local norm and MLP factors, Frobenius norm), compared
  position by position with the measured profile: Spearman rank correlation, and the scale
  (log10 of bound / measured; the constant C_i = measured / path term);
- the attention mass on position 1 per layer (attention sinks) beside the profile.

Verdict: the U-shape of the longest prompts (both ends, minus Z error bars, above the middle
plus Z of its error) for every model and kind. Premise, fixed before measuring: the
estimator resolves the middle (median relative error estimate over the middle half < 1/2).
The bound comparison and the sinks are reported, not judged: the bound is for frozen
attention, the measured profile for the live model.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from analysis.bound_report import spearman
from analysis.log_bound import log_path_terms
from analysis.sensitivity import estimate_sensitivity
from analysis.trace_estimation import products_used
from theory_checks import llm as L
from theory_checks.context import Profile, RunContext
from theory_checks.report.plotting import plt, save
from theory_checks.result import Check, CheckResult
from theory_checks.studies.passage import PASSAGE

CHECK = Check(
    "S1",
    "Over-squashing measured in real LLMs at long context",
    "Theorem 5.1, Section 5 (U-shape), measured",
    claim="In a real LLM at long context, y_n is more sensitive to the first and the last "
    "input positions than to the middle (U-shape), as Theorem 5.1's attention paths and "
    "the residual predict.",
)

Z = 2.0  # error bars: Z times the estimator's error estimate
# The estimator per budget, from the measured error against cost on SmolLM2-135M at n = 256
# (benchmarks/README.md, table (5)): XTrace beats Hutchinson from 48 products, loses below.
XTRACE_FROM = 48


def method_for(products: int) -> str:
    """"xtrace" from XTRACE_FROM products on, else "hutchinson"."""
    return "xtrace" if products >= XTRACE_FROM else "hutchinson"

RESOLVED = 0.5  # premise: median relative error estimate over the middle half below this
KINDS = ("ones", "digits", "passage")
PREFIXES = {
    "ones": L.FIG5_COUNT_QUESTION + L.FIG5_SEPARATOR,  # the paper's Figure 5 questions
    "digits": L.FIG5_COPY_QUESTION + L.FIG5_SEPARATOR,
    "passage": 'How many times does the word "the" appear in the following passage? ',
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Prompt lengths n and the estimator's budget (products) at each."""

    lengths: tuple[int, ...]
    products: tuple[int, ...]


def sizes_for(backend: str, reduced: bool) -> Sizes:
    """The sizes follow the device: about 20 minutes per 135M model on a 2-core CPU (n up to
    2048), longer contexts and budgets on an accelerator; `reduced` for the tests."""
    if reduced:
        return Sizes(lengths=(96,), products=(12,))
    if backend == "cpu":
        return Sizes(lengths=(512, 2048), products=(24, 12))
    return Sizes(lengths=(2048, 8192), products=(96, 48))


def study_prompt(llm: L.LLM, kind: str, n: int, seed: int) -> tuple[list[int], tuple[int, int]]:
    """Exactly n token ids: a chat turn (the checkpoint's format) holding the kind's question
    and a body of n minus the template's tokens; and [start, stop) of the body.

    The ids are assembled piecewise (template and question, body, template end), so a
    tokenizer that would merge across the seams sees a slightly different split than of
    the whole text; every digit and "1" is the id of that single character. The passage
    repeats when the body is longer than it.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {KINDS}")
    before, after = llm.chat("\x00").split("\x00")
    head = llm.encode(before + PREFIXES[kind])
    tail = llm.encode(after, special=False) if after else []
    size = n - len(head) - len(tail)
    if size < 4:
        raise ValueError(f"n={n} leaves {size} body tokens after the {kind} template; need 4")
    if kind == "ones":
        body = [llm.single_id("1")] * size
    elif kind == "digits":
        ids = [llm.single_id(str(d)) for d in range(10)]
        body = [ids[d] for d in np.random.default_rng(seed).integers(0, 10, size)]
    else:
        text = llm.encode(PASSAGE, special=False)
        body = (text * -(-size // len(text)))[:size]
    return head + body + tail, (len(head), len(head) + size)


def _ratio(num, num_se, den, den_se):
    ratio = num / den
    return float(ratio), float(abs(ratio) * math.hypot(num_se / num, den_se / den))


def u_shape(est: np.ndarray, se: np.ndarray, body: tuple[int, int]) -> dict:
    """End-to-middle ratios of a profile with error bars (R11).

    The middle is the median over the middle half of positions; its error bar is the median
    error estimate there (not divided by the count: the positions share the probes, their
    errors are correlated). Ratio errors by first-order propagation.
    """
    n = len(est)
    middle = slice(n // 4, 3 * n // 4)
    mid, mid_se = float(np.median(est[middle])), float(np.median(se[middle]))
    b0, b1 = body
    bm = slice(b0 + (b1 - b0) // 4, b0 + 3 * (b1 - b0) // 4)
    bmid, bmid_se = float(np.median(est[bm])), float(np.median(se[bm]))
    first, first_err = _ratio(est[0], se[0], mid, mid_se)
    last, last_err = _ratio(est[-1], se[-1], mid, mid_se)
    bfirst, bfirst_err = _ratio(est[b0], se[b0], bmid, bmid_se)
    blast, blast_err = _ratio(est[b1 - 1], se[b1 - 1], bmid, bmid_se)
    return {
        "first_over_middle": first, "first_over_middle_err": first_err,
        "last_over_middle": last, "last_over_middle_err": last_err,
        "body_first_over_body_middle": bfirst, "body_first_over_body_middle_err": bfirst_err,
        "body_last_over_body_middle": blast, "body_last_over_body_middle_err": blast_err,
        "u_shaped": bool(est[0] - Z * se[0] > mid + Z * mid_se
                         and est[-1] - Z * se[-1] > mid + Z * mid_se),
        "middle_rel_error": float(np.median(se[middle] / est[middle])),
        "argmin_position": int(est.argmin()) + 1,
    }


def path_comparison(est: np.ndarray, log_path: np.ndarray, log_bound: np.ndarray,
                    body: tuple[int, int]) -> dict:
    """The measured profile against the path term and the bound, position by position."""
    log_measured = 0.5 * np.log(np.maximum(est, np.finfo(np.float64).tiny))  # log ||J_i||_F
    ln10 = math.log(10)
    over = (log_bound - log_measured) / ln10  # log10(bound / measured) per position
    const = (log_measured - log_path) / ln10  # log10 C_i = log10(measured / path term)
    b0, b1 = body
    finite = np.isfinite(log_path)
    return {
        "spearman_path": spearman(est[finite], log_path[finite]),
        "spearman_path_body": spearman(est[b0:b1], log_path[b0:b1]),
        "spearman_bound": spearman(est, log_bound),
        "log10_bound_over_measured": {"min": float(over.min()), "median": float(np.median(over)),
                                      "max": float(over.max())},
        "bound_below_measured_positions": int((over < 0).sum()),
        "log10_path_constant": {
            "median": float(np.median(const[finite])),
            "iqr": float(np.subtract(*np.percentile(const[finite], [75, 25]))),
            "range": float(const[finite].max() - const[finite].min()),
        },
        "path_first_over_middle": float(np.exp(log_path[0] - np.median(
            log_path[len(est) // 4 : 3 * len(est) // 4]))),
    }


def measure(llm: L.LLM, kind: str, n: int, products: int, seed: int) -> dict:
    """One prompt: profile, its error estimate, path terms and sinks, with timings."""
    ids, body = study_prompt(llm, kind, n, seed)
    tokens = jnp.asarray(ids, jnp.int32)
    t0 = time.perf_counter()
    est, se = jax.block_until_ready(estimate_sensitivity(
        llm.model, tokens, n_probes=products, seed=seed, method=method_for(products)))
    t1 = time.perf_counter()
    terms = log_path_terms(llm.model, tokens, norm="fro", beta=1.0)
    jax.block_until_ready(terms.log_bound)
    t2 = time.perf_counter()
    est, se = np.asarray(est, np.float64), np.asarray(se, np.float64)
    log_path = np.asarray(terms.log_path, np.float64)
    log_bound = np.asarray(terms.log_bound, np.float64)
    sinks = {name: np.asarray(getattr(terms, name), np.float64)
             for name in ("sink_mass", "sink_mass_last", "sink_rate")}
    return {
        "n": n, "body": [body[0] + 1, body[1]], "method": method_for(products),
        "products": products_used(method_for(products), products),
        "u_shape": u_shape(est, se, body),
        "paths": path_comparison(est, log_path, log_bound, body),
        "sinks": {name: value.tolist() for name, value in sinks.items()},
        "seconds_estimate": t1 - t0, "seconds_path_terms": t2 - t1,
        "profile": {"estimate": est, "stderr": se, "log_path": log_path, "log_bound": log_bound},
    }


def time_left(done: Sequence[tuple[int, int, float]], todo: Sequence[tuple[int, int]]) -> float:
    """Seconds the remaining (n, products) steps should take, from the done (n, products,
    seconds): a length already measured at the same budget takes the mean of its times,
    another scales the mean time per products x n^2 (attention dominates at long n)."""
    if not done:
        return math.nan
    unit = np.mean([t / (k * n * n) for n, k, t in done])
    left = 0.0
    for n, k in todo:
        same = [t for dn, dk, t in done if (dn, dk) == (n, k)]
        left += float(np.mean(same)) if same else unit * k * n * n
    return left


def _stderr(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)


def run_study(llms: Sequence[L.LLM], sizes: Sizes, seed: int,
              kinds: Sequence[str] = KINDS,
              progress: Callable[[str], None] | None = _stderr) -> dict:
    """Every model x kind x length of `sizes`: {model name: {kind: {str(n): measure(...)}}}
    plus each model's runtime (wall) and CPU seconds of the process. `progress` (None:
    silent) gets a line after each prompt: steps done, elapsed and the time left."""
    out = {}
    steps = [(kind, n, k) for kind in kinds for n, k in zip(sizes.lengths, sizes.products)]
    for llm in llms:
        start, cpu0 = time.perf_counter(), time.process_time()
        by_kind: dict = {kind: {} for kind in kinds}
        done: list[tuple[int, int, float]] = []
        for i, (kind, n, k) in enumerate(steps):
            t0 = time.perf_counter()
            by_kind[kind][str(n)] = measure(llm, kind, n, k, seed)
            done.append((n, k, time.perf_counter() - t0))
            if progress is not None:
                left = time_left(done, [(m, b) for _, m, b in steps[i + 1:]])
                progress(f"S1 {llm.name}: {kind} n={n} done ({i + 1}/{len(steps)} prompts, "
                         f"{time.perf_counter() - start:.0f} s elapsed, ~{left:.0f} s left)")
        out[llm.name] = {"kinds": by_kind, "seconds": time.perf_counter() - start,
                         "cpu_seconds": time.process_time() - cpu0,
                         "description": L.describe_model(llm)}
    return out


def snapshot(results: Sequence[dict]) -> dict:
    """The S1 numbers of a run's results.json entries without the per-position profiles:
    {model: {"runtime_s", "device", "seeds", "sizes", kind: {n: u_shape, paths, sinks,
    method, products, seconds}}}. `docs/s1_snapshot.json` is this of the recorded run that
    the README's S1 table quotes."""
    out = {}
    for r in results:
        if r["id"] != CHECK.id:
            continue
        for name, rec in r["measured"]["models"].items():
            entry = {"runtime_s": r["runtime_s"], "device": r["device"], "seeds": r["seeds"],
                     "sizes": r["measured"]["sizes"], "description": rec["description"]}
            if "cpu_seconds" in rec:  # runs before issue 24 recorded wall time only
                entry["cpu_seconds"] = rec["cpu_seconds"]
            for kind, by_n in rec["kinds"].items():
                entry[kind] = {n: {k: v for k, v in m.items() if k != "profile"}
                               for n, m in by_n.items()}
            out[name] = entry
    return out


def tables(measured) -> list:
    """S1's tables: per model, kind and n the U-shape (ends over the middle) and the path
    term's rank correlation; the sinks per layer in a collapsible block."""
    from theory_checks.report.tables import Column, Table

    if "models" not in measured or "sizes" not in measured:
        from theory_checks.llm.records import MissingEntry

        raise MissingEntry("S1: no entries 'models', 'sizes'")
    rows, sinks = [], []
    for name, rec in measured["models"].items():
        for kind, by_n in rec["kinds"].items():
            for n, m in by_n.items():
                u, paths = m["u_shape"], m["paths"]
                rows.append((name, kind, int(n), m["method"], u["first_over_middle"],
                             u["last_over_middle"], u["middle_rel_error"], u["u_shaped"],
                             paths["spearman_path"], paths["log10_bound_over_measured"]["median"]))
            last = by_n[max(by_n, key=int)]
            mass = last["sinks"]["sink_mass"]
            sinks.append((name, kind, min(mass), max(mass),
                          sum(v > 0.5 for v in mass), len(mass)))
    return [
        Table("U-shape of ||dy_n/dv_i^(0)||_F^2 and the path term, per model, prompt kind and n",
              (Column("model"), Column("kind"), Column("n"), Column("estimator"),
               Column("first / middle", fmt=".3g"), Column("last / middle", fmt=".3g"),
               Column("middle rel. error", fmt=".2f"), Column("U-shaped"),
               Column("Spearman (profile, path term)", fmt=".2f"),
               Column("bound / measured, median", unit="log10", fmt=".0f")), tuple(rows)),
        Table("Attention on position 1 per layer (head and query mean), at the longest n", (
            Column("model"), Column("kind"), Column("lowest layer", fmt=".2f"),
            Column("highest layer", fmt=".2f"), Column("layers above 0.5"),
            Column("layers")), tuple(sinks), collapsed=True),
    ]


def _figure(ctx: RunContext, name: str, by_kind: dict, n: int) -> str:
    path, rel = ctx.figure(f"s01_{''.join(c if c.isalnum() else '_' for c in name)}.png")
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), dpi=110)
    for ax, kind in zip(axes.flat, KINDS):
        rec = by_kind[kind][str(n)]
        est, se = rec["profile"]["estimate"], rec["profile"]["stderr"]
        mid = np.median(est[n // 4 : 3 * n // 4])
        pos = np.arange(1, n + 1)
        ax.semilogy(pos, est / mid, lw=0.8, label=f"||dy_n/dv_i||_F^2 ({rec['method']})")
        ax.fill_between(pos, np.maximum(est - Z * se, est * 1e-3) / mid, (est + Z * se) / mid,
                        alpha=0.25, label=f"+/- {Z:g} error estimate")
        lp = rec["profile"]["log_path"]
        ax.semilogy(pos, np.exp(2 * (lp - np.median(lp[n // 4 : 3 * n // 4]))), lw=0.8,
                    label="path term^2, (Lambda-bar + I) products")
        b0, b1 = rec["body"]
        ax.axvspan(b0, b1, color="grey", alpha=0.08)
        ax.set_title(f"{kind}: rho_path = {rec['paths']['spearman_path']:.2f}", fontsize=9)
        ax.set_xlabel("input position i")
        ax.set_ylabel("/ median of the middle half")
        ax.legend(fontsize=7)
    ax = axes.flat[3]
    for kind in KINDS:
        sinks = by_kind[kind][str(n)]["sinks"]
        layers = np.arange(len(sinks["sink_mass"]))
        ax.plot(layers, sinks["sink_mass"], "o-", ms=3, label=f"{kind}: mean over queries")
        ax.plot(layers, sinks["sink_mass_last"], "x--", ms=3, label=f"{kind}: last query")
    ax.set_ylim(0, 1)
    ax.set_xlabel("layer")
    ax.set_ylabel("attention on position 1 (head mean)")
    ax.set_title("attention sinks", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"S1: {name}, n = {n}, float32, {by_kind[KINDS[0]][str(n)]['method']}",
                 fontsize=10)
    save(fig, path)
    return rel


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    sizes = sizes_for(jax.default_backend(), ctx.reduced)
    # One model per run: `runner.run_llm_checks` runs this check once per model.
    llms = [L.llm_for(ctx)]
    study = run_study(llms, sizes, ctx.seed)
    longest = str(sizes.lengths[-1])
    finals = [(name, kind, rec["kinds"][kind][longest])
              for name, rec in study.items() for kind in KINDS]
    premise_reached = all(r["u_shape"]["middle_rel_error"] < RESOLVED for _, _, r in finals)
    ok = all(r["u_shape"]["u_shaped"] for _, _, r in finals)
    figures = tuple(_figure(ctx, name, rec["kinds"], sizes.lengths[-1])
                    for name, rec in study.items())
    summary = ", ".join(
        f"{kind} {r['u_shape']['first_over_middle']:.3g}/{r['u_shape']['last_over_middle']:.3g}"
        for _, kind, r in finals
    )
    return CHECK.result(
        ctx,
        criterion=f"for every model and prompt kind at n = {longest}: t_1 and t_n (the "
        f"{method_for(sizes.products[-1])} estimate of ||dy_n/dv_i^(0)||_F^2) minus {Z:g} "
        "error estimates above the "
        f"median over the middle half of positions plus {Z:g} times its error estimate. "
        "Spearman correlations with the path term and the bound's scale are reported, not "
        "judged.",
        measured={"sizes": dataclasses.asdict(sizes),
                  "methods": [method_for(k) for k in sizes.products], "z": Z, "models": study},
        ok=ok,
        key_number=f"first/mid, last/mid at n = {longest}: {summary}",
        setup=f"{'; '.join(r['description'] for r in study.values())}; prompts: chat turns "
        f"({', '.join(KINDS)}) of exactly n tokens, n in {sizes.lengths}; "
        f"{', '.join(method_for(k) for k in sizes.products)} (XTrace from {XTRACE_FROM} "
        f"products, where it measured better than Hutchinson) with "
        f"{sizes.products} products (VJPs + JVPs) at those n, seed {ctx.seed}; float32 "
        "weights, compute and softmax; path term with beta = 1 and head-averaged attention; "
        "bound with local constants, Frobenius norm (sqrt(d_model) x spectral).",
        figures=figures, dtypes=("float32",),
        premise=f"the estimator resolves the middle: median relative error estimate over the "
        f"middle half of positions below {RESOLVED:g} for every model and kind at the "
        "longest n",
        premise_reached=premise_reached,
        to_reach_premise="" if premise_reached else "a larger budget (products) per prompt",
        model=", ".join(study),
        notes="Position 1 is the chat template's first token (an attention sink in most LLMs) "
        "and position n its last template token; the body's own ends are reported too. The "
        "bound is Theorem 5.1's for the frozen-attention Jacobian, compared here with the live "
        "one: a position where the bound is below the measured norm is reported, not a "
        "violation of the theorem. Runtimes are wall-clock on a shared machine.",
    )
