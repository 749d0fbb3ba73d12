"""Background work for the UI: scanning, loading, demo generation.

A ``Worker`` (a QObject living on its own QThread) runs one callable
``fn(progress, should_stop)`` and reports through queued signals, so the UI
thread only draws. Every exception is caught in the worker and turned into
``failed(message)``; ``Cancelled`` (or a cancel request honoured by the
callable) becomes ``cancelled()``. Exactly one of ``finished``, ``failed`` or
``cancelled`` is emitted, followed by ``done``. A job whose work is already on disk
returns ``Committed(result)``: it is reported as finished even when Cancel came too late
to stop it, so the user is never told "cancelled" about files that were written.

``TaskRunner`` owns the threads: it starts tasks, cancels them and waits for
them on shutdown, so no QThread is ever destroyed while running.
"""
from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from ..core.errors import Cancelled, LightboxError, describe

Progress = Callable[[int, int], None]
StopCheck = Callable[[], bool]
Job = Callable[[Progress, StopCheck], Any]



class Committed:
    """Wraps the result of a job whose side effects (files, a model version) have happened."""

    def __init__(self, value: Any) -> None:
        self.value = value


PROGRESS_INTERVAL_S = 0.05  # at most ~20 progress signals a second reach the UI


class Worker(QObject):
    """Runs ``fn(progress, should_stop)`` once, on whatever thread it lives in."""

    progress = Signal(int, int)
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    done = Signal()  # after any of the three outcomes

    def __init__(self, fn: Job, label: str = "", should_stop: StopCheck | None = None):
        super().__init__()
        self._fn = fn
        self.label = label
        self._external_stop = should_stop
        self._cancel = threading.Event()
        self._last_progress = 0.0

    # -- called from any thread --------------------------------------------------
    def cancel(self) -> None:
        """Ask the job to stop at its next check; it then emits ``cancelled``."""
        self._cancel.set()

    def should_stop(self) -> bool:
        if self._cancel.is_set():
            return True
        if self._external_stop is not None:
            try:
                if self._external_stop():
                    self._cancel.set()
                    return True
            except Exception:  # noqa: BLE001 - a broken stop check must not kill the job silently
                return False
        return False

    @property
    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def report(self, done: int, total: int) -> None:
        """Progress callback handed to the job (throttled; the last step always goes out)."""
        now = time.monotonic()
        if done >= total or now - self._last_progress >= PROGRESS_INTERVAL_S:
            self._last_progress = now
            self.progress.emit(int(done), int(total))

    # -- the work ----------------------------------------------------------------
    @Slot()
    def run(self) -> None:
        try:
            if self.should_stop():
                raise Cancelled(f"{self.label or 'task'} cancelled")
            result = self._fn(self.report, self.should_stop)
            if isinstance(result, Committed):  # too late to cancel: it is done
                result = result.value
            elif self.should_stop():  # cancel pressed while the last step finished: honour it
                raise Cancelled(f"{self.label or 'task'} cancelled")
        except Cancelled:
            self.cancelled.emit()
        except LightboxError as exc:
            self.failed.emit(str(exc))
        except MemoryError:
            self.failed.emit("not enough memory for this task")
        except BaseException as exc:  # noqa: BLE001 - the boundary: nothing reaches Qt's loop
            traceback.print_exc(file=sys.stderr)
            self.failed.emit(describe(exc))
        else:
            self.finished.emit(result)
        finally:
            self.done.emit()


class _Relay(QObject):
    """Lives on the UI thread; its slots forward a worker's signals to plain callables.

    A worker signal connected to a slot of a UI-thread QObject is queued onto
    the UI thread whatever thread emits it.
    """

    def __init__(self, parent: QObject, on_progress=None, on_finished=None, on_failed=None,
                 on_cancelled=None):
        super().__init__(parent)
        self._progress, self._finished = on_progress, on_finished
        self._failed, self._cancelled = on_failed, on_cancelled

    @Slot(int, int)
    def progress(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(done, total)

    @Slot(object)
    def finished(self, result) -> None:
        if self._finished is not None:
            self._finished(result)

    @Slot(str)
    def failed(self, message: str) -> None:
        if self._failed is not None:
            self._failed(message)

    @Slot()
    def cancelled(self) -> None:
        if self._cancelled is not None:
            self._cancelled()


class TaskRunner(QObject):
    """Starts workers on their own QThreads and keeps them alive until they end."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._running: list[tuple[QThread, Worker, _Relay]] = []

    def start(self, fn: Job, label: str = "", should_stop: StopCheck | None = None,
              on_finished: Callable[[Any], None] | None = None,
              on_failed: Callable[[str], None] | None = None,
              on_cancelled: Callable[[], None] | None = None,
              on_progress: Callable[[int, int], None] | None = None) -> Worker:
        """Run ``fn`` in the background; the callbacks run on the UI thread."""
        worker = Worker(fn, label, should_stop)
        relay = _Relay(self, on_progress, on_finished, on_failed, on_cancelled)
        thread = QThread()
        thread.setObjectName(f"lightbox-{label or 'task'}")
        worker.moveToThread(thread)
        worker.progress.connect(relay.progress)
        worker.finished.connect(relay.finished)
        worker.failed.connect(relay.failed)
        worker.cancelled.connect(relay.cancelled)
        thread.started.connect(worker.run)
        worker.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(self._reap)
        self._running.append((thread, worker, relay))
        thread.start()
        return worker

    @Slot()
    def _reap(self) -> None:
        """Forget threads that have ended (UI thread; their queued results were delivered first)."""
        still = []
        for thread, worker, relay in self._running:
            if thread.isFinished():
                thread.wait()
                relay.deleteLater()
            else:
                still.append((thread, worker, relay))
        self._running = still

    @property
    def busy(self) -> bool:
        return any(not t.isFinished() for t, _, _ in self._running)

    def cancel_all(self) -> None:
        for _, worker, _ in self._running:
            worker.cancel()

    def wait_all(self, timeout_ms: int = -1) -> bool:
        """Block until every thread has ended (or the timeout passed); True if all ended."""
        ok = True
        for thread, _, _ in list(self._running):
            ok &= thread.wait() if timeout_ms < 0 else thread.wait(timeout_ms)
        return ok

    def shutdown(self) -> None:
        """Cancel everything and wait: no QThread may be destroyed while running."""
        self.cancel_all()
        self.wait_all()
