"""Cine: step through the active series' slices in a loop (P or Space), at a chosen speed."""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QSpinBox, QToolBar

if TYPE_CHECKING:
    from .host import WindowHost
    from .slice_view import SliceView


class Cine(QObject):
    """The Play action, the fps box on the Cine toolbar, and the timer that steps the view."""

    def __init__(self, window: WindowHost):
        super().__init__(window)
        self.window = window
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.step)
        self.toolbar = QToolBar("Cine", window)
        self.toolbar.setObjectName("cine-toolbar")
        self.play_action = QAction("▶ Play", window)
        self.play_action.setCheckable(True)
        self.play_action.setShortcuts([QKeySequence("P"), QKeySequence("Space")])
        self.play_action.setToolTip("Cine: step through the slices in a loop (P or Space)")
        self.play_action.toggled.connect(self.set_playing)
        self.fps_spin = QSpinBox(window)
        self.fps_spin.setRange(1, 60)
        self.fps_spin.setValue(10)
        self.fps_spin.setSuffix(" fps")
        self.fps_spin.setToolTip("Cine speed, frames per second")
        self.fps_spin.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.fps_spin.valueChanged.connect(self._fps_changed)
        self.toolbar.addAction(self.play_action)
        self.toolbar.addWidget(self.fps_spin)
        window.addToolBar(self.toolbar)
        window.addAction(self.play_action)

    @property
    def playing(self) -> bool:
        return self.timer.isActive()

    def view(self) -> SliceView | None:
        """The view cine steps through: the 1x1 view (the axial view in MPR); None for mammography."""
        w = self.window
        current = w.views.currentWidget()
        if current is w.grid:
            return w.grid.active
        if current is w.mpr_layout:
            return w.mpr_layout.views.get("axial")
        return None

    def set_playing(self, on: bool) -> None:
        view = self.view()
        if on and (view is None or view.volume is None or view.slice_count < 2):
            on = False
            self.window.show_message("Cine: nothing to play (needs a series of several slices)", "warning")
        if on:
            self.timer.start(max(1, round(1000 / self.fps_spin.value())))
        else:
            self.timer.stop()
        if self.play_action.isChecked() != on:
            self.play_action.blockSignals(True)
            self.play_action.setChecked(on)
            self.play_action.blockSignals(False)
        self.play_action.setText("Pause" if on else "▶ Play")

    def stop(self) -> None:
        if self.playing or self.play_action.isChecked():
            self.set_playing(False)

    def _fps_changed(self, fps: int) -> None:
        if self.timer.isActive():
            self.timer.setInterval(max(1, round(1000 / fps)))

    def step(self) -> None:
        view = self.view()
        if view is None or view.volume is None or view.slice_count < 2:
            self.stop()
            return
        k = view.slice_index + 1
        view.set_slice(0 if k >= view.slice_count else k)
