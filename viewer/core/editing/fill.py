"""Flood fill: the connected region of similar intensity around a seed, in the plane or in 3D.

Region = voxels connected to the seed (face neighbours, or also edge/corner
neighbours with ``full_connectivity``) whose intensity lies in
[I_seed - tolerance, I_seed + tolerance] and that may be written: locked
labels are walls, and with ``over`` (e.g. 0 = only unlabelled voxels) voxels
holding anything else are walls too.

Speed: ``scipy.ndimage.label`` runs on a window around the seed (``window``
voxels each way); only when the region touches a window side that is not the
volume's edge is the window grown (x4) and the labelling redone. Small regions
cost a small window; a whole-body fill costs one or two full passes.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..labels import LabelMap
from ..mpr import PlaneGeometry
from ..undo import Box, box_slices, clip_box
from ..volume import Volume
from .change import Change, StopCheck, check_stop
from .plane import pixel_to_index


def flood_region(labelmap: LabelMap, volume: Volume, seed_zyx, tolerance: float = 0.0, *,
                 flat_axis: int | None = None, over: int | None = None, full_connectivity: bool = False,
                 window: int = 64, should_stop: StopCheck = None) -> tuple[Box | None, np.ndarray | None]:
    """(box, box-shaped mask) of the region around array voxel ``seed_zyx`` (nothing is written).

    ``flat_axis``: stay in the plane through the seed perpendicular to that array axis (2D fill).
    (None, None) when the seed is outside the map or not writable.
    """
    labelmap.check_volume(volume)
    seed = np.asarray(seed_zyx, np.int64)
    shape = np.array(labelmap.shape)
    if np.any(seed < 0) or np.any(seed >= shape):
        return None, None
    i_seed = volume.array[tuple(seed)]
    lo, hi = i_seed - tolerance, i_seed + tolerance
    writable = labelmap._writable_lut()
    structure = ndimage.generate_binary_structure(3, 3 if full_connectivity else 1)
    half = np.full(3, max(int(window), 1))
    while True:
        check_stop(should_stop, "fill")
        if flat_axis is not None:
            half[flat_axis] = 0
        box = clip_box(tuple(v for a in range(3) for v in (seed[a] - half[a], seed[a] + half[a] + 1)), shape)
        sl = box_slices(box)
        img, cur = volume.array[sl], labelmap.array[sl]
        cand = (img >= lo) & (img <= hi) & writable[cur]
        if over is not None:
            cand &= cur == over
        local = tuple(seed - np.array(box[::2]))
        if not cand[local]:
            return None, None
        lab, _ = ndimage.label(cand, structure)
        region = lab == lab[local]
        grow = False
        for a in range(3):
            if a == flat_axis:
                continue
            first = np.take(region, 0, axis=a).any() and box[2 * a] > 0
            last = np.take(region, -1, axis=a).any() and box[2 * a + 1] < shape[a]
            grow |= bool(first or last)
        if not grow:
            return box, region
        half = half * 4


def plan_flood_fill(labelmap: LabelMap, volume: Volume, geometry: PlaneGeometry, slice_index: int, row: float,
                    col: float, value: int, tolerance: float = 0.0, *, three_d: bool = False, erase: bool = False,
                    over: int | None = None, full_connectivity: bool = False, window: int = 64,
                    should_stop: StopCheck = None) -> Change:
    """What ``flood_fill`` would write (nothing is written; may run on a worker)."""
    seed = pixel_to_index(geometry, slice_index, row, col)
    write = 0 if erase else int(value)
    labelmap._check_value_writable(write)
    box, mask = flood_region(labelmap, volume, seed, tolerance, flat_axis=None if three_d else geometry.axis,
                             over=over, full_connectivity=full_connectivity, window=window,
                             should_stop=should_stop)
    change = Change("fill")
    if box is not None:
        change.add(box, mask, write, over)
    return change


def flood_fill(labelmap: LabelMap, volume: Volume, geometry: PlaneGeometry, slice_index: int, row: float,
               col: float, value: int, tolerance: float = 0.0, *, three_d: bool = False, erase: bool = False,
               over: int | None = None, full_connectivity: bool = False, window: int = 64) -> int:
    """Fill the region around plane pixel (row, col) of slice ``slice_index`` with ``value``
    (0 with ``erase``); in the plane, or in 3D with ``three_d``. One undo step; voxels changed."""
    return plan_flood_fill(labelmap, volume, geometry, slice_index, row, col, value, tolerance, three_d=three_d,
                           erase=erase, over=over, full_connectivity=full_connectivity,
                           window=window).apply(labelmap)
