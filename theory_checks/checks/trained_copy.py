"""R11 (and R7) on trained models: copy-first vs copy-last as the length grows, and the
sensitivity profile ||dy_n/dv_i|| of each trained model on a long input."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from analysis.sensitivity import sensitivity_profile
from theory_checks.context import Profile, RunContext
from theory_checks.plotting import plt, save
from theory_checks.result import CheckResult, verdict_from
from theory_checks.trained import recipe, trained_model
from transformer.tasks import make_batch
from transformer.train import evaluate

ID, TITLE, PAPER_REF = "R11", "Trained copy-first vs copy-last", "Section 5 (U-shape), Fig. 1"

TASKS = ("copy_first", "copy_last")
FAIL_BELOW = 0.9  # accuracy under which a length counts as failed


def failure_length(accuracy: dict, trained_max: int) -> int | None:
    """Smallest evaluated length beyond the training range with accuracy < FAIL_BELOW
    (None: no failure within the sweep)."""
    bad = [n for n, a in sorted(accuracy.items()) if n > trained_max and a < FAIL_BELOW]
    return bad[0] if bad else None


def end_ratios(profile: np.ndarray) -> tuple[float, float]:
    """(max of the first two positions, max of the last two) / median of the middle half."""
    n = len(profile)
    middle = float(np.median(profile[n // 4 : 3 * n // 4]))
    return float(profile[:2].max() / middle), float(profile[-2:].max() / middle)


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    lengths = [2, 4, 8, 16, 32] if ctx.reduced else [2, 4, 8, 16, 32, 64, 128, 256]
    n_examples = 8 if ctx.reduced else 32
    n_long = 16 if ctx.reduced else 64
    acc, fail, ratios, sens, info, recs = {}, {}, {}, {}, {}, {}
    for name in TASKS:
        rec = recipe(name, seed=ctx.seed, reduced=ctx.reduced)
        model, info[name] = trained_model(rec)
        recs[name] = rec
        acc[name] = evaluate(model, rec.task, lengths, n_examples, seed=ctx.seed)
        fail[name] = failure_length(acc[name], rec.task.max_len)
        batch = make_batch(rec.task.at_length(n_long), np.random.default_rng([ctx.seed, 3]), 1)
        tokens = jnp.asarray(batch.tokens[0, : batch.query_pos[0] + 1])  # prompt up to the query
        sens[name] = np.asarray(sensitivity_profile(model, tokens, norm="fro"), np.float64)
        ratios[name] = end_ratios(sens[name])

    beyond = max(lengths) + 1  # "no failure within the sweep"
    f_first = fail["copy_first"] or beyond
    f_last = fail["copy_last"] or beyond
    last_fails_first = f_last <= f_first
    u_shaped = {name: r[0] > 1.0 and r[1] > 1.0 for name, r in ratios.items()}
    ok = last_fails_first and all(u_shaped.values())

    path, rel = ctx.figure("trained_r11_copy.png")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    trained_max = recs["copy_first"].task.max_len
    ax1.axvspan(2, trained_max, color="0.9", label="training lengths")
    for name in TASKS:
        ns = sorted(acc[name])
        ax1.semilogx(ns, [acc[name][n] for n in ns], "o-", label=name, base=2)
    ax1.set_ylim(-0.02, 1.05)
    ax1.set_xlabel("length n (elements)")
    ax1.set_ylabel(f"exact-match accuracy ({n_examples} examples)")
    ax1.set_title(f"accuracy vs length, float32, seed {ctx.seed}")
    for name in TASKS:
        s = sens[name]
        ax2.semilogy(np.arange(len(s)), s, "o-", ms=2, label=name)
    ax2.set_xlabel("input position i (0 = BOS, last = query)")
    ax2.set_ylabel("||dy_n/dv_i||_F")
    ax2.set_title(f"sensitivity on a length-{n_long} input, float32, seed {ctx.seed}")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("R11/R7: trained 2-layer RoPE decoders", fontsize=10)
    save(fig, path)

    notes = []
    if fail["copy_first"] is None and fail["copy_last"] is None:
        notes.append(f"Neither task fails up to n = {max(lengths)}: the 'copy-last fails first' "
                     "part of the criterion holds only trivially (equal). Small RoPE models "
                     "solve both copies with one attention head each (to position 1, or to the "
                     "previous token), which length does not dilute in this range.")
    for name in TASKS:
        if not u_shaped[name]:
            notes.append(f"{name}: sensitivity not U-shaped (end ratios {ratios[name]}).")
    return CheckResult(
        id=ID, title=TITLE, paper_ref=PAPER_REF,
        claim="Retrieval is easiest near the ends of the context (U-shape): y_n is more "
        "sensitive to the first and last positions than to the middle, and copying the last "
        "element fails first as the length grows.",
        criterion=f"(1) copy_last's failure length (first n beyond training with accuracy < "
        f"{FAIL_BELOW}; none = {beyond}) <= copy_first's; (2) for both trained models, "
        "max ||dy_n/dv_i|| over the first two positions and over the last two both exceed the "
        f"median over the middle half, on a length-{n_long} input.",
        measured={
            "accuracy": {name: {str(n): a for n, a in acc[name].items()} for name in TASKS},
            "failure_length": {name: fail[name] for name in TASKS},
            "sweep_max": max(lengths),
            "end_ratios(first,last)": ratios,
            "u_shaped": u_shaped,
            "copy_last_fails_first": last_fails_first,
            "sensitivity": {name: sens[name] for name in TASKS},
            "final_loss": {name: info[name]["final_loss"] for name in TASKS},
            "train_time_s": {name: info[name]["train_time_s"] for name in TASKS},
        },
        verdict=verdict_from(ok),
        key_number=f"fail at n: first {fail['copy_first']}, last {fail['copy_last']}; "
        f"U-shape {sum(u_shaped.values())}/2",
        setup="; ".join(recs[name].describe() for name in TASKS)
        + f". Evaluated at n = {lengths} ({n_examples} examples each); sensitivity in float32.",
        figures=(rel,), seeds=(ctx.seed,), dtypes=("float32",),
        notes=" ".join(notes),
    )
