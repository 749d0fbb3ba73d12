"""Window/level: presets, the DICOM VOI LUT and mouse-drag adjustment (no Qt).

Windows are (center, width) in modality values (HU for CT), the same numbers
DICOM Window Center/Width (0028,1050/1051) carry, so presets, the source's own
window and the drag tool can be mixed freely.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Preset:
    name: str
    center: float
    width: float


# CT presets (center/width HU). Mostly the Radiopaedia "Windowing (CT)" values;
# Abdomen is 60/400, the common PACS "Abdomen" preset, rather than 50/350,
# which would duplicate Mediastinum. Bone is 400/1800 (Radiopaedia, spine bone).
CT_PRESETS: tuple[Preset, ...] = (
    Preset("Soft tissue", 40.0, 400.0),
    Preset("Abdomen", 60.0, 400.0),
    Preset("Lung", -600.0, 1500.0),
    Preset("Bone", 400.0, 1800.0),
    Preset("Brain", 40.0, 80.0),
    Preset("Liver", 60.0, 160.0),
    Preset("Mediastinum", 50.0, 350.0),
)

# Digit keys, in the order OHIF binds its CT presets (1 soft tissue, 2 lung,
# 3 liver, 4 bone, 5 brain); the rest follow. Values are ours, not OHIF's.
CT_PRESET_KEYS: dict[str, str] = {
    "1": "Soft tissue",
    "2": "Lung",
    "3": "Liver",
    "4": "Bone",
    "5": "Brain",
    "6": "Abdomen",
    "7": "Mediastinum",
}

AUTO_PERCENTILES = (1.0, 99.0)
DENSE_PERCENTILES = (50.0, 99.5)
BREAST_THRESHOLD = 0.05  # of the stored range above the minimum: leaves the air background out
DEFAULT_SAMPLE = 262_144


def _subsample(array: np.ndarray, sample: int) -> np.ndarray:
    """Strided view of at most ~``sample`` values, finite only.

    Strides per axis rather than ravel(): no copy of a 300-slice volume just
    to look at a quarter-million voxels of it.
    """
    a = np.asarray(array)
    steps = [1] * a.ndim
    sample = max(1, int(sample))

    def count() -> int:
        return int(np.prod([-(-n // s) for n, s in zip(a.shape, steps)]))

    while count() > sample:
        # widen the stride of the axis that still has the most samples
        k = max(range(a.ndim), key=lambda i: -(-a.shape[i] // steps[i]))
        steps[k] += 1
    view = a[tuple(slice(None, None, s) for s in steps)]
    vals = np.asarray(view, dtype=np.float64).ravel()
    return vals[np.isfinite(vals)]


def _window_between(lo: float, hi: float) -> tuple[float, float]:
    if not hi > lo:
        return float(lo), 1.0
    return (float(lo) + float(hi)) / 2.0, float(hi) - float(lo)


def percentile_window(array, lo_pct: float = AUTO_PERCENTILES[0], hi_pct: float = AUTO_PERCENTILES[1],
                      sample: int = DEFAULT_SAMPLE) -> tuple[float, float]:
    """(center, width) spanning two percentiles; robust to a few hot or dead pixels."""
    vals = _subsample(array, sample)
    if vals.size == 0:
        return 0.5, 1.0
    lo, hi = np.percentile(vals, [lo_pct, hi_pct])
    return _window_between(lo, hi)


def full_range_window(array) -> tuple[float, float]:
    """Stored min..max: nothing is clipped, the mammographer's overview."""
    a = np.asarray(array)
    if a.size == 0:
        return 0.5, 1.0
    if np.issubdtype(a.dtype, np.floating):
        finite = a[np.isfinite(a)]
        if finite.size == 0:
            return 0.5, 1.0
        return _window_between(finite.min(), finite.max())
    return _window_between(a.min(), a.max())


def dense_window(array, sample: int = 4 * DEFAULT_SAMPLE) -> tuple[float, float]:
    """50th..99.5th percentile inside the breast: contrast where dense tissue hides lesions.

    The breast is every pixel above a low threshold over the minimum, so the
    air background (often half the detector) does not drag the window down.
    """
    vals = _subsample(array, sample)
    if vals.size == 0:
        return 0.5, 1.0
    lo, hi = float(vals.min()), float(vals.max())
    if not hi > lo:
        return lo, 1.0
    breast = vals[vals > lo + BREAST_THRESHOLD * (hi - lo)]
    if breast.size < 16:
        breast = vals
    a, b = np.percentile(breast, DENSE_PERCENTILES)
    if not b > a:
        a, b = lo + 0.5 * (hi - lo), hi
    return _window_between(a, b)


HISTOGRAM_WINDOW_MODALITIES = ("CR", "DX")  # radiographs: header windows from the modality, often absurd
MIN_INSIDE_SHARE = 0.05  # a header window that holds fewer of the image's pixels covers nothing
MIN_SPAN_SHARE = 0.1  # nor one so wide that the image's 1st..99th percentile fills a tenth of it


def foreground_window(array, sample: int = DEFAULT_SAMPLE) -> tuple[float, float]:
    """1st..99th percentile of the non-background pixels: the collimator's or the air's
    single value (the image's minimum or maximum) is left out so it cannot pull the window."""
    vals = _subsample(array, sample)
    if vals.size == 0:
        return 0.5, 1.0
    inner = vals[(vals > vals.min()) & (vals < vals.max())]
    if inner.size < 16:
        inner = vals
    lo, hi = np.percentile(inner, AUTO_PERCENTILES)
    return _window_between(lo, hi)


