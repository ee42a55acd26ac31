#!/usr/bin/env bash
# Fills .gpu/ (ignored by git) with what benchmarks/gpu_run.sh needs on a GPU machine that has torch, lightning and
# torchmetrics but no internet: the wheels LightningCLI needs (jsonargparse with its signatures extra), the training
# images, and airbench94_muon.py from a clone (or bare mirror) of https://github.com/KellerJordan/cifar10-airbench.
#
#   AIRBENCH_REPO=path/to/cifar10-airbench DATA_TARBALL=../shared/data/cifar10-jpeg-train.tar.gz \
#       bash benchmarks/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${AIRBENCH_REPO:?set AIRBENCH_REPO to a clone of https://github.com/KellerJordan/cifar10-airbench}"
DATA_TARBALL=${DATA_TARBALL:-../shared/data/cifar10-jpeg-train.tar.gz}
[ -f "$DATA_TARBALL" ] || { echo "error: DATA_TARBALL=$DATA_TARBALL is not a file" >&2; exit 2; }

rm -rf .gpu && mkdir -p .gpu/whl
# Pure-Python wheels, pinned to what CI tests; the GPU image runs Python 3.12.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    -d .gpu/whl jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0
if [ -f "$AIRBENCH_REPO/airbench94_muon.py" ]; then
    cp "$AIRBENCH_REPO/airbench94_muon.py" .gpu/
else  # a bare mirror: no work tree
    git --git-dir "$AIRBENCH_REPO" show HEAD:airbench94_muon.py > .gpu/airbench94_muon.py
fi
git --git-dir "$AIRBENCH_REPO" rev-parse HEAD > .gpu/airbench_commit 2>/dev/null \
    || git -C "$AIRBENCH_REPO" rev-parse HEAD > .gpu/airbench_commit
cp "$DATA_TARBALL" .gpu/data.tar.gz
du -sh .gpu
