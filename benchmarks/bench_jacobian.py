"""Benchmark (1): the full last-token Jacobian d y_n / d v^(0) [d_model, n, d_model].

Three implementations on the SAME weights (a transformers LlamaForCausalLM saved with
save_pretrained and loaded into our Decoder), float32:

- ours:  `analysis.jacobian.last_token_jacobian` (one linearisation, chunked vmapped VJPs,
  last layer on the last query row only);
- torch: `torch.func.jacrev` of `model.model(inputs_embeds=x).last_hidden_state[0, -1]`
  (the final-normed state of the last position, the same y_n);
- naive: a Python loop of d_model jitted single VJPs (each one a full forward + backward).

First checks that the three Jacobians agree (max |difference| / max |J|), then times each
(median of repeats after one warm-up call; compile time reported separately).

Run: python benchmarks/bench_jacobian.py [--smoke] [--n 128 256] [--out DIR]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import (
    BENCH_HF,
    SMOKE_HF,
    median_time,
    parse_common,
    table,
    twin_models,
    write_json,
)


def naive_jacobian_fn(model):
    """J by a loop of d_out jitted single VJPs, each a full forward and backward pass."""
    from flax import nnx

    graphdef, state = nnx.split(model)

    @jax.jit
    def row(state, v, k):
        m = nnx.merge(graphdef, state)
        return jax.grad(lambda x: m.forward_from_embeddings(x).y[-1, k])(v)  # [n, m]

    def run(v):
        return jnp.stack([row(state, v, k) for k in range(model.config.d_model)])

    return run


def torch_jacobian_fn(hf):
    """J by torch.func.jacrev through the HF model (inputs_embeds -> final-normed last row)."""
    import torch

    def f(x):  # x: [n, m]
        return hf.model(inputs_embeds=x[None]).last_hidden_state[0, -1]

    jac = torch.func.jacrev(f)

    def run(x):
        with torch.no_grad():  # jacrev builds its own graph; no outer autograd tape
            return jac(x)  # [m, n, m]

    return run


def main(argv=None):
    parser = parse_common(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--n", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--torch-max-n", type=int, default=128,
                        help="run torch jacrev only up to this n (it may run out of memory)")
    parser.add_argument("--chunk", type=int, default=None, help="ours: chunk_size (None: auto)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive VJP loop")
    parser.add_argument("--torch-device", default=None,
                        help="torch device (default: cuda when jax runs on a GPU, else cpu)")
    args = parser.parse_args(argv)
    import torch

    from analysis.jacobian import last_token_jacobian

    hf_kwargs = SMOKE_HF if args.smoke else BENCH_HF
    ns = [16] if args.smoke else args.n
    hf, model = twin_models(hf_kwargs)
    tdev = args.torch_device or ("cuda" if jax.default_backend() == "gpu" else "cpu")
    hf = hf.to(tdev)
    m = model.config.d_model
    rows, results = [], []
    for n in ns:
        rng = np.random.default_rng(n)
        tokens = rng.integers(0, model.config.vocab_size, n)
        v0 = np.asarray(model.embed(jnp.asarray(tokens, jnp.int32)), np.float32)  # [n, m]
        v0_j = jnp.asarray(v0)
        ours = lambda: last_token_jacobian(model, v0_j, chunk_size=args.chunk)  # noqa: E731
        t0 = time.perf_counter()
        j_ours = np.asarray(ours())
        first_ours = time.perf_counter() - t0
        scale = float(np.abs(j_ours).max())
        rec = dict(n=n, d_model=m, scale_max_abs_J=scale, torch_device=tdev,
                   chunk_size=args.chunk or "auto")
        rec["ours"] = median_time(ours, repeats=args.repeats, warmup=0)
        rec["ours"]["first_call_s"] = first_ours
        if not args.no_naive:
            naive = naive_jacobian_fn(model)
            t0 = time.perf_counter()
            j_naive = np.asarray(naive(v0_j))
            first_naive = time.perf_counter() - t0
            rec["rel_diff_naive"] = float(np.abs(j_ours - j_naive).max() / scale)
            rec["naive_jax_loop"] = median_time(
                lambda: naive(v0_j), repeats=max(1, args.repeats - 1), warmup=0
            )
            rec["naive_jax_loop"]["first_call_s"] = first_naive
            rec["speedup_vs_naive"] = rec["naive_jax_loop"]["median_s"] / rec["ours"]["median_s"]
        if n <= args.torch_max_n:
            x = torch.tensor(v0, device=tdev)
            tj = torch_jacobian_fn(hf)
            try:
                t0 = time.perf_counter()
                j_torch = tj(x).cpu().numpy()
                first_torch = time.perf_counter() - t0
                rec["rel_diff_torch"] = float(np.abs(j_ours - j_torch).max() / scale)
                sync = torch.cuda.synchronize if tdev.startswith("cuda") else (lambda: None)
                rec["torch_jacrev"] = median_time(
                    lambda: (tj(x), sync())[0], repeats=args.repeats, warmup=0
                )
                rec["torch_jacrev"]["first_call_s"] = first_torch
                rec["speedup_vs_torch"] = (
                    rec["torch_jacrev"]["median_s"] / rec["ours"]["median_s"]
                )
            except (RuntimeError, MemoryError) as err:  # torch OOM is a RuntimeError
                rec["torch_jacrev"] = dict(error=f"{type(err).__name__}: {err}"[:300])
        else:
            rec["torch_jacrev"] = dict(error=f"skipped (n > --torch-max-n={args.torch_max_n})")
        results.append(rec)
        rows.append(dict(
            n=n,
            ours_s=rec["ours"]["median_s"],
            ours_compile_s=rec["ours"]["first_call_s"] - rec["ours"]["median_s"],
            torch_s=rec["torch_jacrev"].get("median_s"),
            naive_s=rec.get("naive_jax_loop", {}).get("median_s"),
            x_torch=rec.get("speedup_vs_torch"),
            x_naive=rec.get("speedup_vs_naive"),
            reldiff_torch=rec.get("rel_diff_torch"),
            reldiff_naive=rec.get("rel_diff_naive"),
        ))
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print()
    print(table(rows, list(rows[0])))
    path = write_json(
        "jacobian_smoke" if args.smoke else "jacobian",
        dict(config=hf_kwargs, dtype="float32", results=results,
             note="times in seconds; medians after a warm-up call; rel_diff = max|dJ|/max|J|"),
        args.out,
    )
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
