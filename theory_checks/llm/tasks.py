"""R5 on a real LLM with the paper's prompts (Figures 2-3): greedy accuracy of counting ones,
summing 1 + ... + 1, and copying the last / first digit, as the sequence grows.

Prompts, verbatim from the paper: Figure 3's counting prompts (Appendix C.1: "Please perform
the following sum: ..." and "Please count the number of ones in the following sequence:
...", both asking for "The final answer to your maths question is: xxxx") and Figure 2's
copying prompt ("Consider the following sequence: <seq>. What is the last digit in this
sequence? Please answer exactly as 'The answer to your question is: <ANSWER>'"; copy-first
asks for the "first" digit). Each prompt ends where the answer goes: the chat turn (plain
text for a model without a chat template, `LLM.answer_prompt`) then the start of the answer
format the prompt asks for, so a short greedy continuation holds the answer: its first
integer (counting) or first digit (copying). Sequences: n ones; the sum "1+1+...+1" with n
terms; "1...10" (copy-last) and "01...1" (copy-first) of n digits (answer 0 in both).

Premise (fixed here, before measuring): accuracy can only fall with length if the model
does the task at the shortest length. A counting task (count_ones, sum) is judged only if
its answer at the shortest length is correct; with no such task the check is
`inconclusive`. Copying is reported, not judged.
"""

from __future__ import annotations

import re

import numpy as np

from theory_checks import llm as L
from theory_checks.context import Profile, RunContext
from theory_checks.llm.records import TaskAccuracy
from theory_checks.report.plotting import new_figure, save
from theory_checks.result import Check, CheckResult
from transformer.generate import greedy_batch

CHECK = Check(
    "R5", "Counting and copying accuracy of a real LLM", "Figures 2-3",
    claim="Counting (and copying) accuracy falls as the sequence grows; counting must fail "
    "once the n and n + 1 sequences collapse.",
)

N_NEW = 6  # " 2001" is five tokens for a digit-splitting tokenizer, plus one spare

# task -> (sequence of length n, correct answer, message with {seq}, answer start).
TASKS = {
    "count_ones": (lambda n: "1" * n, str, L.FIG3_COUNT, L.FIG3_ANSWER),
    "sum": (lambda n: "+".join("1" * n), str, L.FIG3_SUM, L.FIG3_ANSWER),
    "copy_last": (
        lambda n: "1" * (n - 1) + "0", lambda n: "0",
        L.FIG2_COPY.replace("{which}", "last"), L.FIG2_ANSWER,
    ),
    "copy_first": (
        lambda n: "0" + "1" * (n - 1), lambda n: "0",
        L.FIG2_COPY.replace("{which}", "first"), L.FIG2_ANSWER,
    ),
}
COUNTING = ("count_ones", "sum")

PREMISE = (
    "the model does the task at the shortest length: a counting task (count_ones, sum) is "
    "judged only if its answer at the shortest length is correct"
)
TO_REACH = (
    "a model that counts correctly at the shortest length (the paper's Gemini 1.5 and "
    "Gemma 7B do; a larger or instruction-tuned checkpoint via --model)"
)


def parse_answer(task: str, text: str) -> str | None:
    """The answer in a continuation: the first integer (counting) or first digit (copying)."""
    found = re.search(r"\d+" if task in COUNTING else r"\d", text)
    return found.group(0) if found else None


def lengths_for(reduced: bool) -> tuple[int, ...]:
    return (2, 8) if reduced else (2, 4, 8, 16, 32, 64, 128, 256)


def task_prompts(llm: L.LLM, lengths) -> list[dict]:
    """Every (task, length) prompt: dicts with task, n, text, ids, expected."""
    out = []
    for task, (seq, answer, message, start) in TASKS.items():
        for n in lengths:
            text = llm.answer_prompt(message.format(seq=seq(n)), start)
            out.append({"task": task, "n": n, "text": text, "ids": llm.encode(text),
                        "expected": answer(n)})
    return out


def generate(llm: L.LLM, prompts: list[dict]) -> list[str]:
    """The decoded greedy continuation (N_NEW tokens) of every prompt."""
    generated = greedy_batch(llm.model, [p["ids"] for p in prompts], N_NEW)
    return [llm.decode(g) for g in generated]


