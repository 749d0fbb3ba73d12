"""Plane pixels <-> label-map array indices, for effects drawn on a shown plane.

A *plane pixel* ``(k, row, col)`` is what ``core.mpr.extract_slice(volume,
geometry, k)[row, col]`` shows: the geometry's own row/column flips applied,
the SliceView's display flips (``view.flips``) NOT applied. Pixel centres sit
at integer (row, col); a fractional position belongs to the nearest pixel.
``scene_to_pixel`` undoes a SliceView's scene mapping (1 scene unit = 1 mm,
display flips included) so a UI tool can go from a mouse position to plane
pixels without Qt-side arithmetic.
"""
from __future__ import annotations

import numpy as np

from ..mpr import PlaneGeometry
from ..undo import Box


def nearest(v) -> np.ndarray:
    """Nearest pixel index of a continuous coordinate (halves round up: 0.5 -> 1)."""
    return np.floor(np.asarray(v, dtype=float) + 0.5).astype(np.int64)


def pixel_to_index(geometry: PlaneGeometry, slice_index: int, row, col) -> tuple[int, int, int]:
    """Array (z, y, x) of the plane pixel nearest (row, col) on slice ``slice_index`` (unclamped)."""
    z, y, x = pixels_to_index(geometry, slice_index, [row], [col])
    return int(z[0]), int(y[0]), int(x[0])


def pixels_to_index(geometry: PlaneGeometry, slice_index: int, rows, cols):
    """Vectorised ``pixel_to_index``: three int arrays (z, y, x)."""
    g = geometry
    r, c = nearest(rows), nearest(cols)
    idx = [None, None, None]
    idx[g.axis] = np.full(r.shape, int(slice_index), np.int64)
    idx[g.row_axis] = (g.n_rows - 1 - r) if g.flip_rows else r
    idx[g.col_axis] = (g.n_cols - 1 - c) if g.flip_cols else c
    return tuple(idx)


def index_to_pixel(geometry: PlaneGeometry, index_zyx) -> tuple[int, int, int]:
    """(slice, row, col) plane pixel showing array voxel (z, y, x)."""
    g = geometry
    i = [int(v) for v in index_zyx]
    r, c = i[g.row_axis], i[g.col_axis]
    return (i[g.axis], (g.n_rows - 1 - r) if g.flip_rows else r, (g.n_cols - 1 - c) if g.flip_cols else c)


def inside(geometry: PlaneGeometry, row, col) -> bool:
    r, c = int(nearest(row)), int(nearest(col))
    return 0 <= r < geometry.n_rows and 0 <= c < geometry.n_cols


def scene_to_pixel(geometry: PlaneGeometry, x_mm: float, y_mm: float,
                   flips: tuple[bool, bool] = (False, False)) -> tuple[float, float]:
    """SliceView scene position (mm, display ``flips`` = view.flips) to continuous plane (row, col).

    Inverse of ``SliceView.pixel_center``; round with ``nearest`` for the pixel under the mouse.
    """
    w = geometry.n_cols * geometry.pixel_size[1]
    h = geometry.n_rows * geometry.pixel_size[0]
    x = w - x_mm if flips[0] else x_mm
    y = h - y_mm if flips[1] else y_mm
    return y / geometry.pixel_size[0] - 0.5, x / geometry.pixel_size[1] - 0.5


def plane_mask_to_box(geometry: PlaneGeometry, slice_index: int, row0: int, col0: int,
                      mask: np.ndarray) -> tuple[Box, np.ndarray]:
    """Place a plane-oriented 2D mask whose [0, 0] is plane pixel (row0, col0) into the array:
    returns the array box and the box-shaped 3D mask (flips and transposition undone)."""
    g = geometry
    h, w = mask.shape
    ranges = [None, None, None]
    ranges[g.axis] = (int(slice_index), int(slice_index) + 1)
    ranges[g.row_axis] = (g.n_rows - row0 - h, g.n_rows - row0) if g.flip_rows else (row0, row0 + h)
    ranges[g.col_axis] = (g.n_cols - col0 - w, g.n_cols - col0) if g.flip_cols else (col0, col0 + w)
    m = mask[:: -1 if g.flip_rows else 1, :: -1 if g.flip_cols else 1]
    if g.row_axis > g.col_axis:
        m = m.T
    box = tuple(v for rg in ranges for v in rg)
    return box, np.expand_dims(m, g.axis)  # type: ignore[return-value]


def clip_plane_mask(geometry: PlaneGeometry, row0: int, col0: int, mask: np.ndarray):
    """Crop a plane mask placed at (row0, col0) to the plane; None when nothing is left."""
    h, w = mask.shape
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + h, geometry.n_rows), min(col0 + w, geometry.n_cols)
    if r0 >= r1 or c0 >= c1:
        return None
    return r0, c0, mask[r0 - row0:r1 - row0, c0 - col0:c1 - col0]
