"""Train a decoder on one synthetic task (training.tasks) with optax; evaluate per length.

The paper's task probes (docs/results.md: copying and counting, accuracy against length;
R5, R12) need models trained on short sequences and evaluated on longer ones. Here:

- AdamW with linear warm-up and cosine decay, global-norm gradient clipping, one
  jit-compiled step on fixed shapes (right-padded batches, the loss read at the query).
- Deterministic: parameters come from `nnx.Rngs(seed)` and the batch of step s from
  (seed, s) alone, so equal seeds give bit-identical parameters, and stopping after N
  steps, checkpointing, restoring and training on gives bit-identical parameters to an
  uninterrupted run.
- Checkpoints (training.checkpoint) under `out/checkpoints/step_XXXXXXXX`, each written
  atomically; `resume=True` continues from the latest one.

CLI (`training.cli`):
    python -m training --task copy_last --steps 500 --out runs/copy_last \
        --min-len 4 --max-len 16 --eval-lengths 4 8 16 32 64
writes out/metrics.json (loss curve, accuracy per length, config, seed, args), a plot
out/accuracy.png and prints a summary.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from training.checkpoint import (
    config_to_dict,
    load_checkpoint,
    read_train_args,
    save_checkpoint,
)
from training.evaluate import _answer_logits, _check_model, evaluate
from training.spec import TrainSpec, _check_int, make_optimizer
from training.tasks import TaskSpec, batch_at_step
from transformer.config import TransformerConfig
from transformer.model import Decoder

__all__ = ["TrainSpec", "evaluate", "latest_checkpoint", "main", "make_optimizer", "train"]

CHECKPOINT_DIR = "checkpoints"


def _optimizer_fields(spec: TrainSpec) -> tuple:
    """The TrainSpec fields `make_optimizer` reads (the key of the compiled-step cache)."""
    names = ("steps", "learning_rate", "warmup_steps", "min_lr_ratio", "weight_decay",
             "clip_norm", "b1", "b2")
    return tuple((n, getattr(spec, n)) for n in names)


@functools.lru_cache(maxsize=16)
def _train_step(graphdef, optimizer_fields: tuple):
    """One compiled step per (model structure, optimizer settings), reused across `train`
    calls (a resumed run and repeated seeds do not recompile)."""
    optimizer = make_optimizer(TrainSpec(**dict(optimizer_fields)))

    @jax.jit
    def step(params, rest, opt_state, tokens, query_pos, answer):
        def loss_fn(p):
            model = nnx.merge(graphdef, p, rest)
            logits = _answer_logits(model, tokens, query_pos).astype(jnp.float32)
            return optax.softmax_cross_entropy_with_integer_labels(logits, answer).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss

    return step


class TrainingDiverged(RuntimeError):
    """The loss or the parameters became NaN or inf: training stopped, and no checkpoint
    was written from that point on (the last good one is kept)."""


def _check_finite_losses(losses: list[float], first_step: int, out) -> None:
    bad = [i for i, x in enumerate(losses) if not np.isfinite(x)]
    if bad:
        raise TrainingDiverged(
            f"the loss became {losses[bad[0]]} at step {first_step + bad[0]}: training "
            f"stopped ({_kept(out)}); lower --lr or check the data"
        )


def _kept(out) -> str:
    """What is left on disk when training stops early."""
    last = latest_checkpoint(out) if out is not None else None
    return f"last good checkpoint kept: {last}" if last is not None else "no checkpoint written"


def train_args(task: TaskSpec, spec: TrainSpec) -> dict:
    """What a checkpoint's train_args.json holds (a resumed run must match it)."""
    return {"task": dataclasses.asdict(task), "train": spec.to_dict()}


def default_eval_lengths(task: TaskSpec) -> tuple[int, ...]:
    """The training range, thinned to at most 16 lengths."""
    return tuple(int(n) for n in np.unique(np.linspace(task.min_len, task.max_len, 16).round()))


