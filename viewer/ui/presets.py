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

from ..core.windowing import CT_PRESET_KEYS, Preset, presets_for, window_matches, window_value_text
from .mammo_layout import preset_window

if TYPE_CHECKING:
    from .host import WindowHost


PLACEHOLDER = "W/L preset"  # the combo's first entry when nothing is shown
CUSTOM = "Custom W/L"  # ... and when the shown window is none of the presets (dragged, the source's own)


def preset_label(p: Preset) -> str:
    return f"{p.name}  (W {window_value_text(p.width)} / L {window_value_text(p.center)})"


class PresetMenu(QObject):
    """The window's presets: ``menu`` (Window), ``combo`` on ``toolbar``, ``actions`` with their keys."""

    def __init__(self, window: WindowHost):
        super().__init__(window)
        self.window = window
        self.actions: list[QAction] = []  # the Window menu's entries for what is shown now
        self.windows: list[tuple[float, float] | None] = []  # each entry's (center, width) on the reference view
        self._watched: set[int] = set()  # views whose window_changed already updates the combo
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

    def reference_view(self):
        """The view whose window the combo names: the active viewport, the first MPR plane or mammogram."""
        w = self.window
        if w.views.currentWidget() is w.grid:
            return w.grid.active
        return next((v for v in w.shown_views() if v.volume is not None), None)

    def _entries(self) -> list[tuple[str, Callable[[], None], str | None]]:
        w = self.window
        if w.views.currentWidget() is w.mammo_layout:
            ref = self.reference_view()
            image = ref.current_image() if ref is not None else None
            self.windows = [preset_window(image, name) if image is not None else None
                            for name in w.mammo_layout.preset_actions]
            return [(name, lambda a=act: a.trigger(), f"F{i + 1}" if i < 12 else None)
                    for i, (name, act) in enumerate(w.mammo_layout.preset_actions.items())]
        presets = self.current()
        vol = w.slice_view.volume
        is_ct = vol is not None and (vol.info.modality or "").upper() == "CT"
        ct_keys = {name: f"F{digit}" for digit, name in CT_PRESET_KEYS.items()}
        ordered = sorted(presets, key=lambda p: int(ct_keys.get(p.name, "F99")[1:])) if is_ct else presets
        self.windows = [(p.center, p.width) for p in ordered]
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
        self.combo.addItem(PLACEHOLDER)
        self.windows = []
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
        self._watch_views()
        self.sync()

    def _watch_views(self) -> None:
        """Every view's window changes (drag, preset, a new series' default) re-name the combo's entry."""
        for view in self.window.all_views():
            if id(view) not in self._watched:
                self._watched.add(id(view))
                view.window_changed.connect(lambda *_args: self.sync())

    def active_index(self) -> int:
        """The entry (1-based, as in the combo) whose window the reference view shows; 0 for none."""
        ref = self.reference_view()
        if ref is None or ref.volume is None:
            return 0
        return next((i + 1 for i, win in enumerate(self.windows)
                     if win is not None and window_matches(ref.window, *win)), 0)

    def sync(self) -> None:
        """Show the preset in effect in the combo, or "Custom W/L" when the window is none of them."""
        if self.combo.count() == 0:
            return
        index = self.active_index() if len(self.windows) == len(self.actions) else 0
        ref = self.reference_view()
        shown = ref is not None and ref.volume is not None and bool(self.actions)
        self.combo.setItemText(0, CUSTOM if shown and index == 0 else PLACEHOLDER)
        self.combo.setCurrentIndex(index)

    def action(self, name: str) -> QAction | None:
        """The Window menu entry of the preset called ``name`` (None if not offered now)."""
        return next((a for a in self.actions if a.text().split("  (")[0] == name), None)

    def _combo_chosen(self, index: int) -> None:
        if 1 <= index <= len(self.actions):
            self.actions[index - 1].trigger()
        self.sync()

    def apply_window(self, center: float, width: float) -> None:
        """Set (center, width) on the views showing the active image (all MPR planes, all mammo views;
        in a 1x2/2x2 grid only the active viewport, which may hold another modality than its neighbours)."""
        w = self.window
        views = [w.grid.active] if w.views.currentWidget() is w.grid else w.shown_views()
        for view in views:
            if view.volume is not None:
                view.set_window(center, width)
