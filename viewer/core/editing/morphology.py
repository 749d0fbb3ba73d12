"""Smoothing by morphological opening (removes spurs and thin bridges) or closing
(fills small holes and gaps), with a radius in millimetres.

The structuring element is the brush's ellipsoid (``brush.ball``: voxel centres
within the radius, on the volume's spacing), so 2 mm means 2 mm on every axis
of an anisotropic grid; with ``slice_axis`` it is flat along that axis and each
slice is smoothed on its own. Each label is processed in its bounding box
padded with background beyond the radius (so the volume's edge acts as
background, never as a wall). Opening only erases the label's voxels; closing
only adds voxels that ``over`` allows (default 0: unlabelled voxels, never
another label's). Locked labels are skipped.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..labels import LabelMap
from ..undo import clip_box
from .brush import ball
from .change import Change, StopCheck, check_stop, simulate
from .islands import _boxes, _targets

OPERATIONS = ("opening", "closing")


def structuring_element(radius_mm: float, spacing_zyx, slice_axis: int | None = None) -> np.ndarray:
    """Ellipsoid of ``radius_mm`` on the grid (flat along ``slice_axis`` when given)."""
    b = ball(radius_mm, spacing_zyx)
    if slice_axis is not None:  # the in-plane disc only
        b = np.expand_dims(np.take(b, b.shape[slice_axis] // 2, axis=slice_axis), slice_axis)
    return b


def plan_smooth(labelmap: LabelMap, operation: str, radius_mm: float, value: int | None = None, *,
                slice_axis: int | None = None, over: int | None = 0, should_stop: StopCheck = None) -> Change:
    """What ``smooth`` would write (nothing is written; may run on a worker)."""
    operation = {"open": "opening", "close": "closing"}.get(operation, operation)
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; expected one of {OPERATIONS}")
    structure = structuring_element(radius_mm, labelmap.grid.spacing, slice_axis)
    pad = np.array(structure.shape) // 2 + 1
    change = Change(operation)
    targets = _boxes(labelmap, _targets(labelmap, value))
    # a closing that may write over other labels changes what the next label sees: plan on a scratch copy
    array = labelmap.array.copy() if len(targets) > 1 and over != 0 else labelmap.array
    writable = labelmap._writable_lut()
    for v, sl in targets.items():
        check_stop(should_stop, operation)
        lo = np.array([s.start for s in sl])
        hi = np.array([s.stop for s in sl])
        if operation == "closing":  # may grow up to the radius beyond the label's box
            lo, hi = lo - pad, hi + pad
        box = clip_box(tuple(int(b) for a in range(3) for b in (lo[a], hi[a])), labelmap.shape)
        mask = array[box[0]:box[1], box[2]:box[3], box[4]:box[5]] == v
        padded = np.pad(mask, [(p, p) for p in pad])
        if operation == "opening":
            out = ndimage.binary_opening(padded, structure)
        else:
            out = ndimage.binary_closing(padded, structure)
        out = out[pad[0]:-pad[0], pad[1]:-pad[1], pad[2]:-pad[2]]
        if operation == "opening":
            change.add(box, mask & ~out, 0, over=v)
        else:
            change.add(box, out & ~mask, v, over=over)
        if array is not labelmap.array:
            simulate(array, writable, change.writes[-1])
    return change


def smooth(labelmap: LabelMap, operation: str, radius_mm: float, value: int | None = None, *,
           slice_axis: int | None = None, over: int | None = 0) -> int:
    """Open or close (``operation`` "opening"/"open" or "closing"/"close") ``value`` (None: every
    unlocked label, one after the other); one undo step; voxels changed."""
    return plan_smooth(labelmap, operation, radius_mm, value, slice_axis=slice_axis, over=over).apply(labelmap)


def opening(labelmap: LabelMap, radius_mm: float, value: int | None = None, **kw) -> int:
    return smooth(labelmap, "opening", radius_mm, value, **kw)


def closing(labelmap: LabelMap, radius_mm: float, value: int | None = None, **kw) -> int:
    return smooth(labelmap, "closing", radius_mm, value, **kw)