def judge(acc: dict[str, np.ndarray]) -> tuple[list[str], bool]:
    """(the counting tasks whose premise holds, whether their accuracy falls with length:
    mean over the shorter half of the lengths above the mean over the longer half)."""
    judged = [t for t in COUNTING if acc[t][0] == 1.0]
    if not judged:
        return [], False
    half = len(acc[judged[0]]) // 2
    short = np.mean([acc[t][:half] for t in judged])
    long = np.mean([acc[t][-half:] for t in judged])
    return judged, bool(short > long)


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    llm = L.llm_for(ctx)
    if not llm.has_tokenizer:
        raise ValueError(
            f"the task-accuracy check (R5) needs the model's tokenizer, and {llm.path} has none "
            "(no tokenizer.json / unsupported GGUF tokenizer); run the other llm checks with "
            "--only R4,R6,R11,R12"
        )
    lengths = lengths_for(ctx.reduced)
    prompts = task_prompts(llm, lengths)
    texts = generate(llm, prompts)
    records, acc = [], {t: np.zeros(len(lengths)) for t in TASKS}
    for p, text in zip(prompts, texts):
        got = parse_answer(p["task"], text)
        correct = got == p["expected"]
        acc[p["task"]][lengths.index(p["n"])] = float(correct)
        records.append({"task": p["task"], "n": p["n"], "prompt_tokens": len(p["ids"]),
                        "output": text, "answer": got, "expected": p["expected"],
                        "correct": bool(correct)})
    judged, ok = judge(acc)
    reached = bool(judged)
    half = len(lengths) // 2
    short = {t: float(a[:half].mean()) for t, a in acc.items()}
    long = {t: float(a[-half:].mean()) for t, a in acc.items()}

    path, rel = ctx.figure(L.figure_name(llm, "r05_tasks"))
    fig, ax = new_figure()
    for t, a in acc.items():
        ax.semilogx(lengths, a, "o-", ms=3, label=t)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("n (digits in the sequence; terms of the sum)")
    ax.set_ylabel("greedy answer correct (1) or not (0)")
    ax.set_title(f"R5 / Figures 2-3 prompts: {llm.name}, float32, greedy, {llm.prompt_style}")
    ax.legend()
    save(fig, path)
    notes = []
    if not reached:
        notes.append(
            "No counting prompt is answered correctly at the shortest length, so these runs "
            "cannot show accuracy falling with length: at this scale the tasks are beyond the "
            "model, not evidence about collapse (the outputs are in measured)."
        )
    if not L.one_token_per_digit(llm):
        notes.append("The tokenizer groups digits: a run is not one token per digit here.")
    example = next(p["text"] for p in prompts if p["task"] == "copy_last")
    return CHECK.result(
        ctx,
        criterion=f"for the counting tasks correct at n = {lengths[0]}: accuracy over the "
        f"{half} shortest lengths above that over the {half} longest (lengths "
        f"{list(lengths)}); copying reported.",
        measured={
            **TaskAccuracy(lengths=list(lengths), accuracy=acc).entries(),
            **{f"short_mean_{t}": short[t] for t in TASKS},
            **{f"long_mean_{t}": long[t] for t in TASKS},
            "judged_tasks": judged,
            "prompt_example_copy_last": example,
            "outputs": records,
        },
        ok=ok,
        key_number=(
            f"count {short['count_ones']:.2f} -> {long['count_ones']:.2f}, sum "
            f"{short['sum']:.2f} -> {long['sum']:.2f}, last {short['copy_last']:.2f} -> "
            f"{long['copy_last']:.2f}"
        ),
        setup=f"{L.describe_model(llm)}; float32; prompts {llm.prompt_style}, the paper's "
        f"wording; {len(prompts)} prompts ({len(TASKS)} tasks x {len(lengths)} lengths), "
        f"{N_NEW} greedy tokens each, batched through the KV cache "
        "(transformer.generate.greedy_batch).",
        figures=(rel,),
        dtypes=("float32",),
        notes=" ".join(notes),
        premise=PREMISE,
        premise_reached=reached,
        to_reach_premise="" if reached else TO_REACH,
        model=llm.name,
    )
