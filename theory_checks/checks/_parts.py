"""The verdict inputs of a check made of several judged parts, each with its own premise."""

from __future__ import annotations


def combined(parts: dict[str, tuple[bool, bool]]) -> tuple[bool, bool]:
    """(ok, premise_reached) of a check from its parts {name: (ok, premise_reached)}.

    A part whose premise was reached and whose criterion does not hold makes the whole check
    fail, whatever the others say (a reached premise and a failed claim is evidence, and an
    unreached premise elsewhere must not hide it). Otherwise a part whose premise was not
    reached makes the check inconclusive; otherwise it passes. Feed the pair to
    `theory_checks.result.verdict_from`.
    """
    if not parts:
        raise ValueError("a check needs at least one part")
    if any(reached and not ok for ok, reached in parts.values()):
        return False, True
    return True, all(reached for _, reached in parts.values())


def unreached(parts: dict[str, tuple[bool, bool]]) -> list[str]:
    """Names of the parts whose premise was not reached."""
    return [name for name, (_, reached) in parts.items() if not reached]
