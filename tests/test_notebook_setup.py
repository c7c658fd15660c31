"""The notebook's runtime setup (its first code cell, issue 23): from what a Colab-like
runtime shows (a TPU or GPU, the installed JAX and Flax) to the pip arguments, and the
stop when an accelerator is present but JAX sees only the CPU. The functions are taken
from the stored notebook itself (the cell is self-contained: it runs before JAX is
upgraded, so it may use the standard library only) and run on made-up runtimes."""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "tutorial.ipynb"
START, END = "# --- runtime setup", "# --- end of runtime setup ---"


@pytest.fixture(scope="module")
def setup():
    cell = next(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells
                if c.cell_type == "code" and START in c.source)
    head = cell[:cell.index(START)]
    code = cell[cell.index(START):cell.index(END)]
    namespace = {}
    exec(compile(ast.parse(_imports(head) + code), "setup cell", "exec"), namespace)
    return namespace


def _imports(head: str) -> str:
    """The cell's own import lines (what the setup functions may use)."""
    lines = [ln for ln in head.splitlines() if ln.startswith(("import ", "from "))]
    stdlib = {"glob", "importlib", "os", "re", "shutil", "subprocess", "sys", "pathlib"}
    for ln in lines:  # the setup must not import JAX, Flax or the project before upgrading
        assert ln.split()[1].split(".")[0] in stdlib, ln
    return "\n".join(lines) + "\n"


def runtime(setup, *, devices=(), environ=None, nvidia_smi=False, **versions):
    """runtime_facts on a made-up machine: /dev entries, variables, installed versions."""
    def version(name):
        if versions.get(name.replace("-", "_")) is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name.replace("-", "_")]

    def glob(pattern):
        import fnmatch
        return [d for d in devices if fnmatch.fnmatch(d, pattern)]

    return setup["runtime_facts"](environ=environ or {}, glob=glob, version=version,
                                  which=lambda cmd: "/usr/bin/nvidia-smi" if nvidia_smi else None)


OLD = dict(jax="0.7.2", flax="0.11.1")  # Colab's image of August 2026
NEW = dict(jax="0.10.2", flax="0.12.8")


@pytest.mark.parametrize("machine, versions, expected", [
    # CPU runtime
    (dict(), OLD, ["--upgrade", "jax>=0.10", "flax>=0.12.8"]),
    (dict(), NEW, []),
    (dict(), dict(jax=None, flax=None), ["--upgrade", "jax>=0.10", "flax>=0.12.8"]),
    (dict(), dict(jax="0.10.2", flax="0.11.1"), ["--upgrade", "jax>=0.10", "flax>=0.12.8"]),
    # GPU runtime: the CUDA plugin comes with the extra
    (dict(devices=["/dev/nvidia0", "/dev/nvidiactl"]), OLD,
     ["--upgrade", "jax[cuda12]>=0.10", "flax>=0.12.8"]),
    (dict(nvidia_smi=True), {**NEW, "jax_cuda12_plugin": None},
     ["--upgrade", "jax[cuda12]>=0.10", "flax>=0.12.8"]),
    (dict(nvidia_smi=True), {**NEW, "jax_cuda12_plugin": "0.10.2"}, []),
    # TPU runtime: libtpu comes with the extra
    (dict(devices=["/dev/accel0"]), OLD, ["--upgrade", "jax[tpu]>=0.10", "flax>=0.12.8"]),
    (dict(devices=["/dev/vfio/0", "/dev/vfio/vfio"]), {**NEW, "libtpu": None},
     ["--upgrade", "jax[tpu]>=0.10", "flax>=0.12.8"]),
    (dict(environ={"TPU_ACCELERATOR_TYPE": "v5litepod-1"}), {**NEW, "libtpu": "0.0.20"}, []),
])
def test_install_arguments_per_runtime(setup, machine, versions, expected):
    facts = runtime(setup, **machine, **versions)
    assert setup["jax_install_args"](facts) == expected


def test_detection(setup):
    assert runtime(setup, **NEW)["tpu"] is False and runtime(setup, **NEW)["gpu"] is False
    gpu = runtime(setup, devices=["/dev/nvidia0", "/dev/vfio/3"], **NEW)  # vfio beside a GPU
    assert gpu["gpu"] and not gpu["tpu"]
    assert runtime(setup, environ={"COLAB_TPU_ADDR": "10.0.0.2:8470"}, **OLD)["tpu"]
    assert runtime(setup, **OLD)["jax"] == "0.7.2"


@pytest.mark.parametrize("machine, kind", [(dict(devices=["/dev/accel0"]), "TPU"),
                                           (dict(nvidia_smi=True), "GPU")])
def test_an_accelerator_that_jax_does_not_see_stops_the_notebook(setup, machine, kind):
    facts = runtime(setup, **machine, **NEW)
    with pytest.raises(RuntimeError, match=f"has a {kind} but JAX 0.10.2 sees only the CPU"):
        setup["check_backend"](facts, "cpu")
    setup["check_backend"](facts, "tpu" if kind == "TPU" else "gpu")  # seen: no error


def test_a_cpu_runtime_runs_on_the_cpu(setup):
    setup["check_backend"](runtime(setup, **NEW), "cpu")


def test_this_machine_needs_no_install(setup):
    """The test suite and CI: nothing to pip install (the cell's pip calls stay unrun)."""
    facts = setup["runtime_facts"]()
    assert not facts["tpu"] and not facts["gpu"]
    assert setup["jax_install_args"](facts) == []


def test_the_cell_asks_for_a_restart_after_an_upgrade_and_checks_the_backend():
    cell = next(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells
                if c.cell_type == "code" and START in c.source)
    after = cell[cell.index("upgraded = jax_install_args(facts)"):]
    assert "if upgraded:" in after and "restart the runtime" in after
    assert after.index("raise SystemExit") < after.index("import jax")
    assert "check_backend(facts, jax.default_backend())" in after
