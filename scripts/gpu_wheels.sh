#!/usr/bin/env bash
# Wheels the lent GPU machine lacks for scripts/gpu_check.sh (it has PyTorch, NumPy, SciPy, safetensors and
# ONNX Runtime; not pydicom or MONAI). Python 3.12 there. SimpleITK (50 MB) is not needed: the mammography
# path uses SciPy for the breast region, and viewer.core.io imports SimpleITK only to read NIfTI/NRRD/MHA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p .whl
for pkg in pydicom monai; do
  version=$("$PY" -c "import $pkg; print($pkg.__version__)")
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$pkg==$version"
done
ls -la .whl
