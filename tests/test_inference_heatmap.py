"""Dense (one pass) heatmaps equal the patch-by-patch reference; the shipped model finds masses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from inference import heatmap as hm
from inference import registry
from inference.models.patch_net import PatchNet
from inference.phantoms import mammo_image, mammo_spacing
from inference.preprocess import mammo as pm

HELD_OUT_SEED = 4_242_424  # outside the training (1000...) and metric (900000...) seed ranges


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


def random_model(seed=0, **kw) -> PatchNet:
    """Random weights, but BN statistics from data and logits spread out, so that the
    class probabilities really depend on the pixels (a saturated net would agree trivially)."""
    torch.manual_seed(seed)
    m = PatchNet(**kw)
    x = torch.randn(4, 1, 76, 76)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None  # cumulative average: running stats = stats of this data
    with torch.no_grad():
        m.train()(x)
        m.eval()
        logits = m(x).transpose(0, 1).flatten(1)
        m.head[-1].weight.mul_(3.0 / logits.std(dim=1).clamp(min=1e-6)[:, None, None, None])
        m.head[-1].bias.sub_(m(x).mean(dim=(0, 2, 3)))
    return m.eval()


@pytest.fixture(scope="module")
def shipped_patch():
    return registry.load_model(registry.find_model("mammo-patch"))


def test_patch_geometry_is_receptive_field():
    m = random_model()
    assert (m.patch_size, m.stride) == (52, 8)
    assert m(torch.zeros(1, 1, 52, 52)).shape == (1, 4, 1, 1)
    # one pixel more than a patch still gives one position; stride more gives two
    assert m(torch.zeros(1, 1, 59, 52)).shape[-2:] == (1, 1)
    assert m(torch.zeros(1, 1, 60, 52)).shape[-2:] == (2, 1)
    assert not any(isinstance(x, torch.nn.Linear) for x in m.modules())


@pytest.mark.parametrize("stride,shape", [(8, (141, 117)), (4, (101, 93)), (2, (75, 69))])
def test_dense_equals_naive_random_weights(stride, shape):
    m = random_model(1)
    img = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    dense = hm.dense_heatmap(m, img, stride=stride)
    naive = hm.naive_heatmap(m, img, stride=stride, batch_size=37)
    assert dense.shape == naive.shape == (4, *hm.grid_shape(img.shape, 52, stride))
    assert np.abs(dense - naive).max() < 1e-4
    np.testing.assert_allclose(dense.sum(0), 1.0, atol=1e-5)
    assert dense.std(axis=(1, 2)).min() > 0.05  # not a constant map that would agree trivially


def test_dense_differs_from_a_shifted_reference():
    """The equality test can fail: patches off by one pixel give different numbers."""
    m = random_model(2)
    img = np.random.default_rng(1).normal(size=(100, 90)).astype(np.float32)
    dense = hm.dense_heatmap(m, img)
    shifted = hm.naive_heatmap(m, img[1:, 1:])
    n = min(dense.shape[1], shifted.shape[1]), min(dense.shape[2], shifted.shape[2])
    assert np.abs(dense[:, :n[0], :n[1]] - shifted[:, :n[0], :n[1]]).max() > 1e-3


def test_bad_stride_and_tiny_image_are_refused():
    m = random_model()
    with pytest.raises(ValueError, match="divide"):
        hm.dense_heatmap(m, np.zeros((80, 80), np.float32), stride=3)
    with pytest.raises(ValueError, match="smaller than one patch"):
        hm.dense_heatmap(m, np.zeros((40, 80), np.float32))


def test_to_image_grid_puts_values_at_patch_centres():
    probs = np.zeros((1, 6, 5), np.float32)
    probs[0, 2, 3] = 1.0
    out = hm.to_image_grid(probs, (100, 90), 52, 8)
    assert out.shape == (1, 100, 90)
    # centre of patch (2, 3) is pixel (16 + 25.5, 24 + 25.5): the four pixels around it share the peak
    peak = out[0].max()
    ys, xs = np.nonzero(out[0] == peak)
    assert set(ys) == {41, 42} and set(xs) == {49, 50}
    assert peak == pytest.approx((1 - 0.5 / 8) ** 2)


def test_shipped_model_dense_equals_naive(shipped_patch):
    model, card = shipped_patch
    img, _ = mammo_image("R", "CC", (832, 640), seed=HELD_OUT_SEED, mass=True)
    p = pm.prepare(img, mammo_spacing((832, 640)), normalization=card.normalization)
    sub = p.image[100:260, 60:220]
    dense, naive = hm.dense_heatmap(model, sub), hm.naive_heatmap(model, sub)
    assert np.abs(dense - naive).max() < 1e-4


def test_shipped_model_heatmap_is_higher_on_the_mass(shipped_patch):
    model, card = shipped_patch
    size = (1109, 853)
    img, masks = mammo_image("L", "MLO", size, seed=HELD_OUT_SEED, mass=True)
    p = pm.prepare(img, mammo_spacing(size), normalization=card.normalization)
    probs = hm.dense_heatmap(model, p.image)
    origin, step = hm.centers(model.patch_size, model.stride)
    mass_map = pm.to_source(probs[card.classes.index("mass")], p.geometry, origin, step)
    assert mass_map.shape == img.shape and mass_map.dtype == np.float32
    inside = masks["mass"] > 0
    elsewhere = (masks["breast"] > 0) & ~inside
    assert mass_map[inside].mean() > 0.5
    assert mass_map[inside].mean() > 5 * mass_map[elsewhere].mean()
    # background probability is high outside the breast (where the crop covers it)
    bg = pm.to_source(probs[card.classes.index("background")], p.geometry, origin, step, fill=np.nan)
    air = bg[(masks["breast"] == 0) & np.isfinite(bg)]
    assert air.size > 10_000 and air.mean() > 0.8
