"""Burned-in patient data: an image marked BurnedInAnnotation=YES is never exported (API, CLI), one
where burned-in text is common needs an explicit opt-in, an ordinary CT needs none; and the UIDs the
basic profile lists (Creator-Version UID ...) leave no trace in an export."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from viewer.cli import main
from viewer.core.export.dataset import ExportError
from viewer.core.export.nifti import write_label_map
from viewer.core.export.pixel_safety import (
    BurnedInPixels,
    UnverifiedPixels,
    check_sources,
    inspect_files,
)
from viewer.core.export.training import export_case, export_exam
from viewer.core.io import load_series
from viewer.core.io.scan import scan

SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
US_CLASS = "1.2.840.10008.5.1.4.1.1.6.1"
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
NAME = "DOE^JANE"
# 5x3 block letters: the patient's name as an ultrasound banner would burn it in
_GLYPHS = {"D": ["110", "101", "101", "101", "110"], "O": ["111", "101", "101", "101", "111"],
           "E": ["111", "100", "110", "100", "111"], "J": ["001", "001", "001", "101", "111"],
           "A": ["010", "101", "111", "101", "101"], "N": ["101", "111", "111", "111", "101"]}


def banner(text: str, shape=(48, 64)) -> np.ndarray:
    """An 8-bit image with ``text`` drawn in white at the top left, like a scanner's patient banner."""
    img = np.full(shape, 40, np.uint8)
    x = 2
    for ch in text:
        for r, row in enumerate(_GLYPHS.get(ch, ["000"] * 5)):
            for c, bit in enumerate(row):
                if bit == "1":
                    img[2 + 2 * r:4 + 2 * r, x + 2 * c:x + 2 * c + 2] = 255
        x += 8
    return img


def write_image(path, *, sop_class, modality, pixels, burned=None, position=None, series_uid=None,
                study_uid=None, extra=None) -> str:
    """A small single-frame DICOM image, written with pydicom."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, "PID-4242", "19600101"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyDate, ds.StudyTime = "20240102", "101010"
    ds.Modality = modality
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    if burned is not None:
        ds.BurnedInAnnotation = burned
    if position is not None:
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.77"
        ds.ImagePositionPatient = [0.0, 0.0, float(position)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness = 2.0
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def us_burned(folder):
    """An ultrasound screen capture: SC SOP class, modality US, the patient's name in the pixels, YES."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_image(folder / "us_burned.dcm", sop_class=SC_CLASS, modality="US", pixels=banner("DOE JANE"),
                       burned="YES", extra={"ConversionType": "WSD"})


def us_untagged(folder):
    folder.mkdir(parents=True, exist_ok=True)
    return write_image(folder / "us_plain.dcm", sop_class=US_CLASS, modality="US", pixels=banner("DOE"))


