"""Every user mistake on the two command lines (issue 23): exit status 2, one line on
stderr naming the argument or the file, no traceback, nothing written. Training that
diverges stops with a clear error and keeps its last good checkpoint; reports stay atomic
under SIGTERM as under Ctrl-C."""

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from flax import nnx

from theory_checks import report
from theory_checks.__main__ import main as theory_main
from training.checkpoint import load_checkpoint, save_checkpoint
from training.cli import build_parser, cli, run_settings
from training.spec import make_optimizer
from training.train import train_args
from transformer import Decoder


def training_cli(argv) -> int:
    """`python -m training`'s exit status (argparse's own errors exit from inside)."""
    try:
        return cli(argv)
    except SystemExit as exit_:
        return exit_.code

TINY = ["--task", "copy_first", "--steps", "4", "--warmup", "0", "--d-model", "16",
        "--n-layers", "1", "--n-heads", "2", "--batch-size", "8", "--eval-examples", "8",
        "--eval-lengths", "4", "--no-progress"]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---- python -m theory_checks ---------------------------------------------------------------


@pytest.mark.parametrize("argv, names", [
    (["--only", ","], "--only ','"),
    (["--only", ""], "--only ''"),
    (["--only", "R4,R99"], "R99"),
    (["--seed", "-1"], "--seed -1"),
    (["--seed", str(2**32)], "--seed 4294967296"),
    (["--seed", "x"], "--seed"),
    (["--model", "nowhere"], "--model"),
    (["--profile", "llm", "--model", "nowhere"], "--model nowhere: no such file"),
])
def test_theory_checks_mistakes(tmp_path, capsys, argv, names):
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as exit_:
        theory_main([*argv, "--out", str(out)])
    assert exit_.value.code == 2
    assert names in one_line(capsys.readouterr().err)
    assert not list(tmp_path.iterdir())  # nothing written


def test_theory_checks_out_is_a_file(tmp_path, capsys):
    (tmp_path / "report").write_text("mine")
    with pytest.raises(SystemExit) as exit_:
        theory_main(["--only", "R3", "--out", str(tmp_path / "report")])
    assert exit_.value.code == 2
    assert "--out" in one_line(capsys.readouterr().err)
    assert (tmp_path / "report").read_text() == "mine"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_reports_stay_atomic_under_sigterm_as_under_sigint(tmp_path, sig):
    """A signal while the report is being written: the previous report stays, no
    .report.partial-* folder is left (SIGTERM left an empty one)."""
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("previous")
    expected = SystemExit if sig == signal.SIGTERM else KeyboardInterrupt
    with pytest.raises(expected):
        with report.staging_folder(out) as stage:
            (stage / "report.md").write_text("half")
            os.kill(os.getpid(), sig)
            raise AssertionError("the signal was not delivered")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    assert (out / "report.md").read_text() == "previous"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


# ---- python -m training ---------------------------------------------------------------------


@pytest.mark.parametrize("argv, names", [
    (["--lr", "nan"], "argument --lr: must be a finite number, got 'nan'"),
    (["--lr", "inf"], "argument --lr: must be a finite number"),
    (["--clip", "-inf"], "argument --clip"),
    (["--p-one", "nan"], "argument --p-one"),
    (["--seed", "-1"], "seed must be an integer >= 0, got -1"),
    (["--task", "count_everything"], "unknown task 'count_everything'"),
    (["--eval-lengths", "4:x"], "cannot read length '4:x'"),
])
def test_training_mistakes(tmp_path, capsys, argv, names):
    assert training_cli([*TINY, "--out", str(tmp_path / "run"), *argv]) == 2
    assert names in one_line(capsys.readouterr().err)
    assert not list(tmp_path.iterdir())


