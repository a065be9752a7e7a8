#!/usr/bin/env bash
# Evaluate a model trained by scripts/train_cpu_model.sh on all 15 modality subsets of its 3 validation
# cases: hard Dice and HD95 on each case's own 1 mm grid (the network runs at the model's grid, recorded
# with its weights). Writes $RUN/eval/{per_case.csv,subset_summary.csv,subset_table.md,subset_dice.png}
# and copies subset_summary.csv next to the weights.
#
#   bash scripts/evaluate_cpu_model.sh                     # work/cpu_model/gmd
#   METHOD=mean bash scripts/evaluate_cpu_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
METHOD=${METHOD:-gmd}
DATA=${DATA:-../shared/data/brats2018}
RUN=${RUN:-work/cpu_model/$METHOD}
PY=${PY:-.venv/bin/python}
exec "$PY" -m monai.bundle run evaluating \
    --config_file "['bundle/configs/train.yaml','bundle/configs/train_cpu.yaml','bundle/configs/evaluate.yaml']" \
    --dataset_dir "$DATA" \
    --train_list bundle/configs/splits/shipped_train.txt --val_list bundle/configs/splits/shipped_val.txt \
    --ckpt_dir "$RUN/models" --output_dir "$RUN/runs" --eval_dir "$RUN/eval" --eval_section validation "$@"
