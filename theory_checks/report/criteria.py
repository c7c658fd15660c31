"""Every criterion written once, in its check's `CHECK`, and rendered from there into the
README and docs/results.md.

`python -m theory_checks.report.criteria` rewrites the table between the markers of both
files; a test holds both to the code (tests/test_report_render.py).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from theory_checks.runner import PROFILE_CHECKS

ROOT = Path(__file__).resolve().parents[2]
FILES = (ROOT / "README.md", ROOT / "docs" / "results.md")
START, END = "<!-- criteria:start -->", "<!-- criteria:end -->"
PROFILES = ("quick", "trained", "llm", "llm-long")
PIPE = "\\|"  # a literal | inside a markdown table cell


def rows() -> list[tuple[str, str, str]]:
    """(profile, id, criterion) of every check that states its criterion in `CHECK`."""
    out = []
    for profile in PROFILES:
        for cid, name in PROFILE_CHECKS[profile].items():
            check = importlib.import_module(f"theory_checks.{name}").CHECK
            if getattr(check, "criterion", ""):
                out.append((profile, cid, check.criterion))
    return out


def render() -> str:
    lines = ["| profile | id | criterion (as the check's code states it) |", "|---|---|---|"]
    lines += [f"| {p} | {cid} | {text.replace('|', PIPE)} |" for p, cid, text in rows()]
    return "\n".join(lines)


def block(text: str) -> str:
    """The text between a file's markers."""
    if START not in text or END not in text:
        raise ValueError(f"no {START} ... {END} markers")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def rewrite(path: Path) -> None:
    text = path.read_text()
    block(text)
    head, rest = text.split(START, 1)
    path.write_text(f"{head}{START}\n{render()}\n{END}{rest.split(END, 1)[1]}")


def main() -> int:
    for path in FILES:
        rewrite(path)
    print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
