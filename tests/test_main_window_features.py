"""Main window: W/L presets (menu, combo, F-keys), cine, overlay text toggle, Open Recent."""
from __future__ import annotations

import os
import shutil

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pg = pytest.importorskip("pyqtgraph")

from conftest import ramp_volume
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication

from viewer.core.io.dicom_write import write_series
from viewer.core.windowing import CT_PRESET_KEYS
from viewer.ui.main_window import MainWindow
from qt_helpers import shown

LUNG = (-600.0, 1500.0)


@pytest.fixture(autouse=True)
def temp_settings(tmp_path_factory):
    """Keep Open Recent out of the user's real settings."""
    where = tmp_path_factory.mktemp("settings")
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(where))
    yield where


def write_ct(folder, n=12, **info):
    vol = ramp_volume(shape=(n, 24, 32), modality="CT", **info)
    vol.array[:] = np.clip(vol.array, -1024, 3071)
    write_series(vol, folder, intercept=-1024, stored_dtype=np.uint16, bits_stored=12)
    return folder


@pytest.fixture
def window(qtbot):
    w = shown(qtbot, MainWindow(), (1100, 800))
    yield w
    w.shutdown()


def load(qtbot, w, folder):
    with qtbot.waitSignal(w.image_shown, timeout=15000):
        w.open_path(folder)
    QApplication.processEvents()


def press(qtbot, w, key):
    w.activateWindow()
    w.slice_view.canvas.setFocus()
    qtbot.keyClick(w.slice_view.canvas, key)
    QApplication.processEvents()


def test_ct_presets_in_menu_by_action_and_f_key(qtbot, window, tmp_path):
    w = window
    load(qtbot, w, write_ct(tmp_path / "ct"))
    texts = [a.text() for a in w.window_menu.actions()]
    assert len(texts) == len(CT_PRESET_KEYS)
    # F1..F7 in CT_PRESET_KEYS order; the menu text carries the preset's W/L
    for digit, name in CT_PRESET_KEYS.items():
        act = w.preset_action(name)
        assert act is not None and act.shortcut().toString() == f"F{digit}"
    lung = w.preset_action("Lung")
    assert "W 1500" in lung.text() and "L -600" in lung.text()
    lung.trigger()
    assert w.slice_view.window == LUNG
    w.preset_action("Bone").trigger()
    assert w.slice_view.window == (400.0, 1800.0)
    press(qtbot, w, Qt.Key.Key_F2)  # Lung
    assert w.slice_view.window == LUNG
    press(qtbot, w, Qt.Key.Key_F1)  # Soft tissue
    assert w.slice_view.window == (40.0, 400.0)
    # the toolbar combo
    i = next(i for i in range(w.preset_combo.count()) if w.preset_combo.itemText(i).startswith("Lung"))
    w.preset_combo.activated.emit(i)
    assert w.slice_view.window == LUNG
    assert w.preset_combo.currentIndex() == i  # the combo names the preset in effect (issue 14)

    # MPR: all three views get it
    w.layout_mpr_action.trigger()
    QApplication.processEvents()
    assert w.views.currentWidget() is w.mpr_layout
    w.preset_action("Brain").trigger()
    assert all(v.window == (40.0, 80.0) for v in w.mpr_layout.views.values())
    w.activateWindow()
    qtbot.keyClick(w.mpr_layout.views["coronal"].canvas, Qt.Key.Key_F2)
    assert all(v.window == LUNG for v in w.mpr_layout.views.values())


def test_non_ct_presets_get_f_keys_in_order(qtbot, window, tmp_path):
    w = window
    vol = ramp_volume(shape=(4, 24, 32), modality="MR")
    write_series(vol, tmp_path / "mr")
    load(qtbot, w, tmp_path / "mr")
    acts = w.preset_actions
    assert [a.text().split("  (")[0] for a in acts] == ["Auto"]
    assert acts[0].shortcut().toString() == "F1"
    w.slice_view.set_window(1.0, 2.0)
    acts[0].trigger()
    assert w.slice_view.window != (1.0, 2.0)


