"""Export one corrected case for retraining: dataset pair + de-identified DICOM SEG, and `lightbox export`."""
from __future__ import annotations

import csv
import json

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk

from viewer.cli import main
from viewer.core.export.training import export_case
from viewer.core.io import load_series, scan
from viewer.core.synthetic import write_ct_study
from viewer.core.volume import Volume


def test_export_case_writes_a_deidentified_seg_beside_the_dataset_pair(tmp_path):
    src = tmp_path / "ct"
    write_ct_study(src, shape=(20, 40, 40), spacing=(10.0, 8.96, 8.96), seed=1)
    series = scan(src).series[0]
    volume = load_series(series)
    labels = np.zeros(volume.shape, np.uint8)
    labels[8:12, 10:20, 10:20] = 2
    out = export_case(tmp_path / "out", volume, labels, {1: "lungs", 2: "liver"}, series,
                      model="ct-organs-unet3d 1", keep_mapping=True)
    meta = json.loads((out["dataset"] / "dataset.json").read_text())
    assert meta["numTraining"] == 1 and meta["labels"]["liver"] >= 1
    seg = hd.seg.segread(out["seg"])
    source = pydicom.dcmread(series.instances[0].path, stop_before_pixels=True)
    assert seg.PatientName != source.PatientName and seg.PatientID != source.PatientID
    assert seg.StudyInstanceUID != source.StudyInstanceUID  # remapped, consistently:
    mapping = json.loads(out["mapping"].read_text())
    assert mapping["uids"][source.StudyInstanceUID] == seg.StudyInstanceUID
    assert seg.get_segment_description(1).SegmentLabel == "liver"
    raw = out["seg"].read_bytes()
    assert str(source.PatientName).encode() not in raw and source.PatientID.encode() not in raw


def test_lightbox_export_cli(tmp_path, capsys):
    from viewer.core.export.nifti import write_label_map

    src = tmp_path / "ct"
    write_ct_study(src, shape=(16, 32, 32), spacing=(12.5, 11.2, 11.2), seed=2)
    volume = load_series(scan(src).series[0])
    labels = np.zeros(volume.shape, np.uint8)
    labels[5:9, 8:20, 8:20] = 1
    seg = write_label_map(labels, volume, tmp_path / "edited.nii.gz")
    assert main(["export", str(src), "--labels", str(seg), "--names", "liver", "--out", str(tmp_path / "ds"),
                 "--class", "exam=abnormal"]) == 0
    captured = capsys.readouterr()
    assert "CASE_0001" in captured.err or "CASE" in captured.err
    root = next((tmp_path / "ds").iterdir())
    assert json.loads((root / "dataset.json").read_text())["labels"] == {"background": 0, "liver": 1}
    rows = json.loads((root / "classification.json").read_text())["classification"]
    assert [(r["view"], r["label"]) for r in rows] == [("exam", "abnormal")]
    assert (root / "classification.csv").read_text().splitlines()[1] == "CASE_0001,exam,abnormal,,"  # no image, no side
    assert main(["export", str(src), "--labels", str(seg), "--out", str(tmp_path / "ds"), "--class", "oops"]) == 2
    assert main(["export", str(src), "--labels", str(tmp_path / "nope.nii.gz"), "--out", str(tmp_path / "ds")]) == 2


def _mammo_views(folder):
    from viewer.core.mammo import four_view

    study = scan(folder).studies[0]
    return {name: (load_series(series), series) for name, series in four_view(study).items()}


def test_export_exam_writes_every_view_the_rows_and_a_segmentation_case(tmp_path):
    import SimpleITK as sitk

    from viewer.core.export.training import export_exam
    from viewer.core.synthetic import write_mammo_exam

    write_mammo_exam(tmp_path / "mg", (96, 72), seed=3)
    views = _mammo_views(tmp_path / "mg")
    lcc = views["LCC"][0]
    edited = np.zeros(lcc.shape, np.uint8)
    edited[0, 30:40, 20:30] = 1
    model_map = np.zeros_like(edited)
    model_map[0, 30:38, 20:30] = 1
    out = export_exam(tmp_path / "ds", views, {"LCC": "suspicious", "exam": "suspicious", "RMLO": ""},
                      labels={"LCC": (edited, {1: "mass"}, model_map)}, model="mammo-exam 1",
                      seg_models={"LCC": "mammo-lesion-unet2d 1"})
    ds = out["dataset"]
    assert out["case"] == "CASE_0001" and sorted(out["images"]) == ["LCC", "LMLO", "RCC", "RMLO"]
    for name, (volume, _series) in views.items():
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "imagesCls" / f"CASE_0001_{name}.nii.gz")))
        np.testing.assert_array_equal(written, volume.array)  # the pixels as the viewer holds them
    rows = json.loads((ds / "classification.json").read_text())["classification"]
    assert rows == [  # only the labelled views and the exam; the synthetic exam is acquired chest wall left
        {"case": "CASE_0001", "view": "LCC", "label": "suspicious", "image": "imagesCls/CASE_0001_LCC.nii.gz",
         "chest_wall": "left"},
        {"case": "CASE_0001", "view": "exam", "label": "suspicious", "image": "", "chest_wall": ""}]
    seg_case = out["segmentations"]["LCC"]
    assert seg_case["case"] == "CASE_0001_LCC" and seg_case["label"].is_file()
    records = [json.loads(line) for line in (ds / "provenance.jsonl").read_text().splitlines()]
    assert [r["case"] for r in records] == ["CASE_0001", "CASE_0001_LCC"]
    assert records[0]["model"] == {"name": "mammo-exam", "version": "1"}
    assert records[1]["extra"] == {"exam_case": "CASE_0001", "view": "LCC"}
    assert records[1]["model"]["name"] == "mammo-lesion-unet2d" and records[1]["edits"]["voxels_changed"] == 20
    source = pydicom.dcmread(views["LCC"][1].instances[0].path, stop_before_pixels=True)
    seg = hd.seg.segread(seg_case["seg"])
    assert seg.PatientID != source.PatientID and seg.StudyInstanceUID != source.StudyInstanceUID
    assert records[0]["source_study_uid"] == seg.StudyInstanceUID  # one keyed mapping for the whole exam
    assert out["mapping"] is None and not list(ds.glob("deid-mapping-*"))
    # the next exam takes the next number
    assert export_exam(tmp_path / "ds", views, {"exam": "normal"})["case"] == "CASE_0002"


