"""The cursor probe (viewer.core.probe) against third-party geometry: SimpleITK on pydicom's test files
and on oblique / flipped volumes we write, nibabel's own affine on nibabel's test images."""
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from viewer.core.io import open_volume
from viewer.core.io.itk import write_volume
from viewer.core.mpr import PLANES, native_geometry, plane_geometry, world_to_pixel
from viewer.core.probe import display_to_index, format_position, probe, readout_lines

from conftest import CORONAL, OBLIQUE, SAGITTAL, ramp_volume

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def _geometries(volume):
    return [native_geometry(volume)] + [plane_geometry(volume, p) for p in PLANES]


def _display_points(g, rng, n=6):
    """Some pixel centres and some fractional points inside a plane (k, row, col)."""
    pts = [(0, 0, 0), (g.n_slices - 1, g.n_rows - 1, g.n_cols - 1)]
    for _ in range(n):
        pts.append((int(rng.integers(g.n_slices)), float(rng.uniform(-0.4, g.n_rows - 0.6)),
                    float(rng.uniform(-0.4, g.n_cols - 0.6))))
    return pts


@pytest.mark.parametrize("name, unit", [("CT_small.dcm", "HU"), ("MR_small.dcm", "")])
def test_pydicom_files_match_simpleitk(name, unit):
    path = get_testdata_file(name)
    volume = open_volume(path)
    ref = sitk.ReadImage(path)  # GDCM applies RescaleSlope/Intercept: HU for CT
    ref_array = sitk.GetArrayFromImage(ref)
    g = native_geometry(volume)
    for row, col in [(0, 0), (3, 60), (g.n_rows - 1, g.n_cols - 1), (40, 17)]:
        p = probe(volume, g, 0, row, col)
        assert p.index_zyx == (0, row, col)
        assert np.allclose(p.world_lps, ref.TransformIndexToPhysicalPoint((col, row, 0)), atol=1e-4)
        assert p.value == pytest.approx(float(ref_array[0, row, col]))
        assert p.unit == unit and p.oriented
    if unit == "HU":  # the stored pixels are not HU: the probe reads modality values
        import pydicom
        ds = pydicom.dcmread(path)
        assert float(ds.RescaleIntercept) != 0 or float(ds.RescaleSlope) != 1
        assert probe(volume, g, 0, 40, 17).value == pytest.approx(
            float(ds.pixel_array[40, 17]) * float(ds.RescaleSlope) + float(ds.RescaleIntercept))


@pytest.mark.parametrize("direction", [OBLIQUE, CORONAL, SAGITTAL, np.diag([-1.0, 1.0, -1.0])],
                         ids=["oblique", "coronal", "sagittal", "flipped"])
def test_every_plane_of_oblique_and_flipped_volumes_matches_simpleitk(tmp_path, direction):
    volume = ramp_volume(shape=(7, 9, 11), direction=direction)
    path = write_volume(volume, tmp_path / "v.nii.gz")
    ref = sitk.ReadImage(str(path))
    ref_array = sitk.GetArrayFromImage(ref)
    rng = np.random.default_rng(1)
    for g in _geometries(volume):
        for k, row, col in _display_points(g, rng):
            p = probe(volume, g, k, row, col)
            z, y, x = display_to_index(g, k, row, col)
            want = ref.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))
            assert np.allclose(p.world_lps, want, atol=1e-3), (g.plane, k, row, col)
            iz, iy, ix = p.index_zyx
            assert (iz, iy, ix) == tuple(int(v) for v in np.rint([z, y, x]))
            assert p.value == ref_array[iz, iy, ix]
            # and back: the world point lands on the same displayed pixel (what the crosshair uses)
            k2, r2, c2 = world_to_pixel(volume, g, p.world_lps)
            assert (k2, r2, c2) == pytest.approx((k, row, col), abs=1e-6)


@pytest.mark.parametrize("name", ["anatomical.nii", "reoriented_anat_moved.nii", "resampled_anat_moved.nii"])
def test_nibabel_test_images_match_nibabels_affine(name):
    from nibabel.testing import data_path

    path = data_path / name
    volume = open_volume(path)
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    rng = np.random.default_rng(2)
    for g in _geometries(volume):
        for k, row, col in _display_points(g, rng, n=4):
            p = probe(volume, g, k, row, col)
            z, y, x = display_to_index(g, k, row, col)
            ras = img.affine @ np.array([x, y, z, 1.0])  # nibabel indexes (i, j, k) = (x, y, z), RAS mm
            assert np.allclose(p.world_lps, LPS_FROM_RAS @ ras[:3], atol=1e-3), (name, g.plane)
            iz, iy, ix = p.index_zyx
            want = float(data[ix, iy, iz])
            if np.isfinite(want):  # the loader keeps NaN voxels out (resampled_anat_moved has some)
                assert p.value == pytest.approx(want)


def test_outside_the_image_is_blank_and_edges_are_inside():
    volume = ramp_volume(shape=(3, 4, 5))
    g = native_geometry(volume)
    for row, col in [(-0.51, 0), (0, -0.51), (3.5, 0), (0, 4.5), (100, 100)]:
        assert probe(volume, g, 1, row, col) is None
        assert readout_lines(probe(volume, g, 1, row, col)) == []
    assert probe(volume, g, 1, -0.5, -0.5).index_zyx == (1, 0, 0)
    assert probe(volume, g, 1, 3.49, 4.49).index_zyx == (1, 3, 4)


def test_readout_text_names_value_overlay_position_and_voxel():
    volume = ramp_volume(shape=(3, 4, 5), spacing=(2.0, 1.0, 1.0), origin=(-10.0, 5.0, -2.0))
    heat = np.linspace(0, 1, volume.array.size, dtype=np.float32).reshape(volume.shape)
    g = native_geometry(volume)
    p = probe(volume, g, 2, 1, 3, overlays={"ai": heat})
    assert p.overlays["ai"] == pytest.approx(float(heat[2, 1, 3]))
    first, position, voxel = readout_lines(p, {"ai": "AI"})
    assert first == f"{int(volume.array[2, 1, 3])} HU   AI {heat[2, 1, 3]:.2f}"
    # LPS (-7, 6, 2): x < 0 is patient Right, y > 0 Posterior, z > 0 Superior
    assert np.allclose(p.world_lps, [-7.0, 6.0, 2.0])
    assert position == "R 7.0  P 6.0  S 2.0 mm"
    assert voxel == "voxel (3, 1, 2)"
    assert format_position([1.25, -3.0, -0.04]) == "L 1.2  A 3.0  I 0.0"


def test_a_projection_image_reads_its_own_millimetres():
    """A mammogram has PatientOrientation letters but no position in the patient: no L/P/S text."""
    volume = ramp_volume(shape=(1, 20, 30), spacing=(1.0, 0.1, 0.07), modality="MG",
                         patient_orientation=("A", "R"))
    assert not volume.oriented
    p = probe(volume, native_geometry(volume), 0, 10, 20)
    assert not p.oriented and p.image_mm == pytest.approx((1.4, 1.0))
    assert readout_lines(p)[1] == "x 1.4  y 1.0 mm (image)"
