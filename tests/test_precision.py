"""Reduced precision (issue 15): a GPU runs the networks under fp16 autocast, the CPU in fp32. On a CPU,
LIGHTBOX_PRECISION=fp16 runs the same casts, so these tests hold what a GPU's precision does to the
outputs, and that a pass that overflows fp16 is redone in full precision."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from inference import device as devmod
from inference.segment import sliding_window

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_fp16_on_gpus_fp32_on_the_cpu_and_the_setting_overrides(monkeypatch):
    monkeypatch.delenv("LIGHTBOX_PRECISION", raising=False)
    assert devmod.autocast_dtype(torch.device("cuda")) == torch.float16
    assert devmod.autocast_dtype(torch.device("mps")) == torch.float16
    assert devmod.autocast_dtype(torch.device("cpu")) is None
    monkeypatch.setenv("LIGHTBOX_PRECISION", "bf16")
    assert devmod.autocast_dtype(torch.device("cpu")) == torch.bfloat16
    monkeypatch.setenv("LIGHTBOX_PRECISION", "fp32")
    assert devmod.autocast_dtype(torch.device("cuda")) is None
    monkeypatch.setenv("LIGHTBOX_PRECISION", "half please")  # not a choice: the default
    assert devmod.autocast_dtype(torch.device("cuda")) == torch.float16


class Loud(nn.Module):
    """A network whose activations pass fp16's largest value (65504) by far."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(1000.0)
            self.conv.bias.zero_()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x) * 10.0


def test_an_fp16_overflow_is_redone_in_full_precision(monkeypatch):
    x = torch.full((1, 1, 40, 40), 3.0)
    net = Loud().eval()
    want = sliding_window(net, x, (16, 16), sw_batch_size=4)  # fp32 on the CPU
    assert torch.isfinite(want).all() and float(want.abs().max()) > 65504
    monkeypatch.setenv("LIGHTBOX_PRECISION", "fp16")
    with torch.autocast("cpu", dtype=torch.float16):
        assert not torch.isfinite(net(x[..., :16, :16])).all()  # the overflow is real
    net.calls = 0
    got = sliding_window(net, x, (16, 16), sw_batch_size=4)
    windows = net.calls
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want)
    quiet = nn.Conv2d(1, 2, 3, padding=1).eval()
    calls = []
    quiet.register_forward_hook(lambda *a: calls.append(1))
    sliding_window(quiet, x, (16, 16), sw_batch_size=4)
    assert windows == 2 * len(calls)  # the loud net ran every batch twice, a quiet one once


def test_shipped_models_under_fp16_stay_within_the_tolerance(monkeypatch):
    """What a GPU's fp16 does to the outputs, emulated on the CPU (benchmarks/gpu_agreement.py shows
    it at full size): the same lesion, heat maps within 1e-2, CT labels as in fp32."""
    from inference.classify import analyze_view
    from inference.phantoms import ct_phantom, mammo_image, mammo_spacing
    from inference.registry import find_model, load_model
    from inference.segment import segment_image, segment_volume

    patch, patch_card = load_model(find_model("mammo-patch"), "cpu")
    exam, _ = load_model(find_model("mammo-exam"), "cpu")
    seg, seg_card = load_model(find_model("mammo-lesion-unet2d"), "cpu")
    ct, ct_card = load_model(find_model("ct-organs-unet3d"), "cpu")
    size = (832, 640)
    image, masks = mammo_image("L", "CC", size=size, seed=3, mass=True)
    spacing = mammo_spacing(size)
    ct_spacing = (2.5, 2.0, 2.0)
    vol = ct_phantom(shape=(48, 80, 80), spacing=ct_spacing, seed=3)[0]
    out = {}
    for precision in ("fp32", "fp16"):
        monkeypatch.setenv("LIGHTBOX_PRECISION", precision)
        va = analyze_view("LCC", image, spacing, patch, patch_card, exam, "left", "cpu", True)
        labels, prob = segment_image(seg, seg_card, image, spacing, "L", "CC", device="cpu", chest_wall="left",
                                     prepared=va.prepared)
        organs = segment_volume(ct, ct_card, vol, ct_spacing, "cpu", probabilities="none")[0]
        out[precision] = (va.heatmap, labels, prob, organs)
    (hm, labels, prob, organs), (hm16, labels16, prob16, organs16) = out["fp32"], out["fp16"]
    lesion, lesion16 = labels > 0, labels16 > 0
    assert lesion[masks["mass"] > 0].any() and (organs > 0).any()
    assert 2 * (lesion & lesion16).sum() / (lesion.sum() + lesion16.sum()) >= 0.995
    assert np.abs(hm16 - hm).max() < 1e-2 and np.abs(prob16 - prob).max() < 2e-2
    both = (organs > 0) | (organs16 > 0)
    assert (organs16[both] == organs[both]).mean() >= 0.995
