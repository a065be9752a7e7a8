#!/usr/bin/env bash
# Serve this bundle with MONAI Label, using the bundle's own app (bundle/monailabel/main.py: MONAI Label's
# monaibundle app reduced to this bundle, naming the label map's real values and fine-tuning the served
# weights on /train). Usage: bash bundle/docs/run_monailabel.sh STUDIES_DIR [extra start_server args]
# STUDIES_DIR holds one image per case: a 4-D NIfTI (T1, T1ce, T2, FLAIR) or BraTS-named modality files.
# Listens on 127.0.0.1 (HOST=0.0.0.0 to serve other machines: put it behind authentication first);
# fetches nothing. MONAILABEL_PYTHON=/path/to/venv/bin/python chooses the environment that has monailabel
# and gmd-monai (default: python3 on PATH); `make monailabel-check` builds and tests one (.venv-monailabel).
set -euo pipefail
BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STUDIES="${1:?give the studies folder}"; shift || true
PY="${MONAILABEL_PYTHON:-python3}"
if ! "$PY" -c "import monailabel" 2>/dev/null; then
    echo "run_monailabel.sh: $PY cannot import monailabel (set MONAILABEL_PYTHON)" >&2
    exit 2
fi
exec "$PY" -m monailabel.main start_server --app "$BUNDLE/monailabel" --studies "$STUDIES" \
    --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" "$@"
