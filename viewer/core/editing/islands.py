"""Islands: drop small connected pieces of a label, or keep only its largest piece.

Components are found with ``scipy.ndimage.label`` inside each label's bounding
box (``ndimage.find_objects``), with face connectivity by default (as ITK's
connected components) or full connectivity. With ``slice_axis`` the work is
per slice: the structuring element is flat along that axis, so pieces never
join across slices and "largest" means largest in each slice. Removed voxels
become 0. Locked labels are skipped (or refused when named explicitly).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..labels import LabelMap
from ..undo import LabelLocked
from .change import Change, StopCheck, check_stop


def _structure(full_connectivity: bool, slice_axis: int | None) -> np.ndarray:
    s = ndimage.generate_binary_structure(3, 3 if full_connectivity else 1)
    if slice_axis is not None:
        keep = np.zeros(3, bool)
        keep[1] = True
        s = s & keep.reshape([-1 if a == slice_axis else 1 for a in range(3)])
    return s


def _targets(labelmap: LabelMap, value: int | None) -> list[int]:
    if value is not None:
        lb = labelmap.labels.get(int(value))
        if lb is not None and lb.locked:
            raise LabelLocked(f"label {value} ({lb.name}) is locked")
        return [int(value)]
    present = np.flatnonzero(np.bincount(labelmap.array.ravel()))
    return [int(v) for v in present if v != 0 and not (v in labelmap.labels and labelmap.labels[v].locked)]


def _boxes(labelmap: LabelMap, values: list[int]) -> dict[int, tuple]:
    objs = ndimage.find_objects(labelmap.array, max_label=max(values, default=0))
    return {v: objs[v - 1] for v in values if v - 1 < len(objs) and objs[v - 1] is not None}


def _plan(labelmap: LabelMap, name: str, value, min_voxels: int | None, slice_axis, full_connectivity,
          should_stop: StopCheck = None) -> Change:
    values = _targets(labelmap, value)
    structure = _structure(full_connectivity, slice_axis)
    change = Change(name)
    for v, sl in _boxes(labelmap, values).items():  # each label erases only itself: no write affects another
        check_stop(should_stop, name)
        mask = labelmap.array[sl] == v
        lab, n = ndimage.label(mask, structure)
        if n <= 1 and min_voxels is None:
            continue
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        if min_voxels is not None:
            drop = sizes < int(min_voxels)
        else:  # keep the largest (per slice when slice_axis): drop every other component
            drop = np.ones(n + 1, bool)
            if slice_axis is None:
                drop[1 + int(np.argmax(sizes[1:]))] = False
            else:
                where = ndimage.find_objects(lab)
                at = np.array([w[slice_axis].start for w in where])
                for k in np.unique(at):
                    ids = np.flatnonzero(at == k) + 1
                    drop[ids[int(np.argmax(sizes[ids]))]] = False
        drop[0] = False
        if not drop[1:].any():
            continue
        change.add(tuple(int(b) for s in sl for b in (s.start, s.stop)), drop[lab], 0, over=v)
    return change


def plan_remove_small_islands(labelmap: LabelMap, min_voxels: int, value: int | None = None, *,
                              slice_axis: int | None = None, full_connectivity: bool = False,
                              should_stop: StopCheck = None) -> Change:
    """What ``remove_small_islands`` would write (nothing is written; may run on a worker)."""
    return _plan(labelmap, "remove small islands", value, int(min_voxels), slice_axis, full_connectivity,
                 should_stop)


def plan_keep_largest_island(labelmap: LabelMap, value: int | None = None, *, slice_axis: int | None = None,
                             full_connectivity: bool = False, should_stop: StopCheck = None) -> Change:
    """What ``keep_largest_island`` would write (nothing is written; may run on a worker)."""
    return _plan(labelmap, "keep largest island", value, None, slice_axis, full_connectivity, should_stop)


def remove_small_islands(labelmap: LabelMap, min_voxels: int, value: int | None = None, *,
                         slice_axis: int | None = None, full_connectivity: bool = False) -> int:
    """Erase the pieces of ``value`` (None: every unlocked label) with fewer than ``min_voxels``
    voxels; one undo step; voxels changed."""
    return plan_remove_small_islands(labelmap, min_voxels, value, slice_axis=slice_axis,
                                     full_connectivity=full_connectivity).apply(labelmap)


def keep_largest_island(labelmap: LabelMap, value: int | None = None, *, slice_axis: int | None = None,
                        full_connectivity: bool = False) -> int:
    """Keep only the largest piece of ``value`` (None: of every unlocked label, each its own);
    per slice with ``slice_axis``. One undo step; voxels changed."""
    return plan_keep_largest_island(labelmap, value, slice_axis=slice_axis,
                                    full_connectivity=full_connectivity).apply(labelmap)
