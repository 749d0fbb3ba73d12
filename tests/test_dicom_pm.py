"""Probability maps as DICOM Parametric Maps land on the source images' pixels and read back.

Checks use facts taken apart from our writer and reader: the source files' own headers (pydicom),
highdicom reading the map back, the stored values through the mapping the file itself declares.
Stacks are written shuffled and reversed, so reliance on file order shows; mammograms (no
ImagePositionPatient) and pydicom's own CT/MR test files are sources too.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.conftest import AXIAL, OBLIQUE, ramp_volume
from viewer.core.export.dicom_pm import PM_SOP_CLASS, STORED_MAX, read_parametric_map, write_parametric_map
from viewer.core.io import load_series, scan
from viewer.core.io.dicom_write import write_enhanced, write_series
from viewer.core.synthetic import write_mammo_exam

REVERSED = AXIAL * np.array([-1.0, 1.0, 1.0])
STEP = 1.0 / STORED_MAX  # one stored unit


def load(folder, pick=None):
    series = [s for s in scan(Path(folder)).series if s.kind == "dicom"]
    if pick is not None:
        series = [s for s in series if pick(s)]
    assert len(series) == 1, [s.label() for s in series]
    return series[0], load_series(series[0])


def some_probabilities(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    prob = rng.random(shape).astype(np.float32)
    prob[0] = 0.0  # an empty slice is still a frame: the map covers the whole volume
    prob[..., 0, 0] = 1.0
    return prob


def stored_as_read_by_pydicom(path) -> tuple[pydicom.Dataset, np.ndarray, float, float]:
    ds = pydicom.dcmread(path)
    rwvm = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    frames = ds.pixel_array if int(ds.NumberOfFrames) > 1 else ds.pixel_array[np.newaxis]
    return ds, frames, float(rwvm.RealWorldValueSlope), float(rwvm.RealWorldValueIntercept)


@pytest.mark.parametrize("direction,order", [(REVERSED, "shuffled"), (OBLIQUE, "shuffled"), (AXIAL, "index")],
                         ids=["reversed", "oblique", "axial"])
def test_ct_map_frames_reference_the_source_slice_and_round_trip(tmp_path, direction, order):
    write_series(ramp_volume(shape=(7, 13, 11), direction=direction), tmp_path / "src", file_order=order, seed=3)
    series, volume = load(tmp_path / "src")
    prob = some_probabilities(volume.shape)
    path = write_parametric_map(prob, volume, series, tmp_path / "out" / "mass.pm.dcm", name="mass",
                                model="mass-detector 2.1.0")

    # highdicom reads it as a Parametric Map
    pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(path))
    assert pm.SOPClassUID == PM_SOP_CLASS and pm.number_of_frames == volume.shape[0]
    # each frame, by the source it names, holds that source slice's values (no reader of ours involved)
    by_uid = {}
    for p in (tmp_path / "src").glob("*.dcm"):
        h = pydicom.dcmread(p, stop_before_pixels=True)
        by_uid[str(h.SOPInstanceUID)] = h
    ds, frames, slope, intercept = stored_as_read_by_pydicom(path)
    assert frames.dtype == np.uint16 and slope == pytest.approx(STEP) and intercept == 0.0
    seen = set()
    for i, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
        uid = str(fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        ipp = np.array([float(v) for v in by_uid[uid].ImagePositionPatient])
        np.testing.assert_allclose([float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient], ipp,
                                   atol=1e-3)
        z = int(np.rint(volume.world_to_index(ipp)[0]))
        np.testing.assert_allclose(frames[i] * slope + intercept, prob[z], atol=STEP / 2 + 1e-7)
        seen.add(z)
    assert seen == set(range(volume.shape[0]))
    # our reader: same values, name and model
    back, name, model = read_parametric_map(path, volume, series)
    assert back.dtype == np.float32 and back.shape == volume.shape
    np.testing.assert_allclose(back, prob, atol=STEP / 2 + 1e-7)
    assert (name, model) == ("mass", "mass-detector 2.1.0")
    # the mapping names the map and its unit
    rwvm = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert rwvm.LUTExplanation == "probability of mass" and rwvm.LUTLabel == "mass"
    unit = rwvm.MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("{probability}", "UCUM")
    first = next(iter(by_uid.values()))
    assert ds.StudyInstanceUID == first.StudyInstanceUID and ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert ds.SeriesInstanceUID != first.SeriesInstanceUID
    equipment = [e for e in ds.ContributingEquipmentSequence if e.Manufacturer == "Lightbox"]
    assert [(e.ManufacturerModelName, e.SoftwareVersions) for e in equipment] == [("mass-detector", "2.1.0")]


def test_enhanced_multiframe_source_frames_reference_their_source_frame(tmp_path):
    src = ramp_volume(shape=(6, 10, 12), direction=REVERSED)
    order = [3, 0, 5, 1, 4, 2]  # stored frame i holds slice order[i]
    write_enhanced(src, tmp_path / "src" / "enhanced.dcm", frame_order=order)
    series, volume = load(tmp_path / "src")
    prob = some_probabilities(volume.shape, seed=5)
    path = write_parametric_map(prob, volume, series, tmp_path / "pm.dcm", name="mass", model="m 1")
    source = pydicom.dcmread(tmp_path / "src" / "enhanced.dcm", stop_before_pixels=True)
    ds, frames, slope, _ = stored_as_read_by_pydicom(path)
    for i, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ref = fg.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        number = int(ref.ReferencedFrameNumber)
        ipp = [float(v) for v in source.PerFrameFunctionalGroupsSequence[number - 1]
               .PlanePositionSequence[0].ImagePositionPatient]
        z = int(np.rint(volume.world_to_index(ipp)[0]))
        np.testing.assert_allclose(frames[i] * slope, prob[z], atol=STEP / 2 + 1e-7)
    back, _, _ = read_parametric_map(path, volume, series)
    np.testing.assert_allclose(back, prob, atol=STEP / 2 + 1e-7)


def test_mammogram_map_references_its_view_and_round_trips(tmp_path):
    write_mammo_exam(tmp_path / "mg", (64, 48), seed=1, lesion_side="L")
    for view in ("LCC", "RMLO"):
        series, volume = load(tmp_path / "mg", lambda s, v=view: Path(s.instances[0].path).stem == v)
        assert series.is_projection and volume.shape[0] == 1
        prob = some_probabilities(volume.shape, seed=2)[0]  # 2D is accepted for a (1, rows, cols) volume
        path = write_parametric_map(prob, volume, series, tmp_path / f"{view}.pm.dcm", name="Grad-CAM",
                                    model="mammo-exam 1.0.0")
        source = pydicom.dcmread(series.instances[0].path, stop_before_pixels=True)
        ds, frames, slope, _ = stored_as_read_by_pydicom(path)
        ref = ds.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID and ref.SpatialLocationsPreserved == "YES"
        np.testing.assert_allclose(frames[0] * slope, prob, atol=STEP / 2 + 1e-7)
        assert ds.Laterality == view[0]  # from the image's laterality
        rwvm = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        assert "not a probability" in rwvm.LUTExplanation  # Grad-CAM is a saliency
        assert rwvm.MeasurementUnitsCodeSequence[0].CodeValue == "1"
        # the nominal plane lives in a frame of reference of its own, not the mammogram's
        assert ds.FrameOfReferenceUID != source.get("FrameOfReferenceUID")
        hd.pm.ParametricMap.from_dataset(pydicom.dcmread(path))
        back, name, model = read_parametric_map(path, volume, series)
        np.testing.assert_allclose(back[0], prob, atol=STEP / 2 + 1e-7)
        assert (name, model) == ("Grad-CAM", "mammo-exam 1.0.0")


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_pydicom_test_files_as_sources(tmp_path, name):
    (tmp_path / "src").mkdir()
    shutil.copy(get_testdata_file(name), tmp_path / "src" / name)
    series, volume = load(tmp_path / "src")
    prob = some_probabilities(volume.shape, seed=4)
    path = write_parametric_map(prob, volume, series, tmp_path / "pm.dcm", name="lesion probability", model="x")
    source = pydicom.dcmread(tmp_path / "src" / name, stop_before_pixels=True)
    ds = pydicom.dcmread(path)
    assert ds.PatientID == source.PatientID and ds.StudyInstanceUID == source.StudyInstanceUID
    back, got_name, model = read_parametric_map(path, volume, series)
    np.testing.assert_allclose(back, prob, atol=STEP / 2 + 1e-7)
    assert (got_name, model) == ("lesion probability", "x")


def test_bad_maps_and_files_get_one_line_errors(tmp_path):
    write_series(ramp_volume(shape=(3, 8, 8)), tmp_path / "src")
    series, volume = load(tmp_path / "src")
    out = tmp_path / "pm.dcm"
    bad = np.full(volume.shape, np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        write_parametric_map(bad, volume, series, out, name="m", model="x 1")
    with pytest.raises(ValueError, match="shape"):
        write_parametric_map(np.zeros((2, 8, 8)), volume, series, out, name="m", model="x 1")
    assert not out.exists()
    # out of range is clipped, not wrapped round
    prob = np.full(volume.shape, 1.5, np.float32)
    prob[1] = -0.2
    write_parametric_map(prob, volume, series, out, name="m", model="x 1")
    back, _, _ = read_parametric_map(out, volume, series)
    assert back[0].min() == pytest.approx(1.0) and back[1].max() == 0.0
    # not a PM / another grid
    with pytest.raises(ValueError, match="not a DICOM Parametric Map"):
        read_parametric_map(series.instances[0].path, volume, series)
    write_series(ramp_volume(shape=(3, 9, 8)), tmp_path / "other")
    other_series, other_volume = load(tmp_path / "other")
    with pytest.raises(ValueError, match="another grid"):
        read_parametric_map(out, other_volume, other_series)


def test_a_damaged_map_gives_one_line_naming_the_file(tmp_path):
    write_series(ramp_volume(shape=(3, 8, 8)), tmp_path / "src")
    series, volume = load(tmp_path / "src")
    path = write_parametric_map(np.zeros(volume.shape), volume, series, tmp_path / "pm.dcm", name="m", model="x 1")
    ds = pydicom.dcmread(path)
    del ds.Rows
    ds.save_as(tmp_path / "norows.dcm")
    with pytest.raises(ValueError, match=r"norows\.dcm: "):
        read_parametric_map(tmp_path / "norows.dcm", volume, series)
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match=r"junk\.dcm: "):
        read_parametric_map(tmp_path / "junk.dcm", volume, series)
