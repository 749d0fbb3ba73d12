"""De-identification (PS3.15 Annex E basic profile + modified dates): every element checked."""
import datetime as dt
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from viewer.core.export.deid import (
    BurnedInWarning,
    Deidentifier,
    DeidError,
    DeidPolicy,
    deidentified_uid,
    deidentify_file,
    profile_action,
    safe_description,
)
from viewer.core.export.deid_table import BASIC_PROFILE
from viewer.core.io.dicom_write import base_dataset, save, set_pixels
from viewer.core.volume import SourceInfo

STUDY_UID = generate_uid()
FOR_UID = generate_uid()
SERIES_UID = generate_uid()
REF_SOP = generate_uid()
PHI = ["Smithers^Waylon", "PID-8675309", "42 Evergreen Terrace", "555-0199", "OTHER-ID-77",
       "Hibbert^Julius", "Riviera^Nick", "Springfield General", "1 Hospital Way", "CTSTATION7",
       "ACC123456", "Waylon", "Operator^Homer", "SECRETPRIVATE", "Krusty^Clown", "Burns^Monty",
       "Lovejoy^Tim", "my comment about Waylon", "Pseudo^Alias", "19570312", "OVERLAYTEXT",
       "CURVETEXT"]
PLANTED_DATES = {"StudyDate": "20240115", "SeriesDate": "20240115", "AcquisitionDate": "20240116",
                 "ContentDate": "20240117"}


def _instance(tmp_path, name, sop_uid, pixels, patient_id="PID-8675309", study_date="20240115",
              modality="CT", burned="NO"):
    info = SourceInfo(patient_id=patient_id, patient_name="Smithers^Waylon", study_uid=STUDY_UID,
                      study_date=study_date, study_description="Head CT for Waylon Smithers",
                      series_uid=SERIES_UID, series_description="Waylon axial", modality=modality,
                      frame_of_reference_uid=FOR_UID)
    ds = base_dataset(info, pydicom.uid.UID("1.2.840.10008.5.1.4.1.1.2"), sop_uid=sop_uid)
    ds.PatientBirthDate = "19570312"
    ds.PatientSex = "M"
    ds.PatientAddress = "42 Evergreen Terrace"
    ds.PatientTelephoneNumbers = "555-0199"
    ds.OtherPatientIDs = "OTHER-ID-77"
    other = Dataset()
    other.PatientID = "OTHER-ID-77"
    other.IssuerOfPatientID = "Springfield General"
    ds.OtherPatientIDsSequence = [other]
    ds.OtherPatientNames = "Pseudo^Alias"
    ds.ReferringPhysicianName = "Hibbert^Julius"
    ds.PerformingPhysicianName = "Riviera^Nick"
    ds.OperatorsName = "Operator^Homer"
    ds.InstitutionName = "Springfield General"
    ds.InstitutionAddress = "1 Hospital Way"
    ds.StationName = "CTSTATION7"
    ds.Manufacturer = "AcmeCorp"
    ds.ProtocolName = "Waylon protocol"
    ds.ContentCreatorName = "Krusty^Clown"
    ds.AccessionNumber = "ACC123456"
    ds.ImageComments = "my comment about Waylon"
    ds.PatientComments = "my comment about Waylon"
    ds.SeriesDate = study_date
    ds.AcquisitionDate = (dt.datetime.strptime(study_date, "%Y%m%d") + dt.timedelta(days=1)).strftime("%Y%m%d")
    ds.ContentDate = (dt.datetime.strptime(study_date, "%Y%m%d") + dt.timedelta(days=2)).strftime("%Y%m%d")
    ds.StudyTime, ds.SeriesTime, ds.AcquisitionTime, ds.ContentTime = "101010", "101111", "101212", "101313"
    ds.AcquisitionDateTime = ds.AcquisitionDate + "101212.000000+0100"
    ds.InstanceCreationDate = study_date
    ds.Modality = modality
    ds.BurnedInAnnotation = burned
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = REF_SOP
    ds.ReferencedImageSequence = [ref]
    ref_study = Dataset()
    ref_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref_study.ReferencedSOPInstanceUID = STUDY_UID
    ds.ReferencedStudySequence = [ref_study]
    req = Dataset()
    req.RequestedProcedureID = "ACC123456"
    req.ScheduledProcedureStepID = "Krusty^Clown"
    req.RequestingPhysician = "Burns^Monty"
    req.StudyInstanceUID = STUDY_UID
    ds.RequestAttributesSequence = [req]
    # a kept sequence (Source Image Sequence, X/Z/U*) holding a UID and a name nested deeper
    src_item = Dataset()
    src_item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    src_item.ReferencedSOPInstanceUID = REF_SOP
    inner = Dataset()
    inner.PerformingPhysicianName = "Lovejoy^Tim"
    inner.ContentDate = study_date
    src_item.AnatomicRegionSequence = [inner]  # kept (K): its items are walked
    ds.SourceImageSequence = [src_item]
    block = ds.private_block(0x0009, "ACME PRIVATE", create=True)
    block.add_new(0x10, "LO", "SECRETPRIVATE")
    block.add_new(0x11, "PN", "Smithers^Waylon")
    ds.add_new(0x60000010, "US", 4)
    ds.add_new(0x60000011, "US", 4)
    ds.add_new(0x60003000, "OW", b"OVERLAYTEXT\0" * 2)
    ds.add_new(0x50000020, "CS", "CURVETEXT")
    set_pixels(ds, pixels)
    return save(ds, tmp_path / name)


