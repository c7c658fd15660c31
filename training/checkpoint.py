"""Atomic safetensors checkpoints of a `Decoder`, its optimizer state and training state.

A checkpoint is a directory:

    params.safetensors      every parameter, named by its path ("blocks.0.attn.wq")
    opt_state.safetensors   every optimizer-state leaf, named "<index>:<path>" (optional)
    config.json             the `TransformerConfig` fields
    state.json              {"step": int, **meta} (data stream state, loss history, ...)
    train_args.json         the task and training specs (optional, written by `train`)

It is written into a temporary sibling directory and renamed into place only once every
file is complete and flushed, so an interrupted save never leaves a half-written
checkpoint under the final name. Arrays round-trip bit for bit (dtype included).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import numpy as st_numpy

from training.spec import TrainSpec, make_optimizer
from transformer.config import TransformerConfig
from transformer.loading.safetensors_io import read_json, read_safetensors
from transformer.model import Decoder

PARAMS_FILE = "params.safetensors"
OPT_FILE = "opt_state.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
TRAIN_ARGS_FILE = "train_args.json"


class Checkpoint(NamedTuple):
    """What `load_checkpoint` returns (unpacks as model, opt_state, step, meta)."""

    model: Decoder
    opt_state: Any
    step: int
    meta: dict


# ---- naming pytree leaves by path ------------------------------------------------------------


def _key_name(key) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def flatten_named(tree) -> dict[str, np.ndarray]:
    """Leaves of a pytree as {dotted path: numpy array}.

    nnx Variables flatten to a trailing ".value" key, which is dropped so parameter names
    read as "blocks.0.attn.wq".
    """
    out: dict[str, np.ndarray] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = [_key_name(k) for k in path]
        if parts and parts[-1] == "value":
            parts = parts[:-1]
        name = ".".join(parts) or "root"
        if name in out:
            raise ValueError(f"two leaves share the name {name!r}")
        out[name] = np.asarray(leaf)
    return out


def unflatten_named(template, arrays: dict[str, np.ndarray], what: str):
    """Fill a template pytree with named arrays, checking names, shapes and dtypes.

    Args:
        template: a pytree (concrete or `jax.ShapeDtypeStruct` leaves) with the target
            structure.
        arrays: {name: array} as written by `flatten_named`.
        what: a label for error messages.
    Returns:
        The template's structure with jnp arrays from `arrays`.
    """
    names = list(flatten_named(jax.tree.map(lambda x: np.zeros((), np.int8), template)))
    leaves, treedef = jax.tree.flatten(template)
    missing = sorted(set(names) - set(arrays))
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        raise ValueError(
            f"{what}: checkpoint does not match; missing {missing}, unexpected {extra}"
        )
    new = []
    for name, leaf in zip(names, leaves):
        arr = arrays[name]
        if tuple(arr.shape) != tuple(leaf.shape) or np.dtype(arr.dtype) != np.dtype(leaf.dtype):
            raise ValueError(
                f"{what}: {name} has shape {arr.shape} and dtype {arr.dtype} in the checkpoint "
                f"but {tuple(leaf.shape)} and {leaf.dtype} in the model"
            )
        new.append(jnp.asarray(arr))
    return jax.tree.unflatten(treedef, new)


# ---- config <-> json ---------------------------------------------------------------------------


def config_to_dict(config: TransformerConfig) -> dict:
    """JSON-ready fields of a config (tuples, e.g. per-layer windows, become lists)."""
    d = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def config_from_dict(d: dict, source: str = "config.json") -> TransformerConfig:
    """Inverse of `config_to_dict` (validated by the config itself); errors name `source`."""
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}  # JSON lists
    fields = dataclasses.fields(TransformerConfig)
    unknown = sorted(set(d) - {f.name for f in fields})
    if unknown:
        raise ValueError(f"{source} has fields TransformerConfig does not know: {unknown}")
    missing = [f.name for f in fields if f.name not in d and f.default is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{source}: required key(s) missing: {', '.join(map(repr, missing))}")
    try:
        return TransformerConfig(**d)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


# ---- save / load -----------------------------------------------------------------------------


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, obj) -> None:
    _write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _opt_arrays(opt_state) -> dict[str, np.ndarray]:
    # An index prefix keeps names unique and ordered even where optax paths repeat.
    return {f"{i:05d}:{k}": v for i, (k, v) in enumerate(flatten_named(opt_state).items())}


def save_checkpoint(
    path: str | os.PathLike,
    model: Decoder,
    opt_state=None,
    step: int = 0,
    *,
    meta: dict | None = None,
    train_args: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint directory atomically (temporary sibling, then rename).

    Args:
        path: the checkpoint directory to create.
        model: the decoder; its parameters are stored under their paths.
        opt_state: optional optax state (any pytree of arrays).
        step: the number of optimizer steps taken.
        meta: extra JSON-serialisable training state (stored in state.json with the step).
        train_args: JSON-serialisable task/training arguments (train_args.json).
        overwrite: replace an existing checkpoint at `path` (otherwise ValueError).
    Returns:
        The checkpoint path.
    """
    path = Path(path)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    if path.exists() and not overwrite:
        raise ValueError(f"checkpoint {path} already exists (pass overwrite=True)")
    meta = dict(meta or {})
    if "step" in meta:
        raise ValueError("meta must not contain 'step' (it is stored separately)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        params = flatten_named(nnx.state(model, nnx.Param))
        _write_bytes(tmp / PARAMS_FILE, st_numpy.save(params))
        if opt_state is not None:
            _write_bytes(tmp / OPT_FILE, st_numpy.save(_opt_arrays(opt_state)))
        _write_json(tmp / CONFIG_FILE, config_to_dict(model.config))
        if train_args is not None:
            _write_json(tmp / TRAIN_ARGS_FILE, train_args)
        _write_json(tmp / STATE_FILE, {"step": int(step), **meta})
        if path.exists():
            # Swap: the old checkpoint stays complete until the new one is in place.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, optimizer=None) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`.

    Args:
        path: the checkpoint directory.
        optimizer: the optax `GradientTransformation` whose state was saved; it gives the
            state's structure. None: rebuilt from train_args.json when present
            (`training.spec.make_optimizer`), else the optimizer state is not loaded.
    Returns:
        `Checkpoint(model, opt_state, step, meta)`; opt_state is None when the checkpoint
        has none or no optimizer could be built. Parameters and optimizer state are
        bit-identical to what was saved.
    """
    path = Path(path)
    if not (path / PARAMS_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        raise ValueError(f"{path} is not a checkpoint (no {PARAMS_FILE} / {CONFIG_FILE})")
    config = config_from_dict(read_json(path / CONFIG_FILE), str(path / CONFIG_FILE))
    state = read_json(path / STATE_FILE, required=("step",))
    step = state.pop("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"{path / STATE_FILE}: 'step' must be a non-negative integer, "
                         f"got {step!r}")

    model = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    template = nnx.state(model, nnx.Param)
    params = unflatten_named(template, read_safetensors(path / PARAMS_FILE),
                             f"{path / PARAMS_FILE}")
    _check_finite_arrays(params, path / PARAMS_FILE)
    nnx.update(model, params)

    opt_state = None
    if (path / OPT_FILE).is_file():
        if optimizer is None and (path / TRAIN_ARGS_FILE).is_file():
            args = read_json(path / TRAIN_ARGS_FILE, required=("train",))
            optimizer = make_optimizer(TrainSpec.from_dict(args["train"]))
        if optimizer is not None:
            opt_template = jax.eval_shape(optimizer.init, params)
            arrays = read_safetensors(path / OPT_FILE)
            names = _opt_arrays(jax.tree.map(lambda x: np.zeros((), np.int8), opt_template))
            if sorted(names) != sorted(arrays):
                raise ValueError(
                    f"{path / OPT_FILE}: does not match the optimizer; saved "
                    f"{sorted(arrays)[:5]}..., expected {sorted(names)[:5]}..."
                )
            # Strip the index prefix back to plain paths for `unflatten_named`.
            plain = {k.split(":", 1)[1]: v for k, v in arrays.items()}
            opt_state = unflatten_named(opt_template, plain, f"{path / OPT_FILE}")
    return Checkpoint(model=model, opt_state=opt_state, step=step, meta=state)


def read_train_args(path: str | os.PathLike) -> dict | None:
    """train_args.json of a checkpoint, or None when it has none."""
    f = Path(path) / TRAIN_ARGS_FILE
    return read_json(f) if f.is_file() else None


def _check_finite_arrays(tree, source) -> None:
    """ValueError naming the first parameter holding NaN or inf (a checkpoint of a diverged
    run must not be resumed or analysed as if it were a model)."""
    for name, array in flatten_named(tree).items():
        if not np.isfinite(np.asarray(array, np.float64)).all():
            raise ValueError(f"{source}: parameter {name} holds NaN or inf")
