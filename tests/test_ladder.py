"""The phantom difficulty ladder (issue 17 §1): each difficulty knob does what it says, defaults keep the
pixels, masks stay exact, rungs are ordered, bootstrap intervals behave, and bench_ladder runs end to end."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from inference import ladder, phantoms
from inference.density import view_density

SIZE = (416, 320)  # a quarter of the demo matrix, same field of view: fast
SPACING = phantoms.mammo_spacing(SIZE)


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _view(**kw):
    return phantoms.mammo_image_with_truth("R", "CC", SIZE, 11, **kw)


def test_defaults_are_bit_identical_with_explicit_none():
    """Every difficulty keyword at None is today's generator: same pixels, masks, truth."""
    nones = dict(fibroglandular_fraction=None, mass_contrast=None, mass_radius_mm=None, spiculation=None,
                 calc_count=None, calc_radius_mm=None, calc_contrast=None)
    for view in ("CC", "MLO"):
        a, ma, ta = phantoms.mammo_image_with_truth("L", view, SIZE, 3, True, True)
        b, mb, tb = phantoms.mammo_image_with_truth("L", view, SIZE, 3, True, True, **nones)
        assert _digest(a, *ma.values(), ta["dense"]) == _digest(b, *mb.values(), tb["dense"])
    hu, m = phantoms.ct_phantom((24, 64, 64), (12.5, 5.6, 5.6), 2)
    hu2, m2 = phantoms.ct_phantom((24, 64, 64), (12.5, 5.6, 5.6), 2, lesion_contrast_hu=None, lesion_radius_mm=None)
    assert _digest(hu, *m.values()) == _digest(hu2, *m2.values())


def test_default_pixels_pinned():
    """The knobs must not move the default draws (the demo models were trained on them)."""
    img, masks, _t = phantoms.mammo_image_with_truth("R", "MLO", SIZE, 5, True, True)
    assert _digest(img, masks["mass"], masks["calcification"]) == (
        "3197bae966b1160923543126c0345f33b2a782c9a03dd19e4b4c13bba4b289a6")


def _mass_vs_surround(contrast):
    img, masks, _t = _view(mass=True, mass_contrast=contrast, spiculation=0.0, mass_radius_mm=6.0)
    base, _m, _t = _view(mass=False)
    mass = masks["mass"].astype(bool)
    ring = ndi.binary_dilation(mass, iterations=6) & ~ndi.binary_dilation(mass, iterations=2)
    diff = img.astype(float) - base.astype(float)
    return float(img[mass].mean() - img[ring].mean()), float(diff[mass].mean()), mass


def test_mass_contrast_lowers_the_difference_to_the_surround():
    hi, add_hi, mask_hi = _mass_vs_surround(900.0)
    lo, add_lo, mask_lo = _mass_vs_surround(100.0)
    assert np.array_equal(mask_hi, mask_lo)  # same site and shape: only brightness changed
    assert add_hi == pytest.approx(900.0 * 1.01, rel=0.05) and add_lo == pytest.approx(100.0 * 1.01, rel=0.1)
    assert hi - lo > 600.0


def test_mass_radius_sets_the_mask_area():
    areas = []
    for r in (2.5, 5.0, 8.0):
        _img, masks, _t = _view(mass=True, mass_radius_mm=r)
        areas.append(masks["mass"].sum() * SPACING[0] * SPACING[1])
    for r, a in zip((2.5, 5.0, 8.0), areas):
        assert a == pytest.approx(np.pi * r ** 2, rel=0.25)  # lobulated circle of that radius


def _spiculation_shape(s):
    """perimeter / area of what the mass added to the image (spicules are not in the core mask)."""
    img, _m, _t = _view(mass=True, spiculation=s, mass_contrast=900.0)
    base, _m, _t = _view(mass=False)
    added = (img.astype(float) - base.astype(float)) > 150.0
    perimeter = (added & ~ndi.binary_erosion(added)).sum()
    return perimeter / added.sum()


def test_spiculation_grows_perimeter_over_area():
    smooth, mid, strong = (_spiculation_shape(s) for s in (0.0, 0.5, 1.0))
    assert smooth < mid < strong
    assert strong > 1.5 * smooth


@pytest.mark.parametrize("count", [1, 4, 9])
def test_calc_count_matches_mask_components(count):
    for view in ("CC", "MLO"):
        _img, masks, _t = phantoms.mammo_image_with_truth("L", view, SIZE, 21, calcifications=True,
                                                          calc_count=count)
        assert ndi.label(masks["calcification"])[1] == count


