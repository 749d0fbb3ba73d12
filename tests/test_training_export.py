"""Export one corrected case for retraining: dataset pair + de-identified DICOM SEG, and `lightbox export`."""
from __future__ import annotations

import json

import highdicom as hd
import numpy as np
import pydicom

from viewer.cli import main
from viewer.core.export.training import export_case
from viewer.core.io import load_series, scan
from viewer.core.synthetic import write_ct_study


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
    assert (root / "classification.csv").read_text().splitlines()[1].endswith(",exam,abnormal")
    assert main(["export", str(src), "--labels", str(seg), "--out", str(tmp_path / "ds"), "--class", "oops"]) == 2
    assert main(["export", str(src), "--labels", str(tmp_path / "nope.nii.gz"), "--out", str(tmp_path / "ds")]) == 2
