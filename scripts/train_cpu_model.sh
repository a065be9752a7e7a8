#!/usr/bin/env bash
# Train -- or resume -- the shipped CPU model: GMD + DS with the CPU recipe (bundle/configs/train_cpu.yaml)
# on 11 of the 14 BraTS 2018 cases of ../shared, validated on 3 named cases (bundle/configs/splits/).
# Resumable: run it again after a kill, a reboot or the end of a session and it continues the same run
# (latest.pt) to the same final epoch. Progress, elapsed time and ETA: one line per epoch in $RUN/train.log.
#
#   nohup bash scripts/train_cpu_model.sh > /dev/null 2>&1 &        # GMD, into work/cpu_model/gmd
#   METHOD=mean MAX_EPOCHS=600 VAL_INTERVAL=50 TIME_LIMIT_S=5661 \
#       bash scripts/train_cpu_model.sh                             # the baseline, same recipe, GMD's time
#   tail -f work/cpu_model/gmd/train.log
#
# Then scripts/evaluate_cpu_model.sh evaluates the best model on all 15 subsets.
set -euo pipefail
cd "$(dirname "$0")/.."
METHOD=${METHOD:-gmd}
DATA=${DATA:-../shared/data/brats2018}
RUN=${RUN:-work/cpu_model/$METHOD}
PY=${PY:-.venv/bin/python}
EXTRA=("$@")
if [ ! -d "$DATA" ]; then
    echo "no BraTS data at $DATA (set DATA=/path/to/BraTS2018)" >&2
    exit 2
fi
mkdir -p "$RUN"
RESUME=False
[ -f "$RUN/models/latest.pt" ] && RESUME=True
{
    echo "# $(date -Is) method=$METHOD resume=$RESUME host=$(hostname) threads=${OMP_NUM_THREADS:-default} ${EXTRA[*]:-}"
} >> "$RUN/train.log"
ARGS=(--dataset_dir "$DATA"
      --train_list bundle/configs/splits/shipped_train.txt --val_list bundle/configs/splits/shipped_val.txt
      --ckpt_dir "$RUN/models" --output_dir "$RUN/runs" --method "$METHOD" --resume "$RESUME")
[ -n "${MAX_EPOCHS:-}" ] && ARGS+=(--max_epochs "$MAX_EPOCHS")
[ -n "${VAL_INTERVAL:-}" ] && ARGS+=(--val_interval "$VAL_INTERVAL")
CONFIGS="'bundle/configs/train.yaml','bundle/configs/train_cpu.yaml'"
if [ -n "${TIME_LIMIT_S:-}" ]; then   # a wall-clock budget (time_limit.yaml), summed over resumed segments
    CONFIGS="$CONFIGS,'bundle/configs/time_limit.yaml'"
    ARGS+=(--time_limit_s "$TIME_LIMIT_S")
fi
exec "$PY" -m monai.bundle run training \
    --config_file "[$CONFIGS]" \
    "${ARGS[@]}" "${EXTRA[@]}" >> "$RUN/train.log" 2>&1
