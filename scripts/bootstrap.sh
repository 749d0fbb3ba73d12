#!/usr/bin/env bash
# Create .venv and install Lightbox with its test extras. Idempotent: a stamp
# file skips the install while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LIGHTBOX_VENV:-.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.lightbox-installed"

if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then
    exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install --quiet --upgrade pip

# Torch first: without a GPU take the CPU build (pinned so pip does not pull a
# multi-GB CUDA build); with one, let pip choose a CUDA build in range.
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "$VPY" -m pip install --quiet "torch>=2.3"
    else
        "$VPY" -m pip install --quiet "torch==2.13.0"
    fi
fi
# The test extras (nnunetv2 and friends) must not replace that torch: pin the one installed.
TORCH_PIN="$("$VPY" -c 'import torch; print(torch.__version__.split("+")[0])')"
"$VPY" -m pip install --quiet -c <(echo "torch==$TORCH_PIN") -e ".[test]"
# nnunetv2 pulls torchvision (through timm), which Lightbox never uses; PyPI's build does not load
# beside a CPU-only torch ("operator torchvision::nms does not exist") and breaks whatever imports it.
if ! "$VPY" -c "import torchvision" >/dev/null 2>&1; then
    "$VPY" -m pip uninstall --quiet -y torchvision timm >/dev/null 2>&1 || true
fi
touch "$STAMP"
