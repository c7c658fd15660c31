"""Training, evaluation and checkpoints (training.train, training.checkpoint)."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from transformer import Decoder, TransformerConfig
from training import checkpoint as ckpt_mod
from training.checkpoint import config_to_dict, load_checkpoint, save_checkpoint
from training.tasks import VOCAB_SIZE, TaskSpec, batch_at_step, make_batch, sequence_length
from training.train import (
    TrainSpec,
    evaluate,
    latest_checkpoint,
    make_optimizer,
    train,
)
from training.cli import main


def small_config(**kw) -> TransformerConfig:
    # max_len 2048 as the CLI sets it: the CLI test then reuses the compiled train step.
    base = dict(vocab_size=VOCAB_SIZE, d_model=32, n_layers=1, n_heads=2, d_mlp=64, max_len=2048)
    base.update(kw)
    return TransformerConfig(**base)


SMALL_TASK = TaskSpec("count_ones", 3, 5, sep_every=2)
SMALL_SPEC = TrainSpec(steps=12, batch_size=8, warmup_steps=3, eval_lengths=(4,), eval_examples=8)


@nnx.jit
def _last_logits(model, tokens):
    return model(tokens)[:, -1]  # [k, n] -> [k, v]


def reference_last_logits(model, rows) -> np.ndarray:
    """[len(rows), v] logits at the last token of each unpadded row, run without padding
    (rows of equal length share one compiled forward)."""
    out: list = [None] * len(rows)
    by_len: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_len.setdefault(len(r), []).append(i)
    for idx in by_len.values():
        logits = np.asarray(_last_logits(model, jnp.asarray(np.stack([rows[i] for i in idx]))))
        for j, i in enumerate(idx):
            out[i] = logits[j]
    return np.stack(out)


def params_of(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def assert_trees_identical(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def trained_copy_first():
    """A tiny model trained on copy_first at lengths 4-16 (a few seconds on one CPU core)."""
    config = TransformerConfig(
        vocab_size=VOCAB_SIZE, d_model=64, n_layers=2, n_heads=4, d_mlp=128, max_len=256
    )
    task = TaskSpec("copy_first", 4, 16)
    spec = TrainSpec(
        steps=100, batch_size=32, warmup_steps=20, learning_rate=3e-3, seed=0,
        eval_lengths=(4, 8, 12, 16), eval_examples=128,
    )
    model, metrics = train(config, task, spec, progress=False)
    return model, metrics


def test_learns_copy_first(trained_copy_first):
    _, metrics = trained_copy_first
    assert set(metrics["accuracy"]) == {4, 8, 12, 16}
    assert min(metrics["accuracy"].values()) >= 0.9, metrics["accuracy"]
    assert len(metrics["loss"]) == 100 and metrics["loss"][-1] < 0.3 * metrics["loss"][0]


def test_evaluate_matches_unpadded_forward(trained_copy_first):
    # Independent: each example run alone, unpadded, reading the last position's argmax.
    # The copy_first model is scored on copy_last so that right and wrong answers both occur.
    model, _ = trained_copy_first
    task = TaskSpec("copy_last", 4, 16)
    lengths, n_examples, seed = (5, 20), 24, 3
    acc = evaluate(model, task, lengths, n_examples, seed, batch_size=10)
    width = max(sequence_length(task, n) for n in lengths)
    for n in lengths:
        rng = np.random.default_rng([seed, 1, n])  # the documented evaluation stream
        batches = [make_batch(task.at_length(n), rng, 10, width=width) for _ in range(3)]
        examples = [
            (t, q, a) for b in batches for t, q, a in zip(b.tokens, b.query_pos, b.answer)
        ][:n_examples]
        logits = reference_last_logits(model, [t[: q + 1] for t, q, _ in examples])
        correct = int(np.sum(np.argmax(logits, axis=-1) == [a for _, _, a in examples]))
        assert 0 < correct < n_examples or n == 5  # both outcomes exercised at n = 20
        assert acc[n] == correct / n_examples


def test_first_loss_is_cross_entropy_at_the_query():
    # Loss at step 0 (before any update) recomputed with numpy from unpadded forwards.
    config, spec = small_config(), SMALL_SPEC
    _, metrics = train(config, SMALL_TASK, spec, progress=False, stop_at=1)
    model = Decoder(config, rngs=nnx.Rngs(spec.seed))
    batch = batch_at_step(SMALL_TASK, spec.seed, 0, spec.batch_size)
    rows = [t[: q + 1] for t, q in zip(batch.tokens, batch.query_pos)]
    logits = reference_last_logits(model, rows).astype(np.float64)
    losses = np.logaddexp.reduce(logits, axis=-1) - logits[np.arange(len(rows)), batch.answer]
    assert metrics["loss"][0] == pytest.approx(np.mean(losses), rel=1e-5)


def test_warmup_starts_at_zero_learning_rate():
    # The linear warm-up starts at 0, so step 1 leaves the parameters exactly unchanged.
    config = small_config()
    init = Decoder(config, rngs=nnx.Rngs(SMALL_SPEC.seed))
    one, _ = train(config, SMALL_TASK, SMALL_SPEC, progress=False, stop_at=1)
    two, _ = train(config, SMALL_TASK, SMALL_SPEC, progress=False, stop_at=2)
    assert_trees_identical(nnx.state(one, nnx.Param), nnx.state(init, nnx.Param))
    assert any(not np.array_equal(a, b) for a, b in zip(params_of(two), params_of(init)))


def test_same_seed_is_bit_identical_and_seed_matters():
    config = small_config()
    a, ma = train(config, SMALL_TASK, SMALL_SPEC, progress=False)
    b, mb = train(config, SMALL_TASK, SMALL_SPEC, progress=False)
    assert_trees_identical(nnx.state(a, nnx.Param), nnx.state(b, nnx.Param))
    assert ma["loss"] == mb["loss"]
    other = TrainSpec(**{**SMALL_SPEC.to_dict(), "seed": 1})
    c, _ = train(config, SMALL_TASK, other, progress=False)
    assert not np.array_equal(params_of(a)[0], params_of(c)[0])


def test_resume_equals_uninterrupted(tmp_path):
    config = small_config()
    spec = TrainSpec(**{**SMALL_SPEC.to_dict(), "checkpoint_every": 4})
    full, mfull = train(config, SMALL_TASK, spec, progress=False)
    # Interrupted after 6 steps (a checkpoint at 4 and one at 6), then resumed to 12.
    _, m1 = train(config, SMALL_TASK, spec, out=tmp_path, progress=False, stop_at=6)
    assert latest_checkpoint(tmp_path).name == "step_00000006"
    resumed, m2 = train(config, SMALL_TASK, spec, out=tmp_path, progress=False, resume=True)
    assert_trees_identical(nnx.state(resumed, nnx.Param), nnx.state(full, nnx.Param))
    assert m2["loss"] == mfull["loss"] and m2["step"] == 12
    # The saved optimizer state of the final checkpoint equals a fresh uninterrupted one's.
    final = load_checkpoint(latest_checkpoint(tmp_path))
    assert final.step == 12
    out2 = tmp_path / "uninterrupted"
    train(config, SMALL_TASK, spec, out=out2, progress=False)
    ref = load_checkpoint(latest_checkpoint(out2))
    assert_trees_identical(final.opt_state, ref.opt_state)
    # keep_checkpoints=2 prunes older ones
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_00000008", "step_00000012"]


def test_resume_with_other_arguments_raises(tmp_path):
    config = small_config()
    train(config, SMALL_TASK, SMALL_SPEC, out=tmp_path, progress=False, stop_at=2)
    other = TrainSpec(**{**SMALL_SPEC.to_dict(), "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="arguments differ"):
        train(config, SMALL_TASK, other, out=tmp_path, progress=False, resume=True)
    with pytest.raises(ValueError, match="config differs"):
        train(small_config(d_mlp=32), SMALL_TASK, SMALL_SPEC, out=tmp_path, progress=False,
              resume=True)


def test_checkpoint_round_trip_bit_identical(tmp_path):
    config = small_config()
    model, _ = train(config, SMALL_TASK, SMALL_SPEC, out=tmp_path, progress=False, stop_at=5)
    path = latest_checkpoint(tmp_path)
    loaded = load_checkpoint(path)
    assert loaded.step == 5 and loaded.meta["data"] == {"seed": 0, "next_step": 5}
    assert_trees_identical(nnx.state(loaded.model, nnx.Param), nnx.state(model, nnx.Param))
    assert loaded.model.config == config
    # Save it again (with its optimizer state) and reload: bit-identical again.
    again = save_checkpoint(tmp_path / "copy", loaded.model, loaded.opt_state, loaded.step)
    optimizer = make_optimizer(SMALL_SPEC)
    model2, opt2, step2, _ = load_checkpoint(again, optimizer)
    assert step2 == 5
    assert_trees_identical(opt2, loaded.opt_state)
    assert_trees_identical(nnx.state(model2, nnx.Param), nnx.state(model, nnx.Param))
    files = {p.name for p in path.iterdir()}
    assert files == {"params.safetensors", "opt_state.safetensors", "config.json",
                     "state.json", "train_args.json"}
    assert json.loads((path / "config.json").read_text())["d_model"] == 32


def test_checkpoint_low_precision_and_window_config(tmp_path):
    config = small_config(n_layers=2, window=(4, None), param_dtype="bfloat16", dtype="bfloat16")
    model = Decoder(config, rngs=nnx.Rngs(3))
    save_checkpoint(tmp_path / "c", model)
    loaded = load_checkpoint(tmp_path / "c")
    assert loaded.opt_state is None and loaded.model.config == config
    assert_trees_identical(nnx.state(loaded.model, nnx.Param), nnx.state(model, nnx.Param))
    with pytest.raises(ValueError, match="already exists"):
        save_checkpoint(tmp_path / "c", model)
    other = Decoder(config, rngs=nnx.Rngs(4))
    save_checkpoint(tmp_path / "c", other, overwrite=True)
    assert_trees_identical(
        nnx.state(load_checkpoint(tmp_path / "c").model, nnx.Param), nnx.state(other, nnx.Param)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch):
    model = Decoder(small_config(), rngs=nnx.Rngs(0))
    opt_state = make_optimizer(SMALL_SPEC).init(nnx.state(model, nnx.Param))
    written = []

    def failing(path, obj):  # the safetensors files are already on disk when this runs
        written.extend(p.name for p in Path(path).parent.iterdir())
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(ckpt_mod, "_write_json", failing)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ckpt", model, opt_state, 3)
    assert "params.safetensors" in written
    assert list(tmp_path.iterdir()) == []
    # An interrupted overwrite keeps the previous complete checkpoint.
    monkeypatch.undo()
    save_checkpoint(tmp_path / "ckpt", model, opt_state, 3)
    monkeypatch.setattr(ckpt_mod, "_write_json", failing)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ckpt", model, opt_state, 4, overwrite=True)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert load_checkpoint(tmp_path / "ckpt", make_optimizer(SMALL_SPEC)).step == 3


def test_bad_inputs_raise(tmp_path):
    config = small_config()
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainSpec(steps=5, warmup_steps=5)
    with pytest.raises(ValueError, match="steps"):
        TrainSpec(steps=0)
    with pytest.raises(ValueError, match="causal"):
        train(small_config(causal=False), SMALL_TASK, SMALL_SPEC, progress=False)
    with pytest.raises(ValueError, match="vocab_size"):
        train(small_config(vocab_size=32), SMALL_TASK, SMALL_SPEC, progress=False)
    with pytest.raises(ValueError, match="stop_at"):
        train(config, SMALL_TASK, SMALL_SPEC, progress=False, stop_at=13)
    with pytest.raises(ValueError, match="out directory"):
        train(config, SMALL_TASK, SMALL_SPEC, progress=False, resume=True)
    bad_eval = TrainSpec(**{**SMALL_SPEC.to_dict(), "eval_lengths": (600,)})
    with pytest.raises(ValueError, match="MAX_COUNT"):
        train(config, SMALL_TASK, bad_eval, progress=False)
    model = Decoder(config, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="min_len"):
        evaluate(model, TaskSpec("copy_last", 2, 4), [1])
    with pytest.raises(ValueError, match="non-empty"):
        evaluate(model, SMALL_TASK, [])
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        main(["--task", "reverse", "--out", str(tmp_path / "x"), "--no-progress"])
    with pytest.raises(ValueError, match="sep_every"):
        main(["--task", "count_ones", "--sep-every", "0", "--out", str(tmp_path / "x")])


def test_cli_writes_metrics_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    # The model and optimizer of `small_config` / SMALL_SPEC, so no new compilation.
    metrics = main([
        "--task", "count_ones", "--steps", "12", "--warmup", "3", "--batch-size", "8",
        "--min-len", "3", "--max-len", "5", "--sep-every", "2", "--eval-lengths", "3:5:2",
        "12", "--eval-examples", "8", "--d-model", "32", "--n-layers", "1", "--n-heads", "2",
        "--d-mlp", "64", "--seed", "2", "--out", str(out), "--no-progress",
    ])
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["accuracy"]) == {"3", "5", "12"}
    assert saved["seed"] == 2 and saved["args"]["task"] == "count_ones"
    assert len(saved["loss"]) == 12 and saved["config"]["d_model"] == 32
    assert saved["config"] == config_to_dict(small_config())
    assert saved["accuracy"] == {str(k): v for k, v in metrics["accuracy"].items()}
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert latest_checkpoint(out).name == "step_00000012"
    assert "count_ones: 12 steps" in capsys.readouterr().out
