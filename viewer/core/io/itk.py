"""NIfTI / NRRD / MetaImage through SimpleITK, into the same LPS Volume.

ITK already converts NIfTI's RAS world to LPS on read and back on write, so a
Volume round-trips through any of these formats with its patient geometry.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import replacing
from ..volume import SourceInfo, Volume

if TYPE_CHECKING:
    import SimpleITK as sitk

SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def _sitk():
    """SimpleITK, imported when an image file is first read or written (not by every DICOM-only run)."""
    import SimpleITK

    return SimpleITK


def is_image_file(path) -> bool:
    name = Path(path).name.lower()
    return name.endswith(SUFFIXES)


def _check_dims(dim: int, components: int, path) -> None:
    if components != 1:
        raise ValueError(f"{components}-component (vector/colour) images are not supported")
    if dim not in (2, 3):
        raise ValueError(f"{dim}D image; only 2D and 3D images are supported")


def read_header(path) -> dict:
    """Size and geometry without reading voxels (fast, for scans and `info`)."""
    reader = _sitk().ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    dim = reader.GetDimension()
    _check_dims(dim, reader.GetNumberOfComponents(), path)
    geo = _geometry(dim, reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    modality = reader.GetMetaData("modality") if reader.HasMetaDataKey("modality") else ""
    return {**geo, "modality": modality}


def _geometry(dim, size, spacing, origin, direction) -> dict:
    """ITK (x, y[, z]) geometry -> array-order shape/spacing/origin/direction (3D)."""
    if dim == 2:
        size = (*size, 1)
        spacing = (*spacing, 1.0)
        origin = (*origin, 0.0)
        d2 = np.asarray(direction, dtype=float).reshape(2, 2)
        d3 = np.eye(3)
        d3[:2, :2] = d2
        direction = d3.ravel()
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    return {
        "shape": tuple(int(s) for s in size[::-1]),
        "spacing": np.asarray(spacing, dtype=float)[::-1].copy(),
        "origin": np.asarray(origin, dtype=float),
        "direction": d[:, ::-1].copy(),
    }


def from_sitk(image: sitk.Image, info: SourceInfo | None = None) -> Volume:
    _check_dims(image.GetDimension(), image.GetNumberOfComponentsPerPixel(), "")
    geo = _geometry(image.GetDimension(), image.GetSize(), image.GetSpacing(), image.GetOrigin(),
                    image.GetDirection())
    array = _sitk().GetArrayFromImage(image)
    if array.ndim == 2:
        array = array[np.newaxis]
    return Volume(array, geo["spacing"], geo["origin"], geo["direction"], info or SourceInfo())


def to_sitk(volume: Volume) -> sitk.Image:
    image = _sitk().GetImageFromArray(np.ascontiguousarray(volume.array))
    image.SetSpacing(volume.itk_spacing)
    image.SetOrigin(tuple(float(v) for v in volume.origin))
    image.SetDirection(volume.itk_direction)
    return image


def read_volume(path) -> Volume:
    path = Path(path)
    image = _sitk().ReadImage(str(path))
    info = SourceInfo(series_uid=f"file:{path.resolve()}", series_description=path.name, files=(str(path),))
    return from_sitk(image, info)


def write_volume(volume: Volume, path, compress: bool = True) -> Path:
    """Write with geometry (ITK handles NIfTI's RAS); atomic: a crash leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.lower().endswith((".mhd", ".nhdr")):  # header names its data file: no rename trick
        _sitk().WriteImage(to_sitk(volume), str(path), useCompression=compress)
        return path
    with replacing(path) as tmp:
        _sitk().WriteImage(to_sitk(volume), str(tmp), useCompression=compress)
    return path
