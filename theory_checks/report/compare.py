"""Do two reports agree? Verdicts equal and every measured number equal to a tolerance.

`python -m theory_checks.report.compare BEFORE/results.json AFTER/results.json` matches the
results by (id, model) and compares, for each, the verdict and premise_reached exactly, and
every entry of `measured` and `reproduction` recursively: numbers within a relative
tolerance (`--rtol`, default 1e-6; differences below `--atol`, default 1e-12, count as equal,
so rounding noise around zero does not), strings, booleans and None exactly, lists by
length and element, dicts by keys and value. Runtimes, devices and the prose fields are not
compared. It prints the largest relative difference found and every disagreement, and
exits 0 when the reports agree, 1 when they do not, 2 when a file cannot be read.

Used to show that a change of code keeps the quick profile's results (issue 21).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COMPARED = ("measured", "reproduction")


@dataclasses.dataclass
class Comparison:
    """What comparing two reports found.

    disagreements: one line per difference beyond the tolerances (or of structure);
    numbers: how many numbers were compared; largest: (relative difference, where) of the
    largest relative difference among the numbers, agreeing or not.
    """

    disagreements: list[str] = dataclasses.field(default_factory=list)
    numbers: int = 0
    largest: tuple[float, str] = (0.0, "")

    @property
    def agree(self) -> bool:
        return not self.disagreements


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _walk(a, b, where: str, out: Comparison, rtol: float, atol: float) -> None:
    if _number(a) and _number(b):
        out.numbers += 1
        diff = abs(a - b)
        scale = max(abs(a), abs(b))
        rel = 0.0 if diff == 0 else (diff / scale if scale > 0 else math.inf)
        if rel > out.largest[0]:
            out.largest = (rel, where)
        if diff > atol and rel > rtol:
            out.disagreements.append(f"{where}: {a!r} vs {b!r} (relative difference {rel:.3g})")
    elif isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
            out.disagreements.append(f"{where}: keys only in the first {only_a}, only in the "
                                     f"second {only_b}")
        for k in a.keys() & b.keys():
            _walk(a[k], b[k], f"{where}.{k}", out, rtol, atol)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.disagreements.append(f"{where}: {len(a)} values vs {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            _walk(x, y, f"{where}[{i}]", out, rtol, atol)
    elif a != b or type(a) is not type(b):
        out.disagreements.append(f"{where}: {a!r} vs {b!r}")


def _by_key(results: Sequence[dict]) -> dict[tuple[str, str], dict]:
    return {(r["id"], r.get("model", "")): r for r in results}


def compare(first: Sequence[dict], second: Sequence[dict], *, rtol: float = 1e-6,
            atol: float = 1e-12) -> Comparison:
    """Compare two `results.json` lists (see the module docstring)."""
    out = Comparison()
    a, b = _by_key(first), _by_key(second)
    for key in sorted(a.keys() ^ b.keys()):
        out.disagreements.append(f"{key[0]}{' on ' + key[1] if key[1] else ''}: only in the "
                                 f"{'first' if key in a else 'second'} report")
    for key in [k for k in a if k in b]:
        name = key[0] + (f" ({key[1]})" if key[1] else "")
        ra, rb = a[key], b[key]
        for field in ("verdict", "premise_reached"):
            if ra.get(field) != rb.get(field):
                out.disagreements.append(f"{name}: {field} {ra.get(field)!r} vs "
                                         f"{rb.get(field)!r}")
        for field in COMPARED:
            _walk(ra.get(field), rb.get(field), f"{name} {field}", out, rtol, atol)
    return out


def load(path: str | Path) -> list[dict]:
    """A report's results (a list of result objects).

    Raises:
        ValueError: the file is missing, not JSON, or not a list of results (names it).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise ValueError(f"{path}: cannot read it ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) and "id" in r for r in data):
        raise ValueError(f"{path}: not a results.json (a list of results, each with an id)")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m theory_checks.report.compare",
        description="Do two results.json agree? Verdicts equal, numbers within a tolerance.",
    )
    parser.add_argument("first", help="results.json of the first run")
    parser.add_argument("second", help="results.json of the second run")
    parser.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance")
    parser.add_argument("--atol", type=float, default=1e-12,
                        help="absolute differences up to this count as equal")
    args = parser.parse_args(argv)
    try:
        first, second = load(args.first), load(args.second)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    got = compare(first, second, rtol=args.rtol, atol=args.atol)
    rel, where = got.largest
    print(f"{len(_by_key(first))} and {len(_by_key(second))} results; {got.numbers} numbers "
          f"compared; largest relative difference {rel:.3g}" + (f" ({where})" if where else ""))
    if got.agree:
        print(f"agree: verdicts equal, every number within rtol {args.rtol:g} "
              f"(or atol {args.atol:g})")
        return 0
    print(f"DISAGREE ({len(got.disagreements)}):")
    for line in got.disagreements:
        print(f"  {line}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
