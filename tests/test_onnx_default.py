"""Analyze's default backend: run.load gives the demo models ONNX Runtime exactly when this machine's
measured decision (cached beside the exported file) says it is faster with the same outputs, and the
app's heatmap is then the torch one within 1e-4. The rest of the suite runs with LIGHTBOX_ONNXRUNTIME=0."""
from __future__ import annotations

import json

import numpy as np
import pytest

from inference import onnx_backend, registry
from inference.heatmap import dense_heatmap
from viewer.analysis import run

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def measured(monkeypatch, tmp_path):
    monkeypatch.setenv("LIGHTBOX_ONNXRUNTIME", "auto")
    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(run, "_MODELS", {})


def test_load_follows_the_measured_decision_and_outputs_agree(measured):
    card = registry.find_model("mammo-patch")
    module, _ = run.load(card, "cpu")
    record = json.loads(onnx_backend.cached_onnx(card).with_suffix(".json").read_text())
    assert record["max_diff"] < onnx_backend.AGREEMENT
    chosen = "onnxruntime" if isinstance(module, onnx_backend.OrtModule) else "torch"
    assert chosen == record["backend"]
    assert (record["backend"] == "onnxruntime") == onnx_backend.prefer_ort(record)
    torch_module, _ = registry.load_model(card)
    image = np.random.default_rng(0).random((180, 140), dtype=np.float32)
    np.testing.assert_allclose(dense_heatmap(module, image, device="cpu"),
                               dense_heatmap(torch_module, image, device="cpu"), atol=1e-4)
    assert run.load(card, "cpu")[0] is module  # once per process


def test_switch_off_and_gradients_keep_torch(measured, monkeypatch):
    exam = registry.find_model("mammo-exam")
    module, _ = run.load(exam, "cpu")
    assert not isinstance(module, onnx_backend.OrtModule)  # Grad-CAM needs gradients
    assert not onnx_backend.cached_onnx(exam).exists()
    monkeypatch.setenv("LIGHTBOX_ONNXRUNTIME", "0")
    monkeypatch.setattr(run, "_MODELS", {})
    patch = registry.find_model("mammo-patch")
    assert not isinstance(run.load(patch, "cpu")[0], onnx_backend.OrtModule)
    assert not onnx_backend.cached_onnx(patch).exists()
