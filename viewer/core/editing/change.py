"""A planned edit: what an effect will write, computed apart from writing it.

Why: a heavy effect (a 3D flood fill of the body, islands, smoothing, fill
between slices on a CT-sized map) takes seconds. Its *plan* reads the map and
the image only and may run on a worker thread; ``Change.apply`` then writes
the result on the caller's thread as one undo step through ``LabelMap.edit``
(locked labels are checked again at that moment, so a label locked meanwhile
still never changes). The synchronous effects are ``plan(...).apply(labelmap)``,
so both paths give the same voxels.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import Cancelled
from ..labels import LabelMap
from ..undo import Box, Step, box_slices, box_union, mask_box

StopCheck = Callable[[], bool] | None


def check_stop(should_stop: StopCheck, what: str) -> None:
    """Raise Cancelled when the caller asked to stop (checked between the steps of a long plan)."""
    if should_stop is not None and should_stop():
        raise Cancelled(f"{what} cancelled")


@dataclass(frozen=True)
class Write:
    """``Edit.write(box, mask, value, over=over)`` to be done (mask box-shaped, or None: the whole box)."""

    box: Box
    mask: np.ndarray | None
    value: int
    over: int | None = None


@dataclass
class Change:
    """The writes of one effect, in order; applied as one undo step named ``name``."""

    name: str
    writes: list[Write] = field(default_factory=list)

    def add(self, box, mask: np.ndarray | None, value: int, over: int | None = None) -> None:
        self.writes.append(Write(tuple(int(b) for b in box), mask, int(value), over))

    @property
    def empty(self) -> bool:
        return not self.writes

    def apply(self, labelmap: LabelMap) -> int:
        """Write everything as one undo step (nothing when empty); voxels changed."""
        if not self.writes:
            return 0
        with labelmap.edit(self.name) as e:
            return sum(e.write(w.box, w.mask, w.value, over=w.over) for w in self.writes)

    def prepare(self, labelmap: LabelMap, writable: np.ndarray) -> Prepared:
        """Do the writes on a copy of their box and build the undo step (worker-safe: reads only).

        ``writable`` is ``labelmap._writable_lut()`` as the plan saw it. Writing the result is then
        a copy of the box on the UI thread (``Prepared.apply``) instead of masks, snapshots and the
        step's diff, valid only while the map is as it was read here.
        """
        box = None
        for w in self.writes:
            box = box_union(box, w.box)
        if box is None:
            return Prepared(self, None, None, 0)
        old = labelmap.array[box_slices(box)].copy()
        new = old.copy()
        changed = 0
        for w in self.writes:
            local = tuple(b - o for b, o in zip(w.box, np.repeat(box[::2], 2)))
            changed += simulate(new, writable, Write(local, w.mask, w.value, w.over))
        diff = mask_box(old != new)
        if diff is None:
            return Prepared(self, None, None, changed)
        sl = box_slices(diff)
        tight = tuple(int(o + d) for o, d in zip(np.repeat(box[::2], 2), diff))
        return Prepared(self, Step.from_boxes(self.name, tight, old[sl], new[sl]), new[sl], changed)


@dataclass
class Prepared:
    """A change already done on a copy: its undo step and the new contents of the step's box."""

    change: Change
    step: Step | None
    contents: np.ndarray | None
    changed: int  # voxels written, counted as Edit.write counts them

    def apply(self, labelmap: LabelMap) -> int:
        """One undo step; the caller guarantees the voxels and locks are as ``prepare`` read them."""
        for v in {w.value for w in self.change.writes}:
            labelmap._check_value_writable(v)
        if self.step is not None:
            labelmap.apply_prepared(self.step, self.contents)
        return self.changed


def simulate(array: np.ndarray, writable: np.ndarray, w: Write) -> int:
    """Apply ``w`` to a scratch copy of the map as ``Edit.write`` would; voxels changed."""
    view = array[box_slices(w.box)]
    target = writable[view]
    if w.mask is not None:
        target &= w.mask
    if w.over is not None:
        target &= view == w.over
    target &= view != w.value
    view[target] = w.value
    return int(np.count_nonzero(target))
