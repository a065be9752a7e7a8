#!/usr/bin/env bash
# Serve this bundle with MONAI Label's `monaibundle` app (needs `pip install monailabel` and trained
# weights in bundle/models/model.pt). Usage: bash bundle/docs/run_monailabel.sh STUDIES_DIR [extra args]
# STUDIES_DIR holds one image per case: a 4-D NIfTI (T1, T1ce, T2, FLAIR) or BraTS-named modality files.
set -euo pipefail
BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STUDIES="${1:?give the studies folder}"; shift || true
WORK="${MONAILABEL_WORKDIR:-$BUNDLE/../monailabel_app}"
NAME="gmd_ds_brats"
if [ ! -d "$WORK/monaibundle" ]; then
    mkdir -p "$WORK" && cd "$WORK"
    monailabel apps --download --name monaibundle --output .
fi
mkdir -p "$WORK/monaibundle/model"
ln -sfn "$BUNDLE" "$WORK/monaibundle/model/$NAME"
cd "$WORK"
monailabel start_server --app monaibundle --studies "$STUDIES" --conf models "$NAME" "$@"
