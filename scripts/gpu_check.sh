#!/usr/bin/env bash
# The GPU issue's measurements in one device run (docs/design-notes.md, "The GPU path"):
#   bash scripts/gpu_wheels.sh            # here, once: .whl/ (ignored by git)
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=540)
# Prints bench_gpu's table (4-view exam warm/cold, heatmap, CT vs MONAI-on-device, peak memory) and
# the CPU-vs-GPU agreement of the device-resident path (fp16, and bf16 for comparison), the layouts
# chosen; logs and JSON land in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 LIGHTBOX_CACHE_DIR=/tmp/lightbox-cache XDG_CONFIG_HOME=/tmp/lightbox-config
DEVICE=${DEVICE:-cuda}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 benchmarks/bench_gpu.py --device "$DEVICE" --repeats 3 --memory --json "$OUT/bench_gpu.json" ${BENCH_ARGS:-} \
  2>&1 | tee "$OUT/bench_gpu.log"
python3 benchmarks/gpu_agreement.py --device "$DEVICE" ${AGREE_ARGS:-} 2>&1 | tee "$OUT/agreement.log"
# what the device chose: channels-last per model (inference/layout.py), and bf16 beside the app's fp16
for f in /tmp/lightbox-cache/layout/*.json; do
  [ -e "$f" ] && python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['model'], r['environment']['device'], r['layout'], 'ratio %.2f' % r['ratio'])" "$f"
done 2>&1 | tee "$OUT/layout.log"
python3 benchmarks/gpu_agreement.py --device "$DEVICE" --precision bf16 --quick 2>&1 | tee "$OUT/agreement_bf16.log"
