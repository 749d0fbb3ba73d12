"""Every kind of DICOM object Lightbox writes passes dciodvfy (dicom3tools) with zero errors.

Demo CT, MR and MG; the SEGs `lightbox analyze` writes for CT and for a mammography exam; the
de-identified SEG `lightbox export` writes; de-identified copies of images and SEGs. The sources
used by analyze and export lack Type 2 attributes as many real archives' files do, and carry a
patient name highdicom used to quote on stderr: nothing with PHI may reach the terminal.

dciodvfy/dcentvfy missing: skipped, unless LIGHTBOX_REQUIRE_XVFB=1 (CI, after
scripts/system_deps.sh installed them), where it is a failure.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest

from viewer.core.export.deid import Deidentifier, deidentify_file
from viewer.core.synthetic import write_ct_study, write_demo_studies, write_mammo_exam

REQUIRED = os.environ.get("LIGHTBOX_REQUIRE_XVFB") == "1"
NAME, PATIENT_ID, BIRTH_DATE = "DOEJANE", "MRN20250417", "19610203"  # one-component name: highdicom quoted it
TYPE2 = ("PatientBirthDate", "PatientSex", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        why = f"{tool} (dicom3tools) is not installed; `bash scripts/system_deps.sh` installs it"
        if REQUIRED:
            pytest.fail(f"{why}, but LIGHTBOX_REQUIRE_XVFB=1", pytrace=False)
        pytest.skip(why)
    return path


def dciodvfy_errors(path) -> list[str]:
    proc = subprocess.run([need("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def assert_conformant(*paths) -> None:
    found = {str(p): dciodvfy_errors(p) for p in paths}
    assert not any(found.values()), {p: e for p, e in found.items() if e}


def run_cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "viewer.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def assert_no_phi(text: str) -> None:
    for value in (NAME, PATIENT_ID, BIRTH_DATE):
        assert value not in text, f"{value!r} on the terminal:\n{text}"


def with_phi_and_no_type2(folder: Path, keep_birth_date: bool = False) -> None:
    """Rewrite a study as a real archive might deliver it: a patient name and ID worth hiding,
    and Type 2 attributes left out (all of them, or all but the birth date)."""
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.PatientName, ds.PatientID = NAME, PATIENT_ID
        for keyword in TYPE2:
            if keyword in ds:
                del ds[keyword]
        if keep_birth_date:
            ds.PatientBirthDate = BIRTH_DATE
        ds.save_as(f)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    write_demo_studies(out, scale=0.1)
    return out


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    """A small CT without Type 2 attributes, analysed: (source folder, analyze's SEG, its stderr)."""
    need("dciodvfy")
    root = tmp_path_factory.mktemp("ct")
    write_ct_study(root / "src", shape=(48, 96, 96), spacing=(6.25, 3.73, 3.73), seed=5)
    with_phi_and_no_type2(root / "src")
    proc = run_cli("analyze", root / "src", "--out", root / "out", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    segs = sorted((root / "out").glob("*/*.seg.dcm"))
    assert len(segs) == 1, proc.stderr
    return root, segs[0], proc.stderr


@pytest.fixture(scope="module")
def mg(tmp_path_factory):
    """A small 4-view exam with a lesion on the left, analysed: (source folder, {view: SEG}, stderr)."""
    need("dciodvfy")
    root = tmp_path_factory.mktemp("mg")
    write_mammo_exam(root / "src", (256, 192), seed=3, lesion_side="L")
    with_phi_and_no_type2(root / "src", keep_birth_date=True)
    proc = run_cli("analyze", root / "src", "--out", root / "out", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    segs = {p.parent.name.rsplit("_", 1)[-1]: p for p in (root / "out").glob("*/*.seg.dcm")}
    assert segs, proc.stderr
    return root, segs, proc.stderr


def test_demo_studies_pass_dciodvfy_and_agree_within_each_study(demo):
    files = {m: sorted((demo / m).glob("*.dcm")) for m in ("CT", "MR", "MG")}
    assert_conformant(*files["CT"][:2], files["CT"][-1], *files["MR"][:2], files["MR"][-1], *files["MG"])
    for modality, paths in files.items():  # study-level attributes identical across a study
        proc = subprocess.run([need("dcentvfy"), *map(str, paths)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (modality, errors)


def test_a_study_written_across_a_clock_tick_keeps_one_study_time(tmp_path, monkeypatch):
    import datetime as dt

    from viewer.core.io import dicom_write

    class Ticking(dt.datetime):  # every call of now() is one second later
        t = dt.datetime(2026, 1, 15, 9, 59, 58)

        @classmethod
        def now(cls, tz=None):
            cls.t += dt.timedelta(seconds=1)
            return cls.t

    monkeypatch.setattr(dicom_write, "_dt", SimpleNamespace(datetime=Ticking))
    exam = write_mammo_exam(tmp_path, (64, 48), seed=1)
    paths = [p for s in exam.values() for p in s.files]
    proc = subprocess.run([need("dcentvfy"), *map(str, paths)], capture_output=True, text=True, timeout=60)
    assert not [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def test_mammogram_carries_breast_and_view_codes(demo):
    ds = pydicom.dcmread(demo / "MG" / "RMLO.dcm", stop_before_pixels=True)
    assert ds.AnatomicRegionSequence[0].CodeValue == "76752008"  # SCT Breast
    assert ds.ViewCodeSequence[0].CodeValue == "399368009"  # SCT medio-lateral oblique
    assert pydicom.dcmread(demo / "MG" / "LCC.dcm").ViewCodeSequence[0].CodeValue == "399162004"  # cranio-caudal


def test_analyze_seg_of_a_ct_without_type2_attributes_is_conformant_and_readable(ct):
    import highdicom as hd

    _root, seg, stderr = ct
    assert_conformant(seg)
    read = hd.seg.segread(seg)
    assert read.PatientBirthDate == "" and read.StudyID == ""  # present, empty (Type 2)
    assert {s.SegmentAlgorithmType for s in read.SegmentSequence} == {"AUTOMATIC"}
    assert_no_phi(stderr)


def test_analyze_segs_of_a_mammography_exam_are_conformant(mg):
    import highdicom as hd

    root, segs, stderr = mg
    assert_conformant(*segs.values())
    for view, seg in segs.items():
        read = hd.seg.segread(seg)
        source = pydicom.dcmread(root / "src" / f"{view}.dcm", stop_before_pixels=True)
        assert list(read.PatientOrientation) == list(source.PatientOrientation)
    assert_no_phi(stderr)


def test_exported_seg_of_untouched_ai_labels_is_conformant_and_stays_automatic(ct, tmp_path):
    import highdicom as hd

    root, seg, _ = ct
    proc = run_cli("export", root / "src", "--labels", seg, "--out", tmp_path / "ds")
    assert proc.returncode == 0, proc.stderr
    assert_no_phi(proc.stderr + proc.stdout)
    exported = sorted(tmp_path.glob("ds/*/segTr/*.seg.dcm"))
    assert len(exported) == 1
    assert_conformant(exported[0])
    read = hd.seg.segread(exported[0])
    assert str(read.DeviceSerialNumber)  # Type 1 in Enhanced General Equipment: a dummy, not blank
    source = hd.seg.segread(seg)
    want = {d.SegmentLabel: d.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName
            for d in source.SegmentSequence}
    got = {d.SegmentLabel: (d.SegmentAlgorithmType, d.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName)
           for d in read.SegmentSequence}
    assert got == {label: ("AUTOMATIC", name) for label, name in want.items()}


def test_exported_mammography_seg_is_conformant(mg, tmp_path):
    import highdicom as hd

    root, segs, _ = mg
    view = sorted(segs)[0]
    proc = run_cli("export", root / "src", "--labels", segs[view], "--series", view, "--out", tmp_path / "ds")
    assert proc.returncode == 0, proc.stderr
    assert_no_phi(proc.stderr + proc.stdout)
    exported = sorted(tmp_path.glob("ds/*/segTr/*.seg.dcm"))
    assert len(exported) == 1
    assert_conformant(exported[0])
    # The exam path keeps an untouched AI SEG the model's too (AUTOMATIC, algorithm named), as for a CT.
    read, source = hd.seg.segread(exported[0]), hd.seg.segread(segs[view])
    want = {d.SegmentLabel: d.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName
            for d in source.SegmentSequence}
    got = {d.SegmentLabel: (d.SegmentAlgorithmType, d.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName)
           for d in read.SegmentSequence if "SegmentationAlgorithmIdentificationSequence" in d}
    assert got == {label: ("AUTOMATIC", name) for label, name in want.items()}


def test_deidentified_copies_are_conformant(demo, ct, tmp_path):
    _root, seg, _ = ct
    deid = Deidentifier()
    sources = [demo / "CT" / "IM00001.dcm", demo / "MR" / "IM00001.dcm", demo / "MG" / "LCC.dcm", seg,
               next((ct[0] / "src").glob("*.dcm"))]  # the last lacks Type 2 attributes: the copy has them empty
    copies = [deidentify_file(src, tmp_path / f"{i}.dcm", deid) for i, src in enumerate(sources)]
    assert_conformant(*copies)
    assert str(pydicom.dcmread(copies[3]).DeviceSerialNumber)  # SEG: Type 1, dummied rather than blanked
    bare = pydicom.dcmread(copies[4])
    assert all(keyword in bare and not bare[keyword].value for keyword in TYPE2)


# -- Parametric Maps and the analysis report (DICOM SR) ------------------------------------------------
def test_analyze_parametric_maps_and_report_of_a_ct_are_conformant_and_readable(ct):
    import highdicom as hd

    from viewer.core.export.dicom_sr import read_analysis_report

    root, seg, stderr = ct
    out = root / "out"
    pms = sorted(out.glob("*/*.pm.dcm"))
    (report,) = sorted(out.glob("*/*.sr.dcm"))
    assert pms, sorted(p.name for p in out.rglob("*"))
    assert_conformant(*pms, report)
    for pm in pms:
        assert hd.pm.ParametricMap.from_dataset(pydicom.dcmread(pm)).PatientBirthDate == ""
    assert hd.sr.srread(report).SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    (series,) = read_analysis_report(report)["series"].values()
    assert series["volumes"] and series["segmentation"]
    assert set(series["segmentation"].values()) == {str(pydicom.dcmread(seg).SOPInstanceUID)}
    assert_no_phi(stderr)


def test_analyze_parametric_maps_and_report_of_a_mammography_exam_are_conformant(mg):
    import highdicom as hd

    from viewer.core.export.dicom_sr import read_analysis_report

    root, segs, stderr = mg
    out = root / "out"
    pms = sorted(out.glob("*/*.pm.dcm"))
    (report,) = sorted(out.glob("*/*.sr.dcm"))
    assert len(pms) >= 4, sorted(p.name for p in out.rglob("*"))  # at least one map per view
    assert_conformant(*pms, report)
    for pm in pms:
        hd.pm.ParametricMap.from_dataset(pydicom.dcmread(pm))
    back = read_analysis_report(report)
    assert set(back["series"]) == {"RCC", "LCC", "RMLO", "LMLO"} and set(back["exam_scores"]) == {"L", "R"}
    assert any(s["areas"] for s in back["series"].values())
    assert_no_phi(stderr)


def test_parametric_maps_of_pydicom_test_files_are_conformant(tmp_path):
    import numpy as np
    from pydicom.data import get_testdata_file

    from viewer.core.export.dicom_pm import write_parametric_map
    from viewer.core.io import load_series, scan

    need("dciodvfy")
    written = []
    for name in ("CT_small.dcm", "MR_small.dcm"):
        (tmp_path / name).mkdir()
        shutil.copy(get_testdata_file(name), tmp_path / name / name)
        (series,) = [s for s in scan(tmp_path / name).series if s.kind == "dicom"]
        volume = load_series(series)
        prob = np.linspace(0, 1, volume.array.size, dtype=np.float32).reshape(volume.shape)
        written.append(write_parametric_map(prob, volume, series, tmp_path / f"{name}.pm.dcm", name="mass",
                                            model="test 1"))
    assert_conformant(*written)
