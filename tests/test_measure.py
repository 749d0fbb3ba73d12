"""Calipers and ROI statistics: anisotropic pixels, numpy as the reference."""
import math

import numpy as np
import pytest

from viewer.core.measure import (RoiStats, angle_deg, cobb_angle_deg, distance_mm, distance_world, mask_stats, roi_mask,
                                  roi_stats)
from viewer.core.mpr import plane_geometry
from viewer.core.volume import Volume

PIXEL = (0.7, 1.3)  # (row mm, col mm)


def image(shape=(120, 150), seed=0):
    return np.random.default_rng(seed).normal(40, 20, shape).astype(np.int16)


def expected(img, region):
    vals = img[region].astype(float)
    return vals.mean(), vals.std(), vals.min(), vals.max(), int(region.sum())


def check(stats, img, region):
    mean, std, lo, hi, n = expected(img, region)
    assert isinstance(stats, RoiStats)
    assert stats.n_pixels == n > 0
    assert stats.mean == pytest.approx(mean) and stats.std == pytest.approx(std)
    assert (stats.min, stats.max) == (lo, hi)
    assert stats.area_mm2 == pytest.approx(n * PIXEL[0] * PIXEL[1])


@pytest.mark.parametrize("center, half", [((60, 70), (10, 25)), ((30.4, 80.6), (7.5, 12.2)), ((2, 3), (9, 9))])
def test_rect_roi_matches_numpy(center, half):
    img = image()
    r, c = np.ogrid[:img.shape[0], :img.shape[1]]
    region = (abs(r - center[0]) <= half[0]) & (abs(c - center[1]) <= half[1])
    check(roi_stats(img, PIXEL, "rect", center, half), img, region)


@pytest.mark.parametrize("center, half", [((60, 70), (10, 25)), ((30.4, 80.6), (7.5, 12.2)), ((118, 1), (20, 9))])
def test_ellipse_roi_matches_numpy(center, half):
    img = image()
    r, c = np.ogrid[:img.shape[0], :img.shape[1]]
    region = ((r - center[0]) / half[0]) ** 2 + ((c - center[1]) / half[1]) ** 2 <= 1
    check(roi_stats(img, PIXEL, "ellipse", center, half), img, region)


def test_large_ellipse_area_approaches_pi_a_b():
    a_px, b_px = 200, 300
    stats = roi_stats(np.zeros((500, 700)), PIXEL, "ellipse", (250, 350), (a_px, b_px))
    want = math.pi * (a_px * PIXEL[0]) * (b_px * PIXEL[1])
    assert stats.area_mm2 == pytest.approx(want, rel=0.02)


def test_mask_stats_empty_and_mismatch():
    img = image((8, 8))
    empty = mask_stats(img, np.zeros_like(img, bool), PIXEL)
    assert empty.n_pixels == 0 and empty.area_mm2 == 0 and math.isnan(empty.mean)
    assert roi_stats(img, PIXEL, "rect", (-50, -50), (3, 3)).n_pixels == 0
    with pytest.raises(ValueError):
        mask_stats(img, np.ones((4, 4), bool), PIXEL)
    with pytest.raises(ValueError):
        roi_mask(img.shape, "triangle", (1, 1), (1, 1))


def test_distance_anisotropic_3_4_5():
    # 3 mm down (2 rows of 1.5 mm) and 4 mm across (8 cols of 0.5 mm)
    assert distance_mm((1.5, 0.5), (10, 10), (12, 18)) == pytest.approx(5.0)
    assert distance_mm((1.5, 0.5), (12, 18), (10, 10)) == pytest.approx(5.0)
    # same pixel offsets, swapped pixel size: not 5
    assert distance_mm((0.5, 1.5), (10, 10), (12, 18)) == pytest.approx(math.hypot(1, 12))


