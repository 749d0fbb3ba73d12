"""Small greyscale previews of a series for the study browser (no Qt).

A thumbnail decodes one image (the middle slice, or the projection), so the
browser can show dozens of series without loading any of them as a volume.
It keeps the true aspect ratio from the pixel spacing and uses a robust
percentile window, so a CT shows anatomy rather than the air/bone extremes.
"""
from __future__ import annotations

import numpy as np

from .io.dicom import plan_series, read_stored
from .mammo import display_flips
from .study import Series
from .windowing import apply_window, percentile_window


def middle_image(series: Series) -> tuple[np.ndarray, tuple[float, float], bool]:
    """(modality values of the middle image, (row, col) spacing mm, MONOCHROME1?)."""
    if series.kind == "file":
        from .io.itk import read_volume

        vol = read_volume(series.path)
        return vol.array[vol.shape[0] // 2], (float(vol.spacing[1]), float(vol.spacing[2])), False
    if series.kind != "dicom":
        raise ValueError(f"{series.label()}: not an image series")
    plan = plan_series(series)
    present = [f for f in plan.slots if f is not None]
    if not present:
        raise ValueError(f"{series.label()}: no images")
    frame = present[len(present) // 2]
    inst = frame.instance
    slope, icpt = frame.rescale or inst.rescale
    image = read_stored(inst)[frame.index].astype(np.float32) * np.float32(slope) + np.float32(icpt)
    return image, (float(plan.spacing[1]), float(plan.spacing[2])), inst.photometric == "MONOCHROME1"


def fit_size(shape_mm: tuple[float, float], size: int) -> tuple[int, int]:
    """(rows, cols) of at most ``size`` pixels on the long side with the image's physical aspect."""
    h, w = (max(float(v), 1e-6) for v in shape_mm)
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resample_nearest(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Area-ish downsampling: average blocks when shrinking by >= 2, then pick nearest."""
    h, w = image.shape
    fy, fx = max(1, h // rows), max(1, w // cols)
    if fy > 1 or fx > 1:
        hh, ww = (h // fy) * fy, (w // fx) * fx
        image = image[:hh, :ww].reshape(hh // fy, fy, ww // fx, fx).mean(axis=(1, 3))
        h, w = image.shape
    yi = np.minimum(((np.arange(rows) + 0.5) * h / rows).astype(int), h - 1)
    xi = np.minimum(((np.arange(cols) + 0.5) * w / cols).astype(int), w - 1)
    return image[np.ix_(yi, xi)]


def series_thumbnail(series: Series, size: int = 64) -> np.ndarray:
    """uint8 (rows, cols) preview, long side ``size`` pixels; raises on unreadable data."""
    image, spacing, invert = middle_image(series)
    rows, cols = fit_size((image.shape[0] * spacing[0], image.shape[1] * spacing[1]), size)
    small = resample_nearest(np.asarray(image, dtype=np.float32), rows, cols)
    center, width = percentile_window(image)
    if series.is_projection:  # mammograms as the hanging shows them: chest walls facing each other
        small = display_flips(series.info, image).apply(small)
    return np.ascontiguousarray(apply_window(small, center, width, invert=invert))
