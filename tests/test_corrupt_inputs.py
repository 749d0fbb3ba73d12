"""Bad input: every broken file is named with its problem; the rest of the study loads."""
import os

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from viewer.core.io import load_series, scan
from viewer.core.io.dicom_write import write_series

from conftest import ramp_volume

CT12 = dict(intercept=-1024, stored_dtype=np.uint16, bits_stored=12)


@pytest.fixture
def messy_study(tmp_path):
    """One good CT series with damaged members, plus junk of every kind beside it."""
    truth = ramp_volume(shape=(8, 32, 32), series_description="good")
    paths = write_series(truth, tmp_path / "ct", **CT12)
    other = ramp_volume(shape=(3, 16, 16), series_description="second", study_uid=truth.info.study_uid or None)
    write_series(other, tmp_path / "ct2", **CT12)
    bad = {}
    # Pixel data cut short: header fine, pixels missing at the end.
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:-300])
    bad["pixels_truncated"] = paths[2]
    # Pixel data element removed.
    ds = pydicom.dcmread(paths[5])
    del ds.PixelData
    ds.save_as(paths[5])
    bad["no_pixels"] = paths[5]
    # Position removed: the slice cannot be placed.
    ds = pydicom.dcmread(paths[6])
    del ds.ImagePositionPatient
    ds.save_as(paths[6])
    bad["no_ipp"] = paths[6]
    # Header cut in the middle.
    hdr = tmp_path / "ct" / "cut_header.dcm"
    hdr.write_bytes(paths[0].read_bytes()[:300])
    bad["header_truncated"] = hdr
    (tmp_path / "empty.dcm").write_bytes(b"")
    bad["zero_bytes"] = tmp_path / "empty.dcm"
    (tmp_path / "notes.dcm").write_text("these are not the images you are looking for\n" * 20)
    bad["text_as_dcm"] = tmp_path / "notes.dcm"
    (tmp_path / "README.txt").write_text("study exported by hand")
    (tmp_path / "blob.bin").write_bytes(os.urandom(4096))
    (tmp_path / "NOEXT").write_bytes(os.urandom(2048))
    return tmp_path, truth, bad


def problems_by_file(result):
    return {p.path: p.reason for p in result.problems}


def test_scan_names_every_bad_file(messy_study):
    root, truth, bad = messy_study
    result = scan(root)
    reasons = problems_by_file(result)
    assert "empty file" in reasons[str(bad["zero_bytes"])]
    assert "not a DICOM file" in reasons[str(bad["text_as_dcm"])]
    assert "ImagePositionPatient" in reasons[str(bad["no_ipp"])]
    assert str(bad["header_truncated"]) in reasons
    # README.txt, blob.bin and the random extension-less file are quietly ignored, not errors.
    assert result.ignored == 3
    assert not any(p.endswith(("README.txt", "blob.bin", "NOEXT")) for p in reasons)
    assert sorted(s.info.series_description for s in result.series) == ["good", "second"]


def test_good_slices_load_and_bad_ones_are_reported(messy_study):
    root, truth, bad = messy_study
    result = scan(root)
    good = next(s for s in result.series if s.info.series_description == "good")
    vol = load_series(good)
    assert vol.shape == truth.shape  # slices that failed keep their place (blank)
    ok = [0, 1, 3, 4, 7]
    assert np.array_equal(vol.array[ok], truth.array[ok])
    text = "\n".join(vol.problems)
    assert f"{bad['pixels_truncated']}: pixel data truncated" in text
    assert f"{bad['no_pixels']}: no pixel data" in text
    assert "missing slice" in text  # the unplaceable slice 6 leaves a gap
    assert (vol.array[[2, 5, 6]] == -1024).all()


def test_pydicom_truncated_sample_is_reported():
    result = scan(get_testdata_file("MR_truncated.dcm"))
    if result.series:
        with pytest.raises(Exception, match="MR_truncated.dcm"):
            load_series(result.series[0])
    else:
        assert "MR_truncated.dcm" in result.problems[0].path


def test_series_where_every_file_fails_raises_naming_a_file(tmp_path):
    truth = ramp_volume(shape=(2, 16, 16))
    for p in write_series(truth, tmp_path, **CT12):
        p.write_bytes(p.read_bytes()[:-100])
    series = scan(tmp_path).series[0]
    with pytest.raises(Exception, match=r"IM0000\d\.dcm.*truncated"):
        load_series(series)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        scan(tmp_path / "nope")
