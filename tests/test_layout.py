"""Channels-last weights (issue 15): chosen by measuring this machine, cached, never at the cost of an
output. The shipped networks give the same maps, probabilities and labels in either layout."""
from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from inference import layout, measured

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Net2d(nn.Module):
    def __init__(self, classes=2):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, classes, 3, padding=1))

    def forward(self, x):
        return self.body(x)


class Card:
    name, version, sha256, task = "toy", "1", "ab" * 32, "segmentation-2d"
    input = {"patch_size": [32, 32]}
    arch_kwargs: dict = {}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LIGHTBOX_CHANNELS_LAST", "auto")
    return tmp_path / "layout"


def test_the_format_follows_the_convolutions():
    assert layout.channels_last_format(Net2d()) == torch.channels_last
    assert layout.channels_last_format(nn.Sequential(nn.Conv3d(1, 2, 3))) == torch.channels_last_3d
    assert layout.channels_last_format(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv3d(2, 2, 3))) is None
    assert layout.channels_last_format(nn.Linear(3, 2)) is None
    assert layout.channels_last_format(object()) is None  # an ONNX Runtime stand-in, a runner
    with warnings.catch_warnings():  # deprecated upstream, still a format users bring
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(Net2d())
    assert layout.channels_last_format(scripted) is None


def test_measure_compares_outputs_and_leaves_the_module_contiguous():
    net = Net2d().eval()
    record = layout.measure(net, Card(), "cpu", repeats=1)
    assert record["max_diff"] < layout.AGREEMENT
    assert record["contiguous_s"] > 0 and record["channels_last_s"] > 0
    assert layout.layout_of(net) == "contiguous"


@pytest.mark.parametrize("last_s, diff, chosen", [(0.5, 0.0, True), (0.95, 0.0, False), (0.5, 1e-2, False)])
def test_the_rule_wants_the_same_outputs_and_clearly_faster(last_s, diff, chosen):
    assert layout.prefer_channels_last({"contiguous_s": 1.0, "channels_last_s": last_s, "max_diff": diff}) is chosen


def test_the_decision_is_measured_once_per_environment(cache, monkeypatch):
    calls = []

    def fake(module, card, device, repeats=3):
        calls.append(1)
        return {"contiguous_s": 1.0, "channels_last_s": 0.4, "ratio": 0.4, "max_diff": 0.0}

    monkeypatch.setattr(layout, "measure", fake)
    net = Net2d().eval()
    assert layout.fastest_layout(net, Card(), "cpu") is net
    assert layout.layout_of(net) == "channels_last" and len(calls) == 1
    again = Net2d().eval()
    layout.fastest_layout(again, Card(), "cpu")
    assert layout.layout_of(again) == "channels_last" and len(calls) == 1  # read back, not measured
    (record_path,) = cache.glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["layout"] == "channels_last" and record["environment"]["device"] == "cpu"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)  # another machine's thread count: measure again
    layout.fastest_layout(Net2d().eval(), Card(), "cpu")
    assert len(calls) == 2


def test_slower_or_different_keeps_contiguous_and_a_failure_is_only_logged(cache, monkeypatch, caplog):
    monkeypatch.setattr(layout, "measure", lambda *a, **k: {"contiguous_s": 1.0, "channels_last_s": 0.99,
                                                            "ratio": 0.99, "max_diff": 0.0})
    net = Net2d().eval()
    layout.fastest_layout(net, Card(), "cpu")
    assert layout.layout_of(net) == "contiguous"

    def broken(*a, **k):
        raise RuntimeError("no kernel for this layout")

    monkeypatch.setattr(layout, "measure", broken)
    monkeypatch.setattr(measured, "read_record", lambda *a: None)
    with caplog.at_level(logging.WARNING, logger="inference.layout"):
        out = layout.fastest_layout(Net2d().eval(), Card(), "cpu")
    assert layout.layout_of(out) == "contiguous" and "no kernel for this layout" in caplog.text


def test_the_setting_can_force_either_way_without_measuring(cache, monkeypatch):
    monkeypatch.setattr(layout, "measure", lambda *a, **k: pytest.fail("measured although told"))
    monkeypatch.setenv("LIGHTBOX_CHANNELS_LAST", "0")
    assert layout.layout_of(layout.fastest_layout(Net2d(), Card(), "cpu")) == "contiguous"
    monkeypatch.setenv("LIGHTBOX_CHANNELS_LAST", "1")
    assert layout.layout_of(layout.fastest_layout(Net2d(), Card(), "cpu")) == "channels_last"
    assert layout.fastest_layout(Net2d(), Card(), "mps") is not None  # MPS: left as it is


