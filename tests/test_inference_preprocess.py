"""Mammography preprocessing: breast crop, chest wall side, resampling, and the way back."""
from __future__ import annotations

import numpy as np
import pytest

from inference.phantoms import mammo_image, mammo_spacing
from inference.preprocess import mammo as pm
from inference.preprocess import sample_bilinear

SIZE = (832, 640)  # 0.28 mm: scale 1.5 to the model grid, so the mapping is non-integer


@pytest.fixture(scope="module")
def phantom():
    return mammo_image("L", "CC", SIZE, seed=11)


def blob_image(shape, spacing, centre_px, chest_wall_left=True):
    """Half-ellipse 'breast' on one edge plus a bright 3 mm blob at a known source pixel."""
    yy, xx = np.indices(shape, dtype=float)
    h, w = shape
    x_from_wall = xx if chest_wall_left else (w - 1 - xx)
    breast = ((yy - h / 2) / (0.4 * h)) ** 2 + (x_from_wall / (0.6 * w)) ** 2 <= 1
    img = np.where(breast, 1500.0, 20.0)
    r = np.hypot((yy - centre_px[0]) * spacing[0], (xx - centre_px[1]) * spacing[1])
    img += 2000.0 * np.exp(-0.5 * (r / 1.5) ** 2)
    return img.astype(np.uint16)


def test_breast_mask_matches_phantom_truth(phantom):
    img, masks = phantom
    p = pm.prepare(img, mammo_spacing(SIZE))
    truth = pm.to_model(masks["breast"].astype(np.float32), p.geometry) > 0.5
    iou = (truth & p.breast).sum() / (truth | p.breast).sum()
    assert iou > 0.97
    assert not p.geometry.flipped
    assert p.geometry.spacing == pytest.approx((0.42, 0.42), abs=0.005)
    # the breast plus margin fits, and the margin is background-like (well below tissue)
    assert p.image.shape == p.breast.shape
    assert np.all(p.image[:, -5:] < -1.5)


def test_mirrored_input_is_flipped_to_the_same_canonical_image(phantom):
    img, _ = phantom
    a = pm.prepare(img, mammo_spacing(SIZE))
    b = pm.prepare(img[:, ::-1], mammo_spacing(SIZE))
    assert b.geometry.flipped and not a.geometry.flipped
    np.testing.assert_allclose(a.image, b.image, atol=1e-5)
    # explicit side overrides the pixels
    c = pm.prepare(img, mammo_spacing(SIZE), chest_wall="right")
    assert c.geometry.flipped
    np.testing.assert_allclose(c.image, a.image[:, ::-1], atol=1e-5)


def test_chest_wall_from_orientation():
    assert pm.chest_wall_from_orientation(("A", "R")) == "left"
    assert pm.chest_wall_from_orientation(["P", "L"]) == "right"
    assert pm.chest_wall_from_orientation(None) is None
    assert pm.chest_wall_from_orientation(("F", "R")) is None


@pytest.mark.parametrize("left", [True, False])
@pytest.mark.parametrize("shape,spacing", [((700, 540), (0.3, 0.3)), ((1000, 777), (0.21, 0.23))])
def test_round_trip_puts_a_blob_back_on_its_source_pixels(left, shape, spacing):
    centre = (0.55 * shape[0], (0.15 if left else 0.85) * shape[1])
    img = blob_image(shape, spacing, centre, chest_wall_left=left)
    p = pm.prepare(img, spacing)
    assert p.geometry.flipped == (not left)
    # find the blob in the model grid (chest wall left, so it must sit in the left part)
    inner = np.where(p.breast, p.image, -np.inf)
    py, px = np.unravel_index(np.argmax(inner), inner.shape)
    assert px < p.image.shape[1] / 2
    # a one-pixel map at that spot, mapped back, peaks at the blob's source pixel
    spot = np.zeros(p.image.shape, np.float32)
    spot[py, px] = 1.0
    back = pm.to_source(spot, p.geometry)
    assert back.shape == shape
    by, bx = np.unravel_index(np.argmax(back), back.shape)
    tol = max(p.geometry.scale) + 0.6  # within one model pixel
    assert abs(by - centre[0]) <= tol and abs(bx - centre[1]) <= tol
    # and a full-image map goes back onto the source breast (un-crop, un-flip, upsample)
    breast_src = pm.to_source(p.breast.astype(np.float32), p.geometry) > 0.5
    truth = img > 500
    assert (breast_src & truth).sum() / (breast_src | truth).sum() > 0.97


def test_sparse_map_with_origin_and_step():
    """A map sampled every `step` pixels from `origin` lands where those samples are."""
    img = blob_image((600, 480), (0.42, 0.42), (300, 100))
    p = pm.prepare(img, (0.42, 0.42))
    assert p.geometry.scale == (1.0, 1.0)
    sparse = np.zeros(((p.image.shape[0] - 52) // 8 + 1, (p.image.shape[1] - 52) // 8 + 1), np.float32)
    sparse[5, 3] = 1.0
    back = pm.to_source(sparse, p.geometry, origin=25.5, step=8)
    by, bx = np.unravel_index(np.argmax(back), back.shape)
    r0, _, c0, _ = p.geometry.crop
    assert (by, bx) in {(r0 + 25 + 40 + dy, c0 + 25 + 24 + dx) for dy in (0, 1) for dx in (0, 1)}
    assert back[:, 0].max() >= 0  # defined everywhere
    outside = pm.to_source(np.ones_like(p.image), p.geometry, fill=-1.0)
    assert outside.min() == -1.0 and outside.max() == 1.0


def test_sample_bilinear_interpolates_and_clamps():
    v = np.array([[0.0, 10.0], [20.0, 30.0]], np.float32)
    out = sample_bilinear(v, np.array([-1.0, 0.0, 0.5, 1.0, 2.0]), np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(out[2], [10.0, 15.0, 20.0])
    np.testing.assert_allclose(out[0], out[1])
    np.testing.assert_allclose(out[4], [20.0, 25.0, 30.0])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="2D"):
        pm.prepare(np.zeros((2, 3, 4, 5)), (0.1, 0.1))
    with pytest.raises(ValueError, match="chest_wall"):
        pm.prepare(np.zeros((100, 80)), (0.42, 0.42), chest_wall="up")
    with pytest.raises(ValueError, match="unsupported normalization"):
        pm.normalize(np.zeros(3), {"kind": "zscore"})