def test_lightbox_export_cli_mammography_classes_without_labels(tmp_path, capsys):
    from viewer.core.synthetic import write_mammo_exam

    write_mammo_exam(tmp_path / "mg", (80, 64), seed=4)
    assert main(["export", str(tmp_path / "mg"), "--out", str(tmp_path / "ds"), "--class", "RCC=suspicious",
                 "--class", "exam=suspicious", "--keep-mapping"]) == 0
    assert "CASE_0001" in capsys.readouterr().err
    root = tmp_path / "ds" / "Dataset501_Lightbox"
    assert len(list((root / "imagesCls").glob("CASE_0001_*.nii.gz"))) == 4
    with open(root / "classification.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["view"], r["label"], r["image"]) for r in rows] == [
        ("RCC", "suspicious", "imagesCls/CASE_0001_RCC.nii.gz"), ("exam", "suspicious", "")]
    assert (root / "deid-mapping-CASE_0001.json").is_file()
    assert main(["export", str(tmp_path / "mg"), "--out", str(tmp_path / "ds")]) == 2  # no class: nothing to do
    assert main(["export", str(tmp_path / "mg"), "--out", str(tmp_path / "ds"), "--class", "XCC=normal"]) == 2
    assert "no XCC view" in capsys.readouterr().err
    write_ct_study(tmp_path / "ct", shape=(8, 16, 16), spacing=(12.5, 11.2, 11.2), seed=2)
    assert main(["export", str(tmp_path / "ct"), "--out", str(tmp_path / "ds"), "--class", "exam=normal"]) == 2
    assert "--labels" in capsys.readouterr().err


def test_lightbox_export_cli_mammography_view_segmentation(tmp_path, capsys):
    from viewer.core.export.nifti import write_label_map
    from viewer.core.synthetic import write_mammo_exam

    write_mammo_exam(tmp_path / "mg", (80, 64), seed=4)
    lcc = _mammo_views(tmp_path / "mg")["LCC"][0]
    labels = np.zeros(lcc.shape, np.uint8)
    labels[0, 30:40, 20:30] = 1
    seg = write_label_map(labels, lcc, tmp_path / "lcc-mass.nii.gz")
    args = ["export", str(tmp_path / "mg"), "--labels", str(seg), "--names", "mass", "--out", str(tmp_path / "ds")]
    assert main([*args, "--series", "LCC", "--class", "LCC=suspicious"]) == 0
    assert "segmentation LCC as CASE_0001_LCC" in capsys.readouterr().err
    root = tmp_path / "ds" / "Dataset501_Lightbox"
    written = sitk.ReadImage(str(root / "labelsTr" / "CASE_0001_LCC.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), labels)
    assert (root / "segTr" / "CASE_0001_LCC.seg.dcm").is_file()
    assert [r["view"] for r in json.loads((root / "classification.json").read_text())["classification"]] == ["LCC"]
    assert main(args) == 0  # without --series: the one view whose geometry the map has
    assert "segmentation LCC as CASE_0002_LCC" in capsys.readouterr().err
    small = Volume(np.zeros((1, 40, 32), np.uint16), (1.0, 2 * lcc.spacing[1], 2 * lcc.spacing[2]),
                   lcc.origin, lcc.direction, info=lcc.info)
    bad = write_label_map(np.ones((1, 40, 32), np.uint8), small, tmp_path / "small.nii.gz")
    assert main(["export", str(tmp_path / "mg"), "--labels", str(bad), "--out", str(tmp_path / "ds")]) == 2
    assert "fits no view of the exam" in capsys.readouterr().err


def test_the_exam_fine_tuner_reads_what_export_exam_writes(tmp_path):
    """The contract with inference.finetune_exam: rows with their imagesCls image and chest-wall side."""
    from inference.finetune_exam import labelled_views
    from viewer.core.export.training import export_exam
    from viewer.core.synthetic import write_mammo_exam

    write_mammo_exam(tmp_path / "mg", (80, 64), seed=6)
    views = _mammo_views(tmp_path / "mg")
    out = export_exam(tmp_path / "ds", views, {"LCC": "suspicious", "RCC": "normal", "exam": "suspicious"})
    found, skipped = labelled_views(out["dataset"], "suspicious")
    assert sorted((v.view, v.target, v.chest_wall, v.image.name) for v in found) == [
        ("LCC", 1.0, "left", "CASE_0001_LCC.nii.gz"), ("RCC", 0.0, "left", "CASE_0001_RCC.nii.gz")]
    assert skipped == {"exam rows": 1}