def test_calc_size_and_contrast():
    _i, small, _t = _view(calcifications=True, calc_count=5, calc_radius_mm=0.1)
    _i, big, _t = _view(calcifications=True, calc_count=5, calc_radius_mm=0.6)
    assert big["calcification"].sum() > 2 * small["calcification"].sum()
    base, _m, _t = _view(calcifications=False)
    peaks = []
    for c in (2000.0, 200.0):
        img, masks, _t = _view(calcifications=True, calc_count=5, calc_contrast=c)
        peaks.append(float((img.astype(float) - base)[masks["calcification"].astype(bool)].max()))
    assert peaks[0] > 1500 and peaks[1] < 300


def test_fibroglandular_fraction_sets_truth_and_measured_density():
    truths, measured = [], []
    for f in (0.1, 0.5, 0.9):
        img, _m, truth = _view(fibroglandular_fraction=f)
        truths.append(truth["percent_dense"])
        measured.append(view_density(img, SPACING, mlo=False).percent)
    assert truths == pytest.approx([10.0, 50.0, 90.0], abs=0.1)
    assert measured[0] < measured[1] < measured[2]
    with pytest.raises(ValueError, match="not both"):
        _view(density_bias=0.2, fibroglandular_fraction=0.5)
    with pytest.raises(ValueError, match="spiculation"):
        _view(mass=True, spiculation=2.0)


def test_ct_lesion_contrast_and_size():
    shape, spacing = (40, 96, 96), (7.5, 3.7, 3.7)
    hu, m = phantoms.ct_phantom(shape, spacing, 4, lesion_contrast_hu=-40.0, lesion_radius_mm=12.0)
    hu2, m2 = phantoms.ct_phantom(shape, spacing, 4, lesion_contrast_hu=-10.0, lesion_radius_mm=12.0)
    liver_lesion = (m["lesions"] & m["liver"]).astype(bool)
    assert liver_lesion.any() and np.array_equal(m["lesions"], m2["lesions"])
    liver_only = m["liver"].astype(bool) & ~ndi.binary_dilation(m["lesions"].astype(bool), iterations=2)
    gap = float(hu[liver_only].mean() - hu[liver_lesion].mean())
    gap2 = float(hu2[liver_only].mean() - hu2[liver_lesion].mean())
    assert gap == pytest.approx(40.0, abs=8.0) and gap2 == pytest.approx(10.0, abs=8.0)
    _hu, small = phantoms.ct_phantom(shape, spacing, 4, lesion_radius_mm=5.0)
    assert 0 < small["lesions"].sum() < m["lesions"].sum()


def test_rungs_are_ordered_and_harder_step_by_step():
    for kind in ("mass", "calcification", "ct-lesion"):
        rs = ladder.rungs(kind)
        assert [r.level for r in rs] == list(range(len(rs))) and len(rs) >= 4
        assert "miss" in rs[-1].description and "obvious" in rs[0].description
        for a, b in zip(rs, rs[1:]):
            for key, va in a.params.items():
                vb = b.params[key]
                if key == "fibroglandular_fraction":
                    assert vb >= va
                elif key == "lesion_contrast_hu":
                    assert abs(vb) <= abs(va)
                else:
                    assert vb <= va, (a.name, b.name, key)
    with pytest.raises(ValueError, match="no ladder rung"):
        ladder.rung_named("mass-99")


def test_mammo_cases_are_exact_and_share_density():
    r = ladder.rung_named("calc-2")
    cases = ladder.mammo_cases(r, 2, 2, seed=1, size=SIZE)
    assert [c.label for c in cases] == [1, 1, 0, 0]
    assert {(c.laterality, c.view) for c in cases[:2]} == {("R", "CC"), ("L", "CC")}
    for c in cases:
        assert c.image.dtype == np.uint16 and c.spacing == SPACING and c.rung == "calc-2"
        assert bool(c.masks["calcification"].any()) == bool(c.label) and not c.masks["mass"].any()
        assert ndi.label(c.masks["calcification"])[1] == (r.params["calc_count"] if c.label else 0)
        _i, _m, truth = phantoms.mammo_image_with_truth(c.laterality, c.view, SIZE, c.seed,
                                                        fibroglandular_fraction=0.5)
        assert truth["percent_dense"] == pytest.approx(50.0, abs=0.1)
    again = ladder.mammo_cases("calc-2", 2, 2, seed=1, size=SIZE)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(cases, again))
    with pytest.raises(ValueError, match="not a mammography"):
        ladder.mammo_cases("ct-0", 1, 1)


