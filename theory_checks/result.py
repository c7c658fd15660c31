"""`CheckResult`: what one check measured, against which criterion, and its verdict."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

VERDICTS = ("pass", "fail", "boundary", "inconclusive")

# What each verdict means (the report, the table and the README explain them with this text).
VERDICT_MEANINGS = {
    "pass": "the premise was reached and the criterion holds",
    "fail": "the premise was reached and the criterion does not hold: evidence against the "
    "claim as tested",
    "boundary": "a run deliberately outside a theorem's assumptions shows that the conclusion "
    "then fails (as the paper's own counter-example R3)",
    "inconclusive": "the check ran but never reached the claim's premise in the measured range "
    "(no collapsed pair, a task the model cannot do at the shortest length, a sweep shorter "
    "than the predicted collapse length): neither evidence for nor against the claim",
}


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of checking one result of the paper.

    Attributes:
        id: result id, "R1".."R12" (docs/results.md).
        title: short name of the result.
        paper_ref: lemma / theorem / figure in the paper.
        claim: the claim in one sentence.
        criterion: the test applied to the measured numbers, in words.
        measured: the numbers (JSON-serialisable: floats, ints, lists, dicts, strings).
        verdict: one of VERDICTS (meanings in VERDICT_MEANINGS); computed by
            `verdict_from`, never written in by hand, except `boundary`.
        key_number: the one number the summary table shows, as text.
        setup: sizes, model and procedure, in words.
        figures: figure paths relative to the report folder.
        seeds, dtypes: what the run used.
        device: the JAX backend and device kind.
        runtime_s: wall-clock seconds.
        notes: disagreements with the theory, caveats (empty when none).
        premise: what the claim needs before it can be tested, as fixed in the check's code
            before measuring (empty: the claim has no premise beyond running the check).
        premise_reached: False exactly when the verdict is `inconclusive`.
        to_reach_premise: what would reach the premise (a longer sweep to the predicted
            collapse length, a larger model...); set when premise_reached is False.
        placement: {dtype: device} of the computations the check ran, as
            `transformer.placement` decided them (float64 on the host CPU when an
            accelerator is present); stamped by the runner.
        reproduction: one `theory_checks.report.reproduction.Reproduction` dict per reproduced
            figure and reading (the paper's values beside ours); reported beside the
            verdict, never folded into it.
        model: the checkpoint a `--profile llm` result was measured on (its file or folder
            name); empty in the other profiles. A multi-model run holds one result per
            check and model: (id, model) is unique.
    """

    id: str
    title: str
    paper_ref: str
    claim: str
    criterion: str
    measured: dict[str, Any]
    verdict: str
    key_number: str = ""
    setup: str = ""
    figures: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    dtypes: tuple[str, ...] = ()
    device: str = ""
    runtime_s: float = 0.0
    notes: str = ""
    premise: str = ""
    premise_reached: bool = True
    to_reach_premise: str = ""
    reproduction: tuple[dict[str, Any], ...] = ()
    placement: dict[str, str] = dataclasses.field(default_factory=dict)
    model: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if (self.verdict == "inconclusive") == bool(self.premise_reached):
            raise ValueError(
                f"{self.id}: verdict {self.verdict!r} with premise_reached="
                f"{self.premise_reached}: a check is inconclusive exactly when its premise "
                "was not reached"
            )
        if not self.premise_reached and not (self.premise and self.to_reach_premise):
            raise ValueError(
                f"{self.id}: an inconclusive result must say its premise and what would "
                "reach it (premise, to_reach_premise)"
            )

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["measured"] = to_jsonable(self.measured)
        data["figures"] = list(self.figures)
        data["seeds"] = list(self.seeds)
        data["dtypes"] = list(self.dtypes)
        data["reproduction"] = to_jsonable(list(self.reproduction))
        return data


@dataclasses.dataclass(frozen=True)
class Check:
    """What a check states before it measures: its result id, title, the paper's reference,
    the claim in one sentence and the criterion (a check module's `CHECK`).

    The criterion is written here once; the result, the report, the README and
    docs/results.md take it from here (`theory_checks.report.criteria`)."""

    id: str
    title: str
    paper_ref: str
    claim: str
    criterion: str = ""

    def result(
        self,
        ctx,
        *,
        ok: bool = True,
        premise_reached: bool = True,
        verdict: str | None = None,
        **fields,
    ) -> CheckResult:
        """The `CheckResult` of one run of this check.

        Args:
            ctx: the run's `RunContext` (its seed is the result's `seeds` unless given).
            ok, premise_reached: the criterion's and the premise's outcome, turned into the
                verdict by `verdict_from`.
            verdict: only for a run deliberately outside a theorem's assumptions
                ("boundary"), which `verdict_from` never returns.
            **fields: the other `CheckResult` fields (criterion, measured, key_number...).
        """
        fields.setdefault("seeds", (ctx.seed,))
        if self.criterion:
            if fields.get("criterion", self.criterion) != self.criterion:
                raise ValueError(f"{self.id}: the criterion is stated once, in CHECK")
            fields["criterion"] = self.criterion
        return CheckResult(
            id=self.id, title=self.title, paper_ref=self.paper_ref, claim=self.claim,
            verdict=verdict or verdict_from(ok, premise_reached),
            premise_reached=premise_reached, **fields,
        )


def verdict_from(ok: bool, premise_reached: bool = True) -> str:
    """The verdict of a check (never written in by hand).

    Args:
        ok: whether the criterion holds on the measured numbers.
        premise_reached: the outcome of the check's premise test, fixed in its code before
            measuring (a collapsed pair exists, the model does the task at the shortest
            length, the sweep reaches the predicted collapse length...).
    Returns:
        'inconclusive' when the premise was not reached (whatever `ok` says), else 'pass'
        when the criterion holds and 'fail' when it does not.
    """
    if not bool(premise_reached):
        return "inconclusive"
    return "pass" if bool(ok) else "fail"


def combined(parts: dict[str, tuple[bool, bool]]) -> tuple[bool, bool]:
    """(ok, premise_reached) of a check from its parts {name: (ok, premise_reached)}.

    A part whose premise was reached and whose criterion does not hold makes the whole check
    fail, whatever the others say (a reached premise and a failed claim is evidence, and an
    unreached premise elsewhere must not hide it). Otherwise a part whose premise was not
    reached makes the check inconclusive; otherwise it passes. Feed the pair to
    `verdict_from`.
    """
    if not parts:
        raise ValueError("a check needs at least one part")
    if any(reached and not ok for ok, reached in parts.values()):
        return False, True
    return True, all(reached for _, reached in parts.values())


def unreached(parts: dict[str, tuple[bool, bool]]) -> list[str]:
    """Names of the parts whose premise was not reached."""
    return [name for name, (_, reached) in parts.items() if not reached]


def to_jsonable(value):
    """NumPy / JAX scalars and arrays to plain JSON values (NaN/inf as strings)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return to_jsonable(np.asarray(value).tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


def dumps(results: list[CheckResult]) -> str:
    return json.dumps([r.to_json() for r in results], indent=2)
