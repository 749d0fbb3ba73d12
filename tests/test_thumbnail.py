"""Series previews for the browser (core, no Qt): right slice, true aspect, radiology display."""
from __future__ import annotations

import numpy as np
import pydicom

from viewer.core.io import scan
from viewer.core.io.dicom_write import write_projection, write_series
from viewer.core.thumbnail import fit_size, series_thumbnail
from viewer.core.volume import SourceInfo, Volume


def _only_series(folder):
    result = scan(folder)
    (series,) = [s for s in result.series if s.kind == "dicom"]
    return series


def test_thumbnail_is_the_middle_slice_with_physical_aspect(tmp_path):
    nz, ny, nx = 9, 40, 80
    arr = np.zeros((nz, ny, nx), np.int16)
    arr[nz // 2, :, : nx // 2] = 1000  # only the middle slice has a bright left half
    arr[nz // 2, :, nx // 2:] = -1000
    info = SourceInfo(modality="CT", series_uid="1.2.3.4.5", series_description="thumb")
    write_series(Volume(arr, spacing=(3.0, 2.0, 0.5), info=info), tmp_path, intercept=-1024,
                 stored_dtype=np.uint16)
    thumb = series_thumbnail(_only_series(tmp_path), size=64)
    # 40 rows x 2 mm = 80 mm tall, 80 cols x 0.5 mm = 40 mm wide -> twice as tall as wide
    assert thumb.shape == (64, 32) and thumb.dtype == np.uint8
    assert thumb[:, :14].mean() > 200 and thumb[:, 18:].mean() < 50


def test_mammo_thumbnail_hangs_like_the_viewer(tmp_path):
    img = np.zeros((60, 40), np.uint16)
    img[:, :10] = 3000  # dense tissue at the left edge, as stored
    info = SourceInfo(modality="MG", series_uid="1.2.3.9", laterality="R", view_position="CC",
                      patient_orientation=("A", "R"))  # rows run toward anterior: chest wall on the left
    write_projection(img, tmp_path / "rcc.dcm", pixel_spacing=(0.1, 0.1), info=info)
    thumb = series_thumbnail(_only_series(tmp_path), size=30)
    assert thumb.shape == (30, 20)
    # An RCC hangs with its chest wall on the viewer's right (mammo.display_flips)
    assert thumb[:, -4:].mean() > 200 and thumb[:, :10].mean() < 50


def test_monochrome1_thumbnail_is_inverted(tmp_path):
    img = np.zeros((20, 20), np.uint16)
    img[:, :10] = 3000  # high values are DARK in MONOCHROME1
    info = SourceInfo(modality="CR", series_uid="1.2.3.10")
    path = write_projection(img, tmp_path / "cr.dcm", pixel_spacing=(0.2, 0.2), info=info)
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(path)
    thumb = series_thumbnail(_only_series(tmp_path), size=20)
    assert thumb[:, :8].mean() < 50 and thumb[:, 12:].mean() > 200


def test_fit_size_keeps_the_long_side():
    assert fit_size((100.0, 50.0), 64) == (64, 32)
    assert fit_size((10.0, 300.0), 48) == (2, 48)