def test_cine_advances_wraps_and_stops(qtbot, window, tmp_path):
    w = window
    load(qtbot, w, write_ct(tmp_path / "ct", n=12))
    view = w.slice_view
    assert w.fps_spin.value() == 10 and not w.playing
    w.fps_spin.setValue(50)
    view.set_slice(0)
    w.play_action.trigger()
    assert w.playing and w.play_action.isChecked()
    qtbot.wait(200)
    assert view.slice_index >= 3  # ~10 frames at 50 fps; allow for a slow machine
    seen = set()
    view.slice_changed.connect(seen.add)
    qtbot.waitUntil(lambda: 0 in seen, timeout=3000)  # wrapped past the last slice
    assert view.slice_count - 1 in seen
    w.play_action.trigger()
    assert not w.playing and not w.play_action.isChecked()
    k = view.slice_index
    qtbot.wait(100)
    assert view.slice_index == k
    # key P toggles too; loading another series stops it
    press(qtbot, w, Qt.Key.Key_P)
    assert w.playing
    press(qtbot, w, Qt.Key.Key_P)
    assert not w.playing
    w.play_action.trigger()
    assert w.playing
    load(qtbot, w, write_ct(tmp_path / "ct2", n=5, series_description="second"))
    assert not w.playing and not w.play_action.isChecked()


def test_cine_refuses_single_image(qtbot, window, tmp_path):
    w = window
    w.play_action.trigger()  # nothing loaded
    assert not w.playing and not w.play_action.isChecked()


def corner_labels(view):
    return [view._tl, view._tr, view._bl, view._br]


def test_overlay_text_toggle(qtbot, window, tmp_path):
    w = window
    load(qtbot, w, write_ct(tmp_path / "ct"))
    view = w.slice_view
    assert w.overlay_action.isChecked()
    assert all(lab.isVisible() for lab in corner_labels(view)[:3])
    press(qtbot, w, Qt.Key.Key_T)
    assert not w.overlay_action.isChecked()
    assert not any(lab.isVisible() for lab in corner_labels(view))
    view.set_slice(view.slice_index + 1)  # stays hidden while scrolling
    assert not any(lab.isVisible() for lab in corner_labels(view))
    w.layout_mpr_action.trigger()  # and in the other layouts
    QApplication.processEvents()
    for v in w.mpr_layout.views.values():
        assert not any(lab.isVisible() for lab in corner_labels(v))
        assert v._edge["left"].isVisible()  # orientation letters stay
    w.overlay_action.trigger()
    for v in w.mpr_layout.views.values():
        assert v._tl.isVisible() and "W/L" in v._bl.text()
    w.layout_1x1_action.trigger()
    QApplication.processEvents()
    assert view._tl.isVisible() and view._bl.isVisible()


def test_open_recent_most_recent_first_and_missing(qtbot, window, tmp_path, temp_settings):
    w = window
    a = write_ct(tmp_path / "a", n=3)
    b = write_ct(tmp_path / "b", n=3)
    load(qtbot, w, a)
    load(qtbot, w, b)
    assert w.recent_paths() == [str(b.resolve()), str(a.resolve())]
    load(qtbot, w, a)  # opened again: moves to the top, no duplicate
    assert w.recent_paths() == [str(a.resolve()), str(b.resolve())]
    assert list(temp_settings.rglob("*.ini"))  # stored in the temp settings location
    entries = [act for act in w.recent_menu.actions() if act.data()]
    assert [act.data() for act in entries] == w.recent_paths()
    assert all(act.isEnabled() for act in entries)

    shutil.rmtree(b)
    w.recent_menu.aboutToShow.emit()
    entries = {act.data(): act for act in w.recent_menu.actions() if act.data()}
    assert not entries[str(b.resolve())].isEnabled() and "missing" in entries[str(b.resolve())].text()
    with qtbot.waitSignal(w.task_failed, timeout=3000):
        w.open_recent(str(b.resolve()))
    assert "no longer there" in w.message.text()
    assert w.recent_paths() == [str(a.resolve())]

    # at most 8, newest first
    for i in range(10):
        w.add_recent(tmp_path / f"p{i}")
    paths = w.recent_paths()
    assert len(paths) == 8 and paths[0].endswith("p9")
    # a new window sees the same list
    w2 = MainWindow()
    qtbot.addWidget(w2)
    try:
        assert w2.recent_paths() == paths
    finally:
        w2.shutdown()
