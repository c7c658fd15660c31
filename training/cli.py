"""`python -m training`: the command line of `training.train` (arguments, the settings they
ask for, metrics.json and the accuracy plot). A user's mistake is one line on stderr naming
the argument or file, exit status 2, nothing written; a run that diverges exits with 1."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from training.spec import TrainSpec
from training.tasks import VOCAB_SIZE, TaskSpec, sequence_length
from training.train import TrainingDiverged, train
from transformer.config import TransformerConfig


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


def run_settings(args) -> tuple[TransformerConfig, TaskSpec, TrainSpec]:
    """The model, task and training settings the parsed arguments ask for (each validated
    by its own class: ValueError naming the setting)."""
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
    return config, task, spec


def main(argv: list[str] | None = None) -> dict:
    """CLI entry point; returns the metrics it wrote."""
    args = build_parser().parse_args(argv)
    config, task, spec = run_settings(args)
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
