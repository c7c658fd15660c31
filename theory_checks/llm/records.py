"""Typed records between the llm checks' measurements and the figures built from them.

Each record names the `measured` entries one figure panel draws: the check writes them with
`record.entries()`, the side-by-side comparison (`theory_checks.llm.compare`) reads them
back with `Record.read(measured)`. The entry names are written once, here, so a renamed
entry changes both sides at once, and an entry a panel needs but a result lacks is a
`MissingEntry` naming it, never a silently empty panel.

A field maps to one entry (`entry("lengths")`), or, with "{}" in its name, to a family of
entries read into a dict: `entry("accuracy_{}")` is {task: measured["accuracy_<task>"]},
`entry("{}_y_linf_{}")` is {run: {dtype: ...}}.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any


class MissingEntry(KeyError):
    """A result lacks an entry that a record (and so a figure panel) needs."""


def entry(name: str) -> Any:
    """A record field stored as the measured entry (or entries, with "{}") `name`."""
    return dataclasses.field(metadata={"entry": name})


def _flatten(template: str, value) -> dict[str, Any]:
    if "{}" not in template:
        return {template: value}
    out = {}
    for key, inner in value.items():
        out.update(_flatten(template.replace("{}", str(key), 1), inner))
    return out


def _nest(found: dict[tuple[str, ...], Any]) -> dict:
    out: dict = {}
    for keys, value in found.items():
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return out


@dataclasses.dataclass(frozen=True)
class Record:
    """Base of the records below: fields declared with `entry`."""

    def entries(self) -> dict[str, Any]:
        """The measured entries of this record, in field order."""
        out = {}
        for f in dataclasses.fields(self):
            out.update(_flatten(f.metadata["entry"], getattr(self, f.name)))
        return out

    @classmethod
    def read(cls, measured: Mapping[str, Any]):
        """The record held by a result's measured entries.

        Raises:
            MissingEntry: an entry (or every entry of a family) is missing.
        """
        values = {}
        for f in dataclasses.fields(cls):
            template = f.metadata["entry"]
            if "{}" not in template:
                if template not in measured:
                    raise MissingEntry(f"{cls.__name__}.{f.name}: no entry {template!r}")
                values[f.name] = measured[template]
                continue
            pattern = re.compile(re.escape(template).replace(r"\{\}", "(.+?)") + "$")
            found = {m.groups(): v for k, v in measured.items() if (m := pattern.match(k))}
            if not found:
                raise MissingEntry(f"{cls.__name__}.{f.name}: no entry {template!r}")
            values[f.name] = _nest(found)
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class CollapseCurves(Record):
    """R4 (Figure 5a-b): per sequence kind ("ones", "digits") and format, the y reading and
    the per-head band over the swept lengths (`lengths`; the digits at `digits_lengths`)."""

    lengths: Any = entry("lengths")
    y_linf: Any = entry("{}_y_linf_{}")
    heads_mean: Any = entry("{}_heads_mean_{}")
    heads_min: Any = entry("{}_heads_min_{}")
    heads_max: Any = entry("{}_heads_max_{}")


@dataclasses.dataclass(frozen=True)
class PrecisionCurves(Record):
    """R6: the pair distance of y in float64 (the true distance), float32 and bfloat16."""

    lengths: Any = entry("lengths")
    float64: Any = entry("float64_distance")
    float32: Any = entry("float32_distance")
    bfloat16: Any = entry("bfloat16_distance")


@dataclasses.dataclass(frozen=True)
class CommaCurves(Record):
    """R12 (Figure 5c-d): per run ("plain", "commas") and format, the y reading and the
    per-head mean."""

    lengths: Any = entry("lengths")
    y_linf: Any = entry("{}_y_linf_{}")
    heads_mean: Any = entry("{}_heads_mean_{}")


@dataclasses.dataclass(frozen=True)
class TaskAccuracy(Record):
    """R5 (Figures 2-3 prompts): greedy correctness per task over `lengths`."""

    lengths: Any = entry("lengths")
    accuracy: Any = entry("accuracy_{}")


@dataclasses.dataclass(frozen=True)
class WindowCurves(Record):
    """R12b: per variant (the windowed model, its global variants) the float32 y reading
    and per-head mean over the swept lengths."""

    lengths: Any = entry("lengths")
    y_linf: Any = entry("y_linf_{}")
    heads_mean: Any = entry("heads_mean_{}")
