"""Help ▸ Keyboard shortcuts: one sheet generated from the window's own QActions.

The rows are read from the actions at the moment the sheet is shown (menus walked recursively,
then actions that live on the window or a toolbar only, such as the presets' F-keys), so the
sheet cannot drift from what the keys really do, and an action added later appears too.
"""
from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QMainWindow,
    QMenu,
    QTableWidget,
    QTableWidgetItem,
    QToolBar,
    QVBoxLayout,
)

NO_MENU = "(no menu)"  # keys that work anywhere in the window but are not listed in a menu


@dataclass(frozen=True)
class ShortcutRow:
    action: str  # the action's text, without its & accelerator marks
    shortcut: str  # all its key sequences, as Qt shows them on this platform (", " between several)
    menu: str  # "File ▸ Open Recent", a toolbar's name, or NO_MENU


def shortcut_text(act: QAction) -> str:
    keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in act.shortcuts() if not k.isEmpty()]
    return ", ".join(keys)


def _plain(text: str) -> str:
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&").strip()


def _walk(menu: QMenu, path: str, seen: set[int], rows: list[ShortcutRow]) -> None:
    for act in menu.actions():
        sub = act.menu()
        if sub is not None:
            _walk(sub, f"{path} ▸ {_plain(sub.title())}", seen, rows)
        elif not act.isSeparator() and id(act) not in seen and shortcut_text(act):
            seen.add(id(act))
            rows.append(ShortcutRow(_plain(act.text()), shortcut_text(act), path))


def shortcut_rows(window: QMainWindow) -> list[ShortcutRow]:
    """Every action of ``window`` that has a shortcut: menu entries first, in menu order; then
    toolbar-only actions; then actions added to the window itself (e.g. the F-key presets)."""
    rows: list[ShortcutRow] = []
    seen: set[int] = set()
    for top in window.menuBar().actions():
        if top.menu() is not None:
            _walk(top.menu(), _plain(top.menu().title()), seen, rows)
    extra = [(act, _plain(bar.windowTitle())) for bar in window.findChildren(QToolBar) for act in bar.actions()]
    extra += [(act, NO_MENU) for act in window.actions()]
    extra += [(act, NO_MENU) for act in window.findChildren(QAction)]  # actions a controller keeps on a child
    for act, where in extra:
        if id(act) not in seen and not act.isSeparator() and act.menu() is None and shortcut_text(act):
            seen.add(id(act))
            rows.append(ShortcutRow(_plain(act.text()), shortcut_text(act), where))
    return rows


class ShortcutSheet(QDialog):
    """A table of action, shortcut and menu; rebuilt from the window's actions each time it is shown."""

    def __init__(self, window: QMainWindow):
        super().__init__(window)
        self.window_ = window
        self.setWindowTitle("Keyboard shortcuts")
        self.table = QTableWidget(0, 3, self)
        self.table.setHorizontalHeaderLabels(["Action", "Shortcut", "Menu"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)  # a compact sheet
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        note = QLabel("Read from the menus themselves. Mouse: wheel scrolls slices, right-drag sets window/level, "
                      "middle-drag pans, Ctrl+wheel zooms.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(620, 640)
        self.rows: list[ShortcutRow] = []
        self.refresh()

    def refresh(self) -> None:
        self.rows = shortcut_rows(self.window_)
        self.table.setRowCount(len(self.rows))
        for i, row in enumerate(self.rows):
            for j, text in enumerate((row.action, row.shortcut, row.menu)):
                self.table.setItem(i, j, QTableWidgetItem(text))

    def showEvent(self, ev):
        self.refresh()  # actions added or changed since the sheet was built (e.g. another image's presets)
        super().showEvent(ev)


def show_shortcut_sheet(window: QMainWindow) -> ShortcutSheet:
    """Show the window's sheet (one, kept on the window as ``shortcut_sheet``), non-blocking."""
    sheet = getattr(window, "shortcut_sheet", None)
    if sheet is None:
        sheet = window.shortcut_sheet = ShortcutSheet(window)
    sheet.refresh()
    sheet.show()
    sheet.raise_()
    return sheet
