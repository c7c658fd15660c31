"""Small decoders trained with optax on the paper's task probes (copying, counting).

`training.tasks` generates the probes, `training.train` trains a `transformer.Decoder` on
them, `training.evaluate` measures its accuracy per length, `training.checkpoint` saves and
restores runs atomically. The package imports the model; the model never imports it.

CLI: `python -m training --task copy_last --steps 500 --out runs/copy_last`.
"""

from training.checkpoint import load_checkpoint, save_checkpoint
from training.spec import TrainSpec, make_optimizer
from training.tasks import TaskSpec, make_batch
from training.train import evaluate, train

__all__ = [
    "TaskSpec", "TrainSpec", "evaluate", "load_checkpoint", "make_batch", "make_optimizer",
    "save_checkpoint", "train",
]
