"""Help ▸ Keyboard shortcuts: the sheet is generated from the window's actions, so it cannot drift."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings
from PySide6.QtGui import QAction, QKeySequence

from viewer.ui.main_window import MainWindow
from viewer.ui.shortcuts import NO_MENU, ShortcutSheet, shortcut_rows, shortcut_text, show_shortcut_sheet
from qt_helpers import close_quietly, shown


@pytest.fixture(autouse=True)
def temp_settings(tmp_path_factory):
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path_factory.mktemp("s")))


@pytest.fixture
def window(qtbot):
    w = MainWindow()
    shown(qtbot, w)
    yield w
    close_quietly(w)


def table_rows(sheet: ShortcutSheet) -> list[tuple[str, str, str]]:
    t = sheet.table
    return [tuple(t.item(i, j).text() for j in range(3)) for i in range(t.rowCount())]


def all_shortcut_actions(w) -> list[QAction]:
    return [a for a in w.findChildren(QAction) if shortcut_text(a)]


def test_every_action_with_a_shortcut_is_listed_with_that_shortcut(window):
    sheet = show_shortcut_sheet(window)
    shortcuts = {(text, keys) for text, keys, _menu in table_rows(sheet)}
    actions = all_shortcut_actions(window)
    assert len(actions) > 20  # File, Layout, View, Segment, AI, Help … not an empty window
    for act in actions:
        text = act.text().replace("&", "")
        assert (text, shortcut_text(act)) in shortcuts, (text, shortcut_text(act))
    assert len(table_rows(sheet)) == len(actions)  # each once, nothing invented


def test_the_menu_column_names_where_an_action_lives(window):
    rows = {r.action: r for r in shortcut_rows(window)}
    assert rows["Open Folder…"].menu == "File" and rows["Open Folder…"].shortcut == QKeySequence(
        "Ctrl+O").toString(QKeySequence.SequenceFormat.NativeText)
    assert rows["MPR"].menu == "Layout" and rows["MPR"].shortcut == "M"
    assert rows["Keyboard shortcuts"].menu == "Help"
    assert rows["Analyze"].menu == "AI"
    assert rows["▶ Play"].shortcut == "P, Space"  # both keys


def test_an_action_added_at_runtime_appears(window):
    sheet = show_shortcut_sheet(window)
    assert "Zap" not in {r[0] for r in table_rows(sheet)}
    extra = QAction("Zap", window)
    extra.setShortcut(QKeySequence("Ctrl+Alt+Z"))
    window.addAction(extra)
    late_menu = window.menuBar().addMenu("&Late")
    late = late_menu.addAction("Later &thing")
    late.setShortcut(QKeySequence("Ctrl+Alt+L"))
    sheet.hide()
    sheet = show_shortcut_sheet(window)
    rows = {r[0]: r for r in table_rows(sheet)}
    assert rows["Zap"][1:] == (QKeySequence("Ctrl+Alt+Z").toString(QKeySequence.SequenceFormat.NativeText), NO_MENU)
    assert rows["Later thing"][2] == "Late"


def test_help_menu_opens_the_sheet(window, qtbot):
    window.shortcuts_action.trigger()
    assert window.shortcut_sheet.isVisible()
    assert window.shortcut_sheet.table.rowCount() == len(shortcut_rows(window))


def test_no_two_actions_share_a_key(window):
    """Qt ignores an ambiguous shortcut altogether; the sheet shows every key once."""
    keys = [k for row in shortcut_rows(window) for k in row.shortcut.split(", ")]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


def test_the_presets_of_a_shown_ct_are_listed_under_window(window, qtbot, tmp_path):
    import numpy as np
    from conftest import ramp_volume

    from viewer.core.io.dicom_write import write_series
    from qt_helpers import open_and_wait

    vol = ramp_volume(shape=(6, 16, 16), modality="CT")
    write_series(vol, tmp_path / "ct", intercept=-1024, stored_dtype=np.uint16, bits_stored=12)
    open_and_wait(qtbot, window, tmp_path / "ct")
    rows = [r for r in shortcut_rows(window) if r.menu == "Window"]
    assert rows and {r.shortcut for r in rows} >= {"F1", "F2"}
    assert [(r.action, r.shortcut) for r in rows] == [(a.text(), shortcut_text(a)) for a in window.preset_actions
                                                      if shortcut_text(a)]
