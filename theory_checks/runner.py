"""Run a selection of checks in one profile and collect their results."""

from __future__ import annotations

import dataclasses
import gc
import importlib
import time
from pathlib import Path

import jax

from transformer import placement
from theory_checks.context import Profile, RunContext, device_description
from theory_checks.result import CheckResult

# Result id -> module of theory_checks (a family sub-package: synthetic, trained, llm, studies)
# exposing `run(profile, ctx) -> CheckResult`. The `quick` and `paper` profiles run the
# synthetic checks (at different sizes).
CHECKS = {
    "R1": "synthetic.r01_last_weight",
    "R2": "synthetic.r02_total_variation",
    "R3": "synthetic.r03_alternating",
    "R4": "synthetic.r04_collapse",
    "R5": "synthetic.r05_counting_collapse",
    "R6": "synthetic.r06_precision",
    "R7": "synthetic.r07_path_bound",
    "R8": "synthetic.r08_deep_limit",
    "R9": "synthetic.r09_spectra",
    "R10": "synthetic.r10_no_positions",
    "R11": "synthetic.r11_u_shape",
    "R12": "synthetic.r12_mitigations",
    # Beyond the paper: the next steps its authors and others published.
    "M1": "synthetic.m1_softmax_switches",
}


# Profiles with experiments of their own (trained toy models, real LLMs) map the result
# ids they speak to onto their own modules.
PROFILE_CHECKS: dict[str, dict[str, str]] = {
    "quick": CHECKS,
    "paper": CHECKS,
    # Small decoders trained on the paper's task probes (theory_checks/trained/).
    "trained": {"R5": "trained.counting", "R11": "trained.copying", "R12": "trained.mitigations"},
    # Real checkpoints (theory_checks/llm/; default: every bundled model installed,
    # --model PATH repeatable), each check once per model.
    "llm": {"R4": "llm.collapse", "R5": "llm.tasks", "R6": "llm.precision",
            "R11": "llm.sensitivity", "R12": "llm.commas", "R12b": "llm.windows"},
    # The real-model over-squashing study at long context (S1; ~20 min per model on a CPU),
    # run like the llm profile: each check once per model.
    "llm-long": {"S1": "studies.oversquashing"},
}
# Profiles whose checks run once per real model (`run_llm_checks`).
LLM_PROFILES = ("llm", "llm-long")


def checks_for(profile: Profile) -> dict[str, str]:
    """Result id -> check module name for one profile."""
    return PROFILE_CHECKS[profile.name]


def parse_only(only: str | None, profile: Profile | None = None) -> list[str]:
    """'R4,R7' -> ['R4', 'R7'] (validated, any case, in paper order); None -> every id."""
    available = checks_for(profile or Profile())
    if only is None:
        return list(available)
    wanted = [part.strip().upper() for part in only.split(",") if part.strip()]
    if not wanted:  # "--only ," or "--only ''" would run nothing and write an empty report
        raise ValueError(f"--only {only!r} names no check; known: {', '.join(available)}")
    unknown = [w for w in wanted if w not in {cid.upper() for cid in available}]
    if unknown:
        raise ValueError(f"unknown check id(s) {unknown}; known: {', '.join(available)}")
    return [cid for cid in available if cid.upper() in wanted]


def run_check(cid: str, profile: Profile, ctx: RunContext) -> CheckResult:
    """Run one check with full-precision matmuls, stamping device and runtime."""
    module = importlib.import_module(f"theory_checks.{checks_for(profile)[cid]}")
    start = time.perf_counter()
    placement.reset_log()
    # Whatever the backend's default (TPU/H100 run float32 matmuls as bf16/TF32 passes),
    # the checks compare against float32/float64 numbers: full precision everywhere.
    with jax.default_matmul_precision("highest"):
        result = module.run(profile, ctx)
    runtime = time.perf_counter() - start
    if result.id != cid:
        raise RuntimeError(f"check module {module.__name__} returned id {result.id}, not {cid}")
    return dataclasses.replace(
        result, device=device_description(), runtime_s=runtime,
        placement=placement.placements(),
    )


