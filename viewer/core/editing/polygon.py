"""Polygon / lasso fill on a plane: pixels whose centres are inside the outline.

Vertices are plane pixel coordinates (row, col) — pixel centres at integers,
see ``editing.plane``. Inside follows the even-odd rule exactly as the classic
ray-casting test (W. R. Franklin's pnpoly): an edge counts for a pixel row y
when one end is above y and the other not (``(yi > y) != (yj > y)``) and it
crosses the row strictly right of the pixel centre. It is vectorised by rows:
each (row, edge) crossing adds one to a difference array over the columns left
of it, a cumulative sum gives the crossings right of every pixel, and odd means
inside — O(rows x edges + pixels), no per-pixel Python.
"""
from __future__ import annotations

import numpy as np

from ..labels import LabelMap
from ..mpr import PlaneGeometry
from .plane import plane_mask_to_box


def polygon_box(vertices, shape: tuple[int, int]):
    """(row0, col0, mask) of the pixels inside the polygon, cropped to its bounding box within
    a plane of ``shape`` (n_rows, n_cols); None when no pixel centre can be inside."""
    v = np.asarray(vertices, dtype=float).reshape(-1, 2)
    if len(v) < 3:
        return None
    r0, r1 = max(int(np.ceil(v[:, 0].min())), 0), min(int(np.floor(v[:, 0].max())), shape[0] - 1)
    c0, c1 = max(int(np.ceil(v[:, 1].min())), 0), min(int(np.floor(v[:, 1].max())), shape[1] - 1)
    if r0 > r1 or c0 > c1:
        return None
    yi, xi = v[:, 0], v[:, 1]
    yj, xj = np.roll(yi, 1), np.roll(xi, 1)  # edge from vertex i-1 to vertex i, as pnpoly
    y = np.arange(r0, r1 + 1, dtype=float)[:, None]
    crosses = (yi > y) != (yj > y)  # (rows, edges)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = (xj - xi) * (y - yi) / (yj - yi) + xi
    n_cols = c1 - c0 + 1
    rows, edges = np.nonzero(crosses)
    # columns c with c < x_at are left of the crossing: local 0 .. ceil(x_at) - c0 - 1
    end = np.clip(np.ceil(x_at[rows, edges]) - c0, 0, n_cols).astype(np.int64)
    diff = np.zeros((r1 - r0 + 1, n_cols + 1), np.int64)
    np.add.at(diff, (rows, 0), 1)
    np.add.at(diff, (rows, end), -1)
    inside = np.cumsum(diff, axis=1)[:, :n_cols] % 2 == 1
    return r0, c0, inside


def polygon_mask(vertices, shape: tuple[int, int]) -> np.ndarray:
    """Full-plane bool mask (n_rows, n_cols) of the polygon, e.g. for a lasso preview."""
    out = np.zeros(shape, bool)
    got = polygon_box(vertices, shape)
    if got is not None:
        r0, c0, m = got
        out[r0:r0 + m.shape[0], c0:c0 + m.shape[1]] = m
    return out


def fill_polygon(labelmap: LabelMap, geometry: PlaneGeometry, slice_index: int, vertices, value: int, *,
                 erase: bool = False, over: int | None = None) -> int:
    """Write ``value`` (0 with ``erase``) inside the polygon on slice ``slice_index`` of the plane;
    one undo step; voxels changed."""
    write = 0 if erase else int(value)
    labelmap._check_value_writable(write)
    got = polygon_box(vertices, (geometry.n_rows, geometry.n_cols))
    if got is None:
        return 0
    box, mask = plane_mask_to_box(geometry, slice_index, *got)
    with labelmap.edit("polygon") as e:
        return e.write(box, mask, write, over=over)
