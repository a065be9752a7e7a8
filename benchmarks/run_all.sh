#!/usr/bin/env bash
# Run every benchmark; each prints machine-readable key=value lines.
#
#   bash benchmarks/run_all.sh                                        # CPU defaults (tens of minutes)
#   BENCH_DEVICE=cuda BENCH_ARGS="--amp --channels-last" bash benchmarks/run_all.sh
#   QUICK=1 bash benchmarks/run_all.sh                                # small sizes: a smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DEVICE=${BENCH_DEVICE:-cpu}
read -r -a EXTRA <<< "${BENCH_ARGS:-}"
if [ "${QUICK:-0}" = "1" ]; then
  STEP=(--crop 32 --repeats 2 --warmup 1)
  FAST=(--batches 2 --train-steps 5 --max-cases 2)
  DATA=(--epochs 2)
else
  STEP=()
  FAST=()
  DATA=()
fi
run() {
  echo "# $PY $*"
  "$PY" "$@"
}
run benchmarks/bench_gmd_step.py --device "$DEVICE" "${EXTRA[@]}" "${STEP[@]}"
run benchmarks/bench_fast_gmd.py --device "$DEVICE" "${EXTRA[@]}" "${FAST[@]}"
run benchmarks/bench_data.py --device "$DEVICE" "${EXTRA[@]}" "${DATA[@]}"
if [ -f benchmarks/bench_inference.py ]; then
  run benchmarks/bench_inference.py --device "$DEVICE"
fi
