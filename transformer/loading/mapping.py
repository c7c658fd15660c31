"""Generic machinery shared by the architecture converters.

An architecture module turns a checkpoint's config into a `TransformerConfig` and lists
`Spec`s: for every decoder parameter, which checkpoint tensors (with which shapes) make it
and how. `assemble` checks the whole list against the checkpoint -- missing, extra and
mis-shaped tensors are errors naming them -- and only then builds the model, so nothing is
ever half-loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from transformer.config import TransformerConfig
from transformer.model import Decoder

# Hugging Face activation names -> decoder activations. "gelu_new" and
# "gelu_pytorch_tanh" are both the tanh approximation.
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "silu": "silu",
    "swish": "silu",
    "relu": "relu",
}


@dataclasses.dataclass(frozen=True)
class Spec:
    """One decoder parameter made from checkpoint tensors.

    target: path in `nnx.state(model, nnx.Param)`, e.g. ("blocks", 0, "attn", "wq").
    sources: checkpoint tensor names (after the prefix is stripped).
    shapes: the shape each source must have.
    convert: float32 source arrays -> the parameter in the decoder's layout.
    """

    target: tuple
    sources: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    convert: Callable[..., np.ndarray] = lambda x: x


def activation(name: str | None, where: str) -> str:
    """The decoder activation for a Hugging Face activation name (ValueError if unknown)."""
    if name not in HF_ACTIVATIONS:
        raise ValueError(
            f"{where}: unsupported activation {name!r} (supported: {sorted(HF_ACTIVATIONS)})"
        )
    return HF_ACTIVATIONS[name]


# RoPE scalings the decoder has no switch for, refused by name (rope_switches).
UNSUPPORTED_ROPE = {
    "yarn": "YaRN",
    "dynamic": "dynamic NTK",
    "longrope": "LongRoPE",
    "su": "LongRoPE ('su')",
    "proportional": "proportional",
}


def rope_switches(hf: Mapping, layer_type: str | None = None, default_theta=10_000.0) -> dict:
    """The decoder's RoPE switches (rope_theta, rope_linear_factor, rope_llama3,
    rope_fraction) from a config's rope settings.

    Reads both the transformers>=5 `rope_parameters` dict (optionally keyed by layer type;
    it may hold partial_rotary_factor) and the transformers 4.x top-level fields
    (`rope_theta` / `rope_scaling`, `partial_rotary_factor`; GPT-NeoX's `rotary_emb_base`
    and `rotary_pct`). Types "default", "linear" and "llama3" are implemented; YaRN,
    dynamic NTK, LongRoPE and any other type are a ValueError naming it.
    """
    params = hf.get("rope_parameters")
    if isinstance(params, Mapping) and layer_type is not None and layer_type in params:
        params = params[layer_type]
    if not isinstance(params, Mapping):
        params = dict(hf.get("rope_scaling") or {})
        params.setdefault("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base",
                                                                    default_theta)))
    params = dict(params)
    theta = float(params.get("rope_theta", hf.get("rope_theta", default_theta)))
    fraction = params.get("partial_rotary_factor",
                          hf.get("partial_rotary_factor", hf.get("rotary_pct", 1.0)))
    out = dict(rope_theta=theta, rope_linear_factor=1.0, rope_llama3=None,
               rope_fraction=float(1.0 if fraction is None else fraction))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return out
    if kind == "linear":
        return dict(out, rope_linear_factor=float(params["factor"]))
    if kind == "llama3":
        missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor",
                               "original_max_position_embeddings") if k not in params]
        if missing:
            raise ValueError(f"rope scaling 'llama3' without {missing} ({params})")
        return dict(out, rope_llama3=(
            float(params["factor"]), float(params["low_freq_factor"]),
            float(params["high_freq_factor"]), int(params["original_max_position_embeddings"]),
        ))
    name = UNSUPPORTED_ROPE.get(kind, repr(kind))
    raise ValueError(
        f"unsupported rope scaling {kind!r} ({params}): {name} scaling is not implemented; "
        "only 'default', 'linear' and 'llama3' are (YaRN, dynamic NTK and LongRoPE are not)"
    )


def rope_parameters(hf: Mapping, layer_type: str | None = None, default_theta=10_000.0):
    """(theta, linear scaling factor) from a config's rope settings (`rope_switches`), for
    the architectures that have neither Llama 3 scaling nor partial rotary.

    Raises:
        ValueError: any rope type but "default" and "linear", naming it.
    """
    switches = rope_switches(hf, layer_type, default_theta)
    if switches["rope_llama3"] is not None:
        raise ValueError("unsupported rope scaling 'llama3' for this architecture")
    return switches["rope_theta"], switches["rope_linear_factor"]


def check_unsupported(hf: Mapping, where: str, **expected) -> None:
    """ValueError when a config field has a value the decoder does not implement.

    Args:
        expected: field name -> the value(s) that are fine (a tuple lists several); a field
            absent from the config is fine.
    """
    for key, ok in expected.items():
        if key not in hf:
            continue
        allowed = ok if isinstance(ok, tuple) else (ok,)
        if hf[key] not in allowed:
            raise ValueError(f"{where}: unsupported setting {key}={hf[key]!r}")


def windows_from_layer_types(hf: Mapping, n_layers: int, where: str):
    """Per-layer window tuple from `layer_types` + `sliding_window` (None when all global).

    Hugging Face's mask keeps keys with k > q - sliding_window, i.e. q - k < W: exactly the
    decoder's `window` convention, so W carries over unchanged.
    """
    layer_types = hf["layer_types"]
    if len(layer_types) != n_layers:
        raise ValueError(
            f"{where}: layer_types has {len(layer_types)} entries, expected {n_layers}"
        )
    windows = []
    for kind in layer_types:
        if kind == "full_attention":
            windows.append(None)
        elif kind == "sliding_attention":
            if not hf.get("sliding_window"):
                raise ValueError(f"{where}: sliding_attention layers but no sliding_window")
            windows.append(int(hf["sliding_window"]))
        else:
            raise ValueError(f"{where}: unsupported layer type {kind!r}")
    return tuple(windows) if any(w is not None for w in windows) else None


# ---- common layout conversions ---------------------------------------------------------


def linear_to_heads(n_heads: int, d_head: int):
    """torch Linear weight [h*d, m] -> [m, h, d] (q/k/v projections)."""
    return lambda w: w.T.reshape(w.shape[1], n_heads, d_head)


def linear_to_out_heads(n_heads: int, d_head: int):
    """torch Linear weight [m, h*d] -> [h, d, m] (the output projection)."""
    return lambda w: w.T.reshape(n_heads, d_head, w.shape[0])


def bias_to_heads(n_heads: int, d_head: int):
    """[h*d] -> [h, d]."""
    return lambda b: b.reshape(n_heads, d_head)


def transpose(w: np.ndarray) -> np.ndarray:
    """torch Linear weight [out, in] -> [in, out]."""
    return w.T


# ---- assembly ----------------------------------------------------------------------------


def find_prefix(tensors: Mapping[str, np.ndarray], prefixes: Sequence[str], probe: str) -> str:
    """The first prefix p with p + probe in the checkpoint (ValueError if none)."""
    for prefix in prefixes:
        if prefix + probe in tensors:
            return prefix
    raise ValueError(
        f"checkpoint has no {probe!r} under any of the prefixes {list(prefixes)}; "
        f"first tensors: {sorted(tensors)[:5]}"
    )


def assemble(
    config: TransformerConfig,
    specs: Sequence[Spec],
    tensors: Mapping[str, np.ndarray],
    *,
    prefix: str = "",
    ignore: Callable[[str], bool] = lambda name: False,
) -> Decoder:
    """Build a `Decoder` whose every parameter comes from the checkpoint.

    Every check runs before any array is placed in the model: the returned model is
    complete, and on error no model is returned.

    Args:
        config: the decoder configuration.
        specs: one `Spec` per decoder parameter.
        tensors: checkpoint tensors by full name.
        prefix: prepended to every spec source name (e.g. "model.").
        ignore: checkpoint names that may be left unused (non-parameter buffers).
    Returns:
        The loaded `Decoder` (parameters in `config.param_dtype`).
    Raises:
        ValueError: naming missing, extra or mis-shaped tensors.
    """
    abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    flat = list(nnx.to_flat_state(nnx.state(abstract, nnx.Param)))
    by_target = {}
    for spec in specs:
        if spec.target in by_target:
            raise ValueError(f"two specs for parameter {spec.target}")  # a converter bug
        by_target[spec.target] = spec
    targets = {path for path, _ in flat}
    unmapped = sorted(map(str, targets - set(by_target)))
    stray = sorted(map(str, set(by_target) - targets))
    if unmapped or stray:  # a converter bug, not a checkpoint problem
        raise ValueError(f"converter mismatch: unmapped {unmapped}, unknown targets {stray}")

    used = set()
    missing, misshaped = [], []
    for spec in specs:
        for name, shape in zip(spec.sources, spec.shapes, strict=True):
            full = prefix + name
            if full not in tensors:
                missing.append(full)
            elif tuple(tensors[full].shape) != tuple(shape):
                misshaped.append(f"{full}: {list(tensors[full].shape)}, expected {list(shape)}")
            used.add(full)
    extra = sorted(n for n in tensors if n not in used and not ignore(n))
    problems = []
    if missing:
        problems.append(f"missing tensors {missing}")
    if misshaped:
        problems.append(f"mis-shaped tensors {misshaped}")
    if extra:
        problems.append(f"unexpected tensors {extra}")
    if problems:
        raise ValueError("checkpoint does not match the config: " + "; ".join(problems))

    pdt = config.params_dtype
    new = []
    for path, variable in flat:
        spec = by_target[path]
        arrays = [np.asarray(tensors[prefix + n], dtype=np.float32) for n in spec.sources]
        value = np.asarray(spec.convert(*arrays))
        want = variable.get_value().shape
        if value.shape != tuple(want):  # a converter bug
            raise ValueError(f"converter produced {value.shape} for {path}, expected {want}")
        new.append((path, variable.replace(jnp.asarray(value, dtype=pdt))))
    nnx.update(abstract, nnx.from_flat_state(new))
    return abstract


def norm_specs(target: tuple, weight: str | None, bias: str | None, width: int, config):
    """Specs of one decoder `Norm` from checkpoint weight (and bias) names."""
    specs = []
    if config.norm in ("layernorm", "rmsnorm"):
        specs.append(Spec((*target, "scale"), (weight,), ((width,),)))
    if config.norm == "layernorm" and config.norm_bias:
        specs.append(Spec((*target, "bias"), (bias,), ((width,),)))
    return specs
