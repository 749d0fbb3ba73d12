"""NIfTI / NRRD / MHA into the same LPS Volume, checked against nibabel's RAS affines."""
import nibabel as nib
import numpy as np
import pytest

from viewer.core.io import load_series, scan
from viewer.core.io.itk import read_volume, write_volume

from conftest import OBLIQUE, SAGITTAL, rotation, ramp_volume

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def ras_affine(rot, spacing_xyz, origin_ras):
    a = np.eye(4)
    a[:3, :3] = rot * np.asarray(spacing_xyz)[np.newaxis, :]
    a[:3, 3] = origin_ras
    return a


AFFINES = {
    "ras_plain": ras_affine(np.eye(3), (0.8, 0.6, 3.0), (10, -20, 30)),
    "las_flipped_x": ras_affine(np.diag([-1.0, 1, 1]), (0.8, 0.6, 3.0), (10, -20, 30)),
    "lps_flipped_xy": ras_affine(np.diag([-1.0, -1, 1]), (1.0, 1.0, 2.0), (0, 0, 0)),
    "oblique": ras_affine(rotation(10, 25, -40), (0.9, 1.1, 2.5), (5, 6, 7)),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_nifti_from_nibabel_has_lps_geometry(tmp_path, name):
    affine = AFFINES[name]
    data = np.random.default_rng(0).integers(-1000, 1000, (7, 9, 5)).astype(np.int16)  # (i, j, k)
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    vol = read_volume(path)
    assert np.array_equal(vol.array, data.transpose(2, 1, 0))  # (k, j, i) = (z, y, x)
    for ijk in ([0, 0, 0], [6, 8, 4], [3, 1, 2]):
        ras = (affine @ np.append(ijk, 1))[:3]
        assert np.allclose(vol.index_to_world(ijk[::-1]), LPS_FROM_RAS @ ras, atol=1e-4)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("direction", [SAGITTAL, OBLIQUE])
def test_round_trip_keeps_voxels_and_geometry(tmp_path, suffix, direction):
    truth = ramp_volume(direction=direction)
    path = write_volume(truth, tmp_path / f"v{suffix}")
    back = read_volume(path)
    assert np.array_equal(back.array, truth.array)
    assert back.same_grid(truth)
    assert not list(tmp_path.glob(".*partial*"))  # atomic write leaves no temp file


def test_written_nifti_is_ras_for_nibabel(tmp_path):
    truth = ramp_volume(direction=OBLIQUE)
    path = write_volume(truth, tmp_path / "v.nii.gz")
    img = nib.load(path)
    ijk = np.array([3, 5, 7])  # nibabel (i, j, k) = our (x, y, z)
    assert np.allclose(LPS_FROM_RAS @ (img.affine @ np.append(ijk, 1))[:3], truth.index_to_world(ijk[::-1]),
                       atol=1e-3)


def test_scan_lists_image_files_and_loads_them(tmp_path):
    write_volume(ramp_volume(shape=(4, 8, 8)), tmp_path / "a.nrrd")
    write_volume(ramp_volume(shape=(3, 8, 8)), tmp_path / "b.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b garbage")
    result = scan(tmp_path)
    assert sorted(s.info.series_description for s in result.series) == ["a.nrrd", "b.nii.gz"]
    assert [p.path for p in result.problems] == [str(tmp_path / "broken.nii.gz")]
    assert load_series(next(s for s in result.series if s.info.series_description == "a.nrrd")).shape == (4, 8, 8)


def test_vector_images_are_refused_clearly(tmp_path):
    path = tmp_path / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), path)
    result = scan(tmp_path)
    assert not result.series and "supported" in result.problems[0].reason
