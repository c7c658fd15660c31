"""`CheckResult`: what one check measured, against which criterion, and its verdict."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

VERDICTS = ("pass", "fail", "boundary")


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of checking one result of the paper.

    Attributes:
        id: result id, "R1".."R12" (shared/PAPER.md).
        title: short name of the result.
        paper_ref: lemma / theorem / figure in the paper.
        claim: the claim in one sentence.
        criterion: the test applied to the measured numbers, in words.
        measured: the numbers (JSON-serialisable: floats, ints, lists, dicts, strings).
        verdict: "pass", "fail", or "boundary" (a deliberate run outside the theorem's
            assumptions shows that the conclusion then fails, as the paper's R3 does).
        key_number: the one number the summary table shows, as text.
        setup: sizes, model and procedure, in words.
        figures: figure paths relative to the report folder.
        seeds, dtypes: what the run used.
        device: the JAX backend and device kind.
        runtime_s: wall-clock seconds.
        notes: disagreements with the theory, caveats (empty when none).
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

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["measured"] = to_jsonable(self.measured)
        data["figures"] = list(self.figures)
        data["seeds"] = list(self.seeds)
        data["dtypes"] = list(self.dtypes)
        return data


def verdict_from(ok: bool) -> str:
    """'pass' when the criterion holds, else 'fail' (never written in by hand)."""
    return "pass" if bool(ok) else "fail"


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
