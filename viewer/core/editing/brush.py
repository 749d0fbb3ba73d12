"""Brush and eraser: round (disc or sphere) footprints in millimetres on anisotropic voxels.

The rule, everywhere (footprints, cursor preview, strokes, morphology): a voxel
is inside a brush of radius r mm centred on voxel c when the distance between
the two voxel CENTRES, measured in mm with the volume's spacing, is <= r
(within 1e-9 relative, so a radius that is a whole number of pixels includes
that pixel). The brush centre snaps to the pixel under the mouse, so a radius
smaller than half a pixel paints one voxel. Example: r = 2 mm on 0.5 mm rows x
2.0 mm columns paints rows -4..4 of the centre column and only the centre row
of the columns +-1 (a 9 x 3 bounding box).

A stroke between two mouse points paints every voxel whose centre is within r
of the segment joining the two centre voxels (a capsule), so fast drags leave
no gaps and each end is exactly the disc of a single dab.

Which voxels change: ``value`` (or 0 with ``erase=True``) is written where the
footprint is, except on locked labels, outside ``threshold = (lo, hi)`` of the
volume's intensity (both ends included), and, when ``over`` is given, on voxels
not currently holding ``over`` (``over=0``: paint only unlabelled voxels;
eraser with ``over=active``: erase only the active label). The default eraser
(``over=None``) clears any unlocked label under it, as ITK-SNAP's does: what you
see under the cursor disappears; lock a label to protect it.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..labels import LabelMap
from ..mpr import PlaneGeometry
from ..undo import Step, clip_box
from ..volume import Volume
from .plane import pixel_to_index

EPS = 1e-9


def half_extent(radius_mm: float, spacing_mm: float) -> int:
    """Largest whole number of voxels whose centre offset stays within the radius."""
    return int(np.floor(max(float(radius_mm), 0.0) / float(spacing_mm) * (1 + EPS)))


def _r2(radius_mm: float) -> float:
    return float(radius_mm) ** 2 * (1 + 2 * EPS)


def footprint(radius_mm: float, pixel_size_mm: tuple[float, float]) -> np.ndarray:
    """(2a+1, 2b+1) bool disc in (row, col) pixels, centre at [a, b]: the round cursor preview."""
    a, b = half_extent(radius_mm, pixel_size_mm[0]), half_extent(radius_mm, pixel_size_mm[1])
    i = np.arange(-a, a + 1, dtype=float)[:, None] * pixel_size_mm[0]
    j = np.arange(-b, b + 1, dtype=float)[None, :] * pixel_size_mm[1]
    return (0.0 + i * i) + j * j <= _r2(radius_mm)


def ball(radius_mm: float, spacing_zyx) -> np.ndarray:
    """(2a+1, 2b+1, 2c+1) bool ellipsoid in voxels (the same rule in 3D)."""
    h = [half_extent(radius_mm, s) for s in spacing_zyx]
    z, y, x = (np.arange(-n, n + 1, dtype=float) * s for n, s in zip(h, spacing_zyx))
    return (z[:, None, None] ** 2 + y[None, :, None] ** 2) + x[None, None, :] ** 2 <= _r2(radius_mm)


def disc_offsets(radius_mm: float, pixel_size_mm: tuple[float, float]) -> np.ndarray:
    """(n, 2) int (drow, dcol) offsets of the pixels a dab paints around its centre."""
    fp = footprint(radius_mm, pixel_size_mm)
    return np.argwhere(fp) - np.array(fp.shape) // 2


def sphere_offsets(radius_mm: float, spacing_zyx) -> np.ndarray:
    """(n, 3) int (dz, dy, dx) offsets of the voxels a sphere dab paints."""
    b = ball(radius_mm, spacing_zyx)
    return np.argwhere(b) - np.array(b.shape) // 2


def brush_footprint(geometry: PlaneGeometry, radius_mm: float) -> np.ndarray:
    """Cursor preview for a view: the footprint in that plane's (row, col) pixels (symmetric,
    so display flips do not change it)."""
    return footprint(radius_mm, geometry.pixel_size)


def _capsule(labelmap: LabelMap, volume: Volume, a0, a1, radius_mm: float, flat_axis: int | None,
             threshold):
    """Box and mask of voxels within radius of the segment a0-a1 (array indices); None if off the map."""
    sp = np.asarray(labelmap.grid.spacing, float)
    a0, a1 = np.asarray(a0, np.int64), np.asarray(a1, np.int64)
    half = np.array([half_extent(radius_mm, s) for s in sp])
    if flat_axis is not None:
        half[flat_axis] = 0
    lo, hi = np.minimum(a0, a1) - half, np.maximum(a0, a1) + half + 1
    box = clip_box((lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]), labelmap.shape)
    if box is None:
        return None, None
    box = tuple(int(b) for b in box)
    v = [((np.arange(box[2 * a], box[2 * a + 1]) - a0[a]) * sp[a]).reshape([-1 if i == a else 1 for i in range(3)])
         for a in range(3)]
    d = (a1 - a0) * sp
    dd = float(d @ d)
    if dd == 0.0:
        dist2 = (v[0] * v[0] + v[1] * v[1]) + v[2] * v[2]
    else:
        t = np.clip((v[0] * d[0] + v[1] * d[1] + v[2] * d[2]) / dd, 0.0, 1.0)
        e = [v[a] - t * d[a] for a in range(3)]
        dist2 = (e[0] * e[0] + e[1] * e[1]) + e[2] * e[2]
    mask = np.broadcast_to(dist2 <= _r2(radius_mm), tuple(box[1::2][i] - box[::2][i] for i in range(3))).copy()
    if threshold is not None:
        img = volume.array[box[0]:box[1], box[2]:box[3], box[4]:box[5]]
        mask &= (img >= threshold[0]) & (img <= threshold[1])
    return box, mask


class Stroke:
    """One mouse drag = one undo step: ``add(row, col)`` per mouse move, ``finish()`` on release.

        s = Stroke(lm, volume, view.plane_geometry, view.slice_index, radius_mm=3, value=lm.active)
        s.add(r, c)  # press ... move ... move
        s.finish()   # release: one undo step (``cancel()`` restores the map instead)

    Coordinates are plane pixels (see ``editing.plane``). Joins a transaction
    that is already open (then ``finish`` leaves committing to its owner).
    """

    def __init__(self, labelmap: LabelMap, volume: Volume, geometry: PlaneGeometry, slice_index: int,
                 radius_mm: float, value: int, *, sphere: bool = False,
                 threshold: tuple[float, float] | None = None, erase: bool = False, over: int | None = None,
                 name: str | None = None):
        labelmap.check_volume(volume)
        self.labelmap, self.volume, self.geometry = labelmap, volume, geometry
        self.slice_index = int(slice_index)
        self.radius_mm = float(radius_mm)
        self.value = 0 if erase else int(value)
        labelmap._check_value_writable(self.value)
        self.sphere, self.threshold, self.over = bool(sphere), threshold, over
        self._own = not labelmap.editing
        self.edit = labelmap.begin_edit(name or ("erase" if erase else "paint")) if self._own else labelmap._edit
        self._last: tuple[int, int, int] | None = None
        self.changed = 0

    def add(self, row: float, col: float) -> int:
        """Paint from the previous point (or a single dab) to plane pixel (row, col); voxels changed."""
        here = pixel_to_index(self.geometry, self.slice_index, row, col)
        start = here if self._last is None else self._last
        self._last = here
        box, mask = _capsule(self.labelmap, self.volume, start, here, self.radius_mm,
                             None if self.sphere else self.geometry.axis, self.threshold)
        if box is None:
            return 0
        n = self.edit.write(box, mask, self.value, over=self.over)
        self.changed += n
        return n

    def finish(self) -> Step | None:
        return self.edit.commit() if self._own and self.edit.open else None

    def cancel(self) -> None:
        if self._own and self.edit.open:
            self.edit.rollback()

    def __enter__(self) -> Stroke:
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.cancel()


def stroke(labelmap: LabelMap, volume: Volume, geometry: PlaneGeometry, slice_index: int,
           points: Iterable[tuple[float, float]], radius_mm: float, value: int, **options) -> int:
    """Paint a whole polyline of plane pixels (row, col) as one undo step; voxels changed.
    ``options``: sphere, threshold, erase, over, name (as :class:`Stroke`)."""
    with Stroke(labelmap, volume, geometry, slice_index, radius_mm, value, **options) as s:
        for r, c in points:
            s.add(r, c)
    return s.changed


def paint(labelmap: LabelMap, volume: Volume, geometry: PlaneGeometry, slice_index: int, row: float, col: float,
          radius_mm: float, value: int, sphere: bool = False, threshold: tuple[float, float] | None = None,
          erase: bool = False, over: int | None = None) -> int:
    """One dab at plane pixel (row, col) of slice ``slice_index``; voxels changed (one undo step,
    or part of the transaction already open)."""
    return stroke(labelmap, volume, geometry, slice_index, [(row, col)], radius_mm, value,
                  sphere=sphere, threshold=threshold, erase=erase, over=over)