@pytest.fixture
def run_dir(tmp_path_factory):
    """A run directory with the step-1 checkpoint that `python -m training TINY` would
    resume from (written directly: no training needed), copied fresh for each test."""
    base = tmp_path_factory.getbasetemp() / "stopped_run"
    if not base.exists():
        config, task, spec = run_settings(build_parser().parse_args([*TINY, "--out", "x"]))
        model = Decoder(config, rngs=nnx.Rngs(0))
        opt_state = make_optimizer(spec).init(nnx.state(model, nnx.Param))
        ckpt = save_checkpoint(base / "checkpoints" / "step_00000001", model, opt_state, 1,
                               meta={"loss": [1.0]}, train_args=train_args(task, spec))
        assert load_checkpoint(ckpt).step == 1  # undamaged, it loads
    target = tmp_path_factory.mktemp("run") / "run"
    shutil.copytree(base, target)
    return target


def _checkpoint(run: Path) -> Path:
    (ckpt,) = sorted((run / "checkpoints").iterdir())
    return ckpt


def _truncate(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage, file, problem", [
    (_truncate, "params.safetensors", "not a readable safetensors file"),
    (_truncate, "opt_state.safetensors", "not a readable safetensors file"),
    (_truncate, "config.json", "not valid JSON (cut off?)"),
    (_truncate, "state.json", "not valid JSON (cut off?)"),
    (lambda p: p.write_text("{garbled"), "train_args.json", "not valid JSON"),
    (lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items()
                                        if k != "d_model"})),
     "config.json", "required key(s) missing: 'd_model'"),
    (lambda p: p.write_text(json.dumps({"loss": []})), "state.json", "missing: 'step'"),
])
def test_resume_names_the_damaged_file_and_the_problem(run_dir, capsys, damage, file, problem):
    ckpt = _checkpoint(run_dir)
    if file == "opt_state.safetensors" and not (ckpt / file).exists():
        pytest.fail(f"the checkpoint has no {file}: {sorted(os.listdir(ckpt))}")
    damage(ckpt / file)
    before = sorted(p.name for p in run_dir.rglob("*"))
    assert training_cli([*TINY, "--out", str(run_dir), "--resume"]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(ckpt / file) in line and problem in line, line
    assert sorted(p.name for p in run_dir.rglob("*")) == before  # nothing written


def test_divergence_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """A learning rate of 1e30 is finite, so it is accepted; the loss is NaN from the
    second step: exit status 1, the step-1 checkpoint (finite parameters) kept, no
    metrics written, and the kept checkpoint loads."""
    run = tmp_path / "run"
    code = training_cli([*TINY, "--out", str(run), "--lr", "1e30", "--checkpoint-every", "1"])
    line = one_line(capsys.readouterr().err)
    assert code == 1
    assert "the loss became nan at step 1" in line and "step_00000001" in line, line
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_00000001"]
    assert not (run / "metrics.json").exists()
    assert load_checkpoint(run / "checkpoints" / "step_00000001").step == 1


# ---- a checkpoint directory's config.json (--model PATH, load_pretrained) -------------------


def _hf_dir(tmp_path, config_text: str) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(config_text)
    save_file({"model.embed_tokens.weight": np.zeros((4, 2), np.float32)},
              str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize("config_text, problem", [
    ('{"model_type": "llama", "hidden_size": 6', "not valid JSON (cut off?)"),
    ('{"model_type": "llama", "hidden_size": 64}', "required key 'num_attention_heads'"),
    ('{"hidden_size": 64}', "required key(s) missing: 'model_type'"),
    ('[1, 2]', "expected a JSON object"),
])
def test_a_damaged_config_json_names_the_file(tmp_path, config_text, problem):
    from transformer.loading import load_pretrained

    folder = _hf_dir(tmp_path, config_text)
    with pytest.raises(ValueError) as err:
        load_pretrained(folder)
    assert str(folder / "config.json") in str(err.value) and problem in str(err.value)


def test_a_damaged_config_json_on_the_command_line(tmp_path, capsys):
    folder = _hf_dir(tmp_path, '{"model_type": "llama"')
    with pytest.raises(SystemExit) as exit_:
        theory_main(["--profile", "llm", "--model", str(folder), "--only", "R4",
                     "--out", str(tmp_path / "report"), "--no-progress"])
    assert exit_.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert f"{folder / 'config.json'}: not valid JSON" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no report, no partial
