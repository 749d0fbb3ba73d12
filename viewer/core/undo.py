"""Undo for label maps: each step keeps only the box that changed, and one
mouse drag is one step.

Why boxes: a label map of a CT is ~80 MB; keeping copies per step would fill
memory in a few strokes. A step stores the tight bounding box of the voxels
that really changed, as either

* dense:  the old and the new values of the whole box, or
* sparse: the box's change mask packed to bits plus the old and new values of
  the changed voxels only (each collapses to one number when uniform, as the
  new values of a brush or fill and the old values of painting on background are),

whichever is smaller. Undo/redo write those values back, so states are
restored bit for bit. The stack is bounded by step count and bytes; the
oldest steps go first.

An :class:`Edit` is the transaction effects write through: it snapshots the
old contents lazily, block by block, the first time a block is touched, grows
one union box, refuses to change locked labels, notifies the label map's
subscribers after every write (live redraw), and at ``commit`` turns the
whole transaction into one :class:`Step`. Boxes are half-open
``(z0, z1, y0, y1, x0, x1)`` in array indices.

Every change to the voxels (a write, commit, rollback) holds the label map's edit
lock (``LabelMap.lock``), so the autosaver can copy a consistent state from its
own thread (``LabelMap.committed_state``) while a drag goes on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Box = tuple[int, int, int, int, int, int]


class LabelLocked(ValueError):
    """Writing a locked label was asked for (locked labels never change)."""


# -- boxes -------------------------------------------------------------------------
def box_slices(box: Box) -> tuple[slice, slice, slice]:
    return slice(box[0], box[1]), slice(box[2], box[3]), slice(box[4], box[5])


def box_shape(box: Box) -> tuple[int, int, int]:
    return box[1] - box[0], box[3] - box[2], box[5] - box[4]


def box_union(a: Box | None, b: Box | None) -> Box | None:
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]),
            min(a[4], b[4]), max(a[5], b[5]))


def box_intersect(a: Box, b: Box) -> Box | None:
    out = (max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3]),
           max(a[4], b[4]), min(a[5], b[5]))
    return out if out[0] < out[1] and out[2] < out[3] and out[4] < out[5] else None


def mask_box(mask: np.ndarray, origin=(0, 0, 0)) -> Box | None:
    """Tight box of the True voxels of a 3D mask whose [0, 0, 0] sits at ``origin``."""
    out = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=others))
        if hit.size == 0:
            return None
        out += [int(origin[axis] + hit[0]), int(origin[axis] + hit[-1] + 1)]
    return tuple(out)  # type: ignore[return-value]


def clip_box(box, shape) -> Box | None:
    """Clip a (possibly out-of-range) box to an array shape; None when nothing is left."""
    b = (max(box[0], 0), min(box[1], shape[0]), max(box[2], 0), min(box[3], shape[1]),
         max(box[4], 0), min(box[5], shape[2]))
    return b if b[0] < b[1] and b[2] < b[3] and b[4] < b[5] else None


# -- steps -------------------------------------------------------------------------
@dataclass
class Step:
    """One undoable change: voxels of one box (dense or sparse form) and label-table entries."""

    name: str
    box: Box | None
    old: np.ndarray | None = None
    new: np.ndarray | None = None
    packed: np.ndarray | None = None  # sparse form: np.packbits of the box's change mask
    table: dict = field(default_factory=dict)  # value -> (Label before or None, Label after or None)
    token_before: int = 0
    token_after: int = 0

    @classmethod
    def from_boxes(cls, name: str, box: Box, old: np.ndarray, new: np.ndarray, **kw) -> Step:
        """Build the smaller of the dense and sparse forms from the old/new box contents."""
        changed = old != new
        dense = 2 * old.nbytes
        packed = np.packbits(changed.ravel())
        old_vals, new_vals = _squeeze(old[changed]), _squeeze(new[changed])
        if packed.nbytes + old_vals.nbytes + new_vals.nbytes < dense:
            return cls(name, box, old_vals, new_vals, packed, **kw)
        return cls(name, box, old.copy(), new.copy(), None, **kw)

    @property
    def sparse(self) -> bool:
        return self.packed is not None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.old, self.new, self.packed) if a is not None) + 64 * len(self.table)

    def write(self, array: np.ndarray, undo: bool) -> None:
        """Put the old (``undo``) or new values back into ``array``."""
        if self.box is None:
            return
        values = self.old if undo else self.new
        view = array[box_slices(self.box)]
        if self.packed is None:
            view[...] = values
            return
        mask = np.unpackbits(self.packed, count=view.size).view(bool).reshape(view.shape)
        view[mask] = values


def _squeeze(values: np.ndarray) -> np.ndarray:
    """One element when all are equal (a brush or fill writes one value, often over background)."""
    if values.size > 1 and values.min() == values.max():
        return values[:1].copy()
    return values


class UndoStack:
    """Bounded undo/redo history of :class:`Step` s (steps beyond ``max_steps`` or
    ``max_bytes`` are dropped oldest first; the latest step is always kept)."""

    def __init__(self, max_steps: int = 200, max_bytes: int = 256 * 2**20):
        self.max_steps = int(max_steps)
        self.max_bytes = int(max_bytes)
        self._done: list[Step] = []
        self._undone: list[Step] = []

    def __len__(self) -> int:
        return len(self._done)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self._done) + sum(s.nbytes for s in self._undone)

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    @property
    def undo_name(self) -> str | None:
        """Name of the step ``undo`` would revert (for an "Undo Brush" menu text)."""
        return self._done[-1].name if self._done else None

    @property
    def redo_name(self) -> str | None:
        return self._undone[-1].name if self._undone else None

    def push(self, step: Step) -> None:
        self._done.append(step)
        self._undone.clear()
        self._trim()

    def undo(self, labelmap) -> Step | None:
        if not self._done:
            return None
        step = self._done.pop()
        labelmap._apply_step(step, undo=True)
        self._undone.append(step)
        return step

    def redo(self, labelmap) -> Step | None:
        if not self._undone:
            return None
        step = self._undone.pop()
        labelmap._apply_step(step, undo=False)
        self._done.append(step)
        return step

    def clear(self) -> None:
        self._done.clear()
        self._undone.clear()

    def _trim(self) -> None:
        while len(self._done) > max(self.max_steps, 1):
            self._done.pop(0)
        total = self.nbytes
        while total > self.max_bytes and len(self._done) > 1:
            total -= self._done.pop(0).nbytes


# -- the transaction -----------------------------------------------------------------
class Edit:
    """One undoable transaction on a label map (get one from ``LabelMap.edit``/``begin_edit``).

    ``write`` and ``assign`` change voxels immediately (subscribers hear the
    changed box at once, so a drag redraws live); ``commit`` pushes one step
    for everything written; ``rollback`` restores the state at the start.
    """

    BLOCK = (8, 64, 64)  # snapshot granularity (z, y, x): 32 KiB of uint8

    def __init__(self, labelmap, name: str):
        self.labelmap = labelmap
        self.name = name
        self.box: Box | None = None  # union of everything changed so far
        self.changed = 0  # voxels changed by write/assign (a voxel changed twice counts twice)
        self.table: dict = {}  # value -> (before, after) label-table entries touched
        self._blocks: dict[tuple[int, int, int], np.ndarray] = {}
        self._token = labelmap._token
        self.version_before = labelmap.version  # the state a recovery snapshot falls back to
        self.open = True

    # -- writing -----------------------------------------------------------------------
    def write(self, box: Box, mask: np.ndarray | None, value: int, over: int | None = None) -> int:
        """Set ``value`` where ``mask`` (box-shaped; None = whole box) is True.

        Voxels of locked labels never change; ``over`` limits the change to voxels
        currently holding that value (0: only unlabelled voxels). Returns the
        number of voxels changed.
        """
        lm = self._check_open()
        value = int(value)
        lm._check_value_writable(value)
        box = tuple(int(b) for b in box)
        view = lm.array[box_slices(box)]
        target = lm._writable_lut()[view]
        if mask is not None:
            target &= mask
        if over is not None:
            target &= view == over
        target &= view != value
        return self._apply(box, view, target, value)

    def assign(self, box: Box, values: np.ndarray, mask: np.ndarray | None = None) -> int:
        """Set the box to ``values`` (box-shaped ints) where ``mask``; locked labels stay.

        For effects that compute whole new contents (e.g. replacing a region by an
        AI result). Every value written must be 0 or an unlocked label of the table.
        """
        lm = self._check_open()
        box = tuple(int(b) for b in box)
        view = lm.array[box_slices(box)]
        values = np.asarray(values)
        target = lm._writable_lut()[view] & (view != values)
        if mask is not None:
            target &= mask
        if not target.any():
            return 0
        for v in np.unique(values[target]):
            lm._check_value_writable(int(v))
        return self._apply(box, view, target, values[target])

    def _apply(self, box: Box, view: np.ndarray, target: np.ndarray, values) -> int:
        n = int(np.count_nonzero(target))
        if n == 0:
            return 0
        changed = mask_box(target, box[::2])
        with self.labelmap.lock:  # the old blocks, the voxels and the box move together
            self._snapshot(changed)
            view[target] = values
            self.box = box_union(self.box, changed)
            self.changed += n
            self.labelmap._voxels_changed(changed)
        return n

    def _snapshot(self, box: Box) -> None:
        """Copy, once per transaction, every block of the label map that ``box`` touches."""
        arr = self.labelmap.array
        b = self.BLOCK
        ranges = [range(box[2 * a] // b[a], (box[2 * a + 1] - 1) // b[a] + 1) for a in range(3)]
        for i in ranges[0]:
            for j in ranges[1]:
                for k in ranges[2]:
                    if (i, j, k) not in self._blocks:
                        self._blocks[(i, j, k)] = arr[i * b[0]:(i + 1) * b[0], j * b[1]:(j + 1) * b[1],
                                                      k * b[2]:(k + 1) * b[2]].copy()

    def _block_box(self, key) -> Box:
        b, shape = self.BLOCK, self.labelmap.array.shape
        return tuple(int(v) for a in range(3)  # type: ignore[return-value]
                     for v in (key[a] * b[a], min((key[a] + 1) * b[a], shape[a])))

    def _old_contents(self, box: Box, new: np.ndarray) -> np.ndarray:
        """The box as it was at the start: current values with every snapshotted block put back."""
        old = new.copy()
        for key, snap in self._blocks.items():
            bb = self._block_box(key)
            inter = box_intersect(bb, box)
            if inter is None:
                continue
            dst = tuple(slice(inter[2 * a] - box[2 * a], inter[2 * a + 1] - box[2 * a]) for a in range(3))
            src = tuple(slice(inter[2 * a] - bb[2 * a], inter[2 * a + 1] - bb[2 * a]) for a in range(3))
            old[dst] = snap[src]
        return old

    def record_table(self, value: int, before, after) -> None:
        """Note a label-table change (Label copies or None) so the step can undo it."""
        self._check_open()
        first = self.table.get(value, (before, None))[0]
        self.table[value] = (first, after)

    # -- ending ------------------------------------------------------------------------
    def commit(self) -> Step | None:
        """End the transaction; push and return its step (None when nothing changed)."""
        lm = self._check_open()
        with lm.lock:  # no snapshot sees the transaction ended but its token not yet moved
            return self._commit(lm)

    def _commit(self, lm) -> Step | None:
        self.open = False
        lm._edit = None
        step = None
        if self.box is not None:
            new = lm.array[box_slices(self.box)]
            old = self._old_contents(self.box, new)
            diff = mask_box(old != new)
            if diff is not None:
                local = (slice(diff[0], diff[1]), slice(diff[2], diff[3]), slice(diff[4], diff[5]))
                box = tuple(int(o + d) for o, d in zip(np.repeat(self.box[::2], 2), diff))
                step = Step.from_boxes(self.name, box, old[local], new[local])
        table = {v: ba for v, ba in self.table.items() if ba[0] != ba[1]}
        if table:
            step = step or Step(self.name, None)
            step.table = table
        self._blocks.clear()
        if step is not None:
            step.token_before = self._token
            step.token_after = lm._new_token()
            lm.history.push(step)
        return step

    def rollback(self) -> None:
        """Undo everything this transaction wrote and end it (nothing is pushed)."""
        lm = self._check_open()
        with lm.lock:
            self._rollback(lm)

    def _rollback(self, lm) -> None:
        self.open = False
        lm._edit = None
        if self.box is not None:
            view = lm.array[box_slices(self.box)]
            view[...] = self._old_contents(self.box, view)
            lm._voxels_changed(self.box)
        for value, (before, _after) in self.table.items():
            lm._set_table_entry(value, before)
        lm._token = self._token  # back to the content it started from
        self._blocks.clear()

    def _check_open(self):
        if not self.open:
            raise RuntimeError(f"edit {self.name!r} is already finished")
        return self.labelmap
