"""Transfer syntaxes, multi-frame, photometrics and stack irregularities."""
import shutil
from dataclasses import replace

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import (ExplicitVRBigEndian, ImplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless,
                         RLELossless, generate_uid)

from viewer.core.io import load_series, scan
from viewer.core.io.dicom_write import base_dataset, save, set_pixels, write_enhanced, write_series

from conftest import AXIAL, CORONAL, OBLIQUE, SAGITTAL, ramp_volume

CT12 = dict(intercept=-1024, stored_dtype=np.uint16, bits_stored=12)


def only_volume(folder):
    result = scan(folder)
    assert len(result.series) == 1, [s.label() for s in result.series]
    return load_series(result.series[0]), result


# -- transfer syntaxes --------------------------------------------------------------
@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless, ExplicitVRBigEndian,
                                    ImplicitVRLittleEndian])
def test_written_syntaxes_decode_bit_identical(tmp_path, syntax):
    truth = ramp_volume(shape=(4, 64, 64), direction=OBLIQUE)
    write_series(truth, tmp_path, transfer_syntax=syntax, **CT12)
    vol, result = only_volume(tmp_path)
    assert result.series[0].instances[0].transfer_syntax == syntax
    assert np.array_equal(vol.array, truth.array)
    assert np.allclose(vol.direction, truth.direction)


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                  "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_expb.dcm"])
def test_third_party_files_equal_uncompressed_twin(tmp_path, name):
    """Files written by other toolkits (shipped with pydicom) decode to the same pixels."""
    reference, _ = only_volume(get_testdata_file("MR_small.dcm"))
    vol, _ = only_volume(get_testdata_file(name))
    assert np.array_equal(vol.array, reference.array)
    assert np.allclose(vol.origin, reference.origin) and np.allclose(vol.spacing, reference.spacing)


def test_lossy_jpeg_extended_decodes_like_pydicom():
    path = get_testdata_file("JPGExtended.dcm")
    vol, _ = only_volume(path)
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    assert np.array_equal(vol.array[0], expected)


def test_deflated_file_loads():
    vol, _ = only_volume(get_testdata_file("image_dfl.dcm"))
    assert np.array_equal(vol.array[0], pydicom.dcmread(get_testdata_file("image_dfl.dcm")).pixel_array)


def test_file_without_preamble_or_meta_loads(tmp_path):
    truth = ramp_volume(shape=(1, 16, 16))
    ds = pydicom.dcmread(write_series(truth, tmp_path / "src", **CT12)[0])
    ds.preamble = None
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    bare = tmp_path / "bare" / "IMG0001"
    bare.parent.mkdir()
    pydicom.dcmwrite(bare, ds, implicit_vr=True, little_endian=True)
    assert bare.read_bytes()[128:132] != b"DICM"
    vol, result = only_volume(bare.parent)
    assert not result.problems
    assert np.array_equal(vol.array, truth.array)


def test_non_image_object_listed_not_loaded():
    result = scan(get_testdata_file("ExplVR_LitEndNoMeta.dcm"))  # an RT Ion Plan without preamble
    assert [s.kind for s in result.series] == ["non-image"]
    with pytest.raises(Exception, match="ExplVR_LitEndNoMeta.dcm"):
        load_series(result.series[0])


# -- multi-frame -----------------------------------------------------------------
@pytest.mark.parametrize("direction", [AXIAL, SAGITTAL, OBLIQUE])
def test_enhanced_multiframe_sorted_by_geometry(tmp_path, direction):
    truth = ramp_volume(direction=direction)
    order = np.random.default_rng(3).permutation(truth.shape[0])
    write_enhanced(truth, tmp_path / "enhanced.dcm", frame_order=order, **CT12)
    vol, result = only_volume(tmp_path)
    assert result.series[0].instances[0].frames == truth.shape[0]
    assert np.array_equal(vol.array, truth.array)
    assert np.allclose(vol.spacing, truth.spacing, atol=1e-4)
    assert np.allclose(vol.origin, truth.origin, atol=1e-3)
    assert np.allclose(vol.direction, truth.direction, atol=1e-5)


