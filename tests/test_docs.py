"""The documentation stays true: every API name it cites exists, every file it cites is
there, and the examples of docs/api.md run (in order, in one namespace, tiny sizes)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOC_FILES = ("api.md", "results.md", "troubleshooting.md")
PACKAGES = ("transformer", "analysis", "theory_checks", "training")

# `package.module.name` or `package.name` in backticks (a call's parentheses allowed).
_PKG = "|".join(PACKAGES)
NAME_RE = re.compile(rf"`((?:{_PKG})(?:\.\w+)+)(?:\([^`]*\))?`")
# Repository paths in backticks, e.g. `theory_checks/synthetic/r01_last_weight.py`.
PATH_RE = re.compile(rf"`((?:{_PKG}|tests|notebooks|docs)/[\w/.-]+\.(?:py|md|ipynb))`")
BLOCK_RE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _text(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def resolve(dotted: str):
    """The object a dotted name denotes: the longest importable module prefix, then
    attributes (so `transformer.Decoder.branch` and `analysis.collapse.UNIT_ROUNDOFF` work)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)  # AttributeError names the missing part
        return obj
    raise ModuleNotFoundError(dotted)


def test_doc_files_exist():
    for name in DOC_FILES:
        assert (DOCS / name).is_file(), name


@pytest.mark.parametrize("doc", DOC_FILES)
def test_named_api_exists(doc):
    names = sorted(set(NAME_RE.findall(_text(doc))))
    assert names, f"{doc} names no API (the pattern no longer matches?)"
    missing = []
    for dotted in names:
        try:
            resolve(dotted)
        except (ImportError, AttributeError) as err:
            missing.append(f"{dotted}: {err}")
    assert not missing, f"{doc} names what does not exist: {missing}"


def test_api_doc_names_the_public_analysis_api():
    # The reference of docs/api.md covers every name `analysis` exports, in text or code.
    import analysis

    text = _text("api.md")
    absent = [n for n in analysis.__all__ if not re.search(rf"\b{n}\b", text)]
    assert not absent, f"docs/api.md does not show {absent}"


@pytest.mark.parametrize("doc", DOC_FILES)
def test_cited_files_exist(doc):
    paths = sorted(set(PATH_RE.findall(_text(doc))))
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"{doc} cites missing files: {missing}"


def test_results_doc_covers_every_result_and_check():
    text = _text("results.md")
    for k in range(1, 13):
        assert re.search(rf"^## R{k}\b", text, re.MULTILINE), f"docs/results.md has no section R{k}"
    checks = sorted(f"synthetic/{p.name}"
                    for p in (ROOT / "theory_checks" / "synthetic").glob("r[0-9][0-9]_*.py"))
    assert checks, "no check modules found"
    for name in checks:
        assert name in text, f"docs/results.md does not cite {name}"
    # Every check module it cites by file name exists.
    cited = set(re.findall(r"`((?:synthetic|trained|llm|studies)/\w+\.py)`", text))
    missing = [n for n in cited if not (ROOT / "theory_checks" / n).is_file()]
    assert not missing, f"docs/results.md cites check modules that do not exist: {missing}"


def test_api_examples_run():
    blocks = BLOCK_RE.findall(_text("api.md"))
    assert len(blocks) >= 10, "docs/api.md lost its examples"
    namespace: dict = {"__name__": "docs_api"}
    for i, block in enumerate(blocks):
        try:
            # The documented examples are the code under test.
            exec(compile(block, f"docs/api.md[block {i}]", "exec"), namespace)  # noqa: S102
        except Exception as err:
            raise AssertionError(f"docs/api.md python block {i} failed:\n{block}") from err
