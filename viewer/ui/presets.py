"""Window/level presets for what is shown: the Window menu, the toolbar combo and F-keys.

Rebuilt for each image shown (``presets_for``; F1…F7 in CT's fixed order), or from the mammography
hanging's own presets, so the keys always mean what the menu says.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QComboBox, QToolBar

from ..core.windowing import CT_PRESET_KEYS, Preset, presets_for

if TYPE_CHECKING:
    from .host import WindowHost


def preset_label(p: Preset) -> str:
    def f(v: float) -> str:
        return f"{v:.0f}" if abs(v - round(v)) < 1e-6 else f"{v:.4g}"

    return f"{p.name}  (W {f(p.width)} / L {f(p.center)})"


class PresetMenu(QObject):
    """The window's presets: ``menu`` (Window), ``combo`` on ``toolbar``, ``actions`` with their keys."""

    def __init__(self, window: WindowHost):
        super().__init__(window)
        self.window = window
        self.actions: list[QAction] = []  # the Window menu's entries for what is shown now
        self.menu = window.menuBar().addMenu("&Window")
        self.toolbar = QToolBar("Window", window)
        self.toolbar.setObjectName("window-toolbar")
        self.combo = QComboBox(window)
        self.combo.setToolTip("Window/level preset (F1…F7)")
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.combo.activated.connect(self._combo_chosen)
        self.toolbar.addWidget(self.combo)
        window.addToolBar(self.toolbar)

    def current(self) -> list[Preset]:
        w = self.window
        vol = w.slice_view.volume
        if w.views.currentWidget() is w.mammo_layout or vol is None:
            return []
        return presets_for(vol)

    def _entries(self) -> list[tuple[str, Callable[[], None], str | None]]:
        w = self.window
        if w.views.currentWidget() is w.mammo_layout:
            return [(name, lambda a=act: a.trigger(), f"F{i + 1}" if i < 12 else None)
                    for i, (name, act) in enumerate(w.mammo_layout.preset_actions.items())]
        presets = self.current()
        vol = w.slice_view.volume
        is_ct = vol is not None and (vol.info.modality or "").upper() == "CT"
        ct_keys = {name: f"F{digit}" for digit, name in CT_PRESET_KEYS.items()}
        ordered = sorted(presets, key=lambda p: int(ct_keys.get(p.name, "F99")[1:])) if is_ct else presets
        return [(preset_label(p), lambda p=p: self.apply_window(p.center, p.width),
                 ct_keys.get(p.name) if is_ct else (f"F{i + 1}" if i < 12 else None)) for i, p in enumerate(ordered)]

    def rebuild(self) -> None:
        """Fill the Window menu and the toolbar combo for what is shown now."""
        w = self.window
        for act in self.actions:
            w.removeAction(act)
            act.deleteLater()
        self.actions = []
        self.menu.clear()
        self.combo.clear()
        self.combo.addItem("W/L preset")
        entries = self._entries()
        for text, fn, key in entries:
            act = QAction(text, w)
            if key:
                act.setShortcut(QKeySequence(key))
                act.setToolTip(f"{text} ({key})")
            act.triggered.connect(lambda _checked=False, fn=fn: fn())
            self.menu.addAction(act)
            w.addAction(act)  # shortcuts work while the menu is closed
            self.actions.append(act)
            self.combo.addItem(f"{text}   {key}" if key else text)
        if not entries:
            self.menu.addAction("(no image)").setEnabled(False)
        self.combo.setEnabled(bool(entries))
        self.combo.setCurrentIndex(0)

    def action(self, name: str) -> QAction | None:
        """The Window menu entry of the preset called ``name`` (None if not offered now)."""
        return next((a for a in self.actions if a.text().split("  (")[0] == name), None)

    def _combo_chosen(self, index: int) -> None:
        if 1 <= index <= len(self.actions):
            self.actions[index - 1].trigger()
        self.combo.setCurrentIndex(0)

    def apply_window(self, center: float, width: float) -> None:
        """Set (center, width) on the views showing the active image (all MPR planes, all mammo views;
        in a 1x2/2x2 grid only the active viewport, which may hold another modality than its neighbours)."""
        w = self.window
        views = [w.grid.active] if w.views.currentWidget() is w.grid else w.shown_views()
        for view in views:
            if view.volume is not None:
                view.set_window(center, width)
