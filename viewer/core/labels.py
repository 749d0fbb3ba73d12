"""LabelMap: the segmentation being edited — integer voxels on a Volume's grid,
a label table, undo, and change notifications (no Qt).

As napari's labels layer, the data model lives apart from the widgets: the UI
``subscribe``s and redraws the box it is told about; effects never talk to
widgets. Every voxel change goes through an :class:`~viewer.core.undo.Edit`
(``with labelmap.edit("brush") as e: e.write(box, mask, value)``), which
makes it undoable, keeps locked labels intact and notifies subscribers.

Rules:

* voxels are uint8, or uint16 once a label value above 255 is added (the array
  object is then replaced and subscribers hear ``None``);
* label 0 is background; labels 1..65535 are described by :class:`Label`;
* locked labels are never overwritten or erased by any edit; hidden labels are
  still data (they are edited, counted and exported like any other — lock a
  label to protect it);
* subscribers get ``callback(box)`` with the changed box ``(z0, z1, y0, y1, x0,
  x1)`` (half-open array indices) or ``None`` for "anything may have changed"
  (label table, dtype);
* ``version`` grows with every change; ``dirty`` says whether the content differs
  from the last ``mark_saved`` (undoing back to the saved state is clean again);
* every change holds ``lock`` (the edit lock) while it writes; ``committed_state()``
  copies the map under it from any thread (the autosaver's), leaving out a
  transaction still open — a recovery snapshot is never half a stroke.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from .colors import DEFAULT_LABEL_COLORS, label_color
from .undo import Box, Edit, LabelLocked, Step, UndoStack, box_slices
from .volume import SourceInfo, Volume

MAX_LABEL = 65535
_STATS_SLAB = 16  # slices per chunk in stats(): bounds the float temporaries


@dataclass
class Label:
    """One label value and how it is shown and edited."""

    value: int
    name: str
    color: tuple[int, int, int] = (255, 0, 0)
    opacity: float = 1.0  # relative to the layer's opacity
    visible: bool = True
    locked: bool = False
    algorithm: str = "MANUAL"  # DICOM SEG SegmentAlgorithmType: MANUAL, SEMIAUTOMATIC, AUTOMATIC
    algorithm_name: str = ""  # e.g. the model id that produced it

    def __post_init__(self) -> None:
        self.value = int(self.value)
        if not 1 <= self.value <= MAX_LABEL:
            raise ValueError(f"label value must be 1..{MAX_LABEL}, got {self.value}")
        self.color = tuple(int(np.clip(c, 0, 255)) for c in self.color[:3])  # type: ignore[assignment]
        self.opacity = float(np.clip(self.opacity, 0.0, 1.0))
        self.name = str(self.name).strip()
        if not self.name:
            raise ValueError("a label needs a name")


class CommittedState(NamedTuple):
    """A private copy of a label map between two edits (see ``LabelMap.committed_state``)."""

    array: np.ndarray
    labels: list[Label]
    version: int
    dirty: bool  # differs from the last ``mark_saved``


class Grid(NamedTuple):
    """The voxel grid a label map lives on (array order, as Volume)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[tuple[float, ...], ...]

    @classmethod
    def of(cls, volume: Volume) -> Grid:
        return cls(tuple(int(s) for s in volume.shape), tuple(float(s) for s in volume.spacing),
                   tuple(float(o) for o in volume.origin), tuple(tuple(float(v) for v in r) for r in volume.direction))

    def matches(self, volume: Volume, tol: float = 1e-4) -> bool:
        return (self.shape == tuple(volume.shape) and np.allclose(self.spacing, volume.spacing, atol=tol)
                and np.allclose(self.origin, volume.origin, atol=tol)
                and np.allclose(self.direction, volume.direction, atol=tol))


