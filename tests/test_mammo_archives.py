"""Mammograms as public datasets and archives deliver them: grouped into exams, hung and analysed.

One small fixture per published convention, written with pydicom the way the dataset writes it
(no dataset file is shipped):
- CBIS-DDSM (TCIA; Lee et al., Sci Data 2017): every view its own patient, study and series, PatientID
  'Calc-Training_P_00042_LEFT_MLO'; the view in PatientOrientation and the ID, Laterality set,
  ViewPosition absent; no pixel spacing (DDSM films digitised at 42-50 um); 16-bit MONOCHROME2, RLE
  Lossless; ROI masks ('ROI mask images', ID suffix _1) beside the full mammograms.
- INbreast (Moreira et al., Acad Radiol 2012): files '<file id>_<patient hash>_MG_<R|L>_<CC|ML>_ANON.dcm'
  (ML meaning the MLO) with the identity removed from the tags; 70 um pixels, 14-bit; mastectomy cases
  hold one breast only.
- VinDr-Mammo (Nguyen et al., Sci Data 2023): images/<study_id>/<image_id>.dicom, de-identified (no
  patient ID), one study per 4-view exam, ImageLaterality and ViewPosition kept, some vendors
  MONOCHROME1.
- CMMD (TCIA): PatientID 'D1-0001', one study per patient, often one breast (CC and MLO), ImageLaterality
  with the view in the ViewCodeSequence, no pixel spacing, 8-bit.
- An archive: one patient ID per view with a common stem, a prior exam, For Processing beside
  For Presentation, extra views (XCCL, ML, spot).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from inference.phantoms import mammo_image
from viewer.cli import main
from viewer.core.io.scan import scan
from viewer.core.mammo import estimate_spacing, view_name
from viewer.core.mammo_exams import group_exams
from viewer.core.mammo_views import identify
from viewer.core.volume import SourceInfo

os.environ.setdefault("OMP_NUM_THREADS", "1")
MG_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SIZE = (256, 192)


def pixels(lat: str, view: str, size=SIZE, bits=12, seed=0, mono1=False) -> np.ndarray:
    img, _ = mammo_image(lat, "MLO" if view in ("MLO", "ML") else "CC", size, seed)
    img = np.asarray(img, dtype=np.float64)
    img = (img - img.min()) / max(float(np.ptp(img)), 1.0) * ((1 << bits) - 1)
    if mono1:
        img = ((1 << bits) - 1) - img
    return img.astype(np.uint8 if bits <= 8 else np.uint16)


def write(path: Path, image: np.ndarray, *, sop_class=MG_PRESENTATION, rle=False, bits=None,
          photometric="MONOCHROME2", compress=None, **tags) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.StudyInstanceUID = tags.pop("StudyInstanceUID", None) or generate_uid()
    ds.SeriesInstanceUID = tags.pop("SeriesInstanceUID", None) or generate_uid()
    for k, v in tags.items():
        setattr(ds, k, v)
    bits = bits or (8 if image.dtype == np.uint8 else 16)
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 8 if image.dtype == np.uint8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    ds.PixelData = image.tobytes()
    if rle or compress:
        ds.compress(compress or RLELossless, image)
    ds.save_as(path, enforce_file_format=True)
    return path


def code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    return item


# ---------------------------------------------------------------------------------- fixtures
def cbis_ddsm(root: Path) -> Path:
    """P_00042: four views from Calc-Training; P_00001: the left breast only, from Mass-Training, with
    its ROI mask. Conversion dates differ per view."""
    views = [("Calc-Training", "P_00042", "LEFT", "CC", "20170829"),
             ("Calc-Training", "P_00042", "LEFT", "MLO", "20170830"),
             ("Calc-Training", "P_00042", "RIGHT", "CC", "20170829"),
             ("Calc-Training", "P_00042", "RIGHT", "MLO", "20160720"),
             ("Mass-Training", "P_00001", "LEFT", "CC", "20160720"),
             ("Mass-Training", "P_00001", "LEFT", "MLO", "20160720")]
    for i, (part, stem, side, view, date) in enumerate(views):
        pid = f"{part}_{stem}_{side}_{view}"
        study = f"{date[4:6]}-{date[6:]}-{date[:4]}-DDSM-NA-{9600 + i}"
        folder = root / pid / study / f"1.000000-full mammogram images-{600 + i}"
        write(folder / "1-1.dcm", pixels(side[0], view, bits=16, seed=i), sop_class=SECONDARY_CAPTURE, rle=True,
              PatientID=pid, PatientName=pid, StudyDate=date, StudyID="DDSM", Laterality=side[0],
              PatientOrientation=view, SeriesDescription="full mammogram images", BodyPartExamined="BREAST",
              SeriesNumber=1, InstanceNumber=1)
    mask = (pixels("L", "MLO", bits=8) > 128).astype(np.uint8) * 255
    pid = "Mass-Training_P_00001_LEFT_MLO_1"
    write(root / pid / "07-21-2016-DDSM-NA-1" / "1.000000-ROI mask images-1" / "1-1.dcm", mask,
          sop_class=SECONDARY_CAPTURE, rle=True, PatientID=pid, PatientName=pid, StudyDate="20160721",
          Laterality="L", PatientOrientation="MLO", SeriesDescription="ROI mask images", SeriesNumber=1)
    return root


def inbreast(root: Path) -> Path:
    """Patient 6c613a14b80a8591: four views; patient 61b13c59bcba149e (mastectomy): the left breast only."""
    files = [("20586908", "6c613a14b80a8591", "R", "CC"), ("20586934", "6c613a14b80a8591", "R", "ML"),
             ("20586960", "6c613a14b80a8591", "L", "CC"), ("20586986", "6c613a14b80a8591", "L", "ML"),
             ("22678622", "61b13c59bcba149e", "L", "CC"), ("22678646", "61b13c59bcba149e", "L", "ML")]
    for fid, patient, side, view in files:
        write(root / "AllDICOMs" / f"{fid}_{patient}_MG_{side}_{view}_ANON.dcm", pixels(side, view, bits=14),
              bits=14, PixelSpacing=[0.07, 0.07], SeriesNumber=1)
    return root


def vindr(root: Path) -> Path:
    """Two de-identified studies (no patient ID); the second from a MONOCHROME1 unit."""
    for s, mono1 in ((0, False), (1, True)):
        study_id, study_uid = f"{s:032x}", generate_uid()
        for side in "RL":
            for view in ("CC", "MLO"):
                write(root / "images" / study_id / f"{generate_uid()[-16:]}.dicom",
                      pixels(side, view, mono1=mono1, seed=s), StudyInstanceUID=study_uid,
                      photometric="MONOCHROME1" if mono1 else "MONOCHROME2", ImageLaterality=side,
                      ViewPosition=view, PixelSpacing=[0.085, 0.085], SeriesNumber=1)
    return root


def cmmd(root: Path) -> Path:
    """D1-0001: the left breast's CC and MLO, view only in the ViewCodeSequence, no spacing, 8-bit."""
    study = generate_uid()
    for n, (view, c) in enumerate((("CC", code("399162004", "cranio-caudal")),
                                   ("MLO", code("399368009", "medio-lateral oblique"))), start=1):
        write(root / "D1-0001" / "07-18-2010-NA-NA-1" / "1.000000-NA-1" / f"1-{n}.dcm",
              pixels("L", view, size=(240, 200), bits=8), StudyInstanceUID=study, PatientID="D1-0001",
              PatientName="D1-0001", StudyDate="20100718", ImageLaterality="L", ViewCodeSequence=[c],
              SeriesNumber=1, InstanceNumber=n)
    return root


