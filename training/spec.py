"""Optimisation settings (`TrainSpec`) and the optimizer they define (AdamW on a warm-up +
cosine schedule with global-norm clipping). Its own module so that checkpoints can rebuild
a run's optimizer without importing the train loop."""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """Optimisation and bookkeeping settings.

    Attributes:
        steps: total optimizer steps (the cosine schedule spans them).
        batch_size: examples per step.
        learning_rate: peak learning rate, reached after `warmup_steps` linear steps.
        warmup_steps: in [0, steps).
        min_lr_ratio: the cosine decays to learning_rate * min_lr_ratio at `steps`.
        weight_decay: AdamW decoupled decay, on matrices only (ndim >= 2).
        clip_norm: global gradient-norm clip.
        b1, b2: Adam moments.
        seed: model initialisation and data stream.
        log_every: steps between loss read-outs (progress bar).
        checkpoint_every: steps between checkpoints (None: only at the end of a run).
        keep_checkpoints: how many latest checkpoints to keep.
        eval_lengths: lengths to evaluate after training (None: min_len..max_len of the
            task, at most 16 of them).
        eval_examples: examples per evaluated length.
    """

    steps: int = 500
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    b1: float = 0.9
    b2: float = 0.98
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    eval_lengths: tuple[int, ...] | None = None
    eval_examples: int = 256

    def __post_init__(self):
        for field in dataclasses.fields(self):  # every float setting, including later ones
            value = getattr(self, field.name)
            if field.type == "float" and not (
                isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                raise ValueError(f"{field.name} must be a finite number, got {value!r}")
        for name in ("steps", "batch_size", "log_every", "keep_checkpoints", "eval_examples"):
            _check_int(name, getattr(self, name), 1)
        _check_int("warmup_steps", self.warmup_steps, 0)
        _check_int("seed", self.seed, 0)
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be below steps={self.steps}")
        if self.checkpoint_every is not None:
            _check_int("checkpoint_every", self.checkpoint_every, 1)
        for name in ("learning_rate", "clip_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative, got {self.weight_decay}")
        if not (0.0 <= self.b1 < 1.0 and 0.0 <= self.b2 < 1.0):
            raise ValueError(f"b1 and b2 must lie in [0, 1), got {self.b1}, {self.b2}")
        if self.eval_lengths is not None:
            object.__setattr__(self, "eval_lengths", tuple(self.eval_lengths))
            if not self.eval_lengths:
                raise ValueError("eval_lengths is empty")
            for n in self.eval_lengths:
                _check_int("eval length", n, 1)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["eval_lengths"] is not None:
            d["eval_lengths"] = list(d["eval_lengths"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSpec":
        d = dict(d)
        if d.get("eval_lengths") is not None:
            d["eval_lengths"] = tuple(d["eval_lengths"])
        return cls(**d)


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def make_optimizer(spec: TrainSpec) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW on a warm-up + cosine schedule.

    Weight decay skips vectors (norm scales, biases): decaying them towards 0 fights the
    norms' unit initialisation for no regularisation benefit.
    """
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=spec.learning_rate,
        warmup_steps=spec.warmup_steps,
        decay_steps=spec.steps,
        end_value=spec.learning_rate * spec.min_lr_ratio,
    )
    return optax.chain(
        optax.clip_by_global_norm(spec.clip_norm),
        optax.adamw(
            schedule,
            b1=spec.b1,
            b2=spec.b2,
            weight_decay=spec.weight_decay,
            mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params),
        ),
    )
