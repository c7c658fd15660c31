"""What every check receives: the profile, the output folder, seed and dtype choices."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax

PROFILES = ("quick", "paper", "trained", "llm", "llm-long")


@dataclasses.dataclass(frozen=True)
class Profile:
    """A named set of sizes: `quick` (every check on a CPU in minutes) or `paper` (the
    paper's sizes, meant for a GPU/TPU)."""

    name: str = "quick"

    def __post_init__(self):
        if self.name not in PROFILES:
            raise ValueError(f"unknown profile {self.name!r}; choose from {', '.join(PROFILES)}")

    def pick(self, **by_profile):
        """The value for this profile: `profile.pick(quick=256, paper=4096)`."""
        if self.name not in by_profile:
            raise ValueError(f"no setting for profile {self.name!r} (have {sorted(by_profile)})")
        return by_profile[self.name]


@dataclasses.dataclass(frozen=True)
class RunContext:
    """Where figures go and which seed / dtype a check should use.

    Attributes:
        figure_dir: folder for PNGs (inside the report folder being written).
        seed: base seed; checks derive their seeds from it.
        dtype: compute dtype override for the model checks (None: each check's default).
        reduced: a smaller setting used by the test suite.
        model_path: checkpoint the `llm` profile loads (None: the bundled SmolLM2).
    """

    figure_dir: Path
    seed: int = 0
    dtype: str | None = None
    reduced: bool = False
    model_path: str | None = None

    def figure(self, name: str) -> tuple[Path, str]:
        """(absolute path to write, path relative to the report folder)."""
        self.figure_dir.mkdir(parents=True, exist_ok=True)
        return self.figure_dir / name, f"{self.figure_dir.name}/{name}"


def device_description() -> str:
    """Backend and device kind, e.g. 'cpu (1 device: cpu)'."""
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    return f"{jax.default_backend()} ({len(devices)} device(s): {', '.join(kinds)})"