def test_run_load_applies_the_layout_and_onnx_measures_against_it(monkeypatch):
    from inference import onnx_backend
    from inference.registry import find_model
    from viewer.analysis import run

    card = find_model("mammo-patch")
    for setting, want in (("1", "channels_last"), ("0", "contiguous")):
        monkeypatch.setenv("LIGHTBOX_CHANNELS_LAST", setting)
        monkeypatch.setattr(run, "_MODELS", {})
        module, _ = run.load(card, "cpu")
        assert layout.layout_of(module) == want
        if onnx_backend.available():  # a cached ONNX decision made against the other layout is not reused
            assert onnx_backend._environment(module)["torch_layout"] == want


# --------------------------------------------------------------------------
# the shipped networks: the same outputs in either layout
# --------------------------------------------------------------------------
def _contiguous_and_last(name):
    from inference.registry import find_model, load_model

    a, card = load_model(find_model(name), device="cpu")
    b, _ = load_model(find_model(name), device="cpu")
    b.to(memory_format=layout.channels_last_format(b))
    assert layout.layout_of(a) == "contiguous" and layout.layout_of(b) == "channels_last"
    return a, b, card


def test_mammography_outputs_are_the_same_channels_last():
    from inference.classify import analyze_view
    from inference.phantoms import mammo_image, mammo_spacing
    from inference.segment import segment_image

    patch, patch_last, patch_card = _contiguous_and_last("mammo-patch")
    exam, exam_last, _ = _contiguous_and_last("mammo-exam")
    seg, seg_last, seg_card = _contiguous_and_last("mammo-lesion-unet2d")
    size = (1040, 800)
    image, masks = mammo_image("L", "CC", size=size, seed=5, mass=True)
    spacing = mammo_spacing(size)
    out = []
    for p, e, s in ((patch, exam, seg), (patch_last, exam_last, seg_last)):
        va = analyze_view("LCC", image, spacing, p, patch_card, e, "left", "cpu", True)
        labels, prob = segment_image(s, seg_card, image, spacing, "L", "CC", device="cpu", chest_wall="left",
                                     prepared=va.prepared)
        out.append((va, labels, prob))
    (va, labels, prob), (vb, labels_b, prob_b) = out
    assert labels[masks["mass"] > 0].any()  # a lesion found, so the comparison means something
    assert abs(va.probability - vb.probability) < 1e-5
    np.testing.assert_allclose(vb.heatmap, va.heatmap, atol=1e-5)
    np.testing.assert_allclose(vb.cam, va.cam, atol=1e-4)  # Grad-CAM: gradients through the other layout
    np.testing.assert_allclose(prob_b, prob, atol=1e-5)
    assert (labels_b != labels).sum() <= 2


def test_ct_labels_are_the_same_channels_last():
    from inference.phantoms import ct_phantom
    from inference.segment import segment_volume

    net, net_last, card = _contiguous_and_last("ct-organs-unet3d")
    spacing = (2.5, 2.0, 2.0)
    vol = ct_phantom(shape=(60, 96, 96), spacing=spacing, seed=3)[0]
    want, want_p = segment_volume(net, card, vol, spacing, "cpu", probabilities="full")
    got, got_p = segment_volume(net_last, card, vol, spacing, "cpu", probabilities="full")
    assert (want > 0).any() and (got == want).mean() >= 0.9999
    np.testing.assert_allclose(got_p, want_p, atol=1e-4)


@pytest.mark.parametrize("speedup", [layout.SPEEDUP, 0.0])  # whichever layout the measurement leaves
def test_a_measured_model_still_gives_gradients(cache, monkeypatch, speedup):
    """The measurement runs under inference_mode; the weights it leaves must still take Grad-CAM's
    backward pass (inference tensors cannot)."""
    from inference.explain import grad_cam
    from inference.registry import find_model, load_model

    monkeypatch.setattr(layout, "SPEEDUP", speedup)
    model, card = load_model(find_model("mammo-exam"), "cpu")
    model = layout.fastest_layout(model, card, "cpu", repeats=1)
    assert list(cache.glob("*.json"))  # it was measured, not skipped
    assert not any(p.is_inference() for p in model.parameters())
    image = np.random.default_rng(0).random((400, 300)).astype(np.float32)
    cam, logit = grad_cam(model, image, device="cpu")
    assert np.isfinite(cam).all() and np.isfinite(logit)