def _checkpoints(out: Path) -> list[Path]:
    root = out / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under out/checkpoints, or None."""
    found = _checkpoints(Path(out))
    return found[-1] if found else None


def train(
    config: TransformerConfig,
    task: TaskSpec,
    spec: TrainSpec,
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    resume: bool = False,
    stop_at: int | None = None,
) -> tuple[Decoder, dict]:
    """Train a decoder on `task` and evaluate its accuracy per length.

    Args:
        config: model configuration (causal, vocab_size >= tasks.VOCAB_SIZE).
        task: the task and its training length range.
        spec: optimisation settings.
        out: directory for checkpoints (out/checkpoints/step_XXXXXXXX); None: none written.
        progress: show a tqdm progress bar.
        resume: continue from the latest checkpoint under `out` (which must have been
            written with the same config, task and spec); start afresh when there is none.
        stop_at: stop (and checkpoint, when `out` is set) after this many steps, with the
            schedule still spanning `spec.steps`, so a later resumed run is identical to an
            uninterrupted one.
    Returns:
        (model, metrics) with metrics keys: "loss" (per step from 0), "accuracy"
        ({length: accuracy}), "step" (steps done), "seed", "config", "task", "train",
        "final_loss", "wall_time_s".
    """
    _check_model(config)
    if not isinstance(task, TaskSpec):
        raise ValueError(f"task must be a TaskSpec, got {type(task).__name__}")
    end = spec.steps if stop_at is None else stop_at
    _check_int("stop_at", end, 0)
    if end > spec.steps:
        raise ValueError(f"stop_at={stop_at} exceeds steps={spec.steps}")
    if resume and out is None:
        raise ValueError("resume=True needs an out directory")
    eval_lengths = spec.eval_lengths or default_eval_lengths(task)
    for n in eval_lengths:
        task.at_length(n)  # fail before training, not after
    saved_args = train_args(task, spec)

    optimizer = make_optimizer(spec)
    start, losses = 0, []
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        saved = read_train_args(ckpt)
        if saved != saved_args:
            raise ValueError(f"cannot resume from {ckpt}: its task/train arguments differ")
        model, opt_state, start, meta = load_checkpoint(ckpt, optimizer)
        if config_to_dict(model.config) != config_to_dict(config):
            raise ValueError(f"cannot resume from {ckpt}: its model config differs")
        if start > end:
            raise ValueError(f"checkpoint {ckpt} is at step {start}, beyond the requested {end}")
        losses = list(meta.get("loss", []))[:start]
    else:
        model = Decoder(config, rngs=nnx.Rngs(spec.seed))
        opt_state = None

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if opt_state is None:
        opt_state = optimizer.init(params)
    train_step = _train_step(graphdef, _optimizer_fields(spec))

    pending: list[jax.Array] = []  # losses not yet read back (reading syncs the device)

    def flush() -> None:
        new = [float(x) for x in pending]
        _check_finite_losses(new, len(losses), out)
        losses.extend(new)
        pending.clear()

    def checkpoint(step: int) -> None:
        if out is None:
            return
        flush()
        finite = jax.tree.reduce(
            lambda a, b: a & b, jax.tree.map(lambda p: jnp.isfinite(p).all(), params), True)
        if not bool(finite):
            raise TrainingDiverged(
                f"the parameters hold NaN or inf at step {step}: training stopped "
                f"({_kept(out)}); lower --lr"
            )
        nnx.update(model, params)
        meta = {"seed": spec.seed, "data": {"seed": spec.seed, "next_step": step}, "loss": losses}
        target = Path(out) / CHECKPOINT_DIR / f"step_{step:08d}"
        save_checkpoint(target, model, opt_state, step, meta=meta, train_args=saved_args,
                        overwrite=True)
        for old in _checkpoints(Path(out))[: -spec.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    t0 = time.perf_counter()
    bar = tqdm(total=end, initial=start, disable=not progress, desc=task.task, leave=False)
    for step in range(start, end):
        batch = batch_at_step(task, spec.seed, step, spec.batch_size)
        params, opt_state, loss = train_step(
            params, rest, opt_state, jnp.asarray(batch.tokens), jnp.asarray(batch.query_pos),
            jnp.asarray(batch.answer),
        )
        pending.append(loss)
        done = step + 1
        if done % spec.log_every == 0 or done == end:
            flush()
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        bar.update(1)
        if spec.checkpoint_every and done % spec.checkpoint_every == 0 and done < end:
            checkpoint(done)
    bar.close()
    flush()
    nnx.update(model, params)
    if end > start or ckpt is None:
        checkpoint(end)

    accuracy = evaluate(model, task, eval_lengths, spec.eval_examples, spec.seed)
    metrics = {
        "task": dataclasses.asdict(task),
        "train": spec.to_dict(),
        "config": config_to_dict(config),
        "seed": spec.seed,
        "step": end,
        "loss": losses,
        "final_loss": losses[-1] if losses else None,
        "accuracy": accuracy,
        "wall_time_s": time.perf_counter() - t0,
    }
    return model, metrics