def test_legacy_multiframe_uses_spacing_between_slices(tmp_path):
    truth = ramp_volume(shape=(5, 20, 24))
    info = replace(truth.info, modality="NM")
    ds = base_dataset(info, pydicom.uid.UID("1.2.840.10008.5.1.4.1.1.20"))
    ds.ImagePositionPatient = [str(v) for v in truth.origin]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = [str(truth.spacing[1]), str(truth.spacing[2])]
    ds.SpacingBetweenSlices = str(truth.spacing[0])
    set_pixels(ds, truth.array.astype(np.int16))
    save(ds, tmp_path / "nm.dcm")
    vol, _ = only_volume(tmp_path)
    assert np.array_equal(vol.array, truth.array)
    assert np.allclose(vol.index_to_world([4, 0, 0]), truth.index_to_world([4, 0, 0]))


# -- photometric / bit layout ---------------------------------------------------------
def test_monochrome1_keeps_values_and_flags_inversion(tmp_path):
    truth = ramp_volume(shape=(2, 16, 16), photometric="MONOCHROME1", modality="CR")
    write_series(truth, tmp_path, **CT12)
    vol, _ = only_volume(tmp_path)
    assert vol.info.photometric == "MONOCHROME1"
    assert np.array_equal(vol.array, truth.array)  # inversion is for display only


def test_high_bits_above_bits_stored_are_masked(tmp_path):
    truth = ramp_volume(shape=(2, 16, 16))
    paths = write_series(truth, tmp_path, **CT12)
    ds = pydicom.dcmread(paths[0])
    raw = np.frombuffer(ds.PixelData, dtype="<u2").copy()
    raw |= 0x8000  # an old overlay bit in the unused high bit
    ds.PixelData = raw.tobytes()
    ds.save_as(paths[0])
    vol, _ = only_volume(tmp_path)
    assert np.array_equal(vol.array, truth.array)
    assert np.array_equal(vol.array[0], pydicom.dcmread(paths[0]).pixel_array.astype(int) - 1024)


def test_tiny_16x16_series(tmp_path):
    truth = ramp_volume(shape=(3, 16, 16))
    write_series(truth, tmp_path, **CT12)
    vol, _ = only_volume(tmp_path)
    assert vol.shape == (3, 16, 16) and np.array_equal(vol.array, truth.array)


@pytest.mark.parametrize("name", ["examples_palette.dcm", "SC_rgb_rle.dcm", "examples_rgb_color.dcm",
                                  "SC_rgb_jpeg_dcmtk.dcm", "examples_ybr_color.dcm"])
def test_colour_images_load_as_luminance(name):
    vol, _ = only_volume(get_testdata_file(name))
    assert vol.array.dtype == np.float32 and vol.array.ndim == 3
    assert any("colour" in p for p in vol.problems)
    assert float(vol.array.max()) > float(vol.array.min())


def test_float_pixel_data_stays_float(tmp_path):
    truth = ramp_volume(shape=(3, 16, 16), modality="OT")
    values = (truth.array.astype(np.float32) / 7.0).astype(np.float32)
    info = replace(truth.info, series_uid=generate_uid())
    for k in range(3):
        ds = base_dataset(info, pydicom.uid.UID("1.2.840.10008.5.1.4.1.1.30"))  # Parametric Map
        ds.ImagePositionPatient = [str(v) for v in truth.index_to_world([k, 0, 0])]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = [str(truth.spacing[1]), str(truth.spacing[2])]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.NumberOfFrames = 16, 16, 32, 1
        ds.FloatPixelData = values[k].tobytes()
        save(ds, tmp_path / f"f{k}.dcm")
    vol, _ = only_volume(tmp_path)
    assert vol.array.dtype == np.float32
    assert np.array_equal(vol.array, values)
    series = [s for p in scan(tmp_path).patients for st in p.studies for s in st.series]
    assert [s.is_result for s in series] == [True]  # viewable, but a study never opens on it


# -- stack irregularities ---------------------------------------------------------------
def write_slices(root, truth, positions, **kw):
    """Each slice its own file at an explicit position, all in one series."""
    info = replace(truth.info, series_uid=generate_uid(), study_uid=generate_uid(),
                   frame_of_reference_uid=generate_uid())
    for k, pos in enumerate(positions):
        one = replace(truth, array=truth.array[k:k + 1], origin=np.asarray(pos, float), info=info)
        write_series(one, root / f"s{k:03d}", **{**CT12, **kw})


