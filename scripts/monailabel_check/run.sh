#!/usr/bin/env bash
# make monailabel-check: this bundle served by a real MONAI Label server, checked end to end.
# Builds its own venv (.venv-monailabel, pinned by scripts/monailabel_check/constraints.txt; rebuilt when
# that file, requirements.txt or pyproject.toml change), then runs check.py with it. Offline after the
# install; reads BraTS cases from ../shared/data/brats2018 (BRATS_DIR=... to use another folder).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/scripts/monailabel_check"
VENV="${MONAILABEL_VENV:-$ROOT/.venv-monailabel}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.installed"
cd "$ROOT"
if [ ! -f "$STAMP" ] || [ "$HERE/constraints.txt" -nt "$STAMP" ] || [ "$HERE/requirements.txt" -nt "$STAMP" ] \
        || [ pyproject.toml -nt "$STAMP" ]; then
    echo "monailabel-check: building $VENV (about 3 minutes)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet -c "$HERE/constraints.txt" -e .
    "$VENV/bin/pip" install --quiet -c "$HERE/constraints.txt" -r "$HERE/requirements.txt"
    "$VENV/bin/pip" install --quiet --no-deps -c "$HERE/constraints.txt" monailabel pydicom-seg
    touch "$STAMP"
fi
# torchvision: MONAI Label imports two of its functions at module level; where no build matching this
# torch can be installed, a clearly labelled test-environment stand-in provides them (never shipped)
if ! "$VENV/bin/python" -c "import torchvision.utils" 2>/dev/null; then
    echo "monailabel-check: torchvision does not import here; using the test-environment stand-in"
    export PYTHONPATH="$HERE/test_env_standin${PYTHONPATH:+:$PYTHONPATH}"
fi
exec timeout "${MONAILABEL_CHECK_TIMEOUT:-1800}" "$VENV/bin/python" "$HERE/check.py" "$@"
