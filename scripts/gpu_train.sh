#!/usr/bin/env bash
# One-shot GPU run for a lent device (about 10 minutes): the paper's 1 mm model with GMD on the shipped
# split, then its 15-subset evaluation on the 3 validation cases, everything under $OUT.
#   1. measures one exact GMD step at 128^3 (bf16) to size max_epochs to TRAIN_MINUTES (default 8);
#   2. trains (bundle/configs/train_gpu.yaml) with the shipped split lists;
#   3. evaluates on the 3 validation cases (Dice/HD95 on the 1 mm grid) and prints the table.
# Needs the BraTS cases: DATA=/path/to/brats2018 (default ../shared/data/brats2018).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-work/gpu}
DATA=${DATA:-../shared/data/brats2018}
MINUTES=${TRAIN_MINUTES:-8}
mkdir -p "$OUT"
[ -d "$DATA" ] || { echo "no BraTS data at $DATA (set DATA=...)" >&2; exit 2; }
"$PY" -c "import torch; print('gpu=' + torch.cuda.get_device_name(0))" | tee "$OUT/gpu_train.txt"
STEP=$("$PY" benchmarks/bench_gmd_step.py --device cuda --crop 128 --batch 2 --methods exact --repeats 3 \
       --warmup 1 --amp --no-memory 2>/dev/null | sed -n 's/^step_time_exact_s=//p')
STEPS_PER_EPOCH=6   # 11 training cases, batch 2
EPOCHS=$("$PY" -c "import math; print(max(10, int($MINUTES * 60 / (1.15 * $STEP * $STEPS_PER_EPOCH))))")
echo "step_time_exact_s=$STEP max_epochs=$EPOCHS" | tee -a "$OUT/gpu_train.txt"
SPLIT=(--train_list bundle/configs/splits/shipped_train.txt --val_list bundle/configs/splits/shipped_val.txt)
CFG="['bundle/configs/train.yaml','bundle/configs/train_gpu.yaml']"
T0=$(date +%s)
"$PY" -m monai.bundle run training --config_file "$CFG" --dataset_dir "$DATA" "${SPLIT[@]}" \
    --max_epochs "$EPOCHS" --ckpt_dir "$OUT/models" --output_dir "$OUT/runs" > "$OUT/train.log" 2>&1
echo "train_s=$(( $(date +%s) - T0 ))" | tee -a "$OUT/gpu_train.txt"
CFG_EVAL="['bundle/configs/train.yaml','bundle/configs/train_gpu.yaml','bundle/configs/evaluate.yaml']"
"$PY" -m monai.bundle run evaluating --config_file "$CFG_EVAL" --dataset_dir "$DATA" "${SPLIT[@]}" \
    --ckpt_dir "$OUT/models" --output_dir "$OUT/runs" --eval_dir "$OUT/eval" --eval_section validation \
    > "$OUT/eval.log" 2>&1
cat "$OUT/eval/subset_table.md" | tee -a "$OUT/gpu_train.txt"
