"""Label maps and heatmaps as NIfTI, on exactly the grid of the image they belong to.

A label map is only useful if it lands on the voxels it was drawn on, so these
writers refuse any array whose shape differs from the volume and take every bit
of geometry (spacing, origin, direction) from the Volume itself; the reader
checks the grid instead of silently resampling. ITK converts our LPS geometry to
NIfTI's RAS. The NIfTI ``descrip`` field names the source series UID so a file
found later can be matched back to its image. A projection (1, rows, cols)
volume is written as a 3D image with one slice.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..atomic import replacing
from ..io.itk import from_sitk, to_sitk
from ..volume import Volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")
DESCRIP_LIMIT = 79  # NIfTI-1 descrip is 80 bytes with its terminating NUL


class GridMismatch(ValueError):
    """A label map that does not lie on the image's voxel grid; the message says how."""


def _nifti_path(path) -> Path:
    path = Path(path)
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise ValueError(f"{path}: a NIfTI file name must end in .nii.gz or .nii")
    return path


def _check_shape(array: np.ndarray, volume: Volume, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2 and volume.shape[0] == 1:
        array = array[np.newaxis]  # a projection's (rows, cols) map
    if array.shape != volume.shape:
        raise ValueError(f"{what} has shape {array.shape} (z, y, x) but the image has {volume.shape}: "
                         "it must be on the image's own grid (resample it first)")
    return array


def label_dtype(array: np.ndarray) -> np.dtype:
    """Smallest unsigned type for the labels; refuses what is not a label map."""
    if array.dtype == bool:
        return np.dtype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"a label map must hold integers, not {array.dtype} "
                         "(probabilities belong in a heatmap)")
    lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if lo < 0:
        raise ValueError(f"label values must be 0 (background) or positive, found {lo}")
    if hi > np.iinfo(np.uint16).max:
        raise ValueError(f"label value {hi} is above 65535")
    return np.dtype(np.uint8 if hi <= 255 else np.uint16)


def _write(volume: Volume, path: Path, note: str) -> Path:
    """Atomic NIfTI write (temp name in the same folder, then rename), with a descrip note."""
    image = to_sitk(volume)
    image.SetMetaData("ITK_FileNotes", note[:DESCRIP_LIMIT])
    with replacing(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return path


def write_label_map(labels, volume: Volume, path) -> Path:
    """Integer label map (z, y, x) on ``volume``'s grid -> NIfTI (uint8, or uint16 above 255)."""
    path = _nifti_path(path)
    labels = _check_shape(labels, volume, "label map")
    labels = np.ascontiguousarray(labels, dtype=label_dtype(labels))
    return _write(volume.with_array(labels), path, f"labels {volume.info.series_uid}")


def write_heatmap(prob, volume: Volume, path) -> Path:
    """Float probability map (z, y, x) on ``volume``'s grid -> float32 NIfTI."""
    path = _nifti_path(path)
    prob = _check_shape(prob, volume, "heatmap")
    if not (np.issubdtype(prob.dtype, np.floating) or np.issubdtype(prob.dtype, np.integer)
            or prob.dtype == bool):
        raise ValueError(f"a heatmap must be numeric, not {prob.dtype}")
    prob = np.ascontiguousarray(prob, dtype=np.float32)
    return _write(volume.with_array(prob), path, f"heatmap {volume.info.series_uid}")


def _grid_differences(found: Volume, volume: Volume, tol: float) -> list[str]:
    why = []
    if found.shape != volume.shape:
        why.append(f"size {found.shape} vs the image's {volume.shape} (z, y, x)")
    if not np.allclose(found.spacing, volume.spacing, atol=tol):
        why.append(f"spacing {np.round(found.spacing, 4).tolist()} vs {np.round(volume.spacing, 4).tolist()} mm")
    if not np.allclose(found.origin, volume.origin, atol=tol):
        why.append(f"origin {np.round(found.origin, 3).tolist()} vs {np.round(volume.origin, 3).tolist()} (LPS mm)")
    if not np.allclose(found.direction, volume.direction, atol=tol):
        why.append("orientation differs (direction cosines "
                   f"{np.round(found.direction, 3).tolist()} vs {np.round(volume.direction, 3).tolist()})")
    return why


def read_label_map(path, volume: Volume, tol: float = 1e-3) -> np.ndarray:
    """A NIfTI label map that lies on ``volume``'s grid, as uint8/uint16 (z, y, x).

    ``tol`` (mm, and unitless for direction cosines) absorbs NIfTI's float32
    header precision. Anything off-grid raises GridMismatch saying what differs,
    because resampling a label map silently would move the labels.
    """
    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: cannot read as an image ({str(exc).strip().splitlines()[-1]})") from exc
    found = from_sitk(image)
    why = _grid_differences(found, volume, tol)
    if why:
        raise GridMismatch(f"{path}: not on the image's grid: " + "; ".join(why))
    array = found.array
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.rint(array)):
            raise ValueError(f"{path}: holds non-integer values, so it is not a label map")
        array = array.astype(np.int64)
    try:
        return array.astype(label_dtype(array), copy=False)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
