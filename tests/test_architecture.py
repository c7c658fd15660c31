"""The house rules as tests: data flows one way between the packages, no module imports
itself back through others (no cycle, lazy imports included), modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("transformer", "analysis", "theory_checks", "training")
# What each package may import from the others.
ALLOWED = {
    "transformer": set(),
    "analysis": {"transformer"},
    "training": {"transformer"},
    "theory_checks": {"transformer", "analysis", "training"},
}
MAX_ANALYSIS_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules=frozenset()) -> set[str]:
    """Every project module a file imports, at any depth of the file (lazy imports too).

    `from pkg import name` counts as importing pkg.name when that is one of `modules`
    (a submodule), else as importing pkg (a name defined by the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                     else node.module for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: {m for m in _imports(path, frozenset(files)) if m in files and m != name}
            for name, path in files.items()}


def test_packages_import_only_downstream():
    bad = [
        f"{mod} imports {dep}"
        for mod, deps in _graph().items()
        for dep in deps
        if dep.split(".")[0] != mod.split(".")[0]
        and dep.split(".")[0] not in ALLOWED[mod.split(".")[0]]
    ]
    assert not bad, bad


def test_no_import_cycle():
    edges = _graph()
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, cycles


def test_the_graph_sees_lazy_imports(tmp_path):
    """Guards the two tests above: an import inside a function counts."""
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from training.train import train\n    import analysis.bound\n"
                 "    from transformer import placement, Decoder\n")
    assert _imports(f, frozenset({"transformer.placement"})) == {
        "training.train", "analysis.bound", "transformer.placement", "transformer"}


def test_analysis_modules_stay_small():
    long = {p.name: n for p in (ROOT / "analysis").glob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_ANALYSIS_LINES}
    assert not long, long


# ---- analysis in layers ------------------------------------------------------------------
# Each analysis module imports only modules of strictly lower layers: the compiled runners
# and their memory plan at the bottom, Jacobians, estimators and profiles above them.
ANALYSIS_LAYERS = (
    # pure checks on arrays (finite computed values, fit data), below everything
    ("checks",),
    # 0: compiled-kernel variants, memory plans, and pure maths on arrays
    ("kernels", "memory", "fitting", "softmax", "spectral", "pairs", "collapse_length",
     "bound_report", "trace_estimation"),
    # 1: the shared input/result checks; the one function every derivative differentiates
    ("validation", "last_state"),
    # 2: batched, chunked, compiled VJP/JVP runners
    ("runners",),
    # 3: quantities of a model: Jacobians, the path bound, collapse sweeps, counting
    ("jacobian", "bound", "collapse", "counting", "synthetic_collapse"),
    # 4: quantities built on those: sensitivity profiles and estimates, the log-space bound,
    # the per-head readings of a pair sweep
    ("sensitivity", "log_bound", "pair_sweep"),
    # 5: the same spread over many devices
    ("sharding",),
)


def test_analysis_modules_call_only_downward():
    layer_of = {f"analysis.{name}": i
                for i, names in enumerate(ANALYSIS_LAYERS) for name in names}
    graph = _graph()
    modules = sorted(m for m in graph if m.startswith("analysis.") and m != "analysis")
    unplaced = [m for m in modules if m not in layer_of]
    assert not unplaced, f"add these modules to ANALYSIS_LAYERS: {unplaced}"
    upward = [
        f"{mod} (layer {layer_of[mod]}) imports {dep} (layer {layer_of[dep]})"
        for mod in modules for dep in graph[mod]
        if dep in layer_of and layer_of[dep] >= layer_of[mod]
    ]
    assert not upward, upward


# ---- the norm placement is decided in the model only ---------------------------------------
NORM_PLACEMENTS = {"pre", "post", "sandwich"}


def placement_branches(source: str) -> list[str]:
    """Code that decides by the norm placement: a comparison with a placement name ("pre",
    "post", "sandwich") or a read of the config's `norm_placement`. (Blocks no longer carry
    a placement; synthetic_collapse's `Reading.placement` is where APE positions enter.)"""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr == "norm_placement":
            found.append(f"line {node.lineno}: .{node.attr}")
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                if isinstance(operand, ast.Constant) and operand.value in NORM_PLACEMENTS:
                    found.append(f"line {node.lineno}: compares with {operand.value!r}")
    return found


def test_no_norm_placement_branch_in_analysis():
    """analysis reads the block's taps and layouts (transformer.model.LAYOUTS); it never
    decides for itself where the norms sit."""
    found = {p.name: b for p in (ROOT / "analysis").glob("*.py")
             if (b := placement_branches(p.read_text(encoding="utf-8")))}
    assert not found, found


def test_the_placement_detector_sees_branches():
    """Guards the test above."""
    assert placement_branches("if block.kind == 'pre':\n    pass\n")
    assert placement_branches("x = c.norm_placement\n")
    assert placement_branches("ok = 'sandwich' != kind\n")
    assert not placement_branches("abs_pos_placement = 'scores'\nplace = placement.place\n")


def test_benchmarks_import_only_transformer_and_analysis():
    bad = sorted(f"{p.relative_to(ROOT)} imports {m}" for p in (ROOT / "benchmarks").rglob("*.py")
                 for m in _imports(p) if m.split(".")[0] not in {"transformer", "analysis"})
    assert not bad, bad


MAX_MODULE_LINES = 400  # the house limit for analysis/, theory_checks/ and training/


def test_no_module_over_the_limit_in_any_sub_package():
    long = {str(p.relative_to(ROOT)): n
            for pkg in ("analysis", "theory_checks", "training") for p in (ROOT / pkg).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, long


def _sub_packages() -> set[str]:
    return {f"{p.parent.relative_to(ROOT).as_posix()}/" for pkg in PACKAGES
            for p in (ROOT / pkg).rglob("__init__.py") if p.parent != ROOT / pkg}


def test_the_readme_names_the_sub_packages_there_are():
    """Every sub-package is named in the README as `pkg/sub/`, and every one named exists."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(rf"`((?:{'|'.join(PACKAGES)})/[\w/]+/)`", readme))
    there = _sub_packages()
    assert there, "no sub-packages found (the layout test would pass vacuously)"
    assert not there - named, f"sub-packages the README does not name: {sorted(there - named)}"
    assert not named - there, f"the README names sub-packages that do not exist: " \
        f"{sorted(named - there)}"


def test_theory_checks_top_level_keeps_the_cli_runner_context_and_results():
    """Checks and their helpers live in the family sub-packages."""
    top = {p.name for p in (ROOT / "theory_checks").glob("*.py")}
    assert top == {"__init__.py", "__main__.py", "runner.py", "context.py", "result.py"}, top
    families = {p.split("/")[1] for p in _sub_packages() if p.startswith("theory_checks/")}
    assert families == {"synthetic", "trained", "llm", "studies", "report"}, families
