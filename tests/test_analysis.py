"""Analyze, headless: `lightbox analyze` on the phantom studies writes maps that line up with the source."""
from __future__ import annotations

import json

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from viewer.analysis.outputs import inside, safe_name
from viewer.cli import main
from viewer.core.io import load_series, scan
from viewer.core.io.itk import to_sitk
from viewer.core.synthetic import write_ct_study, write_mammo_exam, write_mr_study

MG_SIZE = (832, 640)  # half the demo matrix, same field of view


@pytest.fixture(scope="module")
def mg_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mg")
    write_mammo_exam(out, MG_SIZE, seed=3, lesion_side="L")  # a seed the models were not trained on
    return out


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct")
    write_ct_study(out, shape=(48, 96, 96), spacing=(6.25, 3.73, 3.73), seed=5)
    return out


def run_analyze(capsys, src, out, *extra) -> tuple[int, dict | None, str]:
    code = main(["analyze", str(src), "--out", str(out), "--json", *extra])
    captured = capsys.readouterr()
    data = json.loads(captured.out) if code == 0 else None
    return code, data, captured.err


def assert_on_grid(nifti_path, volume):
    img = sitk.ReadImage(str(nifti_path))
    ref = to_sitk(volume)
    assert img.GetSize() == ref.GetSize()
    np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(img.GetSpacing(), ref.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(img.GetDirection(), ref.GetDirection(), atol=1e-6)
    return sitk.GetArrayFromImage(img)


def test_analyze_mammo_exam_writes_aligned_maps_and_scores(capsys, tmp_path, mg_dir):
    out = tmp_path / "out"
    code, data, err = run_analyze(capsys, mg_dir, out)
    assert code == 0, err
    assert "heatmap and classification" in err  # progress on stderr
    (exam,) = [r for r in data["results"] if r["kind"] == "mammo-exam"]
    assert set(exam["series"]) == {"RCC", "LCC", "RMLO", "LMLO"}
    assert exam["exam_scores"]["L"] > exam["exam_scores"]["R"]  # the lesion is in the left breast
    assert {"patch", "exam", "segmentation"} <= set(exam["models"])
    assert "not a medical device" in exam["disclaimer"]
    assert json.loads((out / "results.json").read_text()) == data

    result = scan(mg_dir)
    by_uid = {s.uid: s for s in result.series}
    for name, entry in exam["series"].items():
        series = by_uid[entry["series_uid"]]
        volume = load_series(series)
        files = entry["files"]
        mass = assert_on_grid(out / files["heatmap mass"], volume)
        assert mass.dtype == np.float32 and 0.0 <= mass.min() and mass.max() <= 1.0
        assert_on_grid(out / files["heatmap Grad-CAM"], volume)
        labels = assert_on_grid(out / files["segmentation (NIfTI)"], volume)
        if name.startswith("L"):
            assert labels.any()
            seg = hd.seg.segread(out / files["segmentation (DICOM SEG)"])
            source = pydicom.dcmread(series.instances[0].path, stop_before_pixels=True)
            refs = [r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
                    for r in s.ReferencedInstanceSequence]
            assert refs == [source.SOPInstanceUID]
            assert seg.StudyInstanceUID == source.StudyInstanceUID
            assert seg.get_segment_description(1).SegmentLabel
            assert seg.get_segment_description(1).SegmentAlgorithmType == "AUTOMATIC"


def test_analyze_ct_segments_organs_into_nifti_and_seg(capsys, tmp_path, ct_dir):
    out = tmp_path / "out"
    code, data, err = run_analyze(capsys, ct_dir, out, "--device", "cpu")
    assert code == 0, err
    (res,) = data["results"]
    assert res["kind"] == "ct" and res["device"] == "cpu"
    (entry,) = res["series"].values()
    assert any(k.endswith(" mL") and v > 0 for k, v in entry["scores"].items())
    series = scan(ct_dir).series[0]
    volume = load_series(series)
    labels = assert_on_grid(out / entry["files"]["segmentation (NIfTI)"], volume)
    assert labels.max() >= 1
    seg = hd.seg.segread(out / entry["files"]["segmentation (DICOM SEG)"])
    assert seg.SeriesInstanceUID != series.uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.uid
    assert seg.number_of_segments >= 1


def test_analyze_rejects_what_it_cannot_do(capsys, tmp_path):
    mr = tmp_path / "mr"
    write_mr_study(mr, shape=(12, 24, 24), spacing=(6.0, 4.8, 4.8))
    code, _, err = run_analyze(capsys, mr, tmp_path / "o1")
    assert code == 2 and "nothing to analyse" in err and "no model for MR" in err
    assert not (tmp_path / "o1" / "results.json").exists()
    code, _, err = run_analyze(capsys, tmp_path / "missing", tmp_path / "o2")
    assert code == 2 and "no such file or folder" in err
    (tmp_path / "file").write_text("x")
    code, _, err = run_analyze(capsys, mr, tmp_path / "file")
    assert code == 2 and "not a folder" in err


def test_unavailable_device_is_a_clear_error(capsys, tmp_path, mg_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_analyze(capsys, mg_dir, tmp_path / "o", "--device", "cuda")
    assert code == 2 and "cuda" in err.lower()


def test_output_names_stay_inside_the_folder(tmp_path):
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("lesion probability") == "lesion_probability"
    assert safe_name("...") == "item"
    with pytest.raises(ValueError):
        inside(tmp_path, "../escape.json")
    assert inside(tmp_path, "a.json") == (tmp_path / "a.json").resolve()



def test_seg_of_a_label_map_missing_a_class_has_no_gap(tmp_path, ct_dir):
    """A class the model did not find (here: liver) is left out; the SEG numbers its segments 1..N."""
    from viewer.analysis.outputs import write_seg
    from viewer.analysis.results import Overlay, SeriesResult

    series = scan(ct_dir).series[0]
    volume = load_series(series)
    labels = np.zeros(volume.shape, np.uint8)
    labels[10:14, 20:30, 20:30] = 1
    labels[20:22, 40:44, 40:44] = 3
    ov = Overlay("segmentation", "labels", labels, "ct-organs-unet3d 1", ["background", "lungs", "liver", "lesions"])
    sr = SeriesResult(series.key, series.uid, series.label(), volume, [ov])
    seg = hd.seg.segread(write_seg(ov, sr, series, tmp_path / "seg.dcm"))
    assert seg.number_of_segments == 2
    assert [seg.get_segment_description(i).SegmentLabel for i in (1, 2)] == ["lungs", "lesions"]
    ov.array = np.zeros_like(labels)
    assert write_seg(ov, sr, series, tmp_path / "empty.dcm") is None


def test_analyze_mammo_writes_density_per_view_and_breast(capsys, tmp_path, mg_dir):
    """Issue 14: results.json gives each view's and each breast's percent density and BI-RADS category, as an
    estimate, computed without a model in a fraction of a second per view; the mammo_density path agrees."""
    from viewer.analysis.run import mammo_density

    code, data, err = run_analyze(capsys, mg_dir, tmp_path / "out")
    assert code == 0, err
    (exam,) = [r for r in data["results"] if r["kind"] == "mammo-exam"]
    for name, entry in exam["series"].items():
        d = entry["density"]
        assert 0 < d["percent"] < 100 and d["category"] in "abcd" and d["estimate"] is True, name
        assert d["seconds"] < 2.0 and d["breast_area_mm2"] > d["dense_area_mm2"] > 0
        assert ("pectoralis_removed" in d) == name.endswith("MLO")
    dens = exam["density"]
    assert dens["estimate"] is True and "BI-RADS" in dens["categories"]["source"] and "Otsu" in dens["method"]
    for side in ("R", "L"):
        views = [exam["series"][side + v]["density"]["percent"] for v in ("CC", "MLO")]
        assert dens[side]["percent"] == pytest.approx(np.mean(views), abs=0.06)
        assert sorted(dens[side]["views"]) == [side + "CC", side + "MLO"]
    result = scan(mg_dir)
    views = {s.uid: s for s in result.series}
    name, entry = next(iter(exam["series"].items()))
    series = views[entry["series_uid"]]
    alone = mammo_density({name: (series, load_series(series))})
    assert alone[name]["percent"] == entry["density"]["percent"]


def without_mammo_classifiers(monkeypatch):
    """As on a machine where no MG patch/exam classifier is installed (the CT models stay)."""
    from viewer.analysis import run

    real = run.candidates
    monkeypatch.setattr(run, "candidates", lambda task, modality, problems=None:
                        [] if (modality or "").upper() == "MG" else real(task, modality, problems))


def test_analyze_without_a_mammo_model_still_writes_density(capsys, tmp_path, mg_dir, monkeypatch):
    """Helper report: with no MG classifier, `analyze` used to skip the exam ('no mammography classifier') and
    results.json had no density; the density needs no model, so it is written, with a warning saying why."""
    without_mammo_classifiers(monkeypatch)
    code, data, err = run_analyze(capsys, mg_dir, tmp_path / "out")
    assert code == 0, err
    (exam,) = [r for r in data["results"] if r["kind"] == "mammo-exam"]
    assert exam["models"] == {} and "exam_scores" not in exam
    assert any("no mammography classifier" in w and "density only" in w for w in exam["warnings"])
    assert set(exam["series"]) == {"RCC", "LCC", "RMLO", "LMLO"}
    for name, entry in exam["series"].items():
        d = entry["density"]
        assert 0 < d["percent"] < 100 and d["category"] in "abcd" and d["estimate"] is True, name
        assert entry["scores"] == {} and entry["overlays"] == []
    assert {"R", "L"} <= set(exam["density"]) and exam["density"]["estimate"] is True
