"""What every check receives: the profile, the output folder, seed and dtype choices, and
the run's store of what its checks share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

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


class RunStore:
    """What the checks of one run share, each item made once by the first check that asks.

    The llm checks share the loaded checkpoint and the Figure 5 sweeps (R6 and R12b read
    R4's panel (a)); the trained checks share their trained models and query states. A
    store lives as long as its run (`runner.run_checks`: one per run; `run_llm_checks`: one
    per model, so one model's memory is freed before the next loads): nothing is kept in
    module globals, so a check's cost depends only on the checks run before it in the same
    run, never on what else ran in the process.
    """

    def __init__(self):
        self._items: dict[Hashable, Any] = {}

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The item stored under `key`, made by `make()` and stored on first use."""
        if key not in self._items:
            self._items[key] = make()
        return self._items[key]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)


@dataclasses.dataclass(frozen=True)
class RunContext:
    """Where figures go and which seed / dtype a check should use.

    Attributes:
        figure_dir: folder for PNGs (inside the report folder being written).
        seed: base seed; checks derive their seeds from it.
        dtype: compute dtype override for the model checks (None: each check's default).
        reduced: a smaller setting used by the test suite.
        model_path: checkpoint the `llm` profile loads (None: the bundled SmolLM2).
        store: what the run's checks share (`RunStore`; a context made with
            `dataclasses.replace` keeps its store).
        progress: called with a short text as a long check moves on (`step`).
    """

    figure_dir: Path
    seed: int = 0
    dtype: str | None = None
    reduced: bool = False
    model_path: str | None = None
    store: RunStore = dataclasses.field(default_factory=RunStore, compare=False, repr=False)
    progress: Callable[[str], None] | None = dataclasses.field(default=None, compare=False,
                                                               repr=False)

    def step(self, text: str) -> None:
        """Show where a long check is (the progress bar's postfix; nothing without a bar)."""
        if self.progress is not None:
            self.progress(text)

    def figure(self, name: str) -> tuple[Path, str]:
        """(absolute path to write, path relative to the report folder)."""
        self.figure_dir.mkdir(parents=True, exist_ok=True)
        return self.figure_dir / name, f"{self.figure_dir.name}/{name}"


def device_description() -> str:
    """Backend and device kind, e.g. 'cpu (1 device: cpu)'."""
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    return f"{jax.default_backend()} ({len(devices)} device(s): {', '.join(kinds)})"