def test_bootstrap_auc_contains_estimate_and_narrows_with_n():
    rng = np.random.default_rng(0)

    def sample(n):
        y = np.r_[np.ones(n), np.zeros(n)]
        return rng.normal(y * 1.0, 1.0), y

    s, y = sample(20)
    auc, lo, hi = ladder.bootstrap_auc(s, y, 500, 0)
    assert lo <= auc <= hi and auc == pytest.approx(ladder.auc(s, y))
    s2, y2 = sample(400)
    auc2, lo2, hi2 = ladder.bootstrap_auc(s2, y2, 500, 0)
    assert lo2 <= auc2 <= hi2 and (hi2 - lo2) < 0.5 * (hi - lo)
    assert 0.70 < auc2 < 0.82  # d' = 1: AUC = Phi(1/sqrt 2) = 0.76
    assert ladder.bootstrap_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == (1.0, 1.0, 1.0)
    assert ladder.auc([0.5, 0.5], [1, 0]) == 0.5  # ties count half
    with pytest.raises(ValueError, match="positives and normals"):
        ladder.bootstrap_auc([0.1, 0.2], [1, 1])


def test_bootstrap_mean_contains_estimate_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small, big = rng.uniform(0, 1, 10), rng.uniform(0, 1, 1000)
    m, lo, hi = ladder.bootstrap_mean(small, 500, 0)
    m2, lo2, hi2 = ladder.bootstrap_mean(big, 500, 0)
    assert lo <= m <= hi and lo2 <= m2 <= hi2 and (hi2 - lo2) < 0.25 * (hi - lo)
    assert ladder.dice(np.ones(4, bool), np.ones(4, bool)) == 1.0
    assert ladder.dice(np.r_[1, 1, 0, 0].astype(bool), np.r_[1, 0, 0, 0].astype(bool)) == pytest.approx(2 / 3)


def test_view_score_separates_the_obvious_rung():
    cases = ladder.mammo_cases("mass-0", 2, 2, seed=0)
    for name in ("mammo-exam", "mammo-patch"):
        s = [ladder.view_score(name, c.image, c.spacing, c.laterality, c.view) for c in cases]
        assert min(s[:2]) > max(s[2:]), (name, s)
    with pytest.raises(ValueError, match="not a mammography classifier"):
        ladder.view_score("mammo-lesion-unet2d", cases[0].image, cases[0].spacing, "R", "CC")


def test_lesion_map_windows_sit_on_the_lesion_and_in_the_breast():
    """The lesion window covers the mass's patch centres and responds there; a normal view's random window of
    the same size lies in its breast and does not; the map's view score is view_score's."""
    from inference.preprocess.mammo import to_model

    pos, normal = ladder.mammo_cases("mass-0", 1, 1, seed=0)
    m = ladder.lesion_map("mammo-patch", pos.image, pos.spacing, pos.laterality, pos.view)
    assert m.view_score() == ladder.view_score("mammo-patch", pos.image, pos.spacing, pos.laterality, pos.view)
    r0, r1, c0, c1 = m.lesion_window(pos.masks["mass"])
    on_model = to_model(pos.masks["mass"].astype(np.float32), m.prepared.geometry) > 0
    rr, cc = np.nonzero(on_model)
    assert m.rows[r0] <= rr.mean() <= m.rows[r1 - 1] and m.cols[c0] <= cc.mean() <= m.cols[c1 - 1]
    assert m.window_score((r0, r1, c0, c1)) > 0.5
    assert m.lesion_window(np.zeros_like(pos.masks["mass"])) is None
    n = ladder.lesion_map("mammo-patch", normal.image, normal.spacing, normal.laterality, normal.view)
    windows = [n.random_window((r0, r1, c0, c1), np.random.default_rng(k)) for k in range(20)]
    for w in windows:
        assert (w[1] - w[0], w[3] - w[2]) == (r1 - r0, c1 - c0) and n.inside[(w[0] + w[1]) // 2, (w[2] + w[3]) // 2]
    assert max(n.window_score(w) for w in windows) < 0.5
    with pytest.raises(ValueError, match="only a patch classifier"):
        ladder.lesion_map("mammo-exam", pos.image, pos.spacing, pos.laterality, pos.view)


def test_bench_ladder_end_to_end(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_ladder

    out = tmp_path / "ladder.json"
    rc = bench_ladder.main(["--model", "mammo-patch", "--n", "2", "--rungs", "mass-0,mass-4", "--n-boot", "100",
                            "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mass-0" in text and "view AUC" in text and "mammo-patch 1.0.0" in text
    import json

    doc = json.loads(out.read_text())
    first, last = doc["scores"]
    assert first["rung"] == "mass-0" and first["value"] == 1.0 and first["n_cases"] == 4
    assert first["ci95"][0] <= first["value"] <= first["ci95"][1]
    assert bench_ladder.main(["--model", "no-such-model"]) == 2
    assert bench_ladder.main(["--model", "mammo-patch", "--rungs", "ct-0"]) == 2
