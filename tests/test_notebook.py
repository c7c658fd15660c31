"""The tutorial notebook: stored without outputs, in sync with its jupytext-paired source
(notebooks/tutorial.py, percent format), and it runs top to bottom (tiny sizes,
TUTORIAL_SMALL=1) with every figure cell drawing a figure."""

from __future__ import annotations

import os
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "tutorial.ipynb"
SOURCE = ROOT / "notebooks" / "tutorial.py"  # the percent-format script jupytext pairs
CELL_TIMEOUT_S = 300


def _stored():
    return nbformat.read(NOTEBOOK, as_version=4)


def _cells(nb):
    return [(c.cell_type, c.source, c.get("metadata", {}).get("tags", [])) for c in nb.cells]


def test_stored_notebook_has_no_outputs():
    nb = _stored()
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"code cells {dirty} store outputs or execution counts: clear them"


def test_stored_notebook_matches_its_paired_script():
    nb = _stored()
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert _cells(nb) == _cells(jupytext.read(SOURCE)), (
        "notebooks/tutorial.ipynb differs from notebooks/tutorial.py: edit the script and run "
        "`jupytext --sync notebooks/tutorial.py` (then clear outputs if any)"
    )


def test_install_cell_is_guarded_and_has_no_placeholder():
    # CI must never pip install from the notebook: every pip call sits under a check
    # that the package is missing.
    install = _stored().cells[1]
    assert install.cell_type == "code" and "pip" in install.source
    assert 'find_spec("transformer") is None' in install.source
    assert "PackageNotFoundError" in install.source and "--no-deps" in install.source
    # No placeholder to edit: the checkout the notebook sits in, else one marked variable.
    assert "OWNER" not in install.source and not re.search(r"<[A-Za-z_ ]+>", install.source)
    assert 'PROJECT_SOURCE = ""' in install.source and "find_checkout" in install.source
    assert "jax.devices()" in install.source and "default_backend()" in install.source


def test_install_cell_finds_the_checkout_it_sits_in(tmp_path):
    """The cell's checkout finder, run on this repository and on a folder outside it."""
    source = _stored().cells[1].source
    finder = source[source.index("def find_checkout"):source.index("def pip_install")]
    namespace = {}
    exec("from pathlib import Path\n" + finder, namespace)
    assert namespace["find_checkout"](ROOT / "notebooks") == ROOT
    assert namespace["find_checkout"](tmp_path) is None


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
