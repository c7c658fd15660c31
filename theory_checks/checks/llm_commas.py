"""R12a on a real LLM: copying a run of ones, without and with a comma after every third
one. The theory predicts that the extra tokens keep the pair's representations apart.

Pairs: "Copy the following sequence: " followed by n vs n + 1 ones (the id of "1"
repeated); with commas the run is "111,111,1..." at the token level (ids of "1" and ","),
so the n + 1 sequence adds ",1" when n is a multiple of 3 and "1" otherwise; both end in "1".
"""

from __future__ import annotations

import numpy as np

from theory_checks import llm as L
from theory_checks.context import Profile, RunContext
from theory_checks.plotting import new_figure, save
from theory_checks.result import CheckResult, verdict_from

ID, TITLE, PAPER_REF = (
    "R12",
    "Commas keep a real LLM's runs apart",
    "R12a (commas), Figure 5 analog",
)

DTYPES = ("float32", "bfloat16")


def run(profile: Profile, ctx: RunContext) -> CheckResult:
    llm = L.load_llm(ctx.model_path)
    n_max = L.collapse_n_max(ctx.reduced)
    lengths = list(range(1, n_max + 1))
    plain = L.shared_sweep(llm, L.ones_family(llm, L.COPY_PREFIX), lengths, DTYPES)
    commas = L.shared_sweep(llm, L.ones_family(llm, L.COPY_PREFIX, commas=True), lengths, DTYPES)
    n = np.asarray(lengths)
    tail = n > n_max - n_max // 4  # the last quarter of the sweep
    d = {name: s.linf[:, :, -1] for name, s in (("plain", plain), ("commas", commas))}
    f32 = DTYPES.index("float32")
    med = {name: float(np.median(v[f32, tail])) for name, v in d.items()}
    ratio = med["commas"] / med["plain"] if med["plain"] > 0 else float("inf")
    ok = ratio > 1.0
    mult3 = tail & (n % L.COMMA_EVERY == 0)
    other = tail & (n % L.COMMA_EVERY != 0)

    path, rel = ctx.figure("llm_r12_commas.png")
    fig, ax = new_figure()
    for name, v in d.items():
        for i, dt in enumerate(DTYPES):
            ax.semilogy(
                lengths,
                np.where(v[i] > 0, v[i], np.nan),
                "-" if i == 0 else ":",
                lw=1,
                label=f"{name}, {dt}",
            )
    ax.set_xlabel("n (ones in the run)")
    ax.set_ylabel("||y_n - y*_(n+1)||_inf  (last token, final norm)")
    ax.set_title(
        f"R12a: {llm.name}, {L.COPY_PREFIX!r} + ones, with/without ',' every {L.COMMA_EVERY}"
    )
    ax.legend()
    save(fig, path)
    bf = DTYPES.index("bfloat16")
    return CheckResult(
        id=ID,
        title=TITLE,
        paper_ref=PAPER_REF,
        claim="Inserting a comma after every third one keeps the last-token states of the "
        "n and n + 1 runs further apart than the plain run does.",
        criterion="float32 L-inf distance of y, median over the last quarter of n "
        f"(n > {n_max - n_max // 4}): with commas / without commas > 1.",
        measured={
            "median_ratio_commas_over_plain": ratio,
            "median_tail_plain_float32": med["plain"],
            "median_tail_commas_float32": med["commas"],
            "median_tail_commas_n_multiple_of_3": float(np.median(d["commas"][f32, mult3])),
            "median_tail_commas_other_n": float(np.median(d["commas"][f32, other])),
            "bit_identical_pairs_bfloat16_plain": int((d["plain"][bf] == 0).sum()),
            "bit_identical_pairs_bfloat16_commas": int((d["commas"][bf] == 0).sum()),
            "median_tail_plain_bfloat16": float(np.median(d["plain"][bf, tail])),
            "median_tail_commas_bfloat16": float(np.median(d["commas"][bf, tail])),
            "comma_id": llm.single_id(","),
            "tokenization_1_comma": llm.tokens("1,1,1,1"),
            "n_max": n_max,
        },
        verdict=verdict_from(ok),
        key_number=f"commas/plain {ratio:.2f}",
        setup=f"{L.describe_model(llm)}; {llm.tokenizer_name}. Token-level runs after the "
        f"prompt ids of {L.COPY_PREFIX!r}, n = 1..{n_max}, plain and with a ',' after every "
        f"{L.COMMA_EVERY} ones; same weights in {', '.join(DTYPES)}.",
        figures=(rel,),
        seeds=(ctx.seed,),
        dtypes=DTYPES,
        notes="With commas, the n + 1 sequence adds two tokens (',1') when n is a multiple of 3: "
        "those pairs differ by more than one repeated token; both subsets are reported.",
    )
