"""Calipers, angles and ROI statistics in millimetres and modality units (no Qt).

Points are (row, col) in the pixels of the 2D slice being shown; pixel size is
(row mm, col mm) and is often anisotropic (sagittal/coronal views of thick-
slice CT), so every length is scaled per axis before it is measured. Values
are whatever the image holds: HU for CT, since volumes keep modality values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SHAPES = ("rect", "ellipse")


@dataclass(frozen=True)
class RoiStats:
    mean: float
    std: float  # population (ddof=0), as numpy and most viewers report it
    min: float
    max: float
    n_pixels: int
    area_mm2: float


def _pixel_size(source) -> tuple[float, float]:
    """(row mm, col mm) from a PlaneGeometry, a Volume or a pair.

    A Volume gives its native slice plane, (y, x) spacing; for reformatted
    views pass the view's PlaneGeometry, whose pixel_size is already per view.
    """
    if hasattr(source, "pixel_size"):
        r, c = source.pixel_size
    elif hasattr(source, "spacing"):
        _, r, c = np.asarray(source.spacing, dtype=float).reshape(3)
    else:
        r, c = source
    r, c = float(r), float(c)
    if not (r > 0 and c > 0):
        raise ValueError(f"pixel size must be positive, got {(r, c)}")
    return r, c


def distance_mm(volume_or_pixel_size, p0, p1) -> float:
    """Length in mm between two (row, col) points of one slice."""
    r_mm, c_mm = _pixel_size(volume_or_pixel_size)
    dr = (float(p1[0]) - float(p0[0])) * r_mm
    dc = (float(p1[1]) - float(p0[1])) * c_mm
    return math.hypot(dr, dc)


def distance_world(a_lps, b_lps) -> float:
    """Length in mm between two LPS points, e.g. across slices or views."""
    a = np.asarray(a_lps, dtype=float).reshape(3)
    b = np.asarray(b_lps, dtype=float).reshape(3)
    return float(np.linalg.norm(b - a))


def roi_mask(image_shape, shape: str, center, half_size) -> np.ndarray:
    """Boolean mask of the pixels whose centre lies inside the ROI.

    ``center`` is (row, col) and ``half_size`` (rows, cols) the half-extent /
    semi-axes, both in pixels and possibly fractional; pixel (i, j) has its
    centre at (i, j). Only the bounding box is evaluated, so a small ROI on a
    big image is cheap.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown ROI shape {shape!r}; expected one of {SHAPES}")
    n_rows, n_cols = int(image_shape[0]), int(image_shape[1])
    cr, cc = float(center[0]), float(center[1])
    hr, hc = abs(float(half_size[0])), abs(float(half_size[1]))
    mask = np.zeros((n_rows, n_cols), dtype=bool)
    r0, r1 = max(0, math.ceil(cr - hr)), min(n_rows - 1, math.floor(cr + hr))
    c0, c1 = max(0, math.ceil(cc - hc)), min(n_cols - 1, math.floor(cc + hc))
    if r1 < r0 or c1 < c0:
        return mask
    rows = np.arange(r0, r1 + 1, dtype=float)[:, None] - cr
    cols = np.arange(c0, c1 + 1, dtype=float)[None, :] - cc
    if shape == "rect":
        inside = (np.abs(rows) <= hr) & (np.abs(cols) <= hc)
    else:
        if hr == 0 or hc == 0:  # degenerate: a line, the pixels exactly on it
            inside = (np.abs(rows) <= hr) & (np.abs(cols) <= hc)
        else:
            inside = (rows / hr) ** 2 + (cols / hc) ** 2 <= 1.0
    mask[r0:r1 + 1, c0:c1 + 1] = inside
    return mask


def mask_stats(image, mask, pixel_size) -> RoiStats:
    """Statistics of the masked pixels; NaN values, but a 0 count, for an empty mask."""
    r_mm, c_mm = _pixel_size(pixel_size)
    img = np.asarray(image)
    m = np.asarray(mask, dtype=bool)
    if m.shape != img.shape:
        raise ValueError(f"mask shape {m.shape} does not match image {img.shape}")
    vals = img[m].astype(np.float64, copy=False)
    n = int(vals.size)
    area = n * r_mm * c_mm
    if n == 0:
        nan = float("nan")
        return RoiStats(nan, nan, nan, nan, 0, 0.0)
    return RoiStats(float(vals.mean()), float(vals.std()), float(vals.min()), float(vals.max()), n, area)


def roi_stats(image, pixel_size, shape: str = "rect", center=(0.0, 0.0), half_size=(1.0, 1.0)) -> RoiStats:
    """Mean/std/min/max and area of a rectangle or ellipse on a 2D slice."""
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"roi_stats needs a 2D slice, got shape {img.shape}")
    return mask_stats(img, roi_mask(img.shape, shape, center, half_size), pixel_size)


def _mm_vector(pixel_size, p_from, p_to) -> np.ndarray:
    """(row mm, col mm) from one (row, col) point to another: pixels scaled per axis first."""
    r_mm, c_mm = _pixel_size(pixel_size)
    return np.array([(float(p_to[0]) - float(p_from[0])) * r_mm, (float(p_to[1]) - float(p_from[1])) * c_mm])


def _angle_between(u: np.ndarray, v: np.ndarray) -> float:
    """Degrees in [0, 180] between two mm vectors; NaN when either has no length."""
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu == 0.0 or nv == 0.0:
        return float("nan")
    # atan2 of |cross| and dot stays exact near 0 and 180 degrees, where acos loses digits
    return math.degrees(math.atan2(abs(float(u[0] * v[1] - u[1] * v[0])), float(np.dot(u, v))))


def angle_deg(pixel_size, a, vertex, b) -> float:
    """The angle at ``vertex`` between the arms to ``a`` and ``b`` (row, col points), in degrees.

    Measured in millimetres, not pixels: with 0.5 x 1 mm pixels a line drawn at 45 degrees on the
    pixel grid is 26.6 degrees in the patient. NaN when an arm has no length (the user has not
    placed it yet)."""
    return _angle_between(_mm_vector(pixel_size, vertex, a), _mm_vector(pixel_size, vertex, b))


def cobb_angle_deg(pixel_size, line1, line2) -> float:
    """The Cobb angle between two lines (each a pair of (row, col) points), in degrees, 0 to 180.

    Each line is read left to right (then top to bottom when it is vertical), the way the two
    end-plate lines are drawn across a spine, so the angle between them keeps growing past 90
    degrees for a severe curve instead of folding back. NaN when a line has no length."""
    def directed(line):
        v = _mm_vector(pixel_size, line[0], line[1])
        return -v if (v[1] < 0 or (v[1] == 0 and v[0] < 0)) else v

    return _angle_between(directed(line1), directed(line2))
