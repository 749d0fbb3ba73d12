"""Mammography views and the 4-view hanging protocol, from DICOM tags (no Qt).

Standard display (as radiologists hang it): right breast on the viewer's left,
left breast on the right, mirrored so the chest walls meet in the middle.
In PatientOrientation terms (row direction, column direction):
RCC = (P, L), LCC = (A, R), RMLO = (P, F), LMLO = (A, F).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .mammo_views import identify, identify_series
from .study import Series, Study
from .volume import SourceInfo

FOUR_VIEWS = ("RCC", "LCC", "RMLO", "LMLO")
# Hanging grid (row, column): RCC | LCC on top, RMLO | LMLO below.
GRID = {"RCC": (0, 0), "LCC": (0, 1), "RMLO": (1, 0), "LMLO": (1, 1)}
_VIEW_ALIASES = {"CC": "CC", "XCCL": "CC", "XCCM": "CC", "FB": "CC", "MLO": "MLO", "SIO": "MLO"}
_STANDARD = {"RCC": ("P", "L"), "LCC": ("A", "R"), "RMLO": ("P", "F"), "LMLO": ("A", "F")}
_OPPOSITE = {"A": "P", "P": "A", "L": "R", "R": "L", "H": "F", "F": "H", "S": "I", "I": "S"}


def view_name(info: SourceInfo) -> str | None:
    """'RCC', 'LMLO', ... from ImageLaterality/Laterality and ViewPosition, else from what else the file
    carries (view code, PatientOrientation, IDs and descriptions: mammo_views.identify); None if not
    a 4-view image."""
    lat = (info.laterality or "").upper()[:1]
    view = _VIEW_ALIASES.get((info.view_position or "").upper().replace(" ", ""))
    if lat in ("R", "L") and view is not None:
        return lat + view
    if (info.view_position or "").strip():  # a ViewPosition that is not a screening view (ML, LM, ...)
        return None
    return identify(info).hanging


# Film and detector sizes (mm, short x long side) a mammogram without PixelSpacing is assumed to fill.
FILM_SIZES = ((180.0, 240.0), (240.0, 300.0))
DDSM_SPACING_MM = 0.05  # DDSM films were digitised at 42-50 um (DBA 42, HOWTEK 43.5, LUMISYS 50)


@dataclass(frozen=True)
class SpacingEstimate:
    """A pixel spacing the file does not carry, and how it was estimated."""

    mm: float
    how: str

    @property
    def note(self) -> str:
        return f"spacing estimated: {self.mm:.3g} mm ({self.how})"

    def summary(self) -> dict:
        return {"mm": round(self.mm, 6), "how": self.how, "note": self.note}


def estimate_spacing(series: Series | None, shape) -> SpacingEstimate | None:
    """None when the file has a pixel spacing; else the spacing its dataset or film size implies.

    CBIS-DDSM (TCIA) drops the DDSM digitiser resolution: its films were scanned at 42-50 um, so
    50 um. Otherwise the image is taken to fill a standard film/detector: 18x24 cm for a 4:3
    matrix, 24x30 cm for 5:4 or anything else, long side on long side. Never 1 mm.
    """
    inst = series.instances[0] if series is not None and series.instances else None
    if inst is not None and inst.pixel_spacing is not None and all(v > 0 for v in inst.pixel_spacing):
        return None
    info = series.info if series is not None else SourceInfo()
    if re.match(r"^(Calc|Mass)-(Training|Test)_P_\d+", info.patient_id or "", re.I):
        return SpacingEstimate(DDSM_SPACING_MM, "CBIS-DDSM: DDSM films digitised at 42-50 um")
    rows, cols = int(shape[-2]), int(shape[-1])
    short, long = sorted((rows, cols))
    aspect = short / max(long, 1)
    film = FILM_SIZES[0] if abs(aspect - 0.75) < abs(aspect - 0.8) else FILM_SIZES[1]
    mm = min(film[1] / long, film[0] / short)
    return SpacingEstimate(mm, f"film {film[0] / 10:g}x{film[1] / 10:g} cm over {rows}x{cols} pixels")


def four_view(study: Study) -> dict[str, Series | None]:
    """Pick one image per standard view: For Presentation before For Processing, then the highest
    series number if a view was repeated."""
    chosen: dict[str, Series | None] = {v: None for v in FOUR_VIEWS}
    for series in study.series:
        if series.kind != "dicom" or series.modality != "MG":
            continue
        name = view_name(series.info)
        if name is None:
            continue
        current = chosen[name]
        if current is None or _rank(series) >= _rank(current):
            chosen[name] = series
    return chosen


def _rank(series: Series) -> tuple:
    """For Presentation before For Processing, then the highest series number."""
    vid = identify_series(series)
    return (not vid.for_processing and not vid.modifiers and not vid.not_a_view, series.info.series_number or 0)


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
