"""Our DICOM loader against SimpleITK/GDCM on the same files: arrays and geometry identical."""
import numpy as np
import pytest
import SimpleITK as sitk

from viewer.core.io import load_series, scan
from viewer.core.io.dicom_write import write_series

from conftest import AXIAL, CORONAL, OBLIQUE, SAGITTAL, ramp_volume


def sitk_read(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def load_only_series(folder):
    result = scan(folder)
    assert not result.problems, result.problems
    assert len(result.series) == 1
    return load_series(result.series[0])


def assert_same_as_sitk(vol, image):
    assert np.array_equal(vol.array.astype(np.float64), sitk.GetArrayFromImage(image).astype(np.float64))
    assert np.allclose(vol.itk_spacing, image.GetSpacing(), atol=1e-4)
    assert np.allclose(vol.origin, image.GetOrigin(), atol=1e-3)
    assert np.allclose(vol.itk_direction, image.GetDirection(), atol=1e-4)


@pytest.mark.parametrize("name,direction", [("axial", AXIAL), ("coronal", CORONAL),
                                            ("sagittal", SAGITTAL), ("oblique", OBLIQUE)])
@pytest.mark.parametrize("order", ["index", "shuffled"])
def test_matches_simpleitk(tmp_path, name, direction, order):
    truth = ramp_volume(direction=direction)
    write_series(truth, tmp_path, intercept=-1024, stored_dtype=np.uint16, bits_stored=12, file_order=order, seed=7)
    vol = load_only_series(tmp_path)
    assert_same_as_sitk(vol, sitk_read(tmp_path))
    # ...and both equal the ground truth that was written.
    assert np.array_equal(vol.array, truth.array)
    assert np.allclose(vol.spacing, truth.spacing, atol=1e-4)
    assert np.allclose(vol.origin, truth.origin, atol=1e-3)
    assert np.allclose(vol.direction, truth.direction, atol=1e-5)
    assert vol.array.dtype == np.int16  # HU fit in int16 after rescale
    assert vol.problems == []


def test_slices_written_in_descending_position(tmp_path):
    """Acquired head-to-feet: positions decrease with instance number; sort must still be geometric."""
    truth = ramp_volume()
    flipped_dir = truth.direction.copy()
    flipped_dir[:, 0] *= -1  # slice axis points to feet: left-handed as written
    written = ramp_volume(direction=flipped_dir, origin=truth.index_to_world([truth.shape[0] - 1, 0, 0]))
    write_series(written, tmp_path, intercept=-1024, stored_dtype=np.uint16, bits_stored=12)
    vol = load_only_series(tmp_path)
    assert_same_as_sitk(vol, sitk_read(tmp_path))
    # Loader returns the right-handed stack: the same voxels, slice order reversed.
    assert np.array_equal(vol.array, written.array[::-1])
    assert np.allclose(vol.direction, truth.direction)
    assert np.allclose(vol.index_to_world([0, 5, 7]), written.index_to_world([written.shape[0] - 1, 5, 7]))


def test_anisotropic_pixel_spacing_order(tmp_path):
    """PixelSpacing is (row, column): row spacing belongs to the y axis."""
    truth = ramp_volume(spacing=(4.0, 0.5, 1.25), shape=(5, 30, 20))
    write_series(truth, tmp_path, intercept=-1024, stored_dtype=np.uint16, bits_stored=12)
    vol = load_only_series(tmp_path)
    assert np.allclose(vol.spacing, [4.0, 0.5, 1.25])
    assert vol.shape == (5, 30, 20)
    assert_same_as_sitk(vol, sitk_read(tmp_path))


def test_non_integer_rescale_gives_float(tmp_path):
    truth = ramp_volume(modality="PT")
    truth.array = (truth.array.astype(np.float32) + 1000) * 0.25
    write_series(truth, tmp_path, slope=0.25, stored_dtype=np.uint16)
    vol = load_only_series(tmp_path)
    assert vol.array.dtype == np.float32
    assert np.allclose(vol.array, truth.array)
    assert np.allclose(vol.array, sitk.GetArrayFromImage(sitk_read(tmp_path)))


def test_open_volume_picks_the_series_asked_or_the_largest(tmp_path):
    from viewer.core.io import open_volume
    from viewer.core.io.itk import write_volume

    big, small = ramp_volume(shape=(9, 16, 16)), ramp_volume(shape=(3, 16, 16), seed=1)
    write_series(big, tmp_path / "big", intercept=-1024, stored_dtype=np.uint16, bits_stored=12)
    write_series(small, tmp_path / "small", intercept=-1024, stored_dtype=np.uint16, bits_stored=12)
    assert open_volume(tmp_path).shape == (9, 16, 16)
    uid = scan(tmp_path / "small").series[0].uid
    assert np.array_equal(open_volume(tmp_path, series_uid=uid).array, small.array)
    nifti = write_volume(big, tmp_path / "v.nii.gz")
    assert open_volume(nifti).same_grid(big)
    with pytest.raises(Exception, match="no images found"):
        open_volume(tmp_path / "big" / "..", series_uid="1.2.3.nope")
