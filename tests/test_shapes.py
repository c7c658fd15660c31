"""Shapes in signatures (transformer.shapes): the jaxtyping hints of the forward pass and of
the public analysis functions are checked at run time in the test suite."""

import inspect

import jax.numpy as jnp
import pytest
from flax import nnx
from jaxtyping import TypeCheckError

import analysis
from transformer import Decoder, TransformerConfig
from transformer.layers import MLP, Attention, Norm
from transformer.model import Block
from transformer.shapes import Array, Float, checks_enabled, shape_checked

CHECKED = {
    "Decoder.__call__": Decoder.__call__,
    "Decoder.embed": Decoder.embed,
    "Decoder.forward_from_embeddings": Decoder.forward_from_embeddings,
    "Decoder.unembed": Decoder.unembed,
    "Block.__call__": Block.__call__,
    "Attention.__call__": Attention.__call__,
    "MLP.__call__": MLP.__call__,
    "Norm.__call__": Norm.__call__,
    "last_token_jacobian": analysis.last_token_jacobian,
    "sensitivity_profile": analysis.sensitivity_profile,
    "estimate_sensitivity": analysis.estimate_sensitivity,
    "layer_position_map": analysis.layer_position_map,
    "block_norms": analysis.block_norms,
    "path_bound": analysis.path_bound,
    "log_path_terms": analysis.log_path_terms,
    "states_at_layer": analysis.states_at_layer,
}


def test_the_suite_checks_shapes():
    assert checks_enabled()  # tests/conftest.py sets TRANSFORMER_CHECK_SHAPES=1


@pytest.mark.parametrize("name", sorted(CHECKED))
def test_forward_and_analysis_state_their_shapes_and_are_checked(name):
    fn = CHECKED[name]
    assert getattr(fn, "__shape_checked__", False), f"{name} is not shape-checked"
    hints = " ".join(str(p.annotation) for p in inspect.signature(fn).parameters.values())
    hints += " " + str(inspect.signature(fn).return_annotation)
    assert "Float[" in hints or "Int[" in hints, f"{name} states no array shape: {hints}"


def test_a_return_value_that_breaks_its_hint_raises():
    @shape_checked
    def rows(x: Float[Array, "n m"]) -> Float[Array, " n"]:
        return x  # [n, m], not [n]

    with pytest.raises(TypeCheckError, match="return value"):
        rows(jnp.ones((2, 3)))


def test_arguments_that_break_the_hints_get_the_functions_own_error_first():
    """The function's own ValueError names the problem for a user; an input it would
    accept although it breaks the hint is a bug and raises the type-check error."""

    @shape_checked
    def pair(x: Float[Array, "n m"], y: Float[Array, "n m"]) -> Float[Array, "n m"]:
        if x.shape != y.shape:
            raise ValueError(f"x and y differ in shape: {x.shape} vs {y.shape}")
        return x + y

    with pytest.raises(ValueError, match="differ in shape"):
        pair(jnp.ones((2, 3)), jnp.ones((3, 3)))

    @shape_checked
    def lenient(x: Float[Array, "n m"]) -> Float[Array, "..."]:
        return x * 2

    with pytest.raises(TypeCheckError, match="parameters"):
        lenient(jnp.ones(3))


def test_the_models_own_input_errors_survive_the_checks():
    model = Decoder(TransformerConfig.tiny(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="integer ids"):
        model(jnp.ones(4))  # float tokens break the Int hint and the model's own check
    with pytest.raises(ValueError, match="floating point"):
        model.forward_from_embeddings(jnp.ones((3, 32), jnp.int32))
    assert model([1, 2, 3]).shape == (3, model.config.vocab_size)  # lists stay accepted
