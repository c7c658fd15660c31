"""Models the checks build: seeded, explicit about sizes and dtypes (reported with results)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from transformer import Decoder, TransformerConfig

F64 = dict(dtype="float64", param_dtype="float64", softmax_dtype="float64")


def random_model(seed: int, *, std: float | None = None, **overrides) -> Decoder:
    """A randomly initialised decoder; `std` rescales every weight matrix (Gaussian q/k/v).

    Args:
        seed: parameter seed.
        std: if given, every parameter with ndim >= 2 is redrawn N(0, std^2) so that
            attention is far from uniform (default init gives nearly uniform patterns).
        **overrides: TransformerConfig fields (sizes default to `TransformerConfig.tiny`).
    """
    model = Decoder(TransformerConfig.tiny(**overrides), rngs=nnx.Rngs(seed))
    if std is not None:
        state = nnx.state(model, nnx.Param)
        leaves, treedef = jax.tree.flatten(state)
        keys = jax.random.split(jax.random.key(seed + 1_000_003), len(leaves))
        leaves = [
            (std * jax.random.normal(k, x.shape, jnp.float32)).astype(x.dtype) if x.ndim >= 2 else x
            for k, x in zip(keys, leaves)
        ]
        nnx.update(model, jax.tree.unflatten(treedef, leaves))
    return model


def random_tokens(seed: int, n: int, vocab_size: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, n)


def describe(model: Decoder) -> str:
    from theory_checks.report.plotting import ENCODING_NAMES

    c = model.config
    heads = f"{c.n_heads} head" + ("s" if c.n_heads != 1 else "")
    if c.n_kv_heads != c.n_heads:
        heads += f" ({c.n_kv_heads} key/value head" + ("s" if c.n_kv_heads != 1 else "") + ")"
    return (
        f"{c.n_layers}-layer decoder, d_model {c.d_model}, {heads}, d_mlp {c.d_mlp}, "
        f"{ENCODING_NAMES.get(c.pos_encoding, c.pos_encoding)}, {c.norm} "
        f"({c.norm_placement}), dtype {c.dtype}"
    )
