"""MONOCHROME1 mammograms (low values white) reach the models and the training exports as the
MONOCHROME2 image of the same exposure: same probabilities, same maps, same exported pixels."""
from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from viewer.analysis.run import analyze_mammo_exam
from viewer.core.export.training import export_exam
from viewer.core.io import load_series, scan
from viewer.core.mammo import bright_is_dense, view_name
from viewer.core.synthetic import write_mammo_exam

SIZE = (416, 320)


def as_monochrome1(src_dir, dst_dir):
    """The same exam stored MONOCHROME1: every stored value v becomes (2**BitsStored - 1) - v."""
    dst_dir.mkdir()
    for path in sorted(src_dir.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        bits = int(ds.BitsStored)
        ds.PixelData = ((1 << bits) - 1 - ds.pixel_array.astype(np.int64)).astype(ds.pixel_array.dtype).tobytes()
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.save_as(dst_dir / path.name)


def views_of(folder):
    out = {}
    for series in scan(folder).series:
        if series.kind == "dicom":
            volume = load_series(series)
            out[view_name(volume.info)] = (series, volume)
    return out


@pytest.fixture(scope="module")
def exams(tmp_path_factory):
    root = tmp_path_factory.mktemp("mono")
    write_mammo_exam(root / "m2", SIZE, seed=4, lesion_side="R")
    as_monochrome1(root / "m2", root / "m1")
    return views_of(root / "m2"), views_of(root / "m1")


def test_the_inverted_pixels_are_the_monochrome2_ones(exams):
    m2, m1 = exams
    for name, (series, volume) in m1.items():
        assert volume.info.photometric == "MONOCHROME1"
        assert not np.array_equal(volume.array, m2[name][1].array)  # stored differently...
        restored = bright_is_dense(volume, series)
        np.testing.assert_array_equal(restored, m2[name][1].array)  # ...the same exposure
        assert restored.dtype == m2[name][1].array.dtype
    series, volume = m2["LCC"]
    assert bright_is_dense(volume, series) is volume.array  # MONOCHROME2 untouched


def test_analysis_of_a_monochrome1_exam_equals_the_monochrome2_one(exams):
    m2, m1 = exams
    a = analyze_mammo_exam({n: (s, v) for n, (s, v) in m2.items()}, device="cpu")
    b = analyze_mammo_exam({n: (s, v) for n, (s, v) in m1.items()}, device="cpu")
    assert b.exam_scores["R"] > b.exam_scores["L"]  # the lesion side, as for MONOCHROME2
    for side in ("R", "L"):
        assert b.exam_scores[side] == pytest.approx(a.exam_scores[side], abs=1e-5)
    for name in m2:
        assert b.series[name].scores["malignancy"] == pytest.approx(a.series[name].scores["malignancy"], abs=1e-5)
        for oa, ob in zip(a.series[name].overlays, b.series[name].overlays):
            np.testing.assert_allclose(ob.array, oa.array, atol=1e-4)


def test_exported_training_images_are_monochrome2(exams, tmp_path):
    m2, m1 = exams
    out2 = export_exam(tmp_path / "a", {n: (v, s) for n, (s, v) in m2.items()}, {"RCC": "suspicious"})
    out1 = export_exam(tmp_path / "b", {n: (v, s) for n, (s, v) in m1.items()}, {"RCC": "suspicious"})
    for name in m2:
        pixels2 = sitk.GetArrayFromImage(sitk.ReadImage(str(out2["images"][name])))
        pixels1 = sitk.GetArrayFromImage(sitk.ReadImage(str(out1["images"][name])))
        np.testing.assert_array_equal(pixels1, pixels2)
    rows = json.loads((out1["dataset"] / "classification.json").read_text())["classification"]
    assert [(r["view"], r["label"]) for r in rows] == [("RCC", "suspicious")]
