#!/usr/bin/env bash
# Run here (with network), in the repository root: gathers what the offline GPU machine lacks for
# `kaggle-mnist train --backend jax` into .gpu/ (ignored by git): wheels for Python 3.12 x86-64 and the
# competition zip. The GPU image has JAX, NumPy, SciPy and scikit-learn; the device command puts these
# wheels *behind* its own packages (a .pth file), so a wheel it already has a version of is never used.
set -euo pipefail
DATA=${1:-../shared/data/digit-recognizer.zip}
mkdir -p .gpu/whl
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")"
grep -qx '/.gpu/' "$EXCLUDE" 2>/dev/null || echo '/.gpu/' >> "$EXCLUDE"
for package in keras==3.15.1 absl-py h5py namex optree rich markdown-it-py mdurl pygments \
    typer shellingham typing-extensions pandas python-dateutil tzdata six packaging; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/whl "$package"
done
cp "$DATA" .gpu/digit-recognizer.zip
du -sh .gpu
