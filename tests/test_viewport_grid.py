"""1x2 / 2x2 viewports, the active viewport, dragging a series onto a viewport, browser thumbnails."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QMouseEvent
from PySide6.QtWidgets import QApplication

from qt_helpers import shown
from viewer.core.io.dicom_write import write_series
from viewer.core.volume import SourceInfo, Volume
from viewer.ui.main_window import MainWindow
from viewer.ui.mime import SERIES_MIME, series_key, series_mime

SHAPES = {"A": (6, 32, 32), "B": (8, 40, 30), "C": (5, 24, 48)}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """One CT study with three series of different sizes (each slice value says which series)."""
    out = tmp_path_factory.mktemp("grid")
    for n, (name, shape) in enumerate(SHAPES.items(), start=1):
        arr = np.full(shape, 100 * n, np.int16)
        arr[:, 0, 0] = -1000
        info = SourceInfo(modality="CT", patient_name="GRID^TEST", patient_id="G-1", study_uid="1.2.826.0.1.9",
                          series_uid=f"1.2.826.0.1.9.{n}", series_number=n, series_description=f"series {name}",
                          frame_of_reference_uid="1.2.826.0.1.9.99")
        write_series(Volume(arr, spacing=(2.0, 1.0, 1.0), info=info), out / name, intercept=-1024,
                     stored_dtype=np.uint16)
    return out


@pytest.fixture
def window(qtbot):
    w = shown(qtbot, MainWindow(), (1100, 750))
    yield w
    w.shutdown()


def open_and_wait(qtbot, w, path):
    with qtbot.waitSignal(w.thumbnails_ready, timeout=15000):
        with qtbot.waitSignal(w.image_shown, timeout=15000):
            w.open_path(path)
    qtbot.waitUntil(lambda: not w.busy, timeout=15000)


def described(view) -> str | None:
    return None if view.volume is None else view.volume.info.series_description


def wait_idle(qtbot, w):
    qtbot.waitUntil(lambda: not w.busy, timeout=15000)


def drag_onto(widget, mime) -> QDropEvent:
    """The event sequence of a real drag ending over ``widget``; returns the drop event."""
    pos = QPointF(30, 30)
    enter = QDragEnterEvent(pos.toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    drop = QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return drop


def test_every_series_gets_a_thumbnail_and_can_be_dragged(qtbot, window, study_dir):
    open_and_wait(qtbot, window, study_dir)
    series = window.browser.image_series()
    assert len(series) == 3
    assert all(window.browser.has_thumbnail(s.key) for s in series)
    icon = window.browser.item_for(series[0]).icon(0)
    assert icon.pixmap(48, 48).toImage().width() == 48
    mime = window.browser.mimeData([window.browser.item_for(series[1])])
    assert SERIES_MIME in window.browser.mimeTypes()
    assert series_key(mime) == series[1].key


def test_2x2_fills_empty_viewports_and_browser_loads_into_the_active_one(qtbot, window, study_dir):
    open_and_wait(qtbot, window, study_dir)
    first = described(window.slice_view)
    assert len(window.grid.visible_cells()) == 1
    window.set_layout("1x2")
    wait_idle(qtbot, window)
    cells = window.grid.visible_cells()
    assert len(cells) == 2 and all(c.isVisible() for c in cells)
    assert described(cells[0]) == first and described(cells[1]) not in (None, first)

    window.set_layout("2x2")
    wait_idle(qtbot, window)
    cells = window.grid.visible_cells()
    assert len(cells) == 4
    shown_now = [described(c) for c in cells]
    assert sorted(d for d in shown_now if d) == ["series A", "series B", "series C"]
    assert shown_now[3] is None  # only three series: the fourth viewport stays empty

    # a press makes a viewport active; a browser choice then replaces only what it shows
    target = cells[1]
    press = QMouseEvent(QMouseEvent.Type.MouseButtonPress, QPointF(20, 20), QPointF(20, 20),
                        Qt.MouseButton.LeftButton, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target.canvas.viewport(), press)
    assert window.grid.active is target and window.slice_view is target
    other = next(s for s in window.browser.image_series() if s.info.series_description == shown_now[0])
    # the list highlights what the active viewport shows, so choosing another row loads it
    assert window.browser.currentItem() is window.browser.item_for(window.viewport_series(target))
    with qtbot.waitSignal(window.image_shown, timeout=15000):
        window.browser.select_series(other)
    assert described(target) == shown_now[0]
    assert [described(c) for c in cells][2:] == shown_now[2:] and described(cells[0]) == shown_now[0]

    # presets act on the active viewport only
    before = cells[0].window
    window.apply_window(555.0, 111.0)
    assert target.window == (555.0, 111.0) and cells[0].window == before

    # 1x1 shows the active viewport alone
    window.set_layout("1x1")
    assert window.grid.visible_cells() == [target] and not cells[0].isVisible()


def test_dropping_a_series_on_a_viewport_loads_it_there(qtbot, window, study_dir):
    open_and_wait(qtbot, window, study_dir)
    window.set_layout("2x2")
    wait_idle(qtbot, window)
    empty = window.grid.visible_cells()[3]
    assert empty.volume is None
    series_b = next(s for s in window.browser.image_series() if s.info.series_description == "series B")
    with qtbot.waitSignal(window.image_shown, timeout=15000):
        drop = drag_onto(empty.canvas.viewport(), series_mime(series_b.key))
    assert drop.isAccepted()
    assert described(empty) == "series B" and window.grid.active is empty
    assert empty.volume.shape == SHAPES["B"]
    assert window.viewport_series(empty).key == series_b.key


def test_file_drops_are_left_to_the_main_window(qtbot, window, study_dir):
    from PySide6.QtCore import QMimeData, QUrl

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(study_dir))])
    enter = QDragEnterEvent(QPointF(30, 30).toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    window.slice_view.canvas.dragEnterEvent(enter)
    assert not enter.isAccepted()  # not a series: the viewport lets it through to the window