def test_distance_from_volume_and_plane_geometry():
    vol = Volume(np.zeros((10, 20, 30)), spacing=(3.0, 1.5, 0.5))
    assert distance_mm(vol, (0, 0), (2, 8)) == pytest.approx(5.0)  # native (y, x) slice
    sag = plane_geometry(vol, "sagittal")
    # a vertical caliper on the sagittal view spans slices (3 mm each)
    p0, p1 = (0, 0), (4, 0)
    assert distance_mm(sag, p0, p1) == pytest.approx(4 * sag.pixel_size[0])
    assert sag.pixel_size[0] == 3.0


def test_distance_world():
    assert distance_world((0, 0, 0), (3, 4, 0)) == pytest.approx(5.0)
    assert distance_world([1, 2, 3], np.array([1, 2, 3])) == 0.0


# -- angles (issue 14): in patient millimetres, not pixels ---------------------------------------


def test_angle_right_angle_and_straight_line():
    assert angle_deg((1.0, 1.0), (0, 10), (0, 0), (10, 0)) == pytest.approx(90.0)
    assert angle_deg((1.0, 1.0), (0, -5), (0, 0), (0, 7)) == pytest.approx(180.0)
    assert angle_deg((1.0, 1.0), (3, 3), (0, 0), (6, 6)) == pytest.approx(0.0, abs=1e-9)


def test_angle_uses_anisotropic_pixel_spacing():
    """A 45 degree diagonal of the pixel grid with 0.5 mm rows and 1 mm columns is atan(0.5) in the patient."""
    a, vertex, b = (0, 10), (0, 0), (10, 10)  # horizontal arm, and a diagonal arm on the pixel grid
    assert angle_deg((1.0, 1.0), a, vertex, b) == pytest.approx(45.0)
    assert angle_deg((0.5, 1.0), a, vertex, b) == pytest.approx(math.degrees(math.atan(0.5)))  # 26.57
    assert angle_deg((2.0, 1.0), a, vertex, b) == pytest.approx(math.degrees(math.atan(2.0)))  # 63.43


def test_angle_of_a_zero_length_arm_is_nan():
    assert math.isnan(angle_deg((1.0, 1.0), (0, 0), (0, 0), (5, 5)))
    assert math.isnan(angle_deg((1.0, 1.0), (2, 2), (2, 2), (2, 2)))
    with pytest.raises(ValueError):
        angle_deg((0.0, 1.0), (0, 1), (0, 0), (1, 0))


def test_cobb_angle_of_known_lines():
    # end plates tilted +10 and -10 degrees (row grows downwards): 20 degrees between them
    t = math.radians(10)
    upper = ((0, 0), (-100 * math.sin(t), 100 * math.cos(t)))
    lower = ((50, 0), (50 + 100 * math.sin(t), 100 * math.cos(t)))
    assert cobb_angle_deg((1.0, 1.0), upper, lower) == pytest.approx(20.0)
    # the order a line was drawn in (left->right or right->left) does not change it
    assert cobb_angle_deg((1.0, 1.0), upper[::-1], lower) == pytest.approx(20.0)
    assert cobb_angle_deg((1.0, 1.0), lower, upper[::-1]) == pytest.approx(20.0)
    # parallel lines: 0; a severe curve goes on past 90 instead of folding back
    assert cobb_angle_deg((1.0, 1.0), ((0, 0), (0, 10)), ((5, 3), (5, 20))) == pytest.approx(0.0, abs=1e-9)
    t = math.radians(55)
    steep = cobb_angle_deg((1.0, 1.0), ((0, 0), (-math.sin(t), math.cos(t))), ((9, 0), (9 + math.sin(t), math.cos(t))))
    assert steep == pytest.approx(110.0)


def test_cobb_angle_anisotropic_and_degenerate():
    # a horizontal line and a pixel-grid diagonal, 2 mm rows x 1 mm columns: atan(2) in mm
    assert cobb_angle_deg((2.0, 1.0), ((0, 0), (0, 10)), ((5, 0), (15, 10))) == \
        pytest.approx(math.degrees(math.atan(2.0)))
    assert math.isnan(cobb_angle_deg((1.0, 1.0), ((0, 0), (0, 0)), ((5, 0), (5, 10))))