def release_compiled() -> None:
    """Drop JAX's compiled programs (and what only they held). Every CPU executable holds
    memory mappings; a profile that compiles many programs in one process passed the
    kernel's per-process limit (vm.max_map_count, 65530) and XLA segfaulted, so the
    runners release them after every check: the next check recompiles what it needs."""
    jax.clear_caches()
    gc.collect()


def run_checks(
    ids: list[str],
    profile: Profile,
    figure_dir: Path,
    *,
    seed: int = 0,
    dtype: str | None = None,
    reduced: bool = False,
    progress: bool = True,
    model_path: str | None = None,
    after_check=release_compiled,
) -> list[CheckResult]:
    """Run the checks `ids` of a synthetic profile in one context; `after_check()` runs
    after each (default: release the compiled programs; None keeps them)."""
    results = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ids), unit="check", desc="theory checks")
    current = [""]
    ctx = RunContext(
        figure_dir=figure_dir, seed=seed, dtype=dtype, reduced=reduced, model_path=model_path,
        progress=None if bar is None else (
            lambda text: bar.set_postfix_str(f"{current[0]}: {text}")),
    )
    for cid in ids:
        current[0] = cid
        if bar is not None:
            bar.set_postfix_str(cid)
        results.append(run_check(cid, profile, ctx))
        if after_check is not None:
            after_check()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return results


class ModelUnavailable(ValueError):
    """A model given with --model could not be located or loaded."""


def run_llm_checks(
    ids: list[str],
    figure_dir: Path,
    *,
    profile: Profile | None = None,
    models: list[str] | None = None,
    seed: int = 0,
    dtype: str | None = None,
    reduced: bool = False,
    progress: bool = True,
) -> tuple[list[CheckResult], list[dict[str, str]]]:
    """The `llm` and `llm-long` profiles: every check on every model, one model in memory
    at a time.

    Args:
        ids: check ids of the profile.
        profile: `Profile("llm")` (the default) or `Profile("llm-long")`.
        models: checkpoint paths (--model, repeatable); None: every bundled model whose
            package is installed (`transformer.loading.installed_models`).
    Returns:
        (results, one per check and model, in model order; the bundled models that could not
        be loaded: {"model", "origin", "reason"} each, skipped, so that one model's missing
        loader does not stop the others).
    Raises:
        ModelUnavailable: a model given explicitly cannot be loaded, or no model can.
    """
    from theory_checks import llm as L

    profile = profile or Profile("llm")
    if profile.name not in LLM_PROFILES:
        raise ValueError(f"run_llm_checks runs {LLM_PROFILES}, not {profile.name!r}")
    sources = L.model_sources(models)
    results: list[CheckResult] = []
    unavailable: list[dict[str, str]] = []
    current = [""]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ids) * len(sources), unit="check", desc=f"{profile.name} checks")
    for source in sources:
        try:
            ctx = RunContext(figure_dir=figure_dir, seed=seed, dtype=dtype, reduced=reduced,
                             model_path=str(source.locate()), progress=None if bar is None
                             else (lambda text, s=source.label: bar.set_postfix_str(
                                 f"{s} {current[0]}: {text}")))
            L.llm_for(ctx)  # loaded once, into this model's own store
        except (ValueError, OSError, ImportError) as err:
            if source.explicit:
                raise ModelUnavailable(f"--model {source.origin}: {err}") from err
            unavailable.append({"model": source.label, "origin": source.origin,
                                "reason": f"{type(err).__name__}: {err}"})
            if bar is not None:
                bar.update(len(ids))
            continue
        for cid in ids:
            current[0] = cid
            if bar is not None:
                bar.set_postfix_str(f"{source.label} {cid}")
            results.append(run_check(cid, profile, ctx))
            release_compiled()
            if bar is not None:
                bar.update(1)
        del ctx  # the model and its sweeps go before the next model loads
    if bar is not None:
        bar.close()
    if not results:
        reasons = "; ".join(f"{u['model']}: {u['reason']}" for u in unavailable)
        raise ModelUnavailable(f"no model of the llm profile could be loaded ({reasons})")
    return results, unavailable
