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
