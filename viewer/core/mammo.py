"""Mammography views and the 4-view hanging protocol, from DICOM tags (no Qt).

Standard display (as radiologists hang it): right breast on the viewer's left,
left breast on the right, mirrored so the chest walls meet in the middle.
In PatientOrientation terms (row direction, column direction):
RCC = (P, L), LCC = (A, R), RMLO = (P, F), LMLO = (A, F).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .study import Series, Study
from .volume import SourceInfo

FOUR_VIEWS = ("RCC", "LCC", "RMLO", "LMLO")
# Hanging grid (row, column): RCC | LCC on top, RMLO | LMLO below.
GRID = {"RCC": (0, 0), "LCC": (0, 1), "RMLO": (1, 0), "LMLO": (1, 1)}
_VIEW_ALIASES = {"CC": "CC", "XCCL": "CC", "XCCM": "CC", "FB": "CC", "MLO": "MLO", "SIO": "MLO"}
_STANDARD = {"RCC": ("P", "L"), "LCC": ("A", "R"), "RMLO": ("P", "F"), "LMLO": ("A", "F")}
_OPPOSITE = {"A": "P", "P": "A", "L": "R", "R": "L", "H": "F", "F": "H", "S": "I", "I": "S"}


def view_name(info: SourceInfo) -> str | None:
    """'RCC', 'LMLO', ... from ImageLaterality/Laterality and ViewPosition; None if not a 4-view image."""
    lat = (info.laterality or "").upper()[:1]
    view = _VIEW_ALIASES.get((info.view_position or "").upper().replace(" ", ""))
    if lat not in ("R", "L") or view is None:
        return None
    return lat + view


def four_view(study: Study) -> dict[str, Series | None]:
    """Pick one image per standard view; the highest series number wins if a view was repeated."""
    chosen: dict[str, Series | None] = {v: None for v in FOUR_VIEWS}
    for series in study.series:
        if series.kind != "dicom" or series.modality != "MG":
            continue
        name = view_name(series.info)
        if name is None:
            continue
        current = chosen[name]
        number = series.info.series_number or 0
        if current is None or number >= (current.info.series_number or 0):
            chosen[name] = series
    return chosen


def is_mammo_study(study: Study) -> bool:
    return any(view_name(s.info) for s in study.series if s.modality == "MG")


@dataclass(frozen=True)
class Flips:
    """Mirror the image left-right and/or up-down to reach the standard hanging."""

    left_right: bool
    up_down: bool

    def apply(self, image: np.ndarray) -> np.ndarray:
        out = image[..., ::-1] if self.left_right else image
        return out[..., ::-1, :] if self.up_down else out


def chest_wall_on_left(image: np.ndarray) -> bool:
    """Where tags are missing: the breast is attached to the brighter image edge."""
    img = np.asarray(image, dtype=np.float32)
    img = img.reshape(img.shape[-2:]) if img.ndim > 2 else img
    band = max(1, img.shape[1] // 20)
    return float(img[:, :band].mean()) >= float(img[:, -band:].mean())


def display_flips(info: SourceInfo, image: np.ndarray | None = None) -> Flips:
    """Flips that bring an image to the standard hanging for its view."""
    name = view_name(info)
    if name is None:
        return Flips(False, False)
    want_row, want_col = _STANDARD[name]
    orient = info.patient_orientation
    if orient and len(orient) == 2 and orient[0] and orient[1]:
        row, col = orient[0].upper(), orient[1].upper()
        flip_lr = _OPPOSITE.get(want_row, "") in row and want_row not in row
        flip_ud = _OPPOSITE.get(want_col, "") in col and want_col not in col
        if name.endswith("MLO"):  # MLO column direction is oblique (e.g. 'FL'): only the F/H part matters
            flip_ud = "H" in col and "F" not in col
        return Flips(flip_lr, flip_ud)
    if image is not None:  # no tag: R views want the chest wall on the right, L views on the left
        on_left = chest_wall_on_left(image)
        return Flips(left_right=on_left if name[0] == "R" else not on_left, up_down=False)
    return Flips(False, False)


def bright_is_dense(volume, series: Series | None = None) -> np.ndarray:
    """The pixels with dense tissue bright, whatever the PhotometricInterpretation.

    Models, thresholds and exported training images assume MONOCHROME2. A MONOCHROME1 image (low
    values white, as some CR and older mammography units store them) is inverted within the value
    range its stored bits can hold (after rescale), which is exactly what a MONOCHROME2 image of the
    same exposure holds; without the DICOM header, within the image's own range.
    """
    array = volume.array
    if str(volume.info.photometric).upper() != "MONOCHROME1":
        return array
    inst = series.instances[0] if series is not None and series.instances else None
    if inst is not None and not inst.float_pixels:
        bits = int(inst.bits_stored)
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if inst.pixel_representation else (0, (1 << bits) - 1)
        slope, intercept = inst.rescale
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    else:
        lo, hi = float(array.min()), float(array.max())
    inverted = (lo + hi) - array.astype(np.float64)
    if np.issubdtype(array.dtype, np.integer):  # keep the stored type when the values still fit it
        info = np.iinfo(array.dtype)
        if float(lo + hi).is_integer() and inverted.min() >= info.min and inverted.max() <= info.max:
            return inverted.astype(array.dtype)
    return inverted.astype(np.float32)
