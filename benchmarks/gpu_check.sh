#!/usr/bin/env bash
# The GPU checks of issue 5 as ONE short run (for a lent device; about 5-8 minutes on one H200):
#   bash benchmarks/gpu_check.sh            # prints key=value lines; also written to $OUT/gpu_check.txt
# 1. exact vs naive GMD, fast vs plain, peak memory: float32, then bf16 AMP + channels-last (with
#    amp_vs_fp32_grad_cosine: AMP within tolerance of float32), at the paper's 128^3 crop;
# 2. inference seconds per case for 1-4 modalities (needs ../shared; skipped otherwise);
# 3. data-wait fraction of the bundle's training loop with AMP.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
LOG=${OUT:-.}/gpu_check.txt
run() {
  echo "# $*" | tee -a "$LOG"
  timeout "${STEP_TIMEOUT:-240}" "$PY" "$@" 2>&1 | grep -E '^[a-z_0-9]+=' | tee -a "$LOG"
}
"$PY" -c "import torch; print('gpu=' + torch.cuda.get_device_name(0))" | tee -a "$LOG"
run benchmarks/bench_gmd_step.py --device cuda --crop 128 --repeats 5 --warmup 2
run benchmarks/bench_gmd_step.py --device cuda --crop 128 --repeats 5 --warmup 2 --amp --channels-last
run benchmarks/bench_inference.py --device cuda
run benchmarks/bench_data.py --device cuda --amp
