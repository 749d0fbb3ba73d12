"""The window's one foreground task, shown in the status bar: message, progress bar, Cancel.

Controllers start their background work here (``start``) instead of reaching into the window:
a newer task supersedes (cancels) the running one, and only the newest task's callbacks run, so a
late result of a cancelled load never replaces what the user asked for next.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar

from .workers import StopCheck, TaskRunner, Worker

LEVEL_STYLES = {"info": "", "warning": "color: #b36b00;", "error": "color: #c0392b;"}


class TaskBar(QObject):
    failed = Signal(str)  # the running task failed (its message)
    cancelled = Signal()  # the running task was cancelled

    def __init__(self, parent: QObject, bar: QStatusBar):
        super().__init__(parent)
        self.runner = TaskRunner(self)
        self.task: Worker | None = None
        self.label = ""  # what the running (or last) task does, for messages
        self.generation = 0  # counts starts: a callback of an older task is dropped
        self.closing = False
        self.message = QLabel("Ready")
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setMinimumWidth(100)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        bar.addWidget(self.message, 1)
        self.problems_label = QLabel()  # files the last scan skipped; stays while series load
        self.problems_label.setStyleSheet("color: #b36b00;")
        self.problems_label.hide()
        bar.addPermanentWidget(self.problems_label)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.cancel_button)
        self.progress.hide()
        self.cancel_button.hide()

    @property
    def busy(self) -> bool:
        return self.task is not None

    def show_message(self, text: str, level: str = "info") -> None:
        """Status-bar message; level 'info', 'warning' or 'error' (colour only)."""
        self.message.setStyleSheet(LEVEL_STYLES[level])
        self.message.setText(text.splitlines()[0] if text else "")
        self.message.setToolTip(text)

    def start(self, label: str, fn, on_done: Callable[[Any], None], should_stop: StopCheck | None = None) -> Worker:
        """Run fn on a worker; a newer task supersedes (and cancels) the running one."""
        if self.task is not None:
            self.task.cancel()
        self.generation += 1
        gen = self.generation

        def current(cb):
            def call(*args):
                if gen == self.generation and not self.closing:
                    cb(*args)
            return call

        def finished(result):
            self._end()
            on_done(result)

        self.label = label
        self.show_message(f"{label}…")
        self.progress.setRange(0, 0)  # busy until the first progress report
        self.progress.show()
        self.cancel_button.setEnabled(True)
        self.cancel_button.show()
        self.task = self.runner.start(fn, label, should_stop, on_finished=current(finished),
                                      on_failed=current(self._failed), on_cancelled=current(self._cancelled),
                                      on_progress=current(self._progress))
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.cancel_button.setEnabled(False)
            self.show_message(f"{self.label}: cancelling…", "warning")

    def shutdown(self) -> None:
        self.closing = True
        self.runner.shutdown()

    def _progress(self, done: int, total: int) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self.progress.setFormat(f"{done}/{total}")

    def _end(self) -> None:
        self.task = None
        self.progress.hide()
        self.cancel_button.hide()

    def _failed(self, message: str) -> None:
        self._end()
        self.show_message(f"{self.label} failed: {message}", "error")
        self.failed.emit(message)

    def _cancelled(self) -> None:
        self._end()
        self.show_message(f"{self.label}: cancelled", "warning")
        self.cancelled.emit()
