"""R5 on a real LLM (the paper's Figures 2-3 analogs, small scale): greedy accuracy on
counting ones and on copying the first / last digit, as the sequence grows.

Each prompt is a one-turn chat (when the vocabulary shows a known chat format) whose
answer is started for the model ("The number of ones in the sequence is"), so a short
greedy continuation holds the answer: the first integer of the continuation for counting,
its first digit for copying. Two phrasings per task and length. The digits are written as
text and tokenised by the model's tokenizer (what the model sees in use).
"""

from __future__ import annotations

import re

import numpy as np

from theory_checks import llm as L
from theory_checks.context import Profile, RunContext
from theory_checks.plotting import new_figure, save
from theory_checks.result import CheckResult, verdict_from

ID, TITLE, PAPER_REF = "R5", "Counting and copying accuracy of a real LLM", "Figures 2-3 analogs"

N_NEW = 5  # " 128" is four tokens for a digit-splitting tokenizer, plus one spare

# task -> (sequence of length n, correct answer, phrasings (message with {}, answer start)).
TASKS = {
    "count_ones": (
        lambda n: "1" * n,
        lambda n: str(n),
        (
            (
                "How many ones are in the following sequence?\n{}",
                "The number of ones in the sequence is",
            ),
            ("Count the ones in this sequence: {}", "There are"),
        ),
    ),
    "copy_first": (
        lambda n: "0" + "1" * (n - 1),
        lambda n: "0",
        (
            (
                "What is the first digit of the following sequence?\n{}",
                "The first digit of the sequence is",
            ),
            ("Copy the first digit of this sequence: {}", "The first digit is"),
        ),
    ),
    "copy_last": (
        lambda n: "1" * (n - 1) + "0",
        lambda n: "0",
        (
            (
                "What is the last digit of the following sequence?\n{}",
                "The last digit of the sequence is",
            ),
            ("Copy the last digit of this sequence: {}", "The last digit is"),
        ),
    ),
}


def parse_answer(task: str, text: str) -> str | None:
    """The answer in a continuation: the first integer (counting) or first digit (copying)."""
    found = re.search(r"\d+" if task == "count_ones" else r"\d", text)
    return found.group(0) if found else None


def task_prompts(llm: L.LLM, lengths) -> list[dict]:
    """Every (task, length, phrasing) prompt: dicts with task, n, phrasing, ids, expected."""
    out = []
    for task, (seq, answer, phrasings) in TASKS.items():
        for n in lengths:
            for p, (message, lead) in enumerate(phrasings):
                ids = llm.encode(llm.chat(message.format(seq(n))) + lead)
                out.append({"task": task, "n": n, "phrasing": p, "ids": ids, "expected": answer(n)})
    return out


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    llm = L.load_llm(ctx.model_path)
    if not llm.has_tokenizer:
        raise ValueError(
            f"the task-accuracy check (R5) needs the model's tokenizer, and {llm.path} has none "
            "(no tokenizer.json / unsupported GGUF tokenizer); run the other llm checks with "
            "--only R4,R6,R11,R12"
        )
    lengths = (2, 8) if ctx.reduced else (2, 4, 8, 16, 32, 64, 128)
    prompts = task_prompts(llm, lengths)
    generated = L.greedy_batch(llm.model, [p["ids"] for p in prompts], N_NEW)
    records, acc = [], {t: np.zeros(len(lengths)) for t in TASKS}
    for p, gen in zip(prompts, generated):
        text = llm.decode(gen)
        got = parse_answer(p["task"], text)
        correct = got == p["expected"]
        acc[p["task"]][lengths.index(p["n"])] += correct / len(TASKS[p["task"]][2])
        records.append(
            {
                "task": p["task"],
                "n": p["n"],
                "phrasing": p["phrasing"],
                "prompt_tokens": len(p["ids"]),
                "output": text,
                "answer": got,
                "expected": p["expected"],
                "correct": bool(correct),
            }
        )
    half = len(lengths) // 2
    short = {t: float(a[:half].mean()) for t, a in acc.items()}
    long = {t: float(a[-half:].mean()) for t, a in acc.items()}
    ok = short["count_ones"] > long["count_ones"]

    path, rel = ctx.figure("llm_r05_tasks.png")
    fig, ax = new_figure()
    for t, a in acc.items():
        ax.semilogx(lengths, a, "o-", ms=3, label=t)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("n (digits in the sequence)")
    ax.set_ylabel(f"greedy accuracy ({len(TASKS['count_ones'][2])} phrasings)")
    ax.set_title(f"R5 / Figs. 2-3 analog: {llm.name}, float32, greedy (no sampling, no seed)")
    ax.legend()
    save(fig, path)
    notes = []
    if max(short.values()) == 0:
        notes.append(
            "The model answers none of the prompts correctly even at the shortest lengths, so "
            "these runs cannot show accuracy falling with length: at this scale the tasks are "
            "beyond the model, not evidence about collapse (see the outputs in measured)."
        )
    if not L.one_token_per_digit(llm):
        notes.append("The tokenizer groups digits: a run is not one token per digit here.")
    return CheckResult(
        id=ID,
        title=TITLE,
        paper_ref=PAPER_REF,
        claim="Counting (and copying) accuracy falls as the sequence grows; counting must fail "
        "once the n and n + 1 sequences collapse.",
        criterion=f"counting accuracy, mean over the {half} shortest lengths, greater than over "
        f"the {half} longest (lengths {list(lengths)}); copying reported.",
        measured={
            **{f"accuracy_{t}": acc[t] for t in TASKS},
            **{f"short_mean_{t}": short[t] for t in TASKS},
            **{f"long_mean_{t}": long[t] for t in TASKS},
            "lengths": list(lengths),
            "outputs": records,
        },
        verdict=verdict_from(ok),
        key_number=f"count {short['count_ones']:.2f} -> {long['count_ones']:.2f}, "
        f"last {short['copy_last']:.2f} -> {long['copy_last']:.2f}",
        setup=f"{L.describe_model(llm)}; float32; chat format "
        f"{'recognised' if llm.chat_format else 'none (plain text)'}; {len(prompts)} prompts "
        f"(3 tasks x {len(lengths)} lengths x 2 phrasings), {N_NEW} greedy tokens each, "
        "batched through the KV cache (theory_checks.llm.greedy_batch).",
        figures=(rel,),
        seeds=(ctx.seed,),
        dtypes=("float32",),
        notes=" ".join(notes),
    )
