"""The analysis report (DICOM SR, TID 1500) says what the analysis found, where, and by which model.

Results are built by hand (no models run) on small synthetic studies and written the way
`lightbox analyze` writes them (outputs.write_outputs). Expected areas and volumes come from the
source files' own pixel spacing and positions read with pydicom, the SEG references from the SEG
files written beside them; highdicom reads the report back as a third-party reader.
"""
from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from viewer.analysis import outputs
from viewer.analysis.results import AnalysisResult, Overlay, SeriesResult
from viewer.core.export.dicom_sr import (
    LIGHTBOX_SCHEME,
    MAMMO_CAD_NOTE,
    algorithm_identification,
    observation_context,
    read_analysis_report,
)
from viewer.core.io import load_series, scan
from viewer.core.synthetic import write_ct_study, write_mammo_exam

DOMAIN_OK = {"in_domain": True, "score": 1.5, "threshold": 4.0, "reason": "in domain", "model": "seg-net 3"}
DOMAIN_BAD = {"in_domain": False, "score": 9.25, "threshold": 8.0, "reason": "unlike", "model": "exam-net 1.0.0"}


def views(folder) -> dict:
    out = {}
    for s in scan(Path(folder)).series:
        if s.kind == "dicom":
            out[Path(s.instances[0].path).stem] = (s, load_series(s))
    return out


def mammo_result(folder) -> tuple[AnalysisResult, dict]:
    by_view = views(folder)
    res = AnalysisResult("mammo-exam", "1.2.3", {}, exam_scores={"L": 0.875, "R": 0.125},
                         models={"patch": "patch-net 2", "exam": "exam-net 1.0.0", "segmentation": "seg2d 4"})
    for i, (view, (series, volume)) in enumerate(sorted(by_view.items())):
        labels = np.zeros(volume.shape, np.uint8)
        if view.startswith("L"):
            labels[0, 10:20, 5:12] = 1  # 70 pixels of mass
        sr = SeriesResult(series.key, series.uid, view, volume, scores={"malignancy": 0.1 + i / 10},
                          domain=dict(DOMAIN_BAD if view == "RMLO" else DOMAIN_OK))
        sr.overlays.append(Overlay("segmentation", "labels", labels, "seg2d 4", ["background", "mass"]))
        sr.overlays.append(Overlay("mass", "probability", np.full(volume.shape, 0.25, np.float32), "patch-net 2"))
        if labels.any():
            sr.scores["lesion area mm2"] = 0.0  # replaced below by what the SR must say
        res.series[view] = sr
    return res, {s.key: s for s, _ in by_view.values()}


def ct_result(folder) -> tuple[AnalysisResult, dict, np.ndarray]:
    ((series, volume),) = views(folder).values()
    labels = np.zeros(volume.shape, np.uint8)
    labels[2:6, 4:20, 4:20] = 1  # liver
    labels[7, 8:11, 8:12] = 2  # lesion
    classes = ["background", "liver", "lesion"]
    voxel_ml = float(np.prod(volume.spacing)) / 1000
    sr = SeriesResult(series.key, series.uid, series.label(), volume,
                      scores={f"{c} mL": float((labels == i).sum() * voxel_ml) for i, c in enumerate(classes) if i},
                      domain=dict(DOMAIN_OK))
    sr.overlays.append(Overlay("segmentation", "labels", labels, "seg-net 3", classes))
    sr.overlays.append(Overlay("lesion probability", "probability", (labels == 2).astype(np.float32), "seg-net 3"))
    res = AnalysisResult("ct", volume.info.study_uid, {series.key: sr}, models={"segmentation": "seg-net 3"})
    return res, {series.key: series}, labels


@pytest.fixture(scope="module")
def mg(tmp_path_factory):
    root = tmp_path_factory.mktemp("mg")
    write_mammo_exam(root / "src", (64, 48), seed=1, lesion_side="L")
    res, by_key = mammo_result(root / "src")
    for sr in res.series.values():  # pixel area straight from the file, not from our loader
        header = pydicom.dcmread(sr.volume.info.files[0] if sr.volume.info.files else
                                 by_key[sr.series_key].instances[0].path, stop_before_pixels=True)
        spacing = header.get("PixelSpacing") or header.get("ImagerPixelSpacing")
        if "lesion area mm2" in sr.scores:
            sr.scores["lesion area mm2"] = 70 * float(spacing[0]) * float(spacing[1])
    path = outputs.write_outputs([res], by_key, root / "out")
    return root, res, by_key, json.loads(path.read_text())


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct")
    write_ct_study(root / "src", shape=(10, 32, 32), spacing=(3.0, 2.0, 2.0), seed=2, file_order="shuffled")
    res, by_key, labels = ct_result(root / "src")
    path = outputs.write_outputs([res], by_key, root / "out")
    return root, res, by_key, labels, json.loads(path.read_text())