def archive(root: Path) -> Path:
    """PAT7: a prior (2019) and a current (2021) exam, IDs per view ('PAT7_LCC'), For Processing beside
    For Presentation for RCC, an XCCL and a spot view kept beside the hung four."""
    for date in ("20190301", "20210301"):
        for side in "RL":
            for view in ("CC", "MLO"):
                write(root / date / f"{side}{view}.dcm", pixels(side, view), PatientID=f"PAT7_{side}{view}",
                      StudyDate=date, ImageLaterality=side, ViewPosition=view, PixelSpacing=[0.1, 0.1],
                      SeriesNumber=2)
    cur = root / "20210301"
    write(cur / "RCC_raw.dcm", pixels("R", "CC"), sop_class=MG_PROCESSING, PatientID="PAT7_RCC",
          StudyDate="20210301", ImageLaterality="R", ViewPosition="CC", PixelSpacing=[0.1, 0.1], SeriesNumber=9)
    write(cur / "LXCCL.dcm", pixels("L", "CC"), PatientID="PAT7_LXCCL", StudyDate="20210301",
          ImageLaterality="L", ViewPosition="XCCL", PixelSpacing=[0.1, 0.1], SeriesNumber=3)
    write(cur / "LCC_spot.dcm", pixels("L", "CC"), PatientID="PAT7", StudyDate="20210301",
          ImageLaterality="L", ViewPosition="CC", SeriesDescription="L CC SPOT MAG", PixelSpacing=[0.1, 0.1],
          SeriesNumber=4)
    return root