class LabelMap:
    """Integer label voxels aligned to ``volume`` plus the label table (see the module doc)."""

    def __init__(self, volume: Volume, array: np.ndarray | None = None,
                 labels: Sequence[Label] | None = None, max_undo_bytes: int = 256 * 2**20):
        if array is None:
            array = np.zeros(volume.shape, np.uint8)
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[np.newaxis]
        if tuple(array.shape) != tuple(volume.shape):
            raise ValueError(f"label array {tuple(array.shape)} does not match the volume {tuple(volume.shape)}")
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            raise ValueError(f"a label map holds integers, not {array.dtype}")
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if lo < 0 or hi > MAX_LABEL:
            raise ValueError(f"label values must be 0..{MAX_LABEL}, got {lo}..{hi}")
        dtype = np.uint8 if hi <= 255 and max((lb.value for lb in labels or ()), default=0) <= 255 else np.uint16
        self.array: np.ndarray = np.ascontiguousarray(array, dtype=dtype)
        self.grid = Grid.of(volume)
        self.source_series_uid = volume.info.series_uid
        self.source_info = volume.info
        self._labels: dict[int, Label] = {}
        self._locked = np.zeros(MAX_LABEL + 1, bool)
        self._subscribers: list[Callable[[Box | None], None]] = []
        self._edit: Edit | None = None
        # the edit lock: held by every write (stroke, fill, undo, table) and by committed_state()
        self.lock = threading.RLock()
        self.history = UndoStack(max_bytes=max_undo_bytes)
        self.version = 0
        self.saved_version = 0
        self._tokens = 0
        self._token = 0
        self._saved_token = 0
        self.active: int | None = None
        for lb in labels or ():
            self._add(replace(lb))
        if self._labels:
            self.active = min(self._labels)

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_label_array(cls, array: np.ndarray, volume: Volume,
                         names: Mapping[int, str] | Sequence[str] | None = None,
                         algorithm: str = "AUTOMATIC", algorithm_name: str = "") -> LabelMap:
        """Wrap an AI result: ``names`` is {value: name} or a class list (index = value,
        index 0 = background, skipped). Values present without a name get "Label N"."""
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[np.newaxis]
        if isinstance(names, Mapping):
            named = {int(k): str(v) for k, v in names.items() if int(k) != 0}
        else:
            named = {i: str(n) for i, n in enumerate(names or []) if i != 0}
        present = [int(v) for v in np.unique(array) if v != 0]
        labels, used = [], set()
        for v in sorted(set(named) | set(present)):
            name = named.get(v, f"Label {v}")
            base, i = name, 2
            while name.lower() in used:  # names stay unique
                name, i = f"{base} {i}", i + 1
            used.add(name.lower())
            labels.append(Label(v, name, label_color(v), algorithm=algorithm, algorithm_name=algorithm_name))
        return cls(volume, array, labels)

    def as_volume(self) -> Volume:
        """The label voxels as a Volume on the source grid (for export and resampling code)."""
        g = self.grid
        info = replace(self.source_info) if self.source_info is not None else SourceInfo()
        return Volume(self.array, np.array(g.spacing), np.array(g.origin), np.array(g.direction), info)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    def check_volume(self, volume: Volume) -> None:
        """Refuse a volume whose grid is not this map's (an effect reading the wrong image)."""
        if tuple(volume.shape) != self.shape:
            raise ValueError(f"volume {tuple(volume.shape)} is not on the label map's grid {self.shape}")

    # -- label table ----------------------------------------------------------------
    @property
    def labels(self) -> dict[int, Label]:
        """The table (value -> Label) as copies, sorted by value: change it with the methods
        below, which keep the lock table and the subscribers in step."""
        return {v: replace(lb) for v, lb in sorted(self._labels.items())}

    def label(self, value: int) -> Label:
        """A copy of one entry (KeyError naming the value when there is none)."""
        return replace(self._label(value))

    def _label(self, value: int) -> Label:
        try:
            return self._labels[int(value)]
        except KeyError:
            raise KeyError(f"no label {value}") from None

    def value_of(self, name: str) -> int:
        for v, lb in self._labels.items():
            if lb.name.lower() == name.strip().lower():
                return v
        raise KeyError(f"no label named {name!r}")

    def next_value(self) -> int:
        """Smallest value neither in the table nor held by a deleted label that undo/redo can bring back."""
        taken = set(self._labels)
        for step in (*self.history._done, *self.history._undone):
            taken.update(step.table)
        v = 1
        while v in taken:
            v += 1
        return v

    def add_label(self, name: str | None = None, color: tuple[int, int, int] | None = None,
                  value: int | None = None, **fields) -> Label:
        """Add a label (default: next free value, "Label N", the default colour) and make it active."""
        value = self.next_value() if value is None else int(value)
        if value in self._labels:
            raise ValueError(f"label {value} already exists ({self._labels[value].name!r})")
        lb = Label(value, name or f"Label {value}", label_color(value) if color is None else color, **fields)
        with self.lock:
            self._add(lb)
            self.active = lb.value
            self._table_changed()
        return lb

    def _add(self, lb: Label) -> None:
        self._check_name(lb.name, lb.value)
        with self.lock:
            if lb.value > 255 and self.array.dtype == np.uint8:
                self.array = self.array.astype(np.uint16)
            self._labels[lb.value] = lb
            self._locked[lb.value] = lb.locked

    def _check_name(self, name: str, value: int) -> None:
        for v, other in self._labels.items():
            if v != value and other.name.lower() == name.strip().lower():
                raise ValueError(f"label name {name!r} is already used by label {v}")

    def rename(self, value: int, name: str) -> None:
        lb = self._label(value)
        self._check_name(name, value)
        name = Label(1, name).name
        with self.lock:
            lb.name = name
            self._table_changed()

    def set_color(self, value: int, color: tuple[int, int, int]) -> None:
        lb = self._label(value)
        with self.lock:
            lb.color = tuple(int(np.clip(c, 0, 255)) for c in color[:3])  # type: ignore[assignment]
            self._table_changed()

    def set_opacity(self, value: int, opacity: float) -> None:
        lb = self._label(value)
        with self.lock:
            lb.opacity = float(np.clip(opacity, 0.0, 1.0))
            self._table_changed()

    def set_visible(self, value: int, visible: bool) -> None:
        lb = self._label(value)
        with self.lock:
            lb.visible = bool(visible)
            self._table_changed()

    def set_locked(self, value: int, locked: bool) -> None:
        lb = self._label(value)
        with self.lock:
            lb.locked = bool(locked)
            self._locked[int(value)] = bool(locked)
            self._table_changed()

    def set_active(self, value: int | None) -> None:
        if value is not None:
            self._label(value)
        self.active = None if value is None else int(value)

    def delete_label(self, value: int, erase_voxels: bool = True) -> None:
        """Remove a label from the table (one undo step); with ``erase_voxels`` its voxels become 0.

        A locked label must be unlocked first.
        """
        value = int(value)
        lb = self._label(value)
        if lb.locked:
            raise LabelLocked(f"label {value} ({lb.name}) is locked; unlock it before deleting")
        with self.edit(f"delete {lb.name}") as e:
            if erase_voxels:
                hit = np.flatnonzero((self.array == value).reshape(self.shape[0], -1).any(axis=1))
                if hit.size:
                    box = (int(hit[0]), int(hit[-1]) + 1, 0, self.shape[1], 0, self.shape[2])
                    e.write(box, None, 0, over=value)
            e.record_table(value, replace(lb), None)
            self._set_table_entry(value, None)

    def _set_table_entry(self, value: int, lb: Label | None) -> None:
        """Put a table entry as it was (undo/redo/rollback), notifying subscribers."""
        with self.lock:
            self._put_table_entry(value, lb)

    def _put_table_entry(self, value: int, lb: Label | None) -> None:
        if lb is None:
            self._labels.pop(value, None)
            self._locked[value] = False
            if self.active == value:
                self.active = min(self._labels) if self._labels else None
        else:
            lb = replace(lb)
            if any(v != value and o.name.lower() == lb.name.lower() for v, o in self._labels.items()):
                lb.name = f"{lb.name} ({value})"  # a label added since took the name
            self._add(lb)
        self._table_changed()

    def colors(self) -> dict[int, tuple[int, int, int]]:
        """value -> RGB, for ``ui.overlays.LabelLayer(colors=...)``."""
        return {v: lb.color for v, lb in self._labels.items()}

    def rgba_table(self, opacity: float = 1.0) -> np.ndarray:
        """Complete RGBA look-up table for the array's dtype (256 or 65536 rows, so any stored value
        indexes it): 0 and hidden labels transparent, alpha = opacity x label opacity; values
        without a table entry get their default colour. No scan of the voxels."""
        n = 256 if self.array.dtype == np.uint8 else MAX_LABEL + 1
        t = np.zeros((n, 4), np.uint8)
        v = np.arange(1, n)
        t[1:, :3] = np.asarray(DEFAULT_LABEL_COLORS, np.uint8)[(v - 1) % len(DEFAULT_LABEL_COLORS)]
        t[1:, 3] = round(255 * float(np.clip(opacity, 0.0, 1.0)))
        for value, lb in self._labels.items():
            t[value, :3] = lb.color
            t[value, 3] = round(255 * float(np.clip(opacity, 0.0, 1.0)) * lb.opacity) if lb.visible else 0
        return t

    # -- editing ----------------------------------------------------------------------
    def begin_edit(self, name: str) -> Edit:
        """Open a transaction explicitly (e.g. on mouse press); ``commit`` it on release."""
        with self.lock:
            if self._edit is not None:
                raise RuntimeError(f"edit {self._edit.name!r} is still open")
            self._edit = Edit(self, name)
            return self._edit

    @contextmanager
    def edit(self, name: str):
        """``with labelmap.edit("fill") as e:`` — one undo step; joins a transaction already open."""
        if self._edit is not None:
            yield self._edit
            return
        e = self.begin_edit(name)
        try:
            yield e
        except BaseException:
            if e.open:
                e.rollback()
            raise
        if e.open:
            e.commit()

    @property
    def editing(self) -> bool:
        return self._edit is not None

    def undo(self) -> Step | None:
        self._refuse_while_editing("undo")
        return self.history.undo(self)

    def redo(self) -> Step | None:
        self._refuse_while_editing("redo")
        return self.history.redo(self)

    def _refuse_while_editing(self, what: str) -> None:
        if self._edit is not None:
            raise RuntimeError(f"cannot {what} while edit {self._edit.name!r} is open")

    def apply_prepared(self, step: Step, contents: np.ndarray) -> None:
        """Push ``step`` (built off the UI thread from the current voxels, ``editing.Change.prepare``)
        as one undo step and put ``contents`` in its box: a copy instead of the masked writes, snapshots
        and diff of an :class:`Edit`. The caller guarantees no voxel and no lock changed since."""
        self._refuse_while_editing("apply a change")
        with self.lock:
            self.array[box_slices(step.box)] = contents
            step.token_before = self._token
            step.token_after = self._new_token()
            self.history.push(step)
            self._voxels_changed(step.box)

    def _apply_step(self, step: Step, undo: bool) -> None:
        with self.lock:  # voxels, table and token of an undo/redo move together
            step.write(self.array, undo)
            for value, (before, after) in step.table.items():
                self._set_table_entry(value, before if undo else after)
            self._token = step.token_before if undo else step.token_after
            if step.box is not None:
                self._voxels_changed(step.box)

    def _writable_lut(self) -> np.ndarray:
        """Bool per stored value: may an edit overwrite it (not a locked label)."""
        n = 256 if self.array.dtype == np.uint8 else MAX_LABEL + 1
        return ~self._locked[:n]

    def _check_value_writable(self, value: int) -> None:
        if value == 0:
            return
        lb = self._labels.get(value)
        if lb is None:
            raise KeyError(f"label {value} is not in the label table; add it first")
        if lb.locked:
            raise LabelLocked(f"label {value} ({lb.name}) is locked")

    # -- change notification --------------------------------------------------------------
    def subscribe(self, callback: Callable[[Box | None], None]) -> Callable[[], None]:
        """Call ``callback(box or None)`` after every change; returns an unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self.unsubscribe(callback)

    def unsubscribe(self, callback) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    def _notify(self, box: Box | None) -> None:
        for cb in list(self._subscribers):
            cb(box)

    def _new_token(self) -> int:
        self._tokens += 1
        self._token = self._tokens
        return self._token

    def _voxels_changed(self, box: Box) -> None:
        with self.lock:
            self.version += 1  # the content token moves at commit/undo/redo, not per write
        self._notify(box)

    def _table_changed(self) -> None:
        with self.lock:
            self.version += 1
            if self._edit is None:  # outside a transaction a table change is its own (not undoable) change
                self._new_token()
        self._notify(None)

    # -- a consistent copy for another thread (autosave) ----------------------------------
    def committed_state(self) -> CommittedState:
        """The voxels, label table and version as they were after the last finished edit: a
        private copy taken under the edit lock, safe to call from any thread.

        An edit still open (a drag in progress) is left out: its box is put back from the
        transaction's own copies of the old blocks, and its label-table entries as they were,
        so the result is always a state that was on screen between two edits — never half a
        stroke. Costs one copy of the array (~20 ms for 512x512x300 uint8)."""
        with self.lock:
            array = self.array.copy()
            labels = {v: replace(lb) for v, lb in self._labels.items()}
            version, token = self.version, self._token
            e = self._edit
            if e is not None:
                if e.box is not None:
                    inside = box_slices(e.box)
                    array[inside] = e._old_contents(e.box, array[inside])
                for value, (before, _after) in e.table.items():
                    if before is None:
                        labels.pop(value, None)
                    else:
                        labels[value] = replace(before)
                version, token = e.version_before, e._token
            dirty = token != self._saved_token
        return CommittedState(array, [labels[v] for v in sorted(labels)], version, dirty)

    # -- saving state --------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        """Content differs from the last ``mark_saved`` (undo back to it is clean again)."""
        e = self._edit  # read once: the autosaver asks from its own thread
        pending = e is not None and (e.box is not None or bool(e.table))
        return pending or self._token != self._saved_token

    def mark_saved(self) -> None:
        self.saved_version = self.version
        self._saved_token = self._token

    # -- measurements ---------------------------------------------------------------------
    def stats(self, volume: Volume | None = None) -> dict[int, dict]:
        """Per label: ``voxels``, ``volume_ml`` (3D) or ``area_mm2`` (one slice), ``mean``
        intensity of ``volume`` (None without volume or voxels). Labels of the table with no
        voxel are listed with 0. Computed with np.bincount in slabs (no full-size temporaries)."""
        n = max(max(self._labels, default=0), int(self.array.max()) if self.array.size else 0) + 1
        counts = np.zeros(n, np.int64)
        sums = np.zeros(n, np.float64)
        if volume is not None:
            self.check_volume(volume)
        for z in range(0, self.shape[0], _STATS_SLAB):
            lab = self.array[z:z + _STATS_SLAB]
            fg = lab != 0
            vals = lab[fg]
            counts += np.bincount(vals, minlength=n)[:n]
            if volume is not None:
                sums += np.bincount(vals, weights=volume.array[z:z + _STATS_SLAB][fg], minlength=n)[:n]
        sp = self.grid.spacing
        flat = self.shape[0] == 1
        unit = sp[1] * sp[2] if flat else sp[0] * sp[1] * sp[2] / 1000.0
        out = {}
        for v in sorted(set(self._labels) | set(np.flatnonzero(counts[1:]) + 1)):
            c = int(counts[v])
            row = {"name": self._labels[v].name if v in self._labels else f"Label {v}", "voxels": c,
                   ("area_mm2" if flat else "volume_ml"): c * unit,
                   "mean": (float(sums[v] / c) if volume is not None and c else None)}
            out[int(v)] = row
        return out