def test_mammo_report_is_listed_and_reads_back_as_written(mg):
    root, res, by_key, data = mg
    (entry,) = data["results"]
    assert entry["report"] == "mammo-exam_report/report.sr.dcm"
    path = root / "out" / entry["report"]
    back = read_analysis_report(path)
    assert back["exam_scores"] == pytest.approx(res.exam_scores)
    assert set(back["series"]) == set(res.series)
    for view, sr in res.series.items():
        got = back["series"][view]
        assert got["scores"] == pytest.approx(sr.scores)
        assert got["domain"] == {k: sr.domain[k] for k in ("in_domain", "score", "threshold")}
        assert got["model"] == "exam-net 1.0.0"
        assert got["images"] == [pydicom.dcmread(by_key[sr.series_key].instances[0].path).SOPInstanceUID]
        if view.startswith("L"):
            assert got["areas"] == pytest.approx({"mass": sr.scores["lesion area mm2"]})
            seg = pydicom.dcmread(root / "out" / entry["series"][view]["files"]["segmentation (DICOM SEG)"])
            assert got["segmentation"] == {"mass": seg.SOPInstanceUID}
        else:
            assert got["areas"] == {} and got["segmentation"] == {}
    assert {"exam-net 1.0.0", "seg2d 4"} <= set(back["models"])


def test_mammo_report_structure_as_highdicom_and_pydicom_see_it(mg):
    root, res, by_key, data = mg
    path = root / "out" / data["results"][0]["report"]
    sr = hd.sr.srread(path)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    report = hd.sr.MeasurementReport.from_sequence([pydicom.dcmread(path)])
    planar = report.get_planar_roi_measurement_groups()
    assert len(planar) == 2  # the mass on LCC and LMLO, each on its SEG frame
    for group in planar:
        (site,) = group.finding_sites
        assert site.value.value == "76752008" and site.laterality.value == "7771000"  # Breast, Left
        assert group.finding_type.value == "4147007"  # SCT Mass
        (area,) = group.get_measurements()
        assert area.name.value == "42798000" and area.unit.value == "mm2"
    breasts = {str(g.tracking_identifier): g for g in report.get_image_measurement_groups()
               if str(g.tracking_identifier).startswith("breast ")}
    assert set(breasts) == {"breast L", "breast R"}
    (score,) = breasts["breast L"].get_measurements()
    assert score.name.value == "111047" and score.value == pytest.approx(0.875)  # Probability of cancer
    ds = pydicom.dcmread(path)
    assert ds.PatientID == pydicom.dcmread(next(iter(by_key.values())).instances[0].path).PatientID
    evidence = {str(i.ReferencedSOPInstanceUID) for s in ds.CurrentRequestedProcedureEvidenceSequence
                for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence}
    segs = list((root / "out").glob("*/*.seg.dcm"))
    assert len(segs) == 2 and {str(pydicom.dcmread(p).SOPInstanceUID) for p in segs} <= evidence
    assert any(item.CodingSchemeDesignator == LIGHTBOX_SCHEME for item in ds.CodingSchemeIdentificationSequence)
    # the PMs went beside the NIfTI heatmaps
    for view in res.series:
        files = data["results"][0]["series"][view]["files"]
        assert (root / "out" / files["heatmap mass (DICOM PM)"]).is_file()


def test_ct_report_volumes_reference_the_seg_segments(ct):
    root, res, by_key, labels, data = ct
    (entry,) = data["results"]
    (series_entry,) = entry["series"].values()
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in (root / "src").glob("*.dcm")]
    z = sorted(float(np.dot(np.cross([float(v) for v in h.ImageOrientationPatient[:3]],
                                      [float(v) for v in h.ImageOrientationPatient[3:]]),
                            [float(v) for v in h.ImagePositionPatient])) for h in headers)
    voxel_ml = float(headers[0].PixelSpacing[0]) * float(headers[0].PixelSpacing[1]) * (z[1] - z[0]) / 1000
    path = root / "out" / entry["report"]
    back = read_analysis_report(path)
    (got,) = back["series"].values()
    assert got["volumes"] == pytest.approx({"liver": (labels == 1).sum() * voxel_ml,
                                            "lesion": (labels == 2).sum() * voxel_ml})
    assert got["scores"] == pytest.approx(next(iter(res.series.values())).scores)
    seg = pydicom.dcmread(root / "out" / series_entry["files"]["segmentation (DICOM SEG)"])
    assert got["segmentation"] == {"liver": seg.SOPInstanceUID, "lesion": seg.SOPInstanceUID}
    report = hd.sr.MeasurementReport.from_sequence([pydicom.dcmread(path)])
    numbers = {}
    for group in report.get_volumetric_roi_measurement_groups():
        ref = group.referenced_segment
        (numbers[str(group.tracking_identifier).rsplit(": ", 1)[1]],) = ref.referenced_segment_numbers
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert ref.source_series_for_segmentation.value == next(iter(by_key.values())).uid
    labels_by_number = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    assert {k: labels_by_number[v] for k, v in numbers.items()} == {"liver": "liver", "lesion": "lesion"}
    assert got["model"] == "seg-net 3" and back["models"] == ["seg-net 3"]
    assert (root / "out" / series_entry["files"]["heatmap lesion probability (DICOM PM)"]).is_file()


