"""The domain check as a user meets it: `lightbox analyze` on real scanner images (pydicom-data's CT,
a real radiograph filed as a mammogram) says the demo models are out of their depth, in results.json
and on stderr; on a held-out phantom it says they are in domain."""
from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from viewer.cli import main
from viewer.core.synthetic import write_ct_study, write_mammo_exam

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def analyze(capsys, src, out) -> tuple[int, dict, str]:
    code = main(["analyze", str(src), "--out", str(out), "--json", "--device", "cpu"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else {}), captured.err


def real_ct_series(folder, slices: int = 8):
    """pydicom-data's 512x512 CT slice (a real scanner's pixels and header) filed as a short series: the
    3D model needs several slices, and a real multi-slice CT is not in the test sets."""
    src = pydicom.dcmread(get_testdata_file("693_UNCR.dcm"))
    series_uid = generate_uid()
    for i in range(slices):
        ds = src.copy()
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-120.0, -120.0, 5.0 * i]
        ds.SliceThickness = 5.0
        ds.save_as(folder / f"ct{i:02d}.dcm")
    return folder


def real_radiograph_as_mammogram(folder):
    """A real chest radiograph (CR) relabelled RCC: what a wrongly routed image looks like to the models."""
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    ds.Modality = "MG"
    ds.ImageLaterality = "R"
    ds.ViewPosition = "CC"
    ds.PixelSpacing = [0.1, 0.1]
    ds.SeriesInstanceUID = generate_uid()
    ds.save_as(folder / "rcc.dcm")
    return folder


def test_real_ct_is_flagged_in_results_and_on_stderr(capsys, tmp_path):
    src = tmp_path / "ct"
    src.mkdir()
    code, data, err = analyze(capsys, real_ct_series(src), tmp_path / "out")
    assert code == 0, err
    (res,) = data["results"]
    (series,) = res["series"].values()
    dom = series["domain"]
    assert dom["in_domain"] is False and dom["score"] > dom["threshold"] > 0
    assert dom["model"] == "ct-organs-unet3d 1"
    assert "unlike this model's training data" in err
    assert any("unlike this model's training data" in w for w in res["warnings"])
    # this real file has no FrameOfReferenceUID: no DICOM SEG can reference it, the NIfTI is still written
    assert "segmentation (NIfTI)" in series["files"] and "DICOM SEG" in " ".join(series["not_written"])
    assert "not written" in err and "Frame Of Reference" in err


def test_real_radiograph_filed_as_mammogram_is_flagged(capsys, tmp_path):
    src = tmp_path / "mg"
    src.mkdir()
    code, data, err = analyze(capsys, real_radiograph_as_mammogram(src), tmp_path / "out")
    assert code == 0, err
    (res,) = data["results"]
    dom = res["series"]["RCC"]["domain"]
    assert dom["in_domain"] is False
    assert set(dom["models"]) == {"mammo-patch 1.0.0", "mammo-exam 1.0.0", "mammo-lesion-unet2d 1"}
    assert all(m["in_domain"] is False for m in dom["models"].values())


def test_held_out_phantoms_are_in_domain(capsys, tmp_path):
    ct, mg = tmp_path / "ct", tmp_path / "mg"
    write_ct_study(ct, shape=(48, 96, 96), spacing=(6.25, 3.73, 3.73), seed=1002)
    write_mammo_exam(mg, (832, 640), seed=900005, lesion_side="R")
    for src in (ct, mg):
        code, data, err = analyze(capsys, src, tmp_path / f"out-{src.name}")
        assert code == 0, err
        for res in data["results"]:
            for name, series in res["series"].items():
                assert series["domain"]["in_domain"] is True, (name, series["domain"])
                assert np.isfinite(series["domain"]["score"])
        assert "unlike this model's training data" not in err
