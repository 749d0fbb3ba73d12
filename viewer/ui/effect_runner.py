"""Heavy segment-editor effects off the UI thread.

Why: a 3D flood fill of a body, islands, smoothing or fill between slices on a
CT-sized map take seconds; run on the UI thread they freeze the window. Here the
effect's plan (``core.editing.plan_*``, reads only) and its undo step
(``Change.prepare``) are computed on the window's worker (progress bar, Cancel),
and the UI thread only copies the result into the map as ONE undo step.

While a map computes, that map is *busy*: the tools, other effects, undo/redo and
label deletion on it are refused with a message (``EditorSession.labelmap_for``),
so the snapshot the worker reads cannot go stale. Should the voxels change anyway
(anything that notifies a changed box, or a new array), the result is refused, not
written over them. A lock changed meanwhile makes the result go through the
ordinary ``Edit`` (locked labels are still never overwritten). Cancel changes nothing.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from ..core.editing import Change
from ..core.errors import LightboxError
from ..core.labels import LabelMap
from ..core.undo import LabelLocked

Plan = Callable[..., Change]  # plan(should_stop=...) -> Change, run on the worker


class EffectRefused(LightboxError):
    """The effect cannot run as asked (a locked or missing label, a bad option)."""


@dataclass
class Running:
    """One effect computing on one map, and what it read at the start."""

    what: str
    key: str
    labelmap: LabelMap
    array: np.ndarray  # the map's array object when the plan started (replaced = stale)
    stale: str = ""  # why the result may no longer be written ("" while it still may)
    unsubscribe: Callable[[], None] | None = None
    worker: object = None
    generation: int = 0  # the window's task generation this effect ran as (a newer one supersedes it)
    ended: bool = False


class EffectRunner(QObject):
    """Starts effects on the window's task runner and applies their results on the UI thread."""

    busy_changed = Signal()

    def __init__(self, window, session):
        super().__init__(session)
        self.window = window
        self.session = session
        self.running: dict[str, Running] = {}  # map key -> the effect computing on it

    def busy_with(self, key: str) -> str | None:
        """Name of the effect computing on map ``key``, or None."""
        run = self.running.get(key)
        return run.what if run is not None else None

    def start(self, what: str, key: str, labelmap: LabelMap, plan: Plan) -> bool:
        """Compute ``plan`` on the worker; write its change as one undo step when it ends. False
        (with a message) when it cannot start now."""
        if key in self.running:
            self.window.show_message(f"{what}: wait for {self.running[key].what} to finish (or Cancel it)",
                                     "warning")
            return False
        if self.window.busy:
            label = self.window.tasks.label or "the running task"
            self.window.show_message(f"{what}: wait for {label} to finish (or Cancel it)", "warning")
            return False
        if labelmap.editing:
            self.window.show_message(f"{what}: finish the current stroke first", "warning")
            return False
        run = Running(what, key, labelmap, labelmap.array)
        run.unsubscribe = labelmap.subscribe(lambda box: self._changed(run, box))
        armed = threading.Event()  # the job waits until we listen for its end (a fast job could beat us)

        def job(progress, should_stop):
            armed.wait()
            writable = labelmap._writable_lut().copy()
            try:
                change = plan(should_stop=should_stop)
            except (LabelLocked, KeyError, ValueError) as exc:
                raise EffectRefused(str(exc).strip("'\"")) from exc
            return change.prepare(labelmap, writable), writable

        self.running[key] = run
        try:
            run.worker = self.window.tasks.start(what[:1].upper() + what[1:], job,
                                            lambda result: self._finished(run, result))
            run.generation = self.window.tasks.generation
            # the worker emits on its thread; a UI-thread receiver gets it queued, after the result or the cancel
            run.worker.done.connect(_Ended(self, run).ended)
        finally:
            armed.set()
        self.busy_changed.emit()
        return True

    def _changed(self, run: Running, box) -> None:
        if run.stale:
            return
        if box is not None:
            run.stale = "its voxels were edited meanwhile"
        elif run.labelmap.array is not run.array:
            run.stale = "a label was added meanwhile"

    def _finished(self, run: Running, result) -> None:
        """UI thread: write the prepared change unless the map moved on."""
        prepared, writable = result
        lm = run.labelmap
        self._end(run)
        if self.session.maps.get(run.key) is not lm:
            run.stale = run.stale or "the segmentation was replaced (loaded or restored) meanwhile"
        if run.stale:
            self.window.show_message(f"{run.what}: not applied, {run.stale}; nothing changed — run it again",
                                     "warning")
            return
        try:
            if np.array_equal(lm._writable_lut(), writable):
                n = prepared.apply(lm)
            else:  # a label was locked or unlocked meanwhile: the ordinary transaction checks each voxel
                n = prepared.change.apply(lm)
        except (LabelLocked, KeyError, ValueError, RuntimeError) as exc:  # RuntimeError: a stroke is open
            self.window.show_message(f"{run.what}: not applied, {str(exc).strip(chr(39))}", "warning")
            return
        self.window.show_message(f"{run.what}: {n} voxels changed")
        self.session.edited()

    def _end(self, run: Running) -> None:
        if run.ended:
            return
        run.ended = True
        if run.unsubscribe is not None:
            run.unsubscribe()
        if self.running.get(run.key) is run:
            del self.running[run.key]
        self.busy_changed.emit()


class _Ended(QObject):
    """Lives on the UI thread: frees the map when the worker is done, whatever the outcome
    (cancelled, failed, or superseded by a newer task of the window: nothing was written)."""

    def __init__(self, runner: EffectRunner, run: Running):
        super().__init__(runner)
        self.runner, self.run = runner, run

    @Slot()
    def ended(self) -> None:
        window = self.runner.window
        # a newer task of the window cancelled this one (a user's Cancel already said so itself)
        superseded = not self.run.ended and window.tasks.generation != self.run.generation
        self.runner._end(self.run)
        if superseded:
            window.show_message(f"{self.run.what}: stopped by {window.tasks.label}; nothing changed — run it again",
                                "warning")
        self.deleteLater()
