#!/usr/bin/env bash
# One-shot GPU run for a lent device: the paper's 1 mm model with GMD on the shipped split, then its
# 15-subset evaluation on the 3 validation cases. On one H200 the lease's call running it took 464 s with
# the default TRAIN_MINUTES=6.5 (benchmarks/results/gpu_model/); a lease prepares it with scripts/device_pack.sh.
#   1. measures one exact GMD step at 128^3 (bf16) to size max_epochs to TRAIN_MINUTES;
#   2. trains (bundle/configs/train_gpu.yaml) with the shipped split lists; time_limit.yaml stops it at
#      TRAIN_MINUTES of trainer time whatever the estimate said, so the run ends on time;
#   3. evaluates the best checkpoint on the 3 validation cases (Dice/HD95 on the 1 mm grid).
# Everything is written under WORK (default $OUT); with WORK elsewhere, $OUT receives only what a lease
# returns (at most 8 files): gpu_train.txt, train.log, eval.log, model.pt and results.tgz (the CSVs,
# tables and JSON records), copied as soon as each exists.
# Needs the BraTS cases: DATA=/path/to/brats2018 (default ../shared/data/brats2018).
# Extra arguments go to both bundle commands (a CPU smoke test: STEP=1 TRAIN_MINUTES=0.5 bash
# scripts/gpu_train.sh --roi_size "[32,32,32]" --model_pixdim "[3,3,3]" --amp false).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-work/gpu}
WORK=${WORK:-$OUT}
DATA=${DATA:-../shared/data/brats2018}
MINUTES=${TRAIN_MINUTES:-6.5}
WORKERS=${NUM_WORKERS:-$(( $(nproc) > 16 ? 8 : ($(nproc) + 1) / 2 ))}
mkdir -p "$OUT" "$WORK"
[ -d "$DATA" ] || { echo "no BraTS data at $DATA (set DATA=...)" >&2; exit 2; }
REC="$OUT/gpu_train.txt"
ship() { [ "$WORK" = "$OUT" ] || cp "$@" "$OUT/"; }
"$PY" -c "import torch; print('gpu=' + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'))" \
    | tee "$REC"
if [ -z "${STEP:-}" ]; then
  # the repository on the path: the benchmark imports gmd_monai, which a bare python3 has not installed
  STEP=$(PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" benchmarks/bench_gmd_step.py --device cuda \
         --crop 128 --batch 2 --methods exact --repeats 3 --warmup 1 --amp --no-memory 2>/dev/null \
         | sed -n 's/^step_time_exact_s=//p' || true)
  [ -n "$STEP" ] || { STEP=0.5; echo "step benchmark failed: assuming $STEP s" | tee -a "$REC"; }
fi
STEPS_PER_EPOCH=6   # 11 training cases, batch 2
# 1.5x the bare step: data waits and the validations (about 8 over the run) share the budget
EPOCHS=$("$PY" -c "import math; print(max(10, int($MINUTES * 60 / (1.5 * $STEP * $STEPS_PER_EPOCH))))")
VAL_INTERVAL=$(( EPOCHS / 8 > 1 ? EPOCHS / 8 : 1 ))
LIMIT_S=$("$PY" -c "print(int($MINUTES * 60))")
echo "step_time_exact_s=$STEP max_epochs=$EPOCHS val_interval=$VAL_INTERVAL time_limit_s=$LIMIT_S" \
     "num_workers=$WORKERS" | tee -a "$REC"
SPLIT=(--train_list bundle/configs/splits/shipped_train.txt --val_list bundle/configs/splits/shipped_val.txt)
CFGS="'bundle/configs/train.yaml','bundle/configs/train_gpu.yaml','bundle/configs/time_limit.yaml'"
T0=$(date +%s)
"$PY" -m monai.bundle run training --config_file "[$CFGS]" --dataset_dir "$DATA" "${SPLIT[@]}" \
    --max_epochs "$EPOCHS" --val_interval "$VAL_INTERVAL" --time_limit_s "$LIMIT_S" --num_workers "$WORKERS" \
    --ckpt_dir "$WORK/models" --output_dir "$WORK/runs" "$@" > "$OUT/train.log" 2>&1
echo "train_s=$(( $(date +%s) - T0 ))" | tee -a "$REC"
CKPT="$WORK/models/model.pt"   # the best validation checkpoint; the final weights if none was validated
[ -f "$CKPT" ] || CKPT="$WORK/models/final.pt"
ship "$CKPT"
echo "evaluated_checkpoint=$(basename "$CKPT")" | tee -a "$REC"
T0=$(date +%s)
"$PY" -m monai.bundle run evaluating --config_file "[$CFGS,'bundle/configs/evaluate.yaml']" \
    --dataset_dir "$DATA" "${SPLIT[@]}" --num_workers "$WORKERS" --checkpoint "$CKPT" \
    --ckpt_dir "$WORK/models" --output_dir "$WORK/runs" --eval_dir "$WORK/eval" --eval_section validation \
    "$@" > "$OUT/eval.log" 2>&1
echo "eval_s=$(( $(date +%s) - T0 ))" | tee -a "$REC"
cat "$WORK/eval/subset_table.md" | tee -a "$REC"
if [ "$WORK" != "$OUT" ]; then
  (cd "$WORK" && tar -czf - eval/*.csv eval/*.md eval/*.png runs/*.csv runs/*.json models/*.json \
      models/subset_summary.csv 2>/dev/null) > "$OUT/results.tgz" || true
fi