def info_json(path: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["info", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def exams_of(summary: dict) -> dict[str, dict]:
    return {e["id"]: e for e in summary["mammo_exams"]}


# ---------------------------------------------------------------------------------- views
@pytest.mark.parametrize("text,expected", [
    ("LEFT_CC", "LCC"), ("L CC", "LCC"), ("RMLO", "RMLO"), ("R-MLO", "RMLO"),
    ("Calc-Training_P_00042_LEFT_MLO", "LMLO"), ("Mass-Test_P_00016_LEFT_CC", "LCC"), ("MLO right", "RMLO"),
])
def test_view_from_text(text, expected):
    vid = identify(SourceInfo(patient_id=text))
    assert vid.hanging == expected
    assert vid.sources["view"] == "PatientID text"


def test_ids_that_merely_contain_view_letters_name_no_view():
    for pid in ("CC12345", "ML7", "PATIENT_RCC2", "BILATERAL"):
        vid = identify(SourceInfo(patient_id=pid))
        assert vid.view == "" and vid.laterality == "", pid


def test_tags_win_over_text_and_each_source_is_named():
    vid = identify(SourceInfo(laterality="R", view_position="MLO", patient_id="X_LEFT_CC"))
    assert vid.hanging == "RMLO" and vid.why() == "laterality from ImageLaterality/Laterality, view from ViewPosition"
    vid = identify(SourceInfo(laterality="L", patient_orientation=("MLO",), patient_id="Calc-Test_P_1_LEFT_CC"))
    assert vid.hanging == "LMLO" and vid.sources["view"] == "PatientOrientation"
    vid = identify(SourceInfo(patient_orientation=("A", "R")), "x/22678622_61b13c59bcba149e_MG_L_ML_ANON.dcm")
    assert vid.hanging == "LCC" and vid.sources["laterality"] == "file name (INbreast naming)"
    assert identify(SourceInfo(), "20586934_6c613a14b80a8591_MG_R_ML_ANON.dcm").hanging == "RMLO"
    assert identify(SourceInfo(laterality="L", view_position="XCCL")).hanging is None  # extra view
    assert identify(SourceInfo(laterality="L", view_position="ML")).model_name == "LMLO"
    assert view_name(SourceInfo(patient_id="Mass-Test_P_00016_LEFT_CC")) == "LCC"


def test_missing_spacing_is_estimated_never_1mm(tmp_path):
    result = scan(cbis_ddsm(tmp_path / "cbis"))
    est = estimate_spacing(result.series[0], (1, 4696, 3024))
    assert est.mm == pytest.approx(0.05) and "DDSM" in est.how and est.note.startswith("spacing estimated: 0.05 mm")
    result = scan(cmmd(tmp_path / "cmmd"))
    est = estimate_spacing(result.series[0], (1, 2294, 1914))  # CMMD's matrix: a 24x30 cm detector
    assert est.mm == pytest.approx(min(300 / 2294, 240 / 1914)) and "film 24x30 cm" in est.how
    assert estimate_spacing(scan(vindr(tmp_path / "vindr")).series[0], (1, 256, 192)) is None


# ---------------------------------------------------------------------------------- grouping
def test_cbis_ddsm_views_are_grouped_by_their_id_stem(tmp_path, capsys):
    src = cbis_ddsm(tmp_path / "cbis")
    exams = exams_of(info_json(src, capsys))
    assert set(exams) == {"P_00042", "P_00001"}
    full = exams["P_00042"]
    assert full["complete"] and full["role"] == "current" and len(full["studies"]) == 4
    assert "CBIS-DDSM" in full["reason"] and "P_00042" in full["reason"]
    assert "view from PatientOrientation" in full["view_sources"]["LMLO"]
    one = exams["P_00001"]
    assert one["views"]["RCC"] is None and one["views"]["RMLO"] is None and one["views"]["LCC"]
    assert [e["why"] for e in one["extra"]] == ["ROI mask images: not a view"]
    capsys.readouterr()
    assert main(["info", str(src)]) == 0
    text = capsys.readouterr().out
    assert "Mammography exam P_00042" in text and "CBIS-DDSM" in text and "LCC LMLO" in text
    assert "view LMLO (laterality from ImageLaterality/Laterality, view from PatientOrientation)" in text
    assert " view L\n" not in text  # the view, not only the laterality (issue 11)
    assert all(s.info.patient_orientation is None for s in scan(src).series)  # 'CC' is not two letters


def test_inbreast_file_names_group_patients(tmp_path, capsys):
    exams = exams_of(info_json(inbreast(tmp_path / "inb"), capsys))
    assert set(exams) == {"6c613a14b80a8591", "61b13c59bcba149e"}
    assert exams["6c613a14b80a8591"]["complete"]
    assert "INbreast" in exams["6c613a14b80a8591"]["reason"]
    mastectomy = exams["61b13c59bcba149e"]["views"]
    assert mastectomy["LCC"] and mastectomy["LMLO"] and mastectomy["RCC"] is None


def test_vindr_studies_are_exams(tmp_path, capsys):
    exams = info_json(vindr(tmp_path / "vindr"), capsys)["mammo_exams"]
    assert len(exams) == 2 and all(e["complete"] for e in exams)


def test_cmmd_view_from_the_view_code_sequence(tmp_path, capsys):
    exams = exams_of(info_json(cmmd(tmp_path / "cmmd"), capsys))
    exam = exams["D1-0001"]
    assert exam["views"]["LCC"] and exam["views"]["LMLO"] and not exam["extra"]
    assert "view from ViewCodeSequence" in exam["view_sources"]["LCC"]


def test_priors_processing_and_extra_views(tmp_path, capsys):
    src = archive(tmp_path / "arch")
    result = scan(src)
    exams = {e.id: e for e in group_exams(result)}
    current, prior = exams["exam 1"], exams["exam 1 prior 1"]
    assert (current.date, prior.date) == ("20210301", "20190301")
    assert current.role == "current" and prior.role == "prior" and current.priors == [prior.id]
    assert "common stem PAT7" in current.reason and "PAT7" not in current.basis
    assert current.complete and not current.hung["RCC"].view.for_processing
    why = {ev.view.label: ev.why for ev in current.extra}
    assert why["RCC for processing"] == "for processing: the for-presentation image is hung"
    assert why["LXCCL"] == "extra view LXCCL" and why["LCC spot magnification"].startswith("extra view")
    summary = exams_of(info_json(src, capsys))
    assert summary["exam 1"]["priors"] == ["exam 1 prior 1"] and summary["exam 1"]["patient"] == "PAT7"


def test_newest_complete_exam_is_current(tmp_path):
    src = archive(tmp_path / "arch")
    (src / "20210301" / "LMLO.dcm").unlink()  # the newest exam is incomplete: the 2019 one is hung
    exams = group_exams(scan(src))
    assert exams[0].date == "20190301" and exams[0].role == "current" and exams[1].role == "prior"


# ---------------------------------------------------------------------------------- analysis
def analyze(src: Path, out: Path, capsys) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    code = main(["analyze", str(src), "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    path = out / "results.json"
    return code, json.loads(path.read_text()) if path.exists() else None, err


def test_cbis_ddsm_folder_is_hung_and_analysed(tmp_path, capsys):
    code, results, err = analyze(cbis_ddsm(tmp_path / "cbis"), tmp_path / "out", capsys)
    assert code == 0, err
    exams = {r["exam"]["id"]: r for r in results["results"]}
    assert set(exams) == {"P_00042", "P_00001"}
    full = exams["P_00042"]
    assert set(full["series"]) == {"RCC", "LCC", "RMLO", "LMLO"} and set(full["exam_scores"]) == {"R", "L"}
    note = full["series"]["LCC"]["spacing_estimated"]
    assert note["mm"] == pytest.approx(0.05) and "spacing estimated: 0.05 mm" in note["note"]
    one = exams["P_00001"]
    assert set(one["series"]) == {"LCC", "LMLO"} and set(one["exam_scores"]) == {"L"}
    assert "no right breast view" in one["exam"]["no_score"]["R"]
    assert "mammogram outside a 4-view exam" not in err
    assert any("ROI mask images" in line and "not a view" in line for line in results["not_analysed"])


def test_single_mammogram_is_analysed(tmp_path, capsys):
    src = tmp_path / "one"
    write(src / "x.dcm", pixels("R", "MLO"), PatientID="Q1", ImageLaterality="R", ViewPosition="MLO")
    code, results, err = analyze(src, tmp_path / "out", capsys)
    assert code == 0, err
    (res,) = results["results"]
    view = res["series"]["RMLO"]
    names = {o["name"] for o in view["overlays"]}
    assert "Grad-CAM" in names and "segmentation" in names and "malignancy" in view["scores"]
    assert "film" in view["spacing_estimated"]["how"]
    assert set(res["exam"]["no_score"]) == {"L"}


def test_extra_views_and_priors_each_analysed(tmp_path, capsys):
    code, results, err = analyze(archive(tmp_path / "arch"), tmp_path / "out", capsys)
    assert code == 0, err
    by_id = {r["exam"]["id"]: r for r in results["results"]}
    assert set(by_id) == {"exam 1", "exam 1 prior 1"}
    assert "PAT7" not in err and "PAT7" not in json.dumps(results)  # a clinical patient ID stays in `info`
    current = by_id["exam 1"]
    assert {"RCC", "LCC", "RMLO", "LMLO", "LXCCL"} <= set(current["series"])
    assert current["series"]["LXCCL"]["analysed_as"] == "LCC"
    assert any("for processing" in line for line in results["not_analysed"])


def test_a_mammogram_with_no_known_breast_is_explained(tmp_path, capsys):
    src = tmp_path / "anon"
    write(src / "x.dcm", pixels("R", "CC"), PatientID="Q2")
    code, results, err = analyze(src, tmp_path / "out", capsys)
    assert code == 2
    assert "breast or view unknown" in err.strip().splitlines()[-1]


@pytest.mark.parametrize("make", [inbreast, vindr, cmmd])
def test_each_convention_analysed_end_to_end(make, tmp_path, capsys):
    src = make(tmp_path / "src")
    code, results, err = analyze(src, tmp_path / "out", capsys)
    assert code == 0, err
    exams = group_exams(scan(src))
    assert len(results["results"]) == len(exams)
    estimated = [sr for r in results["results"] for sr in r["series"].values() if "spacing_estimated" in sr]
    assert bool(estimated) == (make is cmmd)


# ---------------------------------------------------------------------------------- UI
def test_browser_shows_the_exam_grouping_and_why(tmp_path, qtbot):
    from viewer.ui.series_browser import SeriesBrowser

    browser = SeriesBrowser()
    qtbot.addWidget(browser)
    browser.set_result(scan(cbis_ddsm(tmp_path / "cbis")))
    rows = browser.exam_texts()
    assert "P_00042 (current): RCC LCC RMLO LMLO" in rows
    assert any(r.startswith("kept: LMLO: ROI mask images: not a view") for r in rows), rows
    exam = browser.exams_item.child(0)
    assert "CBIS-DDSM" in exam.toolTip(0)
    view = exam.child(0)
    assert "view from PatientID text" in view.toolTip(0) or "view from PatientOrientation" in view.toolTip(0)
    assert browser._series_of(view) is not None  # selecting a hung view opens it
    series = browser._series_of(view)
    assert "spacing estimated: 0.05 mm" in browser.item_for(series).toolTip(0)


def test_analyze_takes_a_single_mammogram_shown_alone(tmp_path):
    from viewer.ui.analysis_controller import AnalysisController

    src = tmp_path / "one"
    write(src / "a.dcm", pixels("L", "CC"), PatientID="Q3", SeriesDescription="L XCCL", ViewPosition="XCCL",
          ImageLaterality="L")
    write(src / "b.dcm", pixels("L", "CC"), PatientID="Q4")
    by_pid = {s.info.patient_id: s for s in scan(src).series}
    kind, _uid, views = AnalysisController._single_mammogram(by_pid["Q3"], _Vol(by_pid["Q3"]))
    assert kind == "mammo" and list(views) == ["LXCCL"]
    kind, why = AnalysisController._single_mammogram(by_pid["Q4"], _Vol(by_pid["Q4"]))
    assert kind is None and "breast or view unknown" in why


class _Vol:
    def __init__(self, series):
        self.info = series.info


def test_the_model_input_refuses_a_missing_spacing():
    from inference.preprocess.mammo import prepare

    image = pixels("L", "CC").astype(np.float32)
    with pytest.raises(ValueError, match="pixel spacing"):
        prepare(image, None, "L", "CC")
    with pytest.raises(ValueError, match="positive"):
        prepare(image, (0.0, 0.1), "L", "CC")


def test_export_takes_the_grouped_exam(tmp_path, capsys):
    """A CBIS-DDSM patient's four views (four 'patients' and studies) export as one exam."""
    src = cbis_ddsm(tmp_path / "cbis")
    for f in src.glob("Mass-Training_*/*/*/*.dcm"):  # leave one patient: the export takes one exam
        f.unlink()
    capsys.readouterr()
    code = main(["export", str(src), "--out", str(tmp_path / "ds"), "--class", "LCC=suspicious",
                 "--class", "exam=suspicious", "--allow-unverified-pixels"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "4 view image(s)" in err


def test_film_and_digital_encodings_are_analysed(tmp_path, capsys):
    """8-16 bit, MONOCHROME1/2, JPEG 2000 and JPEG-LS views of one exam hang and analyse."""
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

    src = tmp_path / "enc"
    study = generate_uid()
    common = dict(StudyInstanceUID=study, PatientID="ENC1", StudyDate="20200101", PixelSpacing=[0.1, 0.1])
    write(src / "rcc.dcm", pixels("R", "CC", bits=16, mono1=True), photometric="MONOCHROME1",
          compress=JPEG2000Lossless, ImageLaterality="R", ViewPosition="CC", **common)
    write(src / "rmlo.dcm", pixels("R", "MLO", bits=8), compress=JPEGLSLossless, ImageLaterality="R",
          ViewPosition="MLO", **common)
    write(src / "lcc.dcm", pixels("L", "CC", bits=12), bits=12, compress=RLELossless, ImageLaterality="L",
          ViewPosition="CC", **common)
    code, results, err = analyze(src, tmp_path / "out", capsys)
    assert code == 0, err
    (res,) = results["results"]
    assert set(res["series"]) == {"RCC", "RMLO", "LCC"} and set(res["exam_scores"]) == {"R", "L"}


def test_view_modifier_codes_and_presentation_intent_from_the_header(tmp_path):
    src = tmp_path / "mods"
    view = code("399162004", "cranio-caudal")
    view.ViewModifierCodeSequence = [code("399163009", "magnification")]
    write(src / "mag.dcm", pixels("L", "CC"), PatientID="M1", ImageLaterality="L", ViewCodeSequence=[view])
    write(src / "raw.dcm", pixels("R", "MLO"), PatientID="M1", ImageLaterality="R", ViewPosition="MLO",
          PresentationIntentType="FOR PROCESSING")
    (exam,) = group_exams(scan(src))
    why = {ev.view.label: ev.why for ev in exam.extra}
    assert why == {"LCC magnification": "extra view LCC magnification"}
    assert exam.hung["RMLO"].view.for_processing  # the only RMLO: hung, and said to be For Processing


def test_segs_of_a_cbis_ddsm_exam_pass_dciodvfy(tmp_path, capsys):
    """CBIS-DDSM writes the view into PatientOrientation ('CC'); the SEG must not copy that invalid
    value (Type 2C: empty when the source has no valid orientation)."""
    import shutil
    import subprocess

    if shutil.which("dciodvfy") is None:
        if os.environ.get("LIGHTBOX_REQUIRE_XVFB") == "1":
            pytest.fail("dciodvfy (dicom3tools) is required here")
        pytest.skip("dciodvfy (dicom3tools) not installed")
    code, _results, err = analyze(cbis_ddsm(tmp_path / "cbis"), tmp_path / "out", capsys)
    assert code == 0, err
    segs = sorted((tmp_path / "out").glob("*/*.seg.dcm"))
    assert segs
    for seg in segs:
        proc = subprocess.run(["dciodvfy", str(seg)], capture_output=True, text=True)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (seg, errors)


def test_clicking_a_grouped_exam_hangs_its_views_together(tmp_path, qtbot, monkeypatch):
    """A CBIS-DDSM exam (one study and patient ID per view) hangs in the 4-view layout from its row
    under 'Mammography exams', each view in its own cell."""
    from PySide6.QtCore import Qt

    from tests.qt_helpers import close_quietly, editor_window, open_and_wait

    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path / "cache"))
    w = editor_window(qtbot, (1200, 800))
    try:
        open_and_wait(qtbot, w, cbis_ddsm(tmp_path / "cbis"))
        top = w.browser.exams_item
        row = next(top.child(i) for i in range(top.childCount())
                   if top.child(i).text(0).startswith("P_00042"))
        with qtbot.waitSignal(w.image_shown, timeout=30000):
            rect = w.browser.visualItemRect(row)
            qtbot.mouseClick(w.browser.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        qtbot.waitUntil(lambda: not w.busy, timeout=30000)
        assert w.views.currentWidget() is w.mammo_layout
        for slot in ("RCC", "LCC", "RMLO", "LMLO"):
            series = w.mammo_layout.series.get(slot)
            assert series is not None and f"_{'RIGHT' if slot[0] == 'R' else 'LEFT'}_{slot[1:]}" in \
                series.info.patient_id, (slot, series and series.info.patient_id)
            assert w.mammo_layout.cells[slot].volume is not None
    finally:
        close_quietly(w)
