#!/usr/bin/env bash
# Serve this bundle with MONAI Label's `monaibundle` app (needs `pip install monailabel` and trained
# weights in bundle/models/model.pt). Usage: bash bundle/docs/run_monailabel.sh STUDIES_DIR [extra args]
# STUDIES_DIR holds one image per case: a 4-D NIfTI (T1, T1ce, T2, FLAIR) or BraTS-named modality files.
# Listens on 127.0.0.1 (HOST=0.0.0.0 to serve other machines: put it behind authentication first) and
# takes the model list from this bundle only (zoo_source github: nothing is fetched at start).
# MONAILABEL=/path/to/venv/bin/monailabel chooses the installation (default: the one on PATH).
set -euo pipefail
BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STUDIES="${1:?give the studies folder}"; shift || true
WORK="${MONAILABEL_WORKDIR:-$BUNDLE/../monailabel_app}"
NAME="gmd_ds_brats"
MONAILABEL="${MONAILABEL:-monailabel}"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
if [ ! -d "$WORK/monaibundle" ]; then
    mkdir -p "$WORK" && cd "$WORK"
    "$MONAILABEL" apps --download --name monaibundle --output .
fi
mkdir -p "$WORK/monaibundle/model"
ln -sfn "$BUNDLE" "$WORK/monaibundle/model/$NAME"
cd "$WORK"
"$MONAILABEL" start_server --app monaibundle --studies "$STUDIES" --host "$HOST" --port "$PORT" \
    --conf models "$NAME" --conf zoo_source github "$@"
