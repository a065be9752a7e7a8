#!/usr/bin/env bash
# Developers only: prepare a lent GPU machine's run of scripts/gpu_train.sh (this workplace's `device`
# tool). Such a machine has PyTorch but not our other packages, cannot fetch anything, and a call carries
# at most 64 MiB of files: the repository (~10 MB) plus what `carry` names. The 14 BraTS cases are
# 109 MB as .nii.gz, so they travel losslessly as two xz archives of the uncompressed NIfTI files
# (~45 + 43 MB), one per call, into /tmp/brats of the same warm machine (it is given back 30 s after a
# call: make the second call at once).
#
#   bash scripts/device_pack.sh            # writes .devdata/ and .whl/ (both git-ignored locally)
#   device run: bash .devdata/call1.sh     carry .devdata/a.tar.xz .devdata/call1.sh .devdata/call2.sh
#                                                .devdata/SimpleITK_stub.py .whl        (about 25 s)
#   device run: bash .devdata/call2.sh     carry .devdata/b.tar.xz .devdata/call2.sh  (TRAIN_MINUTES + 2 min)
#
# SimpleITK's 2.5.7 wheel (52.8 MB) does not fit; training and evaluation do not use it, so a stand-in lets
# gmd_monai.inference import (its module-level sitk constants) and fails loudly on any real use.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/brats2018}
[ -d "$DATA" ] || { echo "no BraTS data at $DATA (set DATA=...)" >&2; exit 2; }
for p in /.devdata/ /.whl/; do
    grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude
done
mkdir -p .devdata .whl
# the packages the device image lacks, pinned as in constraints.txt, for its Python 3.12
PKGS=()
for n in monai nibabel pytorch-ignite fire termcolor torchjd; do
    PKGS+=("$(grep -i "^$n==" constraints.txt)")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${PKGS[@]}"
cat > .devdata/SimpleITK_stub.py <<'EOF'
# Device stand-in: lets gmd_monai.inference import (module-level sitk constants); any real use fails loudly.
def __getattr__(name):
    if name.startswith("sitk"):
        return -1
    raise RuntimeError(f"SimpleITK.{name} used: not available on the device")
EOF
INSTALL='python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
cp .devdata/SimpleITK_stub.py /tmp/site/SimpleITK.py'
cat > .devdata/call1.sh <<EOF
set -e
$INSTALL
mkdir -p /tmp/brats && xz -T0 -dc .devdata/a.tar.xz | tar -xf - -C /tmp/brats
echo cases=\$(ls /tmp/brats | wc -l)
PYTHONPATH=/tmp/site:\$PWD python3 -c "import torch, monai, gmd_monai.engine, gmd_monai.inference.model; \\
print('torch', torch.__version__, 'monai', monai.__version__, torch.cuda.get_device_name(0))"
EOF
cat > .devdata/call2.sh <<EOF
set -e
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
[ -f /tmp/site/SimpleITK.py ] || { echo "a fresh machine: call1.sh's packages and cases are gone; rerun it"; exit 3; }
mkdir -p /tmp/brats && xz -T0 -dc .devdata/b.tar.xz | tar -xf - -C /tmp/brats
n=\$(ls /tmp/brats | wc -l); echo cases=\$n
[ "\$n" -eq 14 ] || { echo "only \$n cases"; exit 3; }
OUT=\$OUT WORK=/tmp/gpuwork DATA=/tmp/brats PYTHON=python3 bash scripts/gpu_train.sh
EOF
# the cases in two halves of about equal size, as uncompressed NIfTI (xz packed the 14 cases into
# 88 MB, against 109 MB as .nii.gz); skipped when both archives exist (delete them after changing DATA)
if [ ! -f .devdata/a.tar.xz ] || [ ! -f .devdata/b.tar.xz ]; then
    RAW=$(mktemp -d)
    trap 'rm -rf "$RAW"' EXIT
    for d in "$DATA"/*/; do
        c=$(basename "$d"); mkdir -p "$RAW/$c"
        for f in "$d"*.nii.gz; do gunzip -c "$f" > "$RAW/$c/$(basename "$f" .gz)"; done
        echo "$(du -sb "$d" | cut -f1) $c"
    done | sort -rn | awk -v raw="$RAW" '{ if (a <= b) { a += $1; print $2 > raw "/A.txt" }
                                          else { b += $1; print $2 > raw "/B.txt" } }'
    for part in a b; do
        list="$RAW/$(echo $part | tr ab AB).txt"
        tar -C "$RAW" -cf - -T "$list" | xz -T2 -6 > ".devdata/$part.tar.xz.tmp"
        mv ".devdata/$part.tar.xz.tmp" ".devdata/$part.tar.xz"
    done
fi
du -cb .devdata/* .whl/* | tail -1
echo "repository: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes; each call must stay under 67108864"