def test_report_folder_is_replaced_on_rerun_and_a_failed_report_is_named_not_fatal(ct, tmp_path, monkeypatch):
    root, res, by_key, _, _ = ct
    out = tmp_path / "out"
    first = json.loads(outputs.write_outputs([res], by_key, out).read_text())["results"][0]["report"]
    old = pydicom.dcmread(out / first).SOPInstanceUID
    second = json.loads(outputs.write_outputs([res], by_key, out).read_text())["results"][0]["report"]
    assert second == first and pydicom.dcmread(out / second).SOPInstanceUID != old
    assert sorted(p.name for p in out.iterdir()) == sorted([first.split("/")[0], next(iter(
        res.series.values())).title.replace(" ", "_"), "results.json"])

    def broken(*args, **kwargs):
        raise ValueError("cannot build the DICOM SR report: no")

    monkeypatch.setattr("viewer.core.export.dicom_sr.write_analysis_report", broken)
    data = json.loads(outputs.write_outputs([res], by_key, out).read_text())
    (entry,) = data["results"]
    assert "report" not in entry and entry["not_written"] == ["report (DICOM SR): cannot build the DICOM SR report: no"]
    assert data["failed"] == []
    assert not (out / first.split("/")[0]).exists()  # the last run's report is not left behind
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_no_dicom_source_no_report(tmp_path):
    from viewer.core.volume import Volume

    vol = Volume(np.zeros((2, 8, 8), np.float32))
    sr = SeriesResult("k", "1.2", "nifti", vol, [Overlay("segmentation", "labels", np.ones(vol.shape, np.uint8),
                                                        "m 1", ["background", "organ"])])
    data = json.loads(outputs.write_outputs([AnalysisResult("ct", "1.2", {"k": sr})], {}, tmp_path).read_text())
    assert "report" not in data["results"][0] and "not_written" not in data["results"][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nifti", "results.json"]


def test_building_blocks_and_bad_input(tmp_path):
    algo = algorithm_identification("nnU-Net organs 2.1")
    items = {i.ConceptNameCodeSequence[0].CodeMeaning: getattr(i, "TextValue", None) for i in algo}
    assert items["Algorithm Name"] == "nnU-Net organs" and items["Algorithm Version"] == "2.1"
    assert algorithm_identification("no version")[1].TextValue == "unknown"
    ctx = observation_context(person="Doe^Jane")
    assert any(getattr(i, "PersonName", None) == "Doe^Jane" for i in ctx)
    with pytest.raises(ValueError, match="not a DICOM Structured Report"):
        read_analysis_report(pydicom.data.get_testdata_file("CT_small.dcm"))
    (tmp_path / "x.dcm").write_bytes(b"nonsense")
    with pytest.raises(ValueError, match="x.dcm"):
        read_analysis_report(tmp_path / "x.dcm")
    assert "TID 4000" in MAMMO_CAD_NOTE


def test_info_names_parametric_maps_and_reports_with_what_they_reference(ct):
    from viewer.core.io.describe import scan_summary

    root, res, by_key, _, _ = ct
    summary = scan_summary(scan(root))  # the source series and everything written beside it
    (study,) = [st for p in summary["patients"] for st in p["studies"]
                if any(s["kind"] == "dicom" for s in st["series"])]  # NIfTI files form studies of their own
    by_kind = {}
    for s in study["series"]:
        by_kind.setdefault(s["kind"], []).append(s)
    (source,) = by_kind["dicom"]
    (pm,) = by_kind["parametric-map"]
    (report,) = by_kind["report"]
    (seg,) = by_kind["segmentation"]
    assert pm["references"] == [source["uid"]] and pm["maps"] == ["lesion probability"] and pm["model"] == "seg-net 3"
    assert pm["dimensions"] == source["dimensions"]  # still an image, with its geometry
    assert set(report["references"]) == {source["uid"], seg["uid"]}
    assert [m["uid"] for m in source["parametric_maps"]] == [pm["uid"]]
    assert [r["uid"] for r in source["reports"]] == [report["uid"]]


def test_a_damaged_report_gives_one_line_naming_the_file(ct, tmp_path):
    root, _, _, _, data = ct
    ds = pydicom.dcmread(root / "out" / data["results"][0]["report"])
    ds.ContentSequence = [i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue != "126010"]
    ds.save_as(tmp_path / "cut.dcm")
    with pytest.raises(ValueError, match=r"cut\.dcm: no Imaging Measurements"):
        read_analysis_report(tmp_path / "cut.dcm")
    ds = pydicom.dcmread(root / "out" / data["results"][0]["report"])
    (measurements,) = [i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"]
    for group in measurements.ContentSequence:
        for item in group.ContentSequence:
            if item.ValueType == "NUM":
                del item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence
                item.MeasuredValueSequence[0].NumericValue = None  # a value left out: skipped, not a crash
    ds.save_as(tmp_path / "empty.dcm")
    back = read_analysis_report(tmp_path / "empty.dcm")
    assert all(not s["scores"] and not s["volumes"] for s in back["series"].values())
