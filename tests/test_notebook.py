"""The course notebook: stored without outputs, in sync with its jupytext-paired source
(notebooks/tutorial.py, percent format), it runs top to bottom (tiny sizes,
TUTORIAL_SMALL=1) with every figure cell drawing a figure, its chapters keep their shape,
and the executed copy in docs/course/ (written by notebooks/render.py) is in step with it."""

from __future__ import annotations

import importlib.util
import json
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
RENDERED = ROOT / "docs" / "course" / "tutorial.md"
RUN_RECORD = ROOT / "docs" / "course" / "run.json"


def _render_module():
    spec = importlib.util.spec_from_file_location("course_render", ROOT / "notebooks" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    assert len(figure_cells) >= 15, "the course lost its figures"
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


def _chapters(nb):
    """{chapter title: [cells]} from each '## N.' markdown heading to the next."""
    chapters, current = {}, None
    for cell in nb.cells:
        head = re.match(r"## (\d+)\. ", cell.source) if cell.cell_type == "markdown" else None
        if head:
            current = cell.source.splitlines()[0]
            chapters[current] = []
        if current is not None:
            chapters[current].append(cell)
    return chapters


def test_every_chapter_has_question_picture_statement_assert_try_and_exercise():
    chapters = _chapters(_stored())
    assert len(chapters) == 7, list(chapters)
    for title, cells in chapters.items():
        text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
        code = [c for c in cells if c.cell_type == "code"]
        figures = [c for c in code if "figure" in c.get("metadata", {}).get("tags", [])]
        assert "**Question.**" in text and "**Try this.**" in text, title
        assert "**Exercise.**" in text and "<details><summary>Solution</summary>" in text, title
        assert "**Picture first" in text and "statement" in text.lower(), title
        assert figures, f"{title}: no figure"
        # every figure cell titles its figure and holds its claims with an assert
        for cell in figures:
            assert "set_title(" in cell.source or "suptitle(" in cell.source, (title, cell.source[:80])
            assert re.search(r"^assert ", cell.source, re.M), (title, cell.source[:80])
        assert any(re.match(r"[A-Z_, ]+ = .*# knobs?", c.source) for c in code), f"{title}: no knob cell"


def test_course_links_resolve_and_name_the_paper():
    nb = _stored()
    first = nb.cells[0].source
    assert "arxiv.org/abs/2406.04267" in first
    render = _render_module()
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        assert "shared/" not in cell.source and "PAPER.md" not in cell.source
        for target in re.findall(r"\]\((?!https?://)([^)#]+)", cell.source):
            assert (NOTEBOOK.parent / target).exists(), f"notebook link {target} does not resolve"
        for target in re.findall(r"\]\((?!https?://)([^)#]+)", render.rewrite_links(cell.source)):
            assert (RENDERED.parent / target).exists(), f"rendered link {target} does not resolve"


def test_rendered_copy_is_in_step_with_the_notebook():
    """docs/course/tutorial.md holds exactly the notebook's cells (no re-execution here:
    notebooks/render.py writes it), every figure cell's figures, and a full-size run."""
    render = _render_module()
    assert RENDERED.is_file(), "no rendered copy: run python notebooks/render.py"
    markdown = RENDERED.read_text()
    expected = [(c.cell_type, render.rewrite_links(c.source).rstrip("\n")
                 if c.cell_type == "markdown" else c.source) for c in _stored().cells]
    got = render.rendered_cells(markdown)
    assert len(got) == len(expected), "the rendered copy has a different number of cells"
    stale = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
    assert not stale, (f"rendered cells {stale} differ from the notebook: run python "
                       "notebooks/render.py")
    images = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", markdown)
    for image in images:
        path = RENDERED.parent / image
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image
    nb = _stored()
    for i, cell in enumerate(nb.cells):
        if "figure" in cell.get("metadata", {}).get("tags", []):
            assert f"tutorial_files/cell{i:02d}_1.png" in markdown, f"figure of cell {i} missing"
    assert "Traceback" not in markdown
    run = json.loads(RUN_RECORD.read_text())
    assert run["wall_s"] > 0 and run["cpu_s"] > 0
    # the copy says which sizes it shows, and the record agrees
    sizes = "small" if run["small"] else "full"
    assert f"({sizes} sizes)" in markdown.splitlines()[2], "the copy's header and run.json disagree"


def test_render_round_trips_sources(tmp_path):
    """rendered_cells inverts to_markdown on a notebook without outputs."""
    import nbformat

    render = _render_module()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# t\n\nsee [r](../docs/results.md)\n```python\nx\n```"),
        nbformat.v4.new_code_cell("x = 1\nprint(x)"),
        nbformat.v4.new_code_cell(""),
    ])
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    run = {"small": True, "date": "d", "wall_s": 1.0, "cpu_s": 1.0, "machine": "m"}
    md = render.to_markdown(nb, tmp_path, run)
    assert render.rendered_cells(md) == [
        ("markdown", "# t\n\nsee [r](../results.md)\n```python\nx\n```"),
        ("code", "x = 1\nprint(x)"), ("code", "")]
    assert "````text\n1\n````" in md
