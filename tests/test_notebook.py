"""The tutorial notebook: stored without outputs, in sync with its generator, and it runs
top to bottom (tiny sizes, TUTORIAL_SMALL=1) with every figure cell drawing a figure."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "tutorial.ipynb"
GENERATOR = ROOT / "notebooks" / "build_tutorial.py"
CELL_TIMEOUT_S = 300


def _stored():
    return nbformat.read(NOTEBOOK, as_version=4)


def _generator():
    spec = importlib.util.spec_from_file_location("build_tutorial", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stored_notebook_has_no_outputs():
    nb = _stored()
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"code cells {dirty} store outputs or execution counts: clear them"


def test_stored_notebook_matches_generator():
    assert NOTEBOOK.read_text(encoding="utf-8") == _generator().render(), (
        "notebooks/tutorial.ipynb differs from notebooks/build_tutorial.py: edit the script "
        "and run `python notebooks/build_tutorial.py`"
    )


def test_install_cell_is_guarded():
    # CI must never pip install from the notebook: every pip call sits under a check
    # that the package is missing.
    install = _stored().cells[1]
    assert install.cell_type == "code" and "pip" in install.source
    assert 'find_spec("transformer") is None' in install.source
    assert "PackageNotFoundError" in install.source and "--no-deps" in install.source


@pytest.mark.slow  # about two minutes on a 2-core CPU: the whole tutorial, tiny sizes
def test_notebook_runs_with_small_sizes(monkeypatch):
    nb = _stored()
    figure_cells = [c for c in nb.cells if "figure" in c.get("metadata", {}).get("tags", [])]
    assert len(figure_cells) >= 10, "the tutorial lost its figures"
    # The kernel inherits this process's environment.
    monkeypatch.setenv("TUTORIAL_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # Imports resolve to this checkout (the kernel's working directory is the repo root).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    ))
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", allow_errors=False,
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    missing = []
    for cell in figure_cells:
        pngs = sum("image/png" in o.get("data", {}) for o in cell.outputs)
        if pngs < 1:
            missing.append(cell.source.splitlines()[0])
    assert not missing, f"figure cells that drew no figure: {missing}"
    total = sum("image/png" in o.get("data", {})
                for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert total >= len(figure_cells)
    # The SMALL switch really reached the kernel.
    setup = next(c for c in nb.cells if c.cell_type == "code" and "SMALL =" in c.source)
    assert "small sizes: True" in "".join(o.get("text", "") for o in setup.outputs)


@pytest.mark.parametrize("cell_index", [0])
def test_title_cell_names_the_paper(cell_index):
    cell = _stored().cells[cell_index]
    assert cell.cell_type == "markdown" and "Transformers need glasses" in cell.source
