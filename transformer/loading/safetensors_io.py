"""Read Hugging Face style checkpoints: config.json plus *.safetensors, never pickles.

The safetensors format is parsed here directly (an 8-byte little-endian header length, a
JSON header of {name: {dtype, shape, data_offsets}}, then the raw bytes) so that every
inconsistency -- a truncated file, overlapping or out-of-range offsets, an unknown dtype --
becomes a `ValueError` naming the file and the tensor, and bfloat16 tensors load through
`ml_dtypes` without torch. Tensors are memory-mapped: nothing is read until it is used.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import itertools

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}

# A header larger than this is not a real checkpoint (the reference reader uses 100 MB).
_MAX_HEADER = 100 * 1024 * 1024


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of one .safetensors file as read-only memory-mapped NumPy arrays.

    Args:
        path: the file.
    Returns:
        {tensor name: array of the stored dtype and shape}.
    Raises:
        ValueError: the file is truncated, its header is malformed, or a tensor's byte range
            does not match its dtype and shape.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        raise ValueError(f"{path}: too short to be a safetensors file ({size} bytes)")
    with open(path, "rb") as f:
        (n_header,) = struct.unpack("<Q", f.read(8))
        if n_header > _MAX_HEADER or 8 + n_header > size:
            raise ValueError(
                f"{path}: header length {n_header} does not fit in a {size}-byte file "
                "(truncated or not a safetensors file)"
            )
        try:
            header = json.loads(f.read(n_header))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: malformed safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    data_start = 8 + n_header
    data_size = size - data_start
    out: dict[str, np.ndarray] = {}
    spans = []
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except KeyError as err:
            raise ValueError(f"{path}: tensor {name!r} has an unknown or missing {err}") from None
        n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end - begin != n_bytes or begin < 0:
            raise ValueError(
                f"{path}: tensor {name!r} spans bytes [{begin}, {end}) but dtype "
                f"{info['dtype']} and shape {list(shape)} need {n_bytes} bytes"
            )
        if end > data_size:
            raise ValueError(
                f"{path}: tensor {name!r} ends at byte {end} but the file holds only "
                f"{data_size} data bytes (truncated file)"
            )
        spans.append((begin, end, name))
        if n_bytes == 0:
            out[name] = np.zeros(shape, dtype)
        else:
            out[name] = np.memmap(
                path, dtype=dtype, mode="r", offset=data_start + begin, shape=shape
            )
    spans.sort()
    for (b0, e0, n0), (b1, _, n1) in itertools.pairwise(spans):
        if b1 < e0:
            raise ValueError(f"{path}: tensors {n0!r} and {n1!r} overlap")
    return out


def read_checkpoint_dir(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """config.json and every tensor of a Hugging Face style checkpoint directory.

    A sharded checkpoint (model.safetensors.index.json) must list exactly the tensors its
    shards hold; a single file is read directly.

    Args:
        path: the directory.
    Returns:
        (the parsed config.json, {tensor name: memory-mapped array}).
    Raises:
        ValueError: no config.json, no safetensors (e.g. only pickle-based .bin/.pt files,
            which are never loaded), a tensor in two shards, or an index that disagrees
            with its shards.
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path}: no config.json (not a Hugging Face checkpoint directory)")
    hf_config = json.loads(config_file.read_text())
    index_file = path / "model.safetensors.index.json"
    if index_file.is_file():
        weight_map = json.loads(index_file.read_text()).get("weight_map")
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