def checked_header_window(window, array, sample: int = DEFAULT_SAMPLE):
    """(window, note): a radiograph's header window, or a histogram window when the header's is absurd.

    Absurd: it holds almost none of the pixels (e.g. 30000/15000 on 12-bit data), or it is so
    wide that the image would show flat grey. A sensible header window is returned unchanged
    with no note.
    """
    c, w = float(window[0]), float(window[1])
    vals = _subsample(array, sample)
    if vals.size == 0:
        return window, None
    lo, hi = np.percentile(vals, AUTO_PERCENTILES)
    inside = float(np.mean((vals >= c - w / 2) & (vals <= c + w / 2))) if np.isfinite(c + w) else 0.0
    too_wide = np.isfinite(w) and (hi - lo) < MIN_SPAN_SHARE * w
    if np.isfinite(c) and np.isfinite(w) and w >= 1.0 and inside >= MIN_INSIDE_SHARE and not too_wide:
        return window, None
    new = foreground_window(array, sample)
    why = ("holds almost none of the pixels" if inside < MIN_INSIDE_SHARE else
           f"is {w / max(hi - lo, 1e-9):.0f}x wider than the image's values")
    return new, (f"header window {_fmt(c)}/{_fmt(w)} {why} (image {_fmt(lo)}..{_fmt(hi)}): "
                 f"shown with {_fmt(new[0])}/{_fmt(new[1])} from the histogram (1st-99th percentile)")


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def window_value_text(v: float) -> str:
    """A window number as a reader writes it: whole numbers from 100 up ("13680", never "1.368e+04"),
    three significant digits below that, where MR/PET windows live ("2.5", "0.0123")."""
    v = float(v)
    if not np.isfinite(v):
        return str(v)
    if abs(v) >= 100 or v == round(v):
        return str(int(round(v)))
    return np.format_float_positional(v, precision=3, fractional=False, trim="-")


def window_matches(window, center: float, width: float) -> bool:
    """True when ``window`` (center, width) is this preset's, to a hair (presets are computed in float64)."""
    if window is None:
        return False
    c, w = float(window[0]), float(window[1])
    tol = 1e-6 * max(1.0, abs(width))
    return abs(c - center) <= tol and abs(w - width) <= tol


def presets_for(volume) -> list[Preset]:
    """The presets offered for this volume; computed ones are evaluated now."""
    modality = (volume.info.modality or "").upper()
    if modality == "CT":
        return list(CT_PRESETS)
    if modality == "MG":
        return [Preset("Full range", *full_range_window(volume.array)),
                Preset("Dense", *dense_window(volume.array))]
    if modality == "MR":
        return [Preset("Auto", *percentile_window(volume.array))]
    return [Preset("Auto", *percentile_window(volume.array)),
            Preset("Full range", *full_range_window(volume.array))]


def default_window(volume, sample: int = DEFAULT_SAMPLE) -> tuple[float, float]:
    """The source's own window when it has a usable one, else 1st..99th percentile.

    The source knows best (a CT's window was chosen for its protocol), so it
    wins; the percentile fallback reads a strided subsample to stay fast on
    big volumes.
    """
    w = volume.info.window
    if w is not None:
        c, width = float(w[0]), float(w[1])
        if np.isfinite(c) and np.isfinite(width) and width >= 1.0:
            return c, width
    return percentile_window(volume.array, sample=sample)


def apply_window(image, center: float, width: float, invert: bool = False) -> np.ndarray:
    """Modality values to 0..255 by the DICOM linear VOI function (PS3.3 C.11.2.1.2.1).

        x <= c - 0.5 - (w-1)/2            -> 0
        x >  c - 0.5 + (w-1)/2            -> 255
        else ((x - (c-0.5)) / (w-1) + 0.5) * 255

    The -0.5 / -1 terms are the standard's, so a width-1 window is a hard
    threshold at c - 0.5 and stored windows look as on other workstations.
    ``invert`` is for MONOCHROME1, where low values are bright.
    """
    c = float(center)
    w = max(float(width), 1.0)
    x = np.asarray(image)
    shape = x.shape
    x = x.reshape(-1) if x.ndim == 0 else x
    if w <= 1.0:
        y = np.where(x > c - 0.5, 255.0, 0.0)
    else:
        # clipping the line is exactly the piecewise form: it is 0 and 255 at the two breakpoints
        y = np.subtract(x, c - 0.5, dtype=np.float64)  # a fresh array: the input is never touched
        y /= w - 1.0
        y += 0.5
        y *= 255.0
        np.clip(y, 0.0, 255.0, out=y)
        np.nan_to_num(y, copy=False, nan=0.0)
    out = np.rint(y).astype(np.uint8)
    if invert:
        np.subtract(255, out, out=out)
    return out.reshape(shape)


def window_from_drag(center: float, width: float, dx: float, dy: float,
                     sensitivity: float = 1.0) -> tuple[float, float]:
    """New (center, width) after a right-drag of (dx, dy) screen pixels.

    Right widens the window (less contrast); down raises the center, which
    darkens the image. That is the cornerstone/OHIF convention; it keeps the
    drag a direct edit of the two numbers rather than of "brightness".
    ``sensitivity`` is modality units per pixel; callers may scale it with
    the width so a lung window and a brain window feel alike.
    """
    s = float(sensitivity)
    return float(center) + dy * s, max(1.0, float(width) + dx * s)
