"""Sliding-window segmentation: agreement with MONAI, geometry round trips, shipped models' Dice."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from inference import phantoms
from inference.preprocess import ct as ctp
from inference.registry import ModelCard, build, find_model, load_model
from inference.segment import (
    Cancelled,
    monai_sliding_window,
    segment_image,
    segment_volume,
    sliding_window,
    window_starts,
)
from inference.train_seg import ct_label_map

torch.set_num_threads(2)


def small_card(**input_):
    card = ModelCard(name="test-unet3d", version="0", task="segmentation-3d", modality="CT",
                     architecture="unet3d",
                     arch_kwargs={"in_channels": 2, "out_channels": 3, "channels": [4, 8, 16]},
                     classes=["background", "a", "b"],
                     input={"spacing_mm": [4.0, 4.0, 4.0], "patch_size": [16, 16, 16], **input_},
                     normalization={"windows": [[-1000, 1000], [-160, 240]]})
    torch.manual_seed(0)
    return build(card).eval(), card


def dice(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / max(1, a.sum() + b.sum())


@pytest.mark.parametrize("dims,shape,roi,overlap,batch", [
    (3, (37, 50, 45), (16, 24, 24), 0.25, 3),
    (3, (10, 50, 45), (16, 24, 24), 0.5, 1),  # smaller than the window along z: padded
    (2, (70, 101), (32, 32), 0.25, 4),
])
def test_our_sliding_window_equals_monai(dims, shape, roi, overlap, batch):
    torch.manual_seed(1)
    from inference.models.unet import unet2d, unet3d
    net = (unet3d if dims == 3 else unet2d)(in_channels=2, out_channels=3, channels=(4, 8, 16)).eval()
    x = torch.randn(1, 2, *shape)
    ours = sliding_window(net, x, roi, overlap=overlap, sw_batch_size=batch, pad_value=-1.0)
    ref = monai_sliding_window(net, x, roi, overlap=overlap, sw_batch_size=batch, pad_value=-1.0)
    assert ours.shape == ref.shape == (1, 3, *shape)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # and the blend really mixes windows: not what a single whole-image pass gives
    assert window_starts(shape[-1], roi[-1], overlap) != [0]


def test_window_starts_cover_and_end_at_border():
    for size, roi, ov in [(100, 32, 0.25), (119, 64, 0.25), (64, 64, 0.5), (65, 64, 0.5)]:
        st = window_starts(size, roi, ov)
        assert st[0] == 0 and st[-1] == size - roi
        assert all(b - a <= int(roi * (1 - ov)) for a, b in zip(st, st[1:]))


def test_volume_not_a_multiple_of_the_patch_keeps_its_grid():
    net, card = small_card()
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 300, (23, 77, 61)).astype(np.int16)
    labels, probs = segment_volume(net, card, vol, (2.5, 0.9, 1.1), device="cpu")
    assert labels.shape == vol.shape and labels.dtype == np.uint8
    assert probs.shape == (3, *vol.shape)
    full = np.asarray(probs)
    assert full.shape == (3, *vol.shape) and full.dtype == np.float32
    np.testing.assert_allclose(full.sum(0), 1.0, atol=1e-4)
    # labels are the argmax of the resampled probabilities, not nearest-neighbour labels
    np.testing.assert_array_equal(labels, full.argmax(0))
    np.testing.assert_allclose(probs.slab(5, 9), full[:, 5:9], atol=1e-6)
    np.testing.assert_allclose(probs.channel("b"), full[2], atol=1e-6)
    _, same = segment_volume(net, card, vol, (2.5, 0.9, 1.1), device="cpu", probabilities="full")
    np.testing.assert_allclose(same, full, atol=1e-6)


def test_resample_matches_trilinear_and_round_trip_keeps_a_sphere():
    v = torch.randn(2, 9, 14, 11)
    ref = torch.nn.functional.interpolate(v[None], size=(20, 31, 17), mode="trilinear", align_corners=False)[0]
    torch.testing.assert_close(ctp.resample(v, (20, 31, 17), antialias=False, chunk=3), ref, atol=1e-5, rtol=0)

    shape, spacing = (40, 90, 70), (2.5, 0.8, 0.9)
    centre_mm = np.array([55.0, 40.0, 25.0])  # (z, y, x) from the first voxel's edge
    idx = np.indices(shape).astype(np.float64)
    d2 = sum(((idx[a] + 0.5) * spacing[a] - centre_mm[a]) ** 2 for a in range(3))
    sphere = d2 <= 14.0 ** 2
    onehot = torch.from_numpy(np.stack([~sphere, sphere]).astype(np.float32))
    coarse_shape = ctp.grid_shape(shape, spacing, (3.0, 3.0, 3.0))
    assert coarse_shape == (33, 24, 21)
    coarse = ctp.resample(onehot, coarse_shape, chunk=5)
    back = ctp.labels_to_grid(coarse, shape, chunk=7)
    assert back.shape == shape
    assert dice(back == 1, sphere) > 0.93
    com = np.array([((np.nonzero(back)[a] + 0.5) * spacing[a]).mean() for a in range(3)])
    np.testing.assert_allclose(com, centre_mm, atol=0.5)  # millimetres


def test_cancel_stops_between_windows_and_progress_reaches_one():
    net, card = small_card()
    vol = np.zeros((40, 64, 64), np.int16)
    calls = {"net": 0, "cancel": 0}
    orig = net.forward

    def counting(x):
        calls["net"] += 1
        return orig(x)

    net.forward = counting

    def cancel():
        calls["cancel"] += 1
        return calls["cancel"] > 3

    with pytest.raises(Cancelled):
        segment_volume(net, card, vol, (4.0, 2.0, 2.0), device="cpu", cancel=cancel, sw_batch_size=1)
    n_windows = np.prod([len(window_starts(n, 16, 0.25)) for n in ctp.grid_shape(vol.shape, (4, 2, 2), (4, 4, 4))])
    assert 0 < calls["net"] < n_windows

    seen = []
    segment_volume(net, card, vol, (4.0, 2.0, 2.0), device="cpu", progress=seen.append, probabilities="none")
    assert seen[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in zip(seen, seen[1:])) and 0 <= seen[0] < 0.5


# --------------------------------------------------------------------------
# the shipped models
# --------------------------------------------------------------------------
def test_shipped_ct_model_reaches_its_card_dice_on_a_held_out_phantom():
    net, card = load_model(find_model("ct-organs-unet3d"), "cpu")
    assert card.task == "segmentation-3d" and card.classes[0] == "background"
    shape, spacing = (60, 128, 128), (5.0, 2.8, 2.8)  # small, same field of view as the demo CT
    hu, masks = phantoms.ct_phantom(shape=shape, spacing=spacing, seed=1009)  # seed never trained on
    labels, _ = segment_volume(net, card, hu, spacing, device="cpu", probabilities="none")
    assert labels.shape == shape
    truth = ct_label_map(masks)  # the training labels: lesions over liver over lungs
    for k, name in enumerate(card.classes[1:], start=1):
        got = dice(labels == k, truth == k)
        floor = card.metrics["dice"][name] - (0.05 if name != "lesions" else 0.1)  # few, small lesions vary more
        assert got >= floor, (name, got, card.metrics)
    assert card.metrics["dice"]["lungs"] > 0.8 and card.metrics["dice"]["liver"] > 0.8


def test_shipped_mammo_model_reaches_its_card_dice_and_follows_the_chest_wall():
    net, card = load_model(find_model("mammo-lesion-unet2d"), "cpu")
    size = (832, 640)
    img, masks = phantoms.mammo_image("L", "MLO", size=size, seed=1011, mass=True)
    spacing = phantoms.mammo_spacing(size)
    mask, prob = segment_image(net, card, img, spacing, laterality="L", device="cpu")
    assert mask.shape == img.shape and prob.shape == img.shape and prob.dtype == np.float32
    got = dice(mask == 1, masks["mass"])
    assert got >= card.metrics["dice"]["mass"] - 0.1, (got, card.metrics)
    # the same image hung the other way round (chest wall right) gives the mirrored answer
    flipped, _ = segment_image(net, card, img[:, ::-1], spacing, laterality="L", device="cpu")
    assert dice(flipped[:, ::-1] == 1, mask == 1) > 0.95
    # no mass, no (big) finding
    clean, _ = phantoms.mammo_image("L", "MLO", size=size, seed=1011, mass=False)
    none, _ = segment_image(net, card, clean, spacing, laterality="L", device="cpu")
    assert (none == 1).sum() < 0.2 * masks["mass"].sum()