def _walk(ds, path=()):
    for elem in ds:
        yield path, elem
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                yield from _walk(item, path + (elem.keyword or str(elem.tag), i))


@pytest.fixture()
def study(tmp_path):
    rng = np.random.default_rng(0)
    pix = [rng.integers(0, 1000, (8, 8)).astype(np.int16) for _ in range(2)]
    sops = [generate_uid(), generate_uid()]
    src = [_instance(tmp_path / "in", f"IM{i}.dcm", sops[i], pix[i]) for i in range(2)]
    return src, sops, pix


def test_every_element_follows_the_profile(tmp_path, study):
    src, sops, pix = study
    deid = Deidentifier(DeidPolicy(secret=b"k", keep_mapping=True))
    dst = [deidentify_file(p, tmp_path / "out" / f"{i}.dcm", deid) for i, p in enumerate(src)]
    outs = [pydicom.dcmread(p) for p in dst]
    original = pydicom.dcmread(src[0])
    shift = deid.date_shift("PID-8675309")
    assert -3650 <= shift <= -30
    for out in outs:
        for path, elem in _walk(out):
            tag = int(elem.tag)
            action = profile_action(tag)
            assert not elem.tag.is_private, (path, elem)
            assert (tag >> 16) & 0xFF00 not in (0x5000, 0x6000), (path, elem)
            assert action != "X", (path, elem)  # no attribute the profile removes remains
            if action in ("Z", "X/Z", "X/Z/D") and elem.VR not in ("DA", "DT", "TM") \
                    and tag != 0x00100010:
                assert elem.value in (None, "", b"") or (elem.VR == "SQ" and len(elem.value) == 0), (path, elem)
            if action in ("D", "Z/D", "X/D") and elem.VR not in ("DA", "DT", "TM", "SQ", "UI") \
                    and tag != 0x00100020:
                assert elem.value == "ANONYMIZED", (path, elem)
            if elem.VR == "PN" and elem.value:
                assert str(elem.value).startswith("CASE_") or elem.value == "ANONYMIZED", (path, elem)
            if elem.VR == "DA" and elem.value and elem.keyword != "PatientBirthDate":
                assert dt.datetime.strptime(elem.value, "%Y%m%d").year < 2024 or shift > -20
        assert out.PatientName == "CASE_0001" and out.PatientID == "CASE_0001"
        assert out.PatientBirthDate in ("", None)
        assert out.PatientIdentityRemoved == "YES"
        assert out.LongitudinalTemporalInformationModified == "MODIFIED"
        assert {c.CodeValue for c in out.DeidentificationMethodCodeSequence} == {"113100", "113107"}
        assert out.Manufacturer == "AcmeCorp"  # K: device identity is not PHI by the table
        for kw in ("PatientAddress", "PatientTelephoneNumbers", "OtherPatientIDs", "OtherPatientIDsSequence",
                   "OtherPatientNames", "PerformingPhysicianName", "InstitutionAddress", "StudyDescription",
                   "SeriesDescription", "ImageComments", "PatientComments", "RequestAttributesSequence"):
            assert kw not in out, kw
        assert out.AccessionNumber == "" and out.ReferringPhysicianName == ""
        assert out.ProtocolName == "ANONYMIZED" and out.ContentCreatorName == "ANONYMIZED"
        assert len(out.ReferencedStudySequence) == 0
    # dates: the same shift everywhere, times kept
    for kw, value in PLANTED_DATES.items():
        want = (dt.datetime.strptime(value, "%Y%m%d") + dt.timedelta(days=shift)).strftime("%Y%m%d")
        assert outs[0][kw].value == want, kw
    assert outs[0].SourceImageSequence[0].AnatomicRegionSequence[0].ContentDate == \
        (dt.datetime(2024, 1, 15) + dt.timedelta(days=shift)).strftime("%Y%m%d")
    assert outs[0].AcquisitionDateTime == outs[0].AcquisitionDate + "101212.000000"  # UTC offset dropped
    assert outs[0].StudyTime == "101010"
    # UIDs: new, consistent across files and sequences, SOP class kept
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert outs[0][kw].value == outs[1][kw].value == deid.uid(original[kw].value) != original[kw].value
        assert outs[0][kw].value.startswith("2.25.") and len(outs[0][kw].value) <= 64
    assert [o.SOPInstanceUID for o in outs] == [deid.uid(s) for s in sops]
    assert outs[0].file_meta.MediaStorageSOPInstanceUID == outs[0].SOPInstanceUID
    assert outs[0].SOPClassUID == original.SOPClassUID
    new_ref = deid.uid(REF_SOP)
    assert outs[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == new_ref
    assert outs[1].SourceImageSequence[0].ReferencedSOPInstanceUID == new_ref
    assert outs[0].SourceImageSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    # pixels unchanged
    for out, p in zip(outs, pix):
        np.testing.assert_array_equal(out.pixel_array, p)
    # no planted string anywhere in the written bytes
    originals = [STUDY_UID, SERIES_UID, FOR_UID, REF_SOP, *sops, *PLANTED_DATES.values(), "+0100"]
    for p in dst:
        data = p.read_bytes()
        for s in PHI + originals:
            assert s.encode() not in data, (p.name, s)
    m = deid.mapping()
    assert m["patients"]["PID-8675309"] == {"pseudonym": "CASE_0001", "date_shift_days": shift}
    assert m["uids"][STUDY_UID] == outs[0].StudyInstanceUID


def test_consistency_and_secrets(tmp_path, study):
    src, _, _ = study
    a = Deidentifier(DeidPolicy(secret=b"one"))
    b = Deidentifier(DeidPolicy(secret=b"one", pseudonym="hash"))
    c = Deidentifier(DeidPolicy())  # random secret
    assert a.uid(STUDY_UID) == b.uid(STUDY_UID) != c.uid(STUDY_UID)
    assert a.date_shift("X") == b.date_shift("X")
    assert b.pseudonym("PID-8675309").startswith("ANON_") and "8675309" not in b.pseudonym("PID-8675309")
    assert a.pseudonym("p1") == "CASE_0001" and a.pseudonym("p2") == "CASE_0002" and a.pseudonym("p1") == "CASE_0001"
    assert a.mapping() == {}  # nothing kept unless asked
    assert a.write_mapping(tmp_path / "m.json") is None and not (tmp_path / "m.json").exists()
    kept = Deidentifier(DeidPolicy(secret=b"one", keep_mapping=True))
    kept.pseudonym("PID-8675309")
    path = kept.write_mapping(tmp_path / "kept.json")
    assert "PID-8675309" in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600  # it re-identifies patients: its owner only
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    info = SourceInfo(series_uid=SERIES_UID, patient_name="Smithers^Waylon")
    text = safe_description(info, a)
    assert SERIES_UID not in text and deidentified_uid(SERIES_UID, a) in text and "Waylon" not in text
    # a second patient gets another pseudonym; the input dataset is not modified
    ds = pydicom.dcmread(src[0])
    before = ds.PatientName
    out = a.dataset(ds)
    assert ds.PatientName == before and out.PatientName == "CASE_0003"


def test_burned_in_annotation(tmp_path):
    pix = np.zeros((4, 4), np.int16)
    burned = _instance(tmp_path, "burned.dcm", generate_uid(), pix, burned="YES")
    deid = Deidentifier(DeidPolicy(secret=b"k"))
    with pytest.raises(DeidError, match="burned.dcm"):
        deidentify_file(burned, tmp_path / "o.dcm", deid)
    assert not (tmp_path / "o.dcm").exists()
    allowed = Deidentifier(DeidPolicy(secret=b"k", allow_burned_in=True))
    deidentify_file(burned, tmp_path / "o.dcm", allowed)
    assert (tmp_path / "o.dcm").exists()
    ds = pydicom.dcmread(_instance(tmp_path, "us.dcm", generate_uid(), pix, modality="US"))
    del ds.BurnedInAnnotation
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        deid.dataset(ds, source="us.dcm")
    assert any(issubclass(w.category, BurnedInWarning) and "us.dcm" in str(w.message) for w in caught)


def test_table_is_the_basic_profile():
    # spot checks against PS3.15 Table E.1-1
    assert BASIC_PROFILE[0x00100010] == "Z" and BASIC_PROFILE[0x00100020] == "Z/D"
    assert BASIC_PROFILE[0x0020000D] == "U" and BASIC_PROFILE[0x00081030] == "X"
    assert profile_action(0x60023000) == "X" and profile_action(0x50040010) == "X"
    assert profile_action(0x00080016) is None  # SOP Class UID: kept
    assert len(BASIC_PROFILE) > 600


def test_longitudinal_intervals_and_patients(tmp_path):
    pix = np.zeros((4, 4), np.int16)
    deid = Deidentifier(DeidPolicy(secret=b"k"))
    first = pydicom.dcmread(_instance(tmp_path, "a.dcm", generate_uid(), pix, study_date="20200101"))
    later = pydicom.dcmread(_instance(tmp_path, "b.dcm", generate_uid(), pix, study_date="20230615"))
    other = pydicom.dcmread(_instance(tmp_path, "c.dcm", generate_uid(), pix, patient_id="PID-OTHER",
                                      study_date="20200101"))
    a, b, c = (deid.dataset(ds) for ds in (first, later, other))

    def day(v):
        return dt.datetime.strptime(v, "%Y%m%d")
    assert day(b.StudyDate) - day(a.StudyDate) == day("20230615") - day("20200101")  # interval kept
    assert a.PatientID == b.PatientID == "CASE_0001" and c.PatientID == "CASE_0002"
    assert deid.date_shift("PID-8675309") != deid.date_shift("PID-OTHER")
    assert c.StudyDate == (day("20200101") + dt.timedelta(days=deid.date_shift("PID-OTHER"))).strftime("%Y%m%d")
    year = Deidentifier(DeidPolicy(secret=b"k", birth_date="year")).dataset(first)
    assert len(year.PatientBirthDate) == 8 and year.PatientBirthDate.endswith("0101")


def test_enhanced_multiframe_and_compressed(tmp_path):
    from pydicom.uid import RLELossless

    from viewer.core.io.dicom_write import write_enhanced, write_series
    from viewer.core.volume import Volume
    info = SourceInfo(patient_id="PID-8675309", patient_name="Smithers^Waylon", modality="CT",
                      study_date="20240115", series_description="Waylon")
    arr = (np.arange(3 * 6 * 5).reshape(3, 6, 5) % 400).astype(np.int16)
    vol = Volume(arr, info=info)
    enh = write_enhanced(vol, tmp_path / "enh.dcm", extra={"AcquisitionDateTime": "20240115101010"})
    rle = write_series(vol, tmp_path / "rle", transfer_syntax=RLELossless)[0]
    deid = Deidentifier(DeidPolicy(secret=b"k"))
    for src in (enh, rle):
        dst = deidentify_file(src, tmp_path / "out" / src.name, deid)
        out, orig = pydicom.dcmread(dst), pydicom.dcmread(src)
        assert out.file_meta.TransferSyntaxUID == orig.file_meta.TransferSyntaxUID
        np.testing.assert_array_equal(out.pixel_array, orig.pixel_array)
        data = dst.read_bytes()
        for s in ("Smithers", "PID-8675309", "Waylon", orig.StudyInstanceUID, orig.SOPInstanceUID, "20240115"):
            assert s.encode() not in data, (src.name, s)
    out = pydicom.dcmread(tmp_path / "out" / "enh.dcm")
    assert len(out.PerFrameFunctionalGroupsSequence) == 3  # functional groups kept and walked


def test_bad_inputs_are_named_and_leave_nothing(tmp_path):
    deid = Deidentifier(DeidPolicy(secret=b"k"))
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    with pytest.raises(DeidError, match="junk.dcm"):
        deidentify_file(junk, tmp_path / "out" / "j.dcm", deid)
    ds = pydicom.dcmread(_instance(tmp_path, "nosop.dcm", generate_uid(), np.zeros((4, 4), np.int16)))
    del ds.SOPInstanceUID
    ds.save_as(tmp_path / "nosop2.dcm")
    with pytest.raises(DeidError, match="nosop2.dcm"):
        deidentify_file(tmp_path / "nosop2.dcm", tmp_path / "out" / "n.dcm", deid)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_creator_version_uid_and_other_instance_uids_are_remapped(tmp_path):
    """(0008,9123) and (0008,010D) are U in Table E.1-1 but were missing from the table; UIDs that
    reference instances the table remaps are remapped too. Each new value is the keyed mapping of
    the old one (consistent across files), and no old value is left in the written file."""
    planted = {"CreatorVersionUID": generate_uid(), "ContextGroupExtensionCreatorUID": generate_uid(),
               "MultiFrameSourceSOPInstanceUID": generate_uid(),
               "SOPInstanceUIDOfConcatenationSource": generate_uid(),
               "VolumeFrameOfReferenceUID": generate_uid(), "TableFrameOfReferenceUID": generate_uid(),
               "ReferencedFiducialUID": generate_uid()}
    src = _instance(tmp_path, "src.dcm", generate_uid(), np.zeros((4, 4), np.int16))
    ds = pydicom.dcmread(src)
    for keyword, uid in planted.items():
        setattr(ds, keyword, uid)
    ds.save_as(src)
    deid = Deidentifier(DeidPolicy(secret=b"k"))
    out = pydicom.dcmread(deidentify_file(src, tmp_path / "out.dcm", deid))
    raw = (tmp_path / "out.dcm").read_bytes()
    for keyword, uid in planted.items():
        assert profile_action(pydicom.datadict.tag_for_keyword(keyword)) == "U", keyword
        assert out.get(keyword) == deid.uid(uid), keyword
        assert uid.encode() not in raw, keyword
