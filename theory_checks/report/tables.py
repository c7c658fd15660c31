"""Tables of a check's measurements for report.md: typed, with units and precision.

A check module renders its own measurements by defining

    def tables(measured: dict) -> list[Table]

over the JSON form of its `measured` entries (`to_jsonable`), usually by reading a typed
record (`theory_checks.llm.records.Record.read`), and raising `MissingEntry` when the entries
are not its own (a result of another family with the same id). The report tries the
modules registered for the result's id in `theory_checks.runner.PROFILE_CHECKS` and falls
back to `scalar_table`, which shows the scalar entries and moves every long entry into a
collapsible block. A cell never holds a dict or list dump: `cell` formats one value.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from theory_checks.llm.records import MissingEntry

MAX_CELL = 200  # characters; a longer value goes to a collapsible block, not a cell
NONE_TEXT = "—"  # a value that does not exist (no collapse within the sweep, no fit)


@dataclasses.dataclass(frozen=True)
class Column:
    """One column: its heading, unit (shown in brackets) and number format."""

    name: str
    unit: str = ""
    fmt: str = ".3g"

    def heading(self) -> str:
        text = f"{self.name} [{self.unit}]" if self.unit else self.name
        return text.replace("|", "/")


@dataclasses.dataclass(frozen=True)
class Table:
    """A titled table; `collapsed` ones render inside <details> (per-seed, per-reading)."""

    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]
    collapsed: bool = False
    note: str = ""

    def __post_init__(self):
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"{self.title}: row {row!r} has {len(row)} cells, "
                                 f"{len(self.columns)} columns")


def cell(value: Any, fmt: str = ".3g") -> str:
    """One value as table text: numbers in `fmt`, None as a dash, booleans yes / no, a
    short sequence of scalars comma-separated; never a dict or list repr."""
    if value is None:
        return NONE_TEXT
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return format(value, fmt)
    if isinstance(value, str):
        if value in ("nan", "inf", "-inf"):
            return cell(float(value))
        return value.replace("|", "/").replace("\n", " ")
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {cell(v, fmt)}" for k, v in value.items())
    if isinstance(value, Sequence):
        return ", ".join(cell(v, fmt) for v in value)
    return str(value)


def markdown(table: Table) -> list[str]:
    """The table's markdown lines (inside <details> when collapsed)."""
    head = "| " + " | ".join(c.heading() for c in table.columns) + " |"
    lines = [head, "|" + "---|" * len(table.columns)]
    for row in table.rows:
        lines.append("| " + " | ".join(cell(v, c.fmt) for v, c in zip(row, table.columns)) + " |")
    body = lines + (["", table.note] if table.note else [])
    if table.collapsed:
        return ["<details>", f"<summary>{table.title}</summary>", "", *body, "", "</details>", ""]
    return [f"**{table.title}**", "", *body, ""]


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def scalar_table(measured: Mapping[str, Any], title: str = "Measured") -> list[Table]:
    """The fallback for a check without `tables`: its scalar entries and short sequences of
    scalars in one table; each longer or nested entry in a collapsible table of its own."""
    rows, long = [], []
    for key, value in measured.items():
        text = cell(value)
        flat = _is_scalar(value) or (isinstance(value, (list, tuple))
                                     and all(_is_scalar(v) for v in value))
        if flat and len(text) <= MAX_CELL:
            rows.append((key.replace("_", " "), value))
        else:
            long.append((key, value))
    out = [Table(title, (Column("quantity"), Column("value")), tuple(rows))] if rows else []
    for key, value in long:
        out.append(Table(f"{key.replace('_', ' ')} (full)", (Column("entry"), Column("value")),
                         tuple(_flatten_rows(key, value)), collapsed=True))
    return out


def _flatten_rows(prefix: str, value) -> list[tuple[str, Any]]:
    if isinstance(value, Mapping):
        return [row for k, v in value.items() for row in _flatten_rows(f"{prefix} / {k}", v)]
    if isinstance(value, (list, tuple)) and not all(_is_scalar(v) for v in value):
        return [row for i, v in enumerate(value) for row in _flatten_rows(f"{prefix}[{i}]", v)]
    if isinstance(value, (list, tuple)) and len(cell(value)) > MAX_CELL:
        step = 12
        return [(f"{prefix}[{i}:{i + step}]", value[i:i + step])
                for i in range(0, len(value), step)]
    return [(prefix, value)]


def _renderers(cid: str) -> list[Callable]:
    from theory_checks.runner import PROFILE_CHECKS

    names = list(dict.fromkeys(m[cid] for m in PROFILE_CHECKS.values() if cid in m))
    out = []
    for name in names:
        module = importlib.import_module(f"theory_checks.{name}")
        if hasattr(module, "tables"):
            out.append(module.tables)
    return out


def tables_for(cid: str, measured: Mapping[str, Any]) -> list[Table]:
    """The tables of one result: its check module's own, else `scalar_table`."""
    for render in _renderers(cid):
        try:
            return list(render(measured))
        except MissingEntry:
            continue  # another family's check with the same id
    return scalar_table(measured)
