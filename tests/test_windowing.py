"""Window/level: the DICOM VOI formula at its edges, presets and the default window."""
import numpy as np
import pytest

from viewer.core.volume import SourceInfo, Volume
from viewer.core.windowing import (CT_PRESET_KEYS, CT_PRESETS, Preset, apply_window, default_window,
                                   dense_window, full_range_window, presets_for, window_from_drag)


def dicom_linear(x, c, w):
    """PS3.3 C.11.2.1.2.1 written out scalar by scalar, ymin=0, ymax=255."""
    if x <= c - 0.5 - (w - 1) / 2:
        return 0.0
    if x > c - 0.5 + (w - 1) / 2:
        return 255.0
    return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0


def test_apply_window_edges_by_hand():
    # c=40, w=400: breakpoints at 40 - 0.5 -/+ 199.5 = -160 and 239
    x = np.array([-1000, -160, -159, 39, 40, 238, 239, 240, 3000], dtype=np.int16)
    out = apply_window(x, 40, 400)
    assert out.dtype == np.uint8 and out.shape == x.shape
    # -159: (-198.5/399 + .5)*255 = 0.64 -> 1;  39: 127.18;  40: 127.82;  238: 254.36
    assert out.tolist() == [0, 0, 1, 127, 128, 254, 255, 255, 255]


def test_apply_window_width_one_is_a_threshold_at_center_minus_half():
    x = np.array([-5.0, 9.0, 9.5, 9.6, 10.0, 50.0])
    assert apply_window(x, 10, 1).tolist() == [0, 0, 0, 255, 255, 255]
    # widths below 1 are not valid DICOM; treated as 1
    assert apply_window(x, 10, 0.2).tolist() == [0, 0, 0, 255, 255, 255]


def test_apply_window_width_two():
    # breakpoints -1 and 0; -0.5 is the exact middle (127.5 rounds to even 128)
    assert apply_window(np.array([-2, -1, -0.5, 0, 1]), 0, 2).tolist() == [0, 0, 128, 255, 255]


def test_apply_window_matches_formula_everywhere():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1200, 1200, size=(64, 64))
    for c, w in [(40, 400), (-600, 1500), (0, 3), (123.4, 17.7)]:
        want = np.rint([dicom_linear(v, c, w) for v in x.ravel()]).reshape(x.shape)
        np.testing.assert_array_equal(apply_window(x, c, w), want)


def test_apply_window_monochrome1_inverts_and_keeps_input():
    x = np.array([[-1000.0, 0.0], [40.0, 1000.0]])
    before = x.copy()
    normal = apply_window(x, 40, 400)
    inverted = apply_window(x, 40, 400, invert=True)
    np.testing.assert_array_equal(inverted, 255 - normal)
    assert inverted[0, 0] == 255 and inverted[1, 1] == 0
    np.testing.assert_array_equal(x, before)


def test_apply_window_nan_is_black_and_scalars_work():
    assert apply_window(np.array([np.nan]), 0, 10).tolist() == [0]
    assert int(apply_window(1000, 0, 10)) == 255


def ct(window=None):
    return Volume(np.zeros((2, 4, 4), np.int16), info=SourceInfo(modality="CT", window=window))


def test_ct_presets_standard_values():
    presets = {p.name: (p.center, p.width) for p in presets_for(ct())}
    assert presets["Soft tissue"] == (40, 400)
    assert presets["Abdomen"] == (60, 400)
    assert presets["Lung"] == (-600, 1500)
    assert presets["Bone"] == (400, 1800)
    assert presets["Brain"] == (40, 80)
    assert presets["Liver"] == (60, 160)
    assert presets["Mediastinum"] == (50, 350)
    assert all(isinstance(p, Preset) for p in presets_for(ct()))
    assert set(CT_PRESET_KEYS.values()) == {p.name for p in CT_PRESETS}


def mammogram(seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:300, :200]
    img = rng.normal(60, 5, (300, 200))  # air background
    breast = ((yy - 150) / 140.0) ** 2 + (xx / 180.0) ** 2 <= 1
    tissue = 1200 + 1500 * np.exp(-(xx / 90.0) ** 2) + rng.normal(0, 80, (300, 200))
    img[breast] = tissue[breast]
    return Volume(np.clip(img, 0, 4095).astype(np.uint16), spacing=(1, 0.1, 0.1),
                  info=SourceInfo(modality="MG"))


def test_mg_presets_full_range_and_dense():
    vol = mammogram()
    presets = {p.name: p for p in presets_for(vol)}
    assert list(presets) == ["Full range", "Dense"]
    lo, hi = float(vol.array.min()), float(vol.array.max())
    full, dense = presets["Full range"], presets["Dense"]
    assert (full.center, full.width) == ((lo + hi) / 2, hi - lo)
    d_lo, d_hi = dense.center - dense.width / 2, dense.center + dense.width / 2
    assert lo <= d_lo < d_hi <= hi
    assert dense.width < full.width
    # the air background is left out: the dense window starts inside the tissue range
    assert d_lo > 1000


def test_mg_helpers_on_flat_images():
    flat = np.full((10, 10), 7, np.uint16)
    assert full_range_window(flat) == (7.0, 1.0)
    assert dense_window(flat) == (7.0, 1.0)


def test_mr_gets_auto_percentile_preset():
    arr = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    (auto,) = presets_for(Volume(arr, info=SourceInfo(modality="MR")))
    lo, hi = np.percentile(arr, [1, 99])
    assert auto.name == "Auto"
    assert auto.center == pytest.approx((lo + hi) / 2) and auto.width == pytest.approx(hi - lo)


def test_default_window_prefers_source_window():
    assert default_window(ct(window=(35.0, 350.0))) == (35.0, 350.0)


def test_default_window_percentiles_without_source_window():
    arr = np.linspace(-1000, 1000, 4 * 50 * 50).reshape(4, 50, 50)
    c, w = default_window(Volume(arr, info=SourceInfo(modality="CT")))
    lo, hi = np.percentile(arr, [1, 99])
    assert c == pytest.approx((lo + hi) / 2, abs=1) and w == pytest.approx(hi - lo, rel=1e-3)
    # an unusable stored window (width < 1) falls back too
    assert default_window(Volume(arr, info=SourceInfo(window=(0.0, 0.0)))) == (c, w)


def test_default_window_on_a_big_volume_uses_a_subsample():
    rng = np.random.default_rng(1)
    arr = rng.integers(-1024, 2000, size=(300, 512, 512), dtype=np.int16)
    arr[:, :, :40] = -3000  # background columns the percentile must still see
    c, w = default_window(Volume(arr, info=SourceInfo(modality="CT")))
    lo, hi = c - w / 2, c + w / 2
    assert lo == -3000 and 1900 < hi <= 2000


def test_window_from_drag():
    # right widens, down raises the center
    assert window_from_drag(40, 400, dx=10, dy=5, sensitivity=2) == (50, 420)
    assert window_from_drag(40, 400, dx=-10, dy=-5) == (35, 390)
    assert window_from_drag(40, 10, dx=-100, dy=0) == (40, 1.0)
