"""User measurements as a TID 1500 SR: the right image, the right pixels, dciodvfy-clean, highdicom reads it.

The CT's files are shuffled on disk, so the SOP UID a ruler on slice k names is checked against
the file whose ImagePositionPatient is that slice's position (read here with pydicom, not
through our loader). A mammogram (projection, no patient position) and a coronal reformat
(SCOORD3D in a Comprehensive 3D SR) go the same way; damaged or foreign files give one line
naming the file.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from viewer.core.export.measurement_sr import (COMPREHENSIVE_3D_SR, COMPREHENSIVE_SR, MeasurementSRError,
                                               read_measurements_sr, write_measurements_sr)
from viewer.core.io import load_series, scan
from viewer.core.io.dicom import plan_series
from viewer.core.measure import distance_mm, roi_stats
from viewer.core.measure_records import from_display, to_display
from viewer.core.mpr import native_geometry, plane_geometry
from viewer.core.synthetic import write_ct_study, write_mammo_exam

hd = pytest.importorskip("highdicom")


def dciodvfy_errors(path) -> list[str]:
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed; `bash scripts/system_deps.sh` installs it")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def opened(folder, modality=None, view=None):
    series = [s for s in scan(folder).series if s.kind == "dicom"
              and (modality is None or s.modality == modality)
              and (view is None or f"{s.info.laterality}{s.info.view_position}" == view)]
    assert len(series) == 1, series
    s = series[0]
    return s, load_series(s), plan_series(s)


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    write_ct_study(folder, shape=(20, 64, 64), spacing=(3.0, 1.5, 1.5), seed=2, file_order="shuffled")
    return folder


def ruler_and_roi(volume, plan, geometry, k):
    pix = geometry.pixel_size
    a, b = (10.0, 12.0), (30.0, 40.5)
    ruler = from_display("ruler", geometry, k, a, b, volume, plan, uid=pydicom.uid.generate_uid(),
                         value=distance_mm(pix, a, b))
    image = volume.array[k] if geometry.plane == "native" else None
    stats = roi_stats(image, pix, "rect", center=(27.5, 28.0), half_size=(7.5, 12.0)) if image is not None else None
    roi = from_display("rect", geometry, k, (20.0, 16.0), (35.0, 40.0), volume, plan, uid=pydicom.uid.generate_uid(),
                       value=stats.area_mm2 if stats else 42.0, mean=stats.mean if stats else 1.0,
                       std=stats.std if stats else 2.0, unit="HU")
    return ruler, roi


def test_ct_slice_k_of_a_shuffled_series_names_its_own_image(ct, tmp_path):
    series, volume, plan = opened(ct)
    g = native_geometry(volume)
    k = 7
    z = float(volume.index_to_world([k, 0, 0])[2])
    truth = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(ct.glob("*.dcm"))]
    expected = next(ds.SOPInstanceUID for ds in truth if abs(float(ds.ImagePositionPatient[2]) - z) < 1e-3)
    ruler, roi = ruler_and_roi(volume, plan, g, k)
    assert ruler.sop_uid == expected and roi.sop_uid == expected
    assert ruler.points == ((12.5, 10.5), (41.0, 30.5))  # (column, row), pixel (r, c) centre at (c+.5, r+.5)

    out = write_measurements_sr([ruler, roi], series, tmp_path / "m.dcm", observer="DOE^JANE")
    assert dciodvfy_errors(out) == []
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == COMPREHENSIVE_SR and ds.Modality == "SR"
    assert ds.StudyInstanceUID == volume.info.study_uid and ds.PatientID == truth[0].PatientID

    sr = hd.sr.srread(out)  # highdicom's own reading, not ours
    (person,) = sr.content.get_observer_contexts(observer_type=pydicom.sr.codedict.codes.DCM.Person)
    assert str(person.observer_identifying_attributes.name) == "DOE^JANE"
    assert not sr.content.get_observer_contexts(observer_type=pydicom.sr.codedict.codes.DCM.Device)
    (group,) = sr.content.get_image_measurement_groups()
    (length,) = group.get_measurements()
    assert length.value == pytest.approx(ruler.value) and length.unit.value == "mm"
    (coords,) = length.referenced_coordinates
    assert str(coords.GraphicType) == "POLYLINE"
    np.testing.assert_allclose(np.asarray(coords.GraphicData, float).reshape(-1, 2), ruler.points)
    assert coords.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == expected
    (planar,) = sr.content.get_planar_roi_measurement_groups()
    names = {m.name.meaning: (m.value, m.unit.value) for m in planar.get_measurements()}
    assert names["Area"] == (pytest.approx(roi.value), "mm2")
    assert names["Mean"] == (pytest.approx(roi.mean), "[hnsf'U]")
    assert names["Standard Deviation"][0] == pytest.approx(roi.std)
    assert planar.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == expected

    back = {r.kind: r for r in read_measurements_sr(out)}
    assert back["ruler"].uid == ruler.uid and back["rect"].uid == roi.uid
    assert back["rect"].mean == pytest.approx(roi.mean) and back["rect"].unit == "HU"
    assert back["ruler"].series_uid == volume.info.series_uid
    k2, p0, p1 = to_display(back["ruler"], g, volume, plan)
    assert k2 == k and np.allclose([p0, p1], [(10.0, 12.0), (30.0, 40.5)])
    k3, q0, q1 = to_display(back["rect"], g, volume, plan)
    assert k3 == k and np.allclose([q0, q1], [(20.0, 16.0), (35.0, 40.0)])
    # the values saved are the ones the image gives back at the restored place
    again = roi_stats(volume.array[k3], g.pixel_size, "rect", center=np.mean([q0, q1], axis=0),
                      half_size=np.abs(np.subtract(q1, q0)) / 2)
    assert again.mean == pytest.approx(back["rect"].mean) and again.area_mm2 == pytest.approx(back["rect"].value)


def test_coronal_reformat_is_saved_in_patient_coordinates(ct, tmp_path):
    series, volume, plan = opened(ct)
    cor = plane_geometry(volume, "coronal")
    ruler, roi = ruler_and_roi(volume, plan, cor, 30)
    assert ruler.is_3d and roi.is_3d and ruler.frame_of_reference_uid == volume.info.frame_of_reference_uid
    out = write_measurements_sr([ruler, roi], series, tmp_path / "m3d.dcm")
    assert dciodvfy_errors(out) == []
    assert pydicom.dcmread(out).SOPClassUID == COMPREHENSIVE_3D_SR
    sr = hd.sr.srread(out)
    (planar,) = sr.content.get_planar_roi_measurement_groups()
    assert str(planar.roi.GraphicType) == "POLYGON" and planar.roi.ValueType == "SCOORD3D"
    back = {r.kind: r for r in read_measurements_sr(out)}
    assert to_display(back["ruler"], cor, volume, plan)[0] == 30
    assert to_display(back["ruler"], native_geometry(volume), volume, plan) is None  # not on an axial slice
    k, p0, p1 = to_display(back["rect"], cor, volume, plan)
    assert k == 30 and np.allclose([p0, p1], [(20.0, 16.0), (35.0, 40.0)])


def test_mammogram_ellipse_round_trip(tmp_path):
    write_mammo_exam(tmp_path / "mg", (128, 96), seed=1, lesion_side="L")
    series, volume, plan = opened(tmp_path / "mg", "MG", "LCC")
    g = native_geometry(volume)
    stats = roi_stats(volume.array[0], g.pixel_size, "ellipse", center=(60.0, 40.0), half_size=(20.0, 12.0))
    rec = from_display("ellipse", g, 0, (40.0, 28.0), (80.0, 52.0), volume, plan, uid=pydicom.uid.generate_uid(),
                       value=stats.area_mm2, mean=stats.mean, std=stats.std)
    assert rec.sop_uid == pydicom.dcmread(tmp_path / "mg" / "LCC.dcm").SOPInstanceUID
    assert rec.points[:2] == ((40.5, 40.5), (40.5, 80.5))  # the longer axis (rows) first
    out = write_measurements_sr([rec], series, tmp_path / "mg.sr.dcm")
    assert dciodvfy_errors(out) == []
    (planar,) = hd.sr.srread(out).content.get_planar_roi_measurement_groups()
    assert str(planar.roi.GraphicType) == "ELLIPSE"
    ref = planar.roi.ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPClassUID == pydicom.dcmread(tmp_path / "mg" / "LCC.dcm").SOPClassUID
    (back,) = read_measurements_sr(out)
    assert back.unit == "" and back.mean == pytest.approx(stats.mean)
    k, p0, p1 = to_display(back, g, volume, plan)
    assert k == 0 and np.allclose([p0, p1], [(40.0, 28.0), (80.0, 52.0)])


def test_bad_files_are_named(ct, tmp_path):
    image = sorted(ct.glob("*.dcm"))[0]
    with pytest.raises(MeasurementSRError, match=str(image.name)):
        read_measurements_sr(image)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"DICM" * 10)
    with pytest.raises(MeasurementSRError, match="junk.dcm"):
        read_measurements_sr(junk)
    series, volume, plan = opened(ct)
    with pytest.raises(MeasurementSRError, match="no measurements"):
        write_measurements_sr([], series, tmp_path / "none.dcm")
    assert not (tmp_path / "none.dcm").exists()


def test_gantry_tilt_points_are_on_the_stored_image_not_the_resampled_grid(tmp_path):
    """A tilted stack is shifted per slice onto a regular grid; the SR must name the stored pixel."""
    from viewer.core.io.dicom_write import write_series
    from viewer.core.volume import SourceInfo, Volume

    n, step, pix, tilt = 6, 3.0, 0.5, np.radians(15.0)
    blob = (4, 12, 17)  # (slice, stored row, stored column) of one bright pixel
    arr = np.full((n, 40, 40), -1000, np.int16)
    arr[blob] = 1000
    direction = np.column_stack([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    info = SourceInfo(modality="CT", series_uid=pydicom.uid.generate_uid(), study_uid=pydicom.uid.generate_uid(),
                      frame_of_reference_uid=pydicom.uid.generate_uid(), patient_id="TILT", patient_name="TILT")
    for k in range(n):  # positions step along Y as Z grows, as scanners write a tilt; one file set per slice
        one = Volume(arr[k:k + 1], (step, pix, pix), [0.0, k * step * np.tan(tilt), k * step], direction, info)
        for f in write_series(one, tmp_path / f"s{k:03d}", intercept=-1024, stored_dtype=np.uint16, bits_stored=12):
            ds = pydicom.dcmread(f)
            uid = pydicom.uid.generate_uid(entropy_srcs=[str(f)])
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
            ds.save_as(f)
    series, volume, plan = opened(tmp_path)
    assert plan.shear is not None  # resampled: array pixels are not the stored ones
    k = blob[0]
    w = np.clip(volume.array[k].astype(float) + 1000, 0, None)
    ii, jj = np.indices(w.shape)
    at = ((w * ii).sum() / w.sum(), (w * jj).sum() / w.sum())  # the blob on the resampled slice
    g = native_geometry(volume)
    rec = from_display("ruler", g, k, at, (at[0] + 4, at[1]), volume, plan, uid=pydicom.uid.generate_uid(),
                       value=2.0)
    stored = pydicom.dcmread(next((tmp_path / f"s{k:03d}").glob("*.dcm")))
    assert rec.sop_uid == stored.SOPInstanceUID
    np.testing.assert_allclose(rec.points[0], (blob[2] + 0.5, blob[1] + 0.5), atol=0.05)
    out = write_measurements_sr([rec], series, tmp_path / "tilt.sr.dcm")
    (back,) = read_measurements_sr(out)
    k2, p0, _ = to_display(back, g, volume, plan)
    assert k2 == k and np.allclose(p0, at)


def test_sources_without_type2_attributes_and_a_one_word_name(ct, tmp_path, recwarn):
    """As real archives deliver them: still conformant, and the name never reaches a warning."""
    copy = tmp_path / "archive"
    shutil.copytree(ct, copy)
    for f in copy.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.PatientName = "DOEJANE"
        for keyword in ("PatientBirthDate", "PatientSex", "StudyTime", "StudyID", "AccessionNumber",
                        "ReferringPhysicianName"):
            if keyword in ds:
                del ds[keyword]
        ds.save_as(f)
    series, volume, plan = opened(copy)
    ruler, roi = ruler_and_roi(volume, plan, native_geometry(volume), 3)
    out = write_measurements_sr([ruler, roi], series, tmp_path / "a.sr.dcm")
    assert dciodvfy_errors(out) == []
    assert not [w for w in recwarn if "DOEJANE" in str(w.message)]
    assert len(read_measurements_sr(out)) == 2
