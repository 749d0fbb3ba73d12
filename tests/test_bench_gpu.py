"""benchmarks/bench_gpu.py runs unchanged on a machine without a GPU and prints the issue's rows."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_bench_gpu_quick_on_the_cpu_prints_every_row(tmp_path, capsys):
    pytest.importorskip("monai")
    import bench_gpu

    out = tmp_path / "gpu.json"
    assert bench_gpu.main(["--quick", "--device", "cpu", "--repeats", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for row in ("dense vs naive batched", "4-view exam", "first Analyze of a fresh process",
                "after the start-up warm-up", "segment_volume vs MONAI-on-device", "labels agree on"):
        assert row in printed
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["heatmap"]["speedup"] > 1.0
    assert res["exam"]["cold"]["first_analyze_s"] > 0 and res["exam"]["cold_after_warm_up"]["warm_up_s"] > 0
    (ct,) = res["ct"]
    assert ct["agreement"] > 0.8  # a 40-slice toy grid: the two resamplers differ at organ borders


def test_gpu_agreement_quick_on_the_cpu_agrees_with_itself(capsys):
    import gpu_agreement

    assert gpu_agreement.main(["--device", "cpu", "--quick"]) == 0
    printed = capsys.readouterr().out
    assert "lesion U-Net labels agree                    100.000 %" in printed
    assert "CT 128x128x40 labels agree" in printed and "100.000 %" in printed.split("CT 128x128x40")[1]


def test_the_gpu_benchmark_needs_no_simpleitk_nor_the_gui(tmp_path):
    """The lent GPU machine gets pydicom and MONAI as wheels (scripts/gpu_wheels.sh), not SimpleITK's 50 MB
    (its 64 MiB limit) nor Qt: the mammography and CT paths must run without them."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    blocked = ("SimpleITK", "nibabel", "PySide6", "pyqtgraph", "highdicom", "pylibjpeg", "imagecodecs")
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    out = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--quick", "--no-cold", "--device", "cpu",
                          "--repeats", "1"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "segment_volume vs MONAI-on-device" in out.stdout
