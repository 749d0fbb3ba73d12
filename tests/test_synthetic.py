"""Synthetic phantoms: plausible values per tissue, exact round trip through DICOM,
determinism, and mammography tags/lesions where the exam says they are."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import inference.phantoms as phantoms
import viewer.core.synthetic as syn
from viewer.core.synthetic import (
    CT_MASKS,
    MG_MASKS,
    MR_MASKS,
    PhantomSeries,
    ct_phantom,
    mammo_image,
    mr_phantom,
    write_ct_study,
    write_demo_studies,
    write_mammo_exam,
    write_mr_study,
)

# Small grids that keep a realistic ~360 mm field of view.
CT_SHAPE, CT_SPACING = (40, 96, 96), (7.5, 3.75, 3.75)
MR_SHAPE, MR_SPACING = (40, 64, 64), (3.75, 3.6, 3.6)
MG_SIZE = (416, 320)


@pytest.fixture(scope="module")
def ct():
    return ct_phantom(CT_SHAPE, CT_SPACING, seed=0)


@pytest.fixture(scope="module")
def mr():
    return mr_phantom(MR_SHAPE, MR_SPACING, seed=0)


def read_series(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_core_module_does_not_import_qt():
    code = ("import sys, viewer.core.synthetic; "
            "sys.exit(any(m.startswith(('PySide', 'PyQt')) for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# -- CT --------------------------------------------------------------------
def test_ct_masks_and_values_are_plausible(ct):
    hu, masks = ct
    assert hu.shape == CT_SHAPE and hu.dtype == np.int16
    assert tuple(masks) == CT_MASKS
    for name, m in masks.items():
        assert m.shape == CT_SHAPE and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}, name
        assert m.any(), name
    body, lungs, liver, bone, lesions = (masks[k].astype(bool) for k in CT_MASKS)
    assert np.median(hu[lungs]) < -700
    assert 40 <= np.median(hu[liver]) <= 80
    assert np.median(hu[bone]) > 250
    outside = hu[~body]
    assert abs(np.median(outside) + 1000) <= 3
    assert 8 <= outside.std() <= 16  # noise ~12 HU
    assert hu.min() >= -1024 and hu.max() <= 3071
    assert not (lungs & liver).any()
    assert not (lesions & ~body).any()
    assert not (lesions & ~(lungs | liver)).any()  # nodules in lung, hypodense lesions in liver
    assert (lesions & lungs).any() and (lesions & liver).any()
    assert 25 <= np.median(hu[lesions & lungs]) <= 40
    assert 5 <= np.median(hu[lesions & liver]) <= 30


def test_ct_anatomy_sizes_and_sides(ct):
    hu, masks = ct
    nz, ny, nx = CT_SHAPE
    sz, sy, sx = CT_SPACING
    body = masks["body"].astype(bool)
    width = body.any(axis=(0, 1)).sum() * sx
    depth = body.any(axis=(0, 2)).sum() * sy
    assert 300 <= width <= 360 and 200 <= depth <= 260
    origin = phantoms._centred_origin(CT_SHAPE, CT_SPACING)
    z, y, x = (np.nonzero(body)[i].mean() for i in range(3))
    assert abs(origin[0] + x * sx) < 10 and abs(origin[1] + y * sy) < 25
    assert origin[2] == pytest.approx(-(nz - 1) * sz)
    # Liver on the patient's right (-x in LPS = low column index), lungs superior to it.
    liver_z, _, liver_x = (np.nonzero(masks["liver"])[i].mean() for i in range(3))
    lung_z = np.nonzero(masks["lungs"])[0].mean()
    assert liver_x < nx / 2
    assert lung_z > nz / 2 > liver_z - nz / 10 and lung_z > liver_z


def test_ct_lesions_are_spheres_in_millimetres():
    spacing = (4.0, 1.5, 1.5)  # strongly anisotropic voxels
    hu, masks = ct_phantom((75, 240, 240), spacing, seed=3)
    img = sitk.GetImageFromArray(masks["lesions"])
    img.SetSpacing(spacing[::-1])
    labels = sitk.ConnectedComponent(img)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(labels)
    assert 3 <= stats.GetNumberOfLabels() <= 5
    for lab in stats.GetLabels():
        radius = stats.GetEquivalentSphericalRadius(lab)
        assert 3.5 <= radius <= 16.0
        _, _, _, ex, ey, ez = stats.GetBoundingBox(lab)  # voxel counts along x, y, z
        mm = np.array([ex * spacing[2], ey * spacing[1], ez * spacing[0]])
        # Extents agree in mm (up to one slice), so radii were not taken in voxels.
        assert np.all(np.abs(mm - 2 * radius) <= spacing[0] + 1.0), (lab, mm, radius)


@pytest.mark.parametrize("file_order", ["index", "shuffled"])
def test_ct_series_round_trips_exactly(tmp_path, file_order):
    ps = write_ct_study(tmp_path, shape=(24, 64, 64), spacing=(12.0, 5.6, 5.6), seed=1, file_order=file_order)
    assert isinstance(ps, PhantomSeries) and len(ps.files) == 24
    img = read_series(tmp_path)
    arr = sitk.GetArrayFromImage(img).astype(np.int32)
    assert np.array_equal(arr, ps.volume.array.astype(np.int32))
    assert np.allclose(img.GetSpacing(), ps.volume.spacing[::-1])
    assert np.allclose(img.GetOrigin(), ps.volume.origin, atol=1e-4)
    assert np.allclose(img.GetDirection(), ps.volume.itk_direction)
    ds = pydicom.dcmread(ps.files[0])
    assert ds.Modality == "CT" and ds.BitsStored == 12 and ds.PixelRepresentation == 0
    assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (40, 400)
    assert ds.PatientID == "LBX-CT-001" and ds.StudyDate == "20260115"
    assert ps.volume.info.files == tuple(str(p) for p in ps.files)


def test_ct_is_deterministic_by_seed():
    a, ma = ct_phantom((16, 48, 48), (15.0, 7.5, 7.5), seed=5)
    b, mb = ct_phantom((16, 48, 48), (15.0, 7.5, 7.5), seed=5)
    c, _ = ct_phantom((16, 48, 48), (15.0, 7.5, 7.5), seed=6)
    assert np.array_equal(a, b) and all(np.array_equal(ma[k], mb[k]) for k in CT_MASKS)
    assert not np.array_equal(a, c)


# -- MR --------------------------------------------------------------------
def test_mr_masks_nest_and_values_are_t1_like(mr):
    values, masks = mr
    assert values.dtype == np.uint16 and values.max() <= 1500
    assert tuple(masks) == MR_MASKS
    head, brain, vent, lesion = (masks[k].astype(bool) for k in MR_MASKS)
    assert vent.any() and lesion.any()
    assert not (brain & ~head).any()
    assert not (vent & ~brain).any()
    assert not (lesion & ~brain).any()
    assert not (lesion & vent).any()
    assert np.median(values[~head]) < 50  # background: noise only
    assert np.median(values[brain]) > np.median(values[vent]) + 250  # CSF dark on T1


def test_mr_study_round_trips_and_is_deterministic(tmp_path, mr):
    ps = write_mr_study(tmp_path, shape=MR_SHAPE, spacing=MR_SPACING, seed=0)
    assert np.array_equal(ps.volume.array, mr[0])
    img = read_series(tmp_path)
    assert np.array_equal(sitk.GetArrayFromImage(img), ps.volume.array)
    assert np.allclose(img.GetSpacing(), ps.volume.spacing[::-1])
    ds = pydicom.dcmread(ps.files[0])
    assert ds.Modality == "MR" and ds.PatientID == "LBX-MR-001" and ds.BitsStored == 12
    c, w = ps.volume.info.window
    assert 300 < c < 900 and 400 < w < 1600
    other, _ = mr_phantom(MR_SHAPE, MR_SPACING, seed=1)
    assert not np.array_equal(other, mr[0])


# -- Mammography -------------------------------------------------------------
@pytest.mark.parametrize("lesion_side", ["L", "R"])
def test_mammo_exam_tags_and_lesions(tmp_path, lesion_side):
    exam = write_mammo_exam(tmp_path, size=MG_SIZE, seed=0, lesion_side=lesion_side)
    assert sorted(exam) == ["LCC", "LMLO", "RCC", "RMLO"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LCC.dcm", "LMLO.dcm", "RCC.dcm", "RMLO.dcm"]
    expected = {"LCC": ["A", "R"], "RCC": ["A", "L"], "LMLO": ["A", "F"], "RMLO": ["A", "F"]}
    studies, series, numbers = set(), set(), set()
    for name, ps in exam.items():
        ds = pydicom.dcmread(tmp_path / f"{name}.dcm")
        assert ds.Modality == "MG" and ds.BitsStored == 12 and ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.ViewPosition == name[1:] and ds.ImageLaterality == name[0]
        assert list(ds.PatientOrientation) == expected[name]
        assert ds.BodyPartExamined == "BREAST" and ds.PatientID == "LBX-MG-001"
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.56, 0.56])
        pixels = ds.pixel_array
        assert pixels.shape == MG_SIZE and pixels.max() <= 4095
        assert np.array_equal(pixels, ps.volume.array[0])
        assert ps.volume.shape == (1, *MG_SIZE) and ps.volume.spacing.tolist() == pytest.approx([1.0, 0.56, 0.56])
        studies.add(ds.StudyInstanceUID)
        series.add(ds.SeriesInstanceUID)
        numbers.add(int(ds.SeriesNumber))
        assert tuple(ps.masks) == MG_MASKS
        breast = ps.masks["breast"][0].astype(bool)
        assert breast[:, 0].sum() > 0.3 * MG_SIZE[0] and not breast[:, -1].any()
        assert np.median(pixels[~breast]) < 100 and np.median(pixels[breast]) > 800
        has_lesion = name[0] == lesion_side
        assert ps.masks["mass"].any() == has_lesion
        assert ps.masks["calcification"].any() == has_lesion
        if has_lesion:
            assert not (ps.masks["mass"] & ~ps.masks["breast"]).any()
            assert pixels[ps.masks["calcification"][0] > 0].max() > np.percentile(pixels[breast], 99)
    assert len(studies) == 1 and len(series) == 4 and numbers == {1, 2, 3, 4}


def test_mammo_lesion_is_consistent_between_views():
    size = (832, 640)
    spacing = syn.mammo_spacing(size)
    cc = mammo_image("L", "CC", size, seed=4, mass=True, calcifications=True)[1]
    mlo = mammo_image("L", "MLO", size, seed=4, mass=True, calcifications=True)[1]
    for key in ("mass", "calcification"):
        depth_cc = np.nonzero(cc[key])[1].mean() * spacing[1]
        depth_mlo = np.nonzero(mlo[key])[1].mean() * spacing[1]
        assert abs(depth_cc - depth_mlo) < 15.0, key  # same distance from the chest wall
    ys, xs = np.nonzero(cc["mass"])
    diameter = max(np.ptp(ys) * spacing[0], np.ptp(xs) * spacing[1])
    assert 6.0 <= diameter <= 20.0
    n_dots = sitk.ConnectedComponent(sitk.GetImageFromArray(cc["calcification"]))
    assert 3 <= int(sitk.GetArrayFromImage(n_dots).max()) <= 15  # close dots may merge


def test_mammo_pectoral_only_in_mlo_and_determinism():
    cc, _ = mammo_image("R", "CC", MG_SIZE, seed=7)
    mlo, m = mammo_image("R", "MLO", MG_SIZE, seed=7)
    assert np.array_equal(mlo, mammo_image("R", "MLO", MG_SIZE, seed=7)[0])
    assert not np.array_equal(mlo, mammo_image("R", "MLO", MG_SIZE, seed=8)[0])
    # The MLO's top-left corner is pectoralis (dense); the CC's is empty or breast edge.
    assert m["breast"][0, 0] and np.median(mlo[:10, :10]) > 1500
    assert np.median(cc[:10, :10]) < 100
    with pytest.raises(ValueError):
        mammo_image("X", "CC")


@pytest.mark.slow
def test_full_size_mammogram_is_fast():
    t = time.perf_counter()
    img, masks = mammo_image("L", "MLO", (3328, 2560), seed=0, mass=True, calcifications=True)
    assert time.perf_counter() - t < 10.0
    assert img.shape == (3328, 2560) and img.dtype == np.uint16 and img.max() <= 4095
    assert masks["calcification"].any()


# -- Demo --------------------------------------------------------------------
def test_write_demo_studies(tmp_path):
    demo = write_demo_studies(tmp_path, seed=0, scale=0.25)
    assert set(demo) == {"CT", "MR", "MG"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CT", "MG", "MR"]
    assert isinstance(demo["CT"], PhantomSeries) and isinstance(demo["MR"], PhantomSeries)
    assert set(demo["MG"]) == {"RCC", "LCC", "RMLO", "LMLO"}
    assert len(list((tmp_path / "CT").glob("*.dcm"))) == demo["CT"].volume.shape[0]
    assert len(list((tmp_path / "MR").glob("*.dcm"))) == demo["MR"].volume.shape[0]
    assert len(list((tmp_path / "MG").glob("*.dcm"))) == 4
    patients = {pydicom.dcmread(next((tmp_path / m).glob("*.dcm"))).PatientID for m in ("CT", "MR", "MG")}
    assert patients == {"LBX-CT-001", "LBX-MR-001", "LBX-MG-001"}
    # The field of view is kept when the matrix shrinks.
    assert demo["CT"].volume.shape[2] * demo["CT"].volume.spacing[2] == pytest.approx(256 * 1.4)
    # UIDs come from the seed: writing again gives the same study identity.
    again = write_demo_studies(tmp_path / "again", seed=0, scale=0.25)
    assert again["CT"].volume.info.study_uid == demo["CT"].volume.info.study_uid
    assert np.array_equal(again["CT"].volume.array, demo["CT"].volume.array)
