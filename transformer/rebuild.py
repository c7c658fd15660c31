"""`rebuild`: a model's weights under another config (R6's formats, R10's masks and
positions, R12b's windows all compare one set of weights under several configs)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from transformer import placement
from transformer.model import Decoder


def _shapes(state) -> dict[str, tuple[int, ...]]:
    """{parameter path: shape} of an nnx parameter state."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in flat}


def rebuild(model: Decoder, **changes) -> Decoder:
    """The same weights under a config with `changes` (precision, mask, positions, windows...).

    Any change of `TransformerConfig` fields is accepted as long as the new config has exactly
    the model's parameters with the same shapes: dtypes, softmax and matmul precision, the
    causal mask, sliding windows, RoPE bases, and a switch between the positional encodings
    that carry no parameters (none / sinusoidal / rope / alibi). A change that would add,
    drop or reshape a parameter (d_model, n_layers, learned positions, a norm with a bias...)
    is refused.

    Args:
        model: a decoder (not modified).
        **changes: `TransformerConfig` fields and their new values.
    Returns:
        A new `Decoder` with the changed config whose parameters are the model's, cast to the
        new `param_dtype` (unchanged arrays, not copies, when the dtype stays) and placed on
        the new compute dtype's device (`transformer.placement`).
    Raises:
        ValueError: an unknown or invalid config field, or a change that alters the
            parameters (the message names the first parameters concerned).
    """
    try:
        config = model.config.replace(**changes)
    except TypeError as err:  # an unknown field
        raise ValueError(f"rebuild: {err}") from None
    target = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    have = _shapes(nnx.state(model, nnx.Param))
    want = _shapes(nnx.state(target, nnx.Param))
    if have != want:
        problems = [f"{k} is new" for k in want if k not in have]
        problems += [f"{k} is dropped" for k in have if k not in want]
        problems += [f"{k} changes shape {have[k]} -> {want[k]}"
                     for k in want if k in have and have[k] != want[k]]
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        raise ValueError(
            f"rebuild({', '.join(f'{k}={v!r}' for k, v in changes.items())}) changes the "
            f"model's parameters ({shown}): the same weights cannot serve that config"
        )
    pdt = config.params_dtype
    state = jax.tree.map(lambda a: jnp.asarray(a).astype(pdt), nnx.state(model, nnx.Param))
    nnx.update(target, placement.place(state, config.compute_dtype))
    return target