def test_missing_slices_kept_blank_with_true_positions(tmp_path):
    truth = ramp_volume(shape=(10, 20, 20))
    paths = write_series(truth, tmp_path, **CT12)
    for k in (3, 4, 7):
        paths[k].unlink()
    vol, _ = only_volume(tmp_path)
    assert vol.shape == truth.shape
    assert np.allclose(vol.spacing, truth.spacing)
    keep = [k for k in range(10) if k not in (3, 4, 7)]
    assert np.array_equal(vol.array[keep], truth.array[keep])
    assert (vol.array[[3, 4, 7]] == -1024).all()
    assert any("3 missing slice" in p for p in vol.problems), vol.problems


def test_non_uniform_spacing_reported(tmp_path):
    truth = ramp_volume(shape=(5, 16, 16))
    zs = [0.0, 2.5, 5.0, 8.2, 10.0]
    write_slices(tmp_path, truth, [(0, 0, z) for z in zs])
    vol, _ = only_volume(tmp_path)
    assert any("non-uniform slice spacing" in p for p in vol.problems), vol.problems
    assert np.isclose(vol.spacing[0], 2.5)
    assert np.array_equal(vol.array, truth.array)


def test_gantry_tilt_reported(tmp_path):
    truth = ramp_volume(shape=(6, 16, 16))
    tilt = np.radians(15)
    write_slices(tmp_path, truth, [(0, k * 3 * np.tan(tilt), k * 3.0) for k in range(6)])
    vol, _ = only_volume(tmp_path)
    assert any("gantry tilt" in p and "15.0 degrees" in p for p in vol.problems), vol.problems


def test_duplicate_positions_keep_first(tmp_path):
    truth = ramp_volume(shape=(4, 16, 16))
    write_series(truth, tmp_path / "a", **CT12)
    for p in (tmp_path / "a").iterdir():  # same series, same positions, new SOP instances
        ds = pydicom.dcmread(p)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        (tmp_path / "b").mkdir(exist_ok=True)
        ds.save_as(tmp_path / "b" / p.name)
    vol, _ = only_volume(tmp_path)
    assert vol.shape == truth.shape
    assert any("position already taken" in p for p in vol.problems)


def test_localizer_with_three_orientations_is_split(tmp_path):
    uid = generate_uid()
    for name, direction in (("ax", AXIAL), ("cor", CORONAL), ("sag", SAGITTAL)):
        v = ramp_volume(shape=(1, 32, 32), direction=direction, series_uid=uid, study_uid="1.2.3",
                        frame_of_reference_uid="1.2.3.4")
        write_series(v, tmp_path / name, **CT12)
    result = scan(tmp_path)
    assert len(result.series) == 3
    assert sorted(s.part for s in result.series) == ["axial", "coronal", "sagittal"]
    planes = sorted(tuple(np.round(load_series(s).direction[:, 0], 3)) for s in result.series)
    assert len(set(planes)) == 3


def test_mixed_sizes_and_echoes_are_split(tmp_path):
    uid = generate_uid()
    a = ramp_volume(shape=(3, 32, 32), series_uid=uid, study_uid="1.2.3")
    b = ramp_volume(shape=(3, 24, 32), series_uid=uid, study_uid="1.2.3")
    write_series(a, tmp_path / "a", **CT12)
    write_series(b, tmp_path / "b", **CT12)
    result = scan(tmp_path)
    assert sorted(s.part for s in result.series) == ["32x24", "32x32"]
    c = ramp_volume(shape=(3, 16, 16), series_uid=generate_uid(), study_uid="1.2.3", modality="MR")
    write_series(c, tmp_path / "e1", extra={"EchoNumbers": 1}, **CT12)
    write_series(c, tmp_path / "e2", extra={"EchoNumbers": 2}, **CT12)
    parts = sorted(s.part for s in scan(tmp_path).series if s.modality == "MR")
    assert parts == ["echo 1", "echo 2"]


def test_dicomdir_lists_referenced_files(tmp_path):
    folder = tmp_path / "dd"
    shutil.copytree(get_testdata_file("MR_small.dcm").rsplit("/", 1)[0] + "/dicomdirtests", folder)
    via_dicomdir = scan(folder / "DICOMDIR")
    via_folder = scan(folder)
    assert via_dicomdir.series, via_dicomdir.problems
    referenced = {str(i.path) for s in via_dicomdir.series for i in s.instances}
    assert len(referenced) == 31  # the records of pydicom's test DICOMDIR
    assert {s.key for s in via_dicomdir.series} <= {s.key for s in via_folder.series}
