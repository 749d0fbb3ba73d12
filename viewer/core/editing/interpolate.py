"""Fill between slices: shape-based interpolation of a label drawn on a few slices
(as 3D Slicer's "Fill between slices").

Along ``axis``, every slice holding the label is a key; for each pair of
consecutive keys more than one slice apart, each slice between gets the zero
level of the linearly blended signed distance maps of the two keys
(``scipy.ndimage.distance_transform_edt`` with the in-plane spacing, so the
blend is in millimetres: negative inside, positive outside). Two discs give
discs of intermediate radius; a shape that moves gives shapes that move. Only
the slices between keys are written, only on voxels ``over`` allows (default 0:
unlabelled ones, never another label's), and never on locked labels.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..labels import LabelMap
from ..undo import LabelLocked
from .change import Change, StopCheck, check_stop
from .islands import _boxes


def signed_distance(mask: np.ndarray, sampling) -> np.ndarray:
    """mm to the shape's edge: < 0 inside, > 0 outside (mask padded by one background pixel)."""
    m = np.pad(mask, 1)
    d = ndimage.distance_transform_edt(~m, sampling=sampling) - ndimage.distance_transform_edt(m, sampling=sampling)
    return d[1:-1, 1:-1]


def key_slices(labelmap: LabelMap, value: int, axis: int) -> np.ndarray:
    """Indices along ``axis`` of the slices that hold ``value``."""
    others = tuple(a for a in range(3) if a != axis)
    return np.flatnonzero((labelmap.array == value).any(axis=others))


def plan_fill_between_slices(labelmap: LabelMap, value: int, axis: int, *, over: int | None = 0,
                             should_stop: StopCheck = None) -> Change:
    """What ``fill_between_slices`` would write (nothing is written; may run on a worker)."""
    value = int(value)
    lb = labelmap.labels.get(value)
    if lb is not None and lb.locked:
        raise LabelLocked(f"label {value} ({lb.name}) is locked")
    change = Change("fill between slices")
    boxes = _boxes(labelmap, [value])
    if value not in boxes:
        return change
    sl = boxes[value]
    m = labelmap.array[sl] == value
    others = [a for a in range(3) if a != axis]
    sampling = [labelmap.grid.spacing[a] for a in others]
    keys = np.flatnonzero(m.any(axis=tuple(others)))
    for k0, k1 in zip(keys[:-1], keys[1:]):
        if k1 - k0 < 2:
            continue
        check_stop(should_stop, "fill between slices")
        d0 = signed_distance(np.take(m, k0, axis=axis), sampling)
        d1 = signed_distance(np.take(m, k1, axis=axis), sampling)
        for k in range(k0 + 1, k1):
            t = (k - k0) / (k1 - k0)
            shape2d = (1 - t) * d0 + t * d1 <= 0
            box = [int(b) for s in sl for b in (s.start, s.stop)]
            box[2 * axis], box[2 * axis + 1] = sl[axis].start + k, sl[axis].start + k + 1
            change.add(tuple(box), np.expand_dims(shape2d, axis), value, over=over)
    return change


def fill_between_slices(labelmap: LabelMap, value: int, axis: int, *, over: int | None = 0) -> int:
    """Interpolate ``value`` on the empty slices between its key slices along array ``axis``
    (a view's ``plane_geometry.axis``); one undo step; voxels changed."""
    return plan_fill_between_slices(labelmap, value, axis, over=over).apply(labelmap)
