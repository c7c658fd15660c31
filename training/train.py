"""Train a decoder on one synthetic task (training.tasks) with optax; evaluate per length.

The paper's task probes (shared/PAPER.md: copying and counting, accuracy against length;
R5, R12) need models trained on short sequences and evaluated on longer ones. Here:

- AdamW with linear warm-up and cosine decay, global-norm gradient clipping, one
  jit-compiled step on fixed shapes (right-padded batches, the loss read at the query).
- Deterministic: parameters come from `nnx.Rngs(seed)` and the batch of step s from
  (seed, s) alone, so equal seeds give bit-identical parameters, and stopping after N
  steps, checkpointing, restoring and training on gives bit-identical parameters to an
  uninterrupted run.
- Checkpoints (training.checkpoint) under `out/checkpoints/step_XXXXXXXX`, each written
  atomically; `resume=True` continues from the latest one.

CLI:
    python -m training --task copy_last --steps 500 --out runs/copy_last \
        --min-len 4 --max-len 16 --eval-lengths 4 8 16 32 64
writes out/metrics.json (loss curve, accuracy per length, config, seed, args), a plot
out/accuracy.png and prints a summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shutil
import sys
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
from training.tasks import VOCAB_SIZE, TaskSpec, batch_at_step, sequence_length
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
    train_args = {"task": dataclasses.asdict(task), "train": spec.to_dict()}

    optimizer = make_optimizer(spec)
    start, losses = 0, []
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        saved = read_train_args(ckpt)
        if saved != train_args:
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
        save_checkpoint(target, model, opt_state, step, meta=meta, train_args=train_args,
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


# ---- reporting ---------------------------------------------------------------------------------


def plot_accuracy(metrics: dict, path: str | os.PathLike) -> Path:
    """PNG of accuracy against length, the training range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = {int(k): v for k, v in metrics["accuracy"].items()}
    lengths = sorted(acc)
    task = metrics["task"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.axvspan(task["min_len"], task["max_len"], color="0.9", label="training lengths")
    ax.plot(lengths, [acc[n] for n in lengths], "o-", label="exact match")
    ax.set_xlabel("length n (elements)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    extras = []
    if task.get("sep_every"):
        extras.append(f"sep every {task['sep_every']}")
    if task.get("pattern", "constant") != "constant":
        extras.append(task["pattern"])
    suffix = f" ({', '.join(extras)})" if extras else ""
    ax.set_title(f"{task['task']}{suffix}, seed {metrics['seed']}, {metrics['step']} steps")
    ax.legend(loc="lower left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _json_metrics(metrics: dict) -> dict:
    out = dict(metrics)
    out["accuracy"] = {str(k): v for k, v in metrics["accuracy"].items()}
    return out


def _parse_lengths(values: list[str]) -> tuple[int, ...]:
    """Ints and inclusive ranges 'a:b' or 'a:b:step'."""
    out: list[int] = []
    for v in values:
        parts = v.split(":")
        try:
            if len(parts) == 1:
                out.append(int(v))
            elif len(parts) in (2, 3):
                a, b = int(parts[0]), int(parts[1])
                step = int(parts[2]) if len(parts) == 3 else 1
                out.extend(range(a, b + 1, step))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"cannot read length {v!r}: use N, A:B or A:B:STEP") from None
    return tuple(out)


class OneLineErrors(argparse.ArgumentParser):
    """A user's mistake is one line on stderr naming the argument, and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def finite_float(text: str) -> float:
    """argparse type: a finite number ('nan' and 'inf' parse as floats, and train to NaN)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrors(
        prog="python -m training",
        description="Train a small decoder on a copying/counting task and plot accuracy "
        "against length (Barbero et al. 2024, task probes).",
    )
    p.add_argument("--task", required=True)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--min-len", type=int, default=4)
    p.add_argument("--max-len", type=int, default=16)
    p.add_argument("--sep-every", type=int, default=None)
    p.add_argument("--pattern", default="constant")
    p.add_argument("--p-one", type=finite_float, default=0.7)
    p.add_argument("--eval-lengths", nargs="+", default=None, help="N, A:B or A:B:STEP")
    p.add_argument("--eval-examples", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=finite_float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--min-lr-ratio", type=finite_float, default=0.1)
    p.add_argument("--weight-decay", type=finite_float, default=0.01)
    p.add_argument("--clip", type=finite_float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue from out/checkpoints")
    p.add_argument("--stop-at", type=int, default=None, help="stop early (resumable)")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--d-mlp", type=int, default=None)
    p.add_argument("--pos-encoding", default="rope")
    p.add_argument("--norm", default="layernorm")
    p.add_argument("--window", type=int, default=None)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> dict:
    """CLI entry point; returns the metrics it wrote."""
    args = build_parser().parse_args(argv)
    task = TaskSpec(
        task=args.task, min_len=args.min_len, max_len=args.max_len, sep_every=args.sep_every,
        pattern=args.pattern, p_one=args.p_one,
    )
    eval_lengths = _parse_lengths(args.eval_lengths) if args.eval_lengths else None
    spec = TrainSpec(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
        warmup_steps=args.warmup, min_lr_ratio=args.min_lr_ratio,
        weight_decay=args.weight_decay, clip_norm=args.clip, seed=args.seed,
        checkpoint_every=args.checkpoint_every, eval_lengths=eval_lengths,
        eval_examples=args.eval_examples,
    )
    longest = max((eval_lengths or ()) + (task.max_len,))
    config = TransformerConfig(
        vocab_size=VOCAB_SIZE, d_model=args.d_model, n_layers=args.n_layers,
        n_heads=args.n_heads, d_mlp=args.d_mlp, pos_encoding=args.pos_encoding, norm=args.norm,
        window=args.window, dtype=args.dtype, param_dtype=args.dtype,
        max_len=max(2048, sequence_length(task, longest)),
    )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    _, metrics = train(
        config, task, spec, out=out, progress=not args.no_progress, resume=args.resume,
        stop_at=args.stop_at,
    )
    metrics["args"] = vars(args)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(_json_metrics(metrics), indent=2) + "\n")
    plot_accuracy(metrics, out / "accuracy.png")
    acc = metrics["accuracy"]
    inside = [v for n, v in acc.items() if task.min_len <= n <= task.max_len]
    beyond = {n: v for n, v in acc.items() if n > task.max_len}
    final = metrics["final_loss"]
    print(f"{task.task}: {metrics['step']} steps, seed {spec.seed}, final loss "
          f"{'n/a' if final is None else f'{final:.4f}'}, "
          f"{metrics['wall_time_s']:.1f} s")
    if inside:
        print(f"  accuracy at training lengths {task.min_len}-{task.max_len}: "
              f"mean {np.mean(inside):.3f}")
    if beyond:
        print("  beyond: " + ", ".join(f"n={n}: {v:.3f}" for n, v in sorted(beyond.items())))
    print(f"  wrote {out / 'metrics.json'} and {out / 'accuracy.png'}")
    return metrics


def cli(argv: list[str] | None = None) -> int:
    """The command line: exit status 2 with a one-line message on bad arguments (and a
    checkpoint that cannot be resumed), 1 when training diverges."""
    try:
        main(argv)
    except ValueError as err:
        print(f"python -m training: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"python -m training: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