def ct_series(folder, n=3, extra=None):
    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), generate_uid()
    rng = np.random.default_rng(1)
    return [write_image(folder / f"ct{i}.dcm", sop_class=CT_CLASS, modality="CT", position=2.0 * i,
                        pixels=rng.integers(-1000, 1000, (16, 16)).astype(np.int16), series_uid=series,
                        study_uid=study, extra={"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], **(extra or {})})
            for i in range(n)]


def loaded(folder):
    result = scan(folder)
    series = [s for s in result.series if s.kind == "dicom"]
    assert len(series) == 1, result.problems
    return load_series(series[0]), series[0]


def a_mask(volume):
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[..., 4:9, 4:9] = 1
    return labels


def snapshot(folder):
    """Every path under ``folder`` with its size (None when it does not exist)."""
    if not folder.exists():
        return None
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


# -- the Python API -------------------------------------------------------------------------------------
def test_export_case_refuses_burned_in_pixels_and_writes_nothing(tmp_path):
    path = us_burned(tmp_path / "us")
    volume, series = loaded(tmp_path / "us")
    out = tmp_path / "datasets"
    for allow in (False, True):  # no opt-in makes a YES exportable
        with pytest.raises(BurnedInPixels, match="us_burned.dcm.*BurnedInAnnotation is YES") as caught:
            export_case(out, volume, a_mask(volume), {1: "organ"}, series, allow_unverified_pixels=allow)
        assert isinstance(caught.value, ExportError) and caught.value.path == path
        assert not out.exists()
    # an existing dataset is left exactly as it was
    ct = ct_series(tmp_path / "ct")
    ct_volume, ct_s = loaded(tmp_path / "ct")
    export_case(out, ct_volume, a_mask(ct_volume), {1: "organ"}, ct_s)
    before = snapshot(out)
    with pytest.raises(BurnedInPixels):
        export_case(out, volume, a_mask(volume), {1: "organ"}, series)
    assert snapshot(out) == before and len(ct) == 3  # the CT went in without any prompt; nothing else did


def test_export_case_without_series_still_reads_the_volumes_files(tmp_path):
    us_burned(tmp_path / "us")
    volume, _series = loaded(tmp_path / "us")
    with pytest.raises(BurnedInPixels, match="us_burned.dcm"):
        export_case(tmp_path / "out", volume, a_mask(volume), {1: "organ"}, None)
    assert not (tmp_path / "out").exists()


def test_untagged_ultrasound_needs_the_opt_in(tmp_path):
    path = us_untagged(tmp_path / "us")
    volume, series = loaded(tmp_path / "us")
    out = tmp_path / "datasets"
    with pytest.raises(UnverifiedPixels, match="allow_unverified_pixels=True") as caught:
        export_case(out, volume, a_mask(volume), {1: "organ"}, series)
    assert caught.value.path == path and "a US image without BurnedInAnnotation" in str(caught.value)
    assert not out.exists()
    done = export_case(out, volume, a_mask(volume), {1: "organ"}, series, allow_unverified_pixels=True)
    assert done["image"].exists()


def test_plain_ct_passes_without_a_prompt(tmp_path):
    ct_series(tmp_path / "ct")
    volume, series = loaded(tmp_path / "ct")
    done = export_case(tmp_path / "out", volume, a_mask(volume), {1: "organ"}, series)
    assert done["image"].exists() and done["seg"] is not None


def test_export_exam_refuses_any_burned_in_view(tmp_path):
    us_burned(tmp_path / "us")
    volume, series = loaded(tmp_path / "us")
    with pytest.raises(BurnedInPixels, match="us_burned.dcm"):
        export_exam(tmp_path / "out", {"LCC": (volume, series)}, {"exam": "normal"}, allow_unverified_pixels=True)
    assert not (tmp_path / "out").exists()


def test_what_counts_as_screenshot_like(tmp_path):
    pixels = np.zeros((8, 8), np.uint8)
    cases = {
        "sc_ct.dcm": dict(sop_class=SC_CLASS, modality="CT"),  # a Secondary Capture of a CT
        "secondary.dcm": dict(sop_class=CT_CLASS, modality="CT", extra={"ImageType": ["DERIVED", "SECONDARY"]}),
        "converted.dcm": dict(sop_class=CT_CLASS, modality="DX", extra={"ConversionType": "DV"}),
        "ot.dcm": dict(sop_class=CT_CLASS, modality="OT"),
        "xc.dcm": dict(sop_class=CT_CLASS, modality="XC"),
        "ct.dcm": dict(sop_class=CT_CLASS, modality="CT", extra={"ImageType": ["ORIGINAL", "PRIMARY"]}),
        "mr.dcm": dict(sop_class="1.2.840.10008.5.1.4.1.1.4", modality="MR"),
        "us_no.dcm": dict(sop_class=US_CLASS, modality="US", burned="NO"),  # checked and said so: fine
    }
    paths = {name: write_image(tmp_path / name, pixels=pixels, **kw) for name, kw in cases.items()}
    findings = inspect_files(paths.values())
    assert not findings.burned_in
    flagged = {p.rsplit("/", 1)[-1]: why for p, why in findings.unverified}
    assert set(flagged) == {"sc_ct.dcm", "secondary.dcm", "converted.dcm", "ot.dcm", "xc.dcm"}
    assert "Secondary Capture" in flagged["sc_ct.dcm"] and "SECONDARY" in flagged["secondary.dcm"]


def test_nifti_source_has_no_tag_and_passes(tmp_path):
    import SimpleITK as sitk

    from viewer.core.io.itk import read_volume

    path = tmp_path / "img.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 8, 8), np.int16)), str(path))
    volume = read_volume(path)
    check_sources([(volume, None)])  # nothing raised
    done = export_case(tmp_path / "out", volume, a_mask(volume), {1: "organ"}, None)
    assert done["image"].exists()


def test_a_source_gone_since_loading_is_refused_by_name(tmp_path):
    us_untagged(tmp_path / "us")
    volume, series = loaded(tmp_path / "us")
    (tmp_path / "us" / "us_plain.dcm").unlink()
    with pytest.raises(ExportError, match="us_plain.dcm: cannot read its header"):
        export_case(tmp_path / "out", volume, a_mask(volume), {1: "organ"}, series, allow_unverified_pixels=True)
    assert not (tmp_path / "out").exists()


# -- the command line ---------------------------------------------------------------------------------
def _labels_for(folder, tmp_path):
    volume, _series = loaded(folder)
    return write_label_map(a_mask(volume), volume, tmp_path / "labels.nii.gz")


def test_cli_refuses_burned_in_with_exit_2_naming_the_file(tmp_path, capsys):
    path = us_burned(tmp_path / "us")
    labels = _labels_for(tmp_path / "us", tmp_path)
    out = tmp_path / "datasets"
    for flag in ([], ["--allow-unverified-pixels"]):
        code = main(["export", str(tmp_path / "us"), "--labels", str(labels), "--out", str(out), *flag])
        err = capsys.readouterr().err
        assert code == 2 and path in err and "BurnedInAnnotation is YES" in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not out.exists()


def test_cli_untagged_ultrasound_needs_the_flag(tmp_path, capsys):
    path = us_untagged(tmp_path / "us")
    labels = _labels_for(tmp_path / "us", tmp_path)
    out = tmp_path / "datasets"
    args = ["export", str(tmp_path / "us"), "--labels", str(labels), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert path in err and "--allow-unverified-pixels" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main([*args, "--allow-unverified-pixels"]) == 0
    assert list((out / "Dataset501_Lightbox" / "imagesTr").glob("*.nii.gz"))


def test_cli_plain_ct_exports_without_the_flag(tmp_path, capsys):
    ct_series(tmp_path / "ct")
    labels = _labels_for(tmp_path / "ct", tmp_path)
    assert main(["export", str(tmp_path / "ct"), "--labels", str(labels), "--out", str(tmp_path / "o")]) == 0


# -- de-identification of the UIDs the table lacked ---------------------------------------------------------
PLANTED_UIDS = {
    "CreatorVersionUID": "1.2.826.0.1.3680043.8.498.90001",
    "ContextGroupExtensionCreatorUID": "1.2.826.0.1.3680043.8.498.90002",
    "MultiFrameSourceSOPInstanceUID": "1.2.826.0.1.3680043.8.498.90003",
    "SOPInstanceUIDOfConcatenationSource": "1.2.826.0.1.3680043.8.498.90004",
    "VolumeFrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.90005",
}


def _all_text(folder) -> bytes:
    blob = b""
    for p in folder.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            blob += gzip.decompress(data) if p.name.endswith(".gz") else data
    return blob


def test_creator_version_uid_and_friends_leave_no_trace(tmp_path):
    ct_series(tmp_path / "ct", extra=PLANTED_UIDS)
    volume, series = loaded(tmp_path / "ct")
    done = export_case(tmp_path / "out", volume, a_mask(volume), {1: "organ"}, series, keep_mapping=False)
    assert done["seg"] is not None
    blob = _all_text(done["dataset"])
    for keyword, uid in PLANTED_UIDS.items():
        assert uid.encode() not in blob, keyword
    seg = pydicom.dcmread(done["seg"])
    for keyword, uid in PLANTED_UIDS.items():
        assert uid not in str(seg), keyword
    json.loads((done["dataset"] / "dataset.json").read_text())  # still a valid dataset
