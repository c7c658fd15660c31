"""Read Hugging Face style checkpoints: config.json plus *.safetensors, never pickles.

Files are read with the `safetensors` library (`safe_open`, NumPy framework: bfloat16
tensors come back as `ml_dtypes.bfloat16` arrays, no torch needed). Whatever the library
refuses -- a truncated file, a malformed header, overlapping or out-of-range offsets, an
unknown dtype -- becomes a `ValueError` naming the file (and the tensor, where the library
names it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of one .safetensors file as NumPy arrays.

    Args:
        path: the file.
    Returns:
        {tensor name: array of the stored dtype and shape}.
    Raises:
        ValueError: no such file, or the library cannot read it (truncated, malformed
            header, byte ranges that do not match the dtypes and shapes).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such safetensors file")
    try:
        with safe_open(path, framework="np") as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except SafetensorError as err:
        raise ValueError(
            f"{path}: not a readable safetensors file (truncated or corrupt?): {err}"
        ) from None


def read_json(path: str | os.PathLike, *, required: tuple[str, ...] = ()) -> dict:
    """A JSON object from a file, or ValueError naming the file and the problem: missing,
    unreadable, cut off or garbled (with the line and column), not an object, or lacking
    one of the `required` keys."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot be read ({err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        # A file cut short ends inside a string or with brackets left open.
        opened = text.count("{") + text.count("[") - text.count("}") - text.count("]")
        cut_off = opened > 0 or err.pos >= len(text.rstrip())
        cut = " (cut off?)" if cut_off or err.msg.startswith("Unterminated") else ""
        raise ValueError(
            f"{path}: not valid JSON{cut}: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(f"{path}: required key(s) missing: {', '.join(map(repr, missing))}")
    return data


def read_checkpoint_dir(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """config.json and every tensor of a Hugging Face style checkpoint directory.

    A sharded checkpoint (model.safetensors.index.json) must list exactly the tensors its
    shards hold; a single file is read directly.

    Args:
        path: the directory.
    Returns:
        (the parsed config.json, {tensor name: array}).
    Raises:
        ValueError: no config.json, no safetensors (e.g. only pickle-based .bin/.pt files,
            which are never loaded), a tensor in two shards, or an index that disagrees
            with its shards.
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path}: no config.json (not a Hugging Face checkpoint directory)")
    hf_config = read_json(config_file, required=("model_type",))
    index_file = path / "model.safetensors.index.json"
    if index_file.is_file():
        weight_map = read_json(index_file).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index_file}: no 'weight_map'")
        files = sorted(set(weight_map.values()))
    else:
        files = sorted(p.name for p in path.glob("*.safetensors"))
        weight_map = None
    if not files:
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
        hint = (
            f" (found {', '.join(pickled)}: pickle-based weights are never loaded; convert "
            "them to safetensors)"
            if pickled
            else ""
        )
        raise ValueError(f"{path}: no .safetensors weights{hint}")
    tensors: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    for name in files:
        shard = path / name
        if not shard.is_file():
            raise ValueError(f"{path}: shard {name} listed in the index is missing")
        for key, array in read_safetensors(shard).items():
            if key in tensors:
                raise ValueError(
                    f"{path}: tensor {key!r} is stored in both {origin[key]} and {name}"
                )
            tensors[key], origin[key] = array, name
    if weight_map is not None:
        for key, name in weight_map.items():
            if origin.get(key) != name:
                raise ValueError(
                    f"{index_file}: tensor {key!r} is indexed in {name} but "
                    f"{'found in ' + origin[key] if key in origin else 'missing from every shard'}"
                )
        unindexed = sorted(set(tensors) - set(weight_map))
        if unindexed:
            raise ValueError(f"{index_file}: tensors not in the index: {unindexed[:5]}")
    return hf_config, tensors
