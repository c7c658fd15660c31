"""Array shapes in signatures (jaxtyping), checked at run time where asked.

The forward pass and the public analysis functions state the shapes of what they take and
return in their type hints, in the einsum vocabulary of `transformer.layers` (b batch,
n / t positions, k keys, h heads, g key/value heads, d head dim, m model width, v vocab):

    def __call__(self, v: Float[Array, "b t m"], positions: Int[Array, "b t"]) -> ...

`shape_checked` makes those hints a run-time check when the environment variable
`TRANSFORMER_CHECK_SHAPES=1` is set when the package is imported (the test suite sets it);
otherwise it returns the function unchanged, at no cost.

Public entry points keep their own input checks, which name the problem for a user
(`ValueError: tokens must be integer ids, got dtype float32`): when an argument does not
match its hint, the checked wrapper first runs the function unchecked, so its own
ValueError is what the caller sees; only an input the function accepts although it breaks
the hint (the hint and the code disagree: a bug) raises the type-check error. A return
value that breaks its hint always raises.
"""

from __future__ import annotations

import functools
import os

from jaxtyping import Array, ArrayLike, Bool, Float, Int, Shaped  # noqa: F401  (re-exported)

ENV = "TRANSFORMER_CHECK_SHAPES"


def checks_enabled() -> bool:
    """Whether `shape_checked` checks (read when a decorated function is defined)."""
    return os.environ.get(ENV, "") == "1"


def shape_checked(fn):
    """Check `fn`'s jaxtyping hints at every call when `checks_enabled()`, else `fn` itself.

    One jaxtyping memo per call: the dimension names bind across all arguments and the
    return value (`"n m"` in two arguments must be the same n and m). Under `jax.jit` the
    check runs once, at trace time.
    """
    if not checks_enabled():
        return fn
    from beartype import beartype
    from jaxtyping import TypeCheckError, jaxtyped

    checked = jaxtyped(fn, typechecker=beartype)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return checked(*args, **kwargs)
        except TypeCheckError as err:
            if "checking the parameters" not in str(err).split("\n", 1)[0]:
                raise  # the return value breaks its hint
            # The arguments break the hints: let the function's own checks name the
            # problem (their ValueError propagates); if it accepts them, re-raise.
            fn(*args, **kwargs)
            raise

    wrapper.__shape_checked__ = True
    return wrapper
