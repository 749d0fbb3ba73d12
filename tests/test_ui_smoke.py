"""Smoke tests of the first viewer window: open, browse, scroll, window/level, cancel, errors."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pg = pytest.importorskip("pyqtgraph")

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication
from qt_helpers import shown

from viewer.core.io.dicom_write import write_series
from viewer.core.volume import SourceInfo, Volume
from viewer.ui.main_window import DISCLAIMER, MainWindow, about_text
from viewer.ui.slice_view import SliceView, default_window
from viewer.ui.workers import Committed, TaskRunner

REPO = Path(__file__).resolve().parents[1]
NZ, NY, NX = 20, 64, 64
SPACING = (2.5, 0.8, 0.6)  # anisotropic in-plane on purpose


def ct_volume() -> Volume:
    z, y, x = np.indices((NZ, NY, NX))
    hu = ((z * 37 + y * 11 + x * 5) % 1500 - 1000).astype(np.int16)  # every slice different
    info = SourceInfo(modality="CT", patient_name="SMOKE^TEST", patient_id="S-1", study_date="20240102",
                      series_description="smoke axial", window=(40, 400))
    return Volume(hu, spacing=SPACING, origin=(-20.0, -25.0, 100.0), info=info)


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ct")
    write_series(ct_volume(), out, intercept=-1024, stored_dtype=np.uint16)
    (out / "corrupt.dcm").write_bytes(b"this is not a DICOM file" * 8)
    return out


@pytest.fixture
def window(qtbot):
    w = shown(qtbot, MainWindow(), (1000, 700))
    yield w
    w.shutdown()


@pytest.fixture
def view(qtbot):
    v = SliceView()
    qtbot.addWidget(v)
    v.resize(600, 500)
    v.show()
    qtbot.waitExposed(v)
    v.set_volume(ct_volume())
    return v


def open_and_wait(qtbot, window, path):
    with qtbot.waitSignal(window.image_shown, timeout=15000):
        window.open_path(path)


def send_wheel(widget, delta: int, modifiers=Qt.KeyboardModifier.NoModifier):
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    ev = QWheelEvent(pos, QPointF(widget.mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, delta),
                     Qt.MouseButton.NoButton, modifiers, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, ev)


def send_mouse(widget, kind, pos: QPointF, button, buttons):
    ev = QMouseEvent(kind, pos, QPointF(widget.mapToGlobal(pos.toPoint())), button, buttons,
                     Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, ev)


# -- opening a folder ------------------------------------------------------------------------
def test_open_folder_lists_series_and_problems_and_shows_middle_slice(qtbot, window, ct_dir):
    open_and_wait(qtbot, window, ct_dir)
    browser = window.browser
    series = browser.image_series()
    assert len(series) == 1 and series[0].info.series_description == "smoke axial"
    item = browser.item_for(series[0])
    assert item.text(1) == "CT" and item.text(2) == str(NZ)
    assert browser.currentItem() is item  # auto-selected
    problems = browser.problem_texts()
    assert len(problems) == 1 and problems[0].startswith("corrupt.dcm: ")
    assert "Problems (1" in browser.problems_item.text(0)
    assert window.problems_label.isVisible() and "1 file skipped" in window.problems_label.text()
    assert "corrupt.dcm" in window.problems_label.toolTip()

    sv = window.slice_view
    expected = ct_volume().array
    assert sv.slice_index == NZ // 2
    np.testing.assert_array_equal(sv.current_image(), expected[NZ // 2])  # HU, not stored values
    np.testing.assert_array_equal(sv.image_item.image, expected[NZ // 2])
    assert sv.window == (40.0, 400.0)
    assert not window.progress.isVisible() and not window.cancel_button.isVisible()
    assert "SMOKE" in window.windowTitle()


def test_geometry_aspect_orientation_and_overlay(view):
    # one scene unit = 1 mm: the image covers NX*0.6 by NY*0.8 mm, first row at the top
    rect = view.image_item.mapRectToParent(view.image_item.boundingRect())
    assert rect.width() == pytest.approx(NX * SPACING[2]) and rect.height() == pytest.approx(NY * SPACING[1])
    assert view.view.yInverted() and not view.view.xInverted()
    assert view.view.state["aspectLocked"] == 1.0
    top_left = view.view.mapViewToScene(QPointF(0, 0))
    bottom_right = view.view.mapViewToScene(QPointF(rect.width(), rect.height()))
    assert top_left.y() < bottom_right.y() and top_left.x() < bottom_right.x()
    assert view._edge["left"].text() == "R" and view._edge["right"].text() == "L"
    assert view._edge["top"].text() == "A" and view._edge["bottom"].text() == "P"
    assert "SMOKE, TEST" in view._tl.text() and "2024-01-02" in view._tl.text()
    pos = 100.0 + (NZ // 2) * SPACING[0]  # origin S + k * slice spacing (axial: normal = S)
    assert f"Im {NZ // 2 + 1}/{NZ}" in view._bl.text() and f"Pos {pos:.1f} mm" in view._bl.text()
    assert "W/L 400/40" in view._bl.text()


# -- scrolling ----------------------------------------------------------------------------------
def test_wheel_and_keys_scroll_one_slice_per_step_and_clamp(qtbot, view):
    vp = view.canvas.viewport()
    k0 = view.slice_index
    send_wheel(vp, -120)  # towards the user: next slice
    assert view.slice_index == k0 + 1
    send_wheel(vp, 120)
    send_wheel(vp, 120)
    assert view.slice_index == k0 - 1
    send_wheel(vp, 60)  # half a notch (touchpad) does nothing yet...
    assert view.slice_index == k0 - 1
    send_wheel(vp, 60)  # ...the second half completes the step
    assert view.slice_index == k0 - 2

    view.canvas.setFocus()
    qtbot.keyClick(view.canvas, Qt.Key.Key_Down)
    assert view.slice_index == k0 - 1
    qtbot.keyClick(view.canvas, Qt.Key.Key_Up)
    assert view.slice_index == k0 - 2
    np.testing.assert_array_equal(view.current_image(), ct_volume().array[k0 - 2])

    qtbot.keyClick(view.canvas, Qt.Key.Key_Home)
    assert view.slice_index == 0
    send_wheel(vp, 120)
    qtbot.keyClick(view.canvas, Qt.Key.Key_Up)
    qtbot.keyClick(view.canvas, Qt.Key.Key_PageUp)
    assert view.slice_index == 0  # clamped at the first slice
    view.set_slice(NZ + 5)
    assert view.slice_index == NZ - 1
    send_wheel(vp, -120)
    qtbot.keyClick(view.canvas, Qt.Key.Key_Down)
    qtbot.keyClick(view.canvas, Qt.Key.Key_PageDown)
    assert view.slice_index == NZ - 1  # clamped at the last slice
    qtbot.keyClick(view.canvas, Qt.Key.Key_PageUp)
    assert view.slice_index == NZ - 1 - max(1, NZ // 10)
    assert f"Im {view.slice_index + 1}/{NZ}" in view._bl.text()


def test_ctrl_wheel_zooms_instead_of_scrolling(view):
    vp = view.canvas.viewport()
    k0 = view.slice_index
    before = view.view.viewRect()
    send_wheel(vp, 120, Qt.KeyboardModifier.ControlModifier)
    assert view.slice_index == k0
    assert view.view.viewRect().width() < before.width()  # zoomed in
    view.handle_key(Qt.Key.Key_R)
    assert view.view.viewRect().width() == pytest.approx(before.width(), rel=1e-3)


# -- window / level ----------------------------------------------------------------------------
def test_right_drag_changes_window_and_r_resets(qtbot, view):
    vp = view.canvas.viewport()
    c0, w0 = view.window
    start = QPointF(300, 250)
    right, none = Qt.MouseButton.RightButton, Qt.MouseButton.NoButton
    send_mouse(vp, QMouseEvent.Type.MouseButtonPress, start, right, right)
    for i in range(1, 6):
        send_mouse(vp, QMouseEvent.Type.MouseMove, start + QPointF(20 * i, 10 * i), none, right)
    send_mouse(vp, QMouseEvent.Type.MouseButtonRelease, start + QPointF(100, 50), right, none)
    c1, w1 = view.window
    assert w1 > w0  # dragged right: wider
    assert c1 > c0  # dragged down: higher center
    assert f"W/L {w1:.0f}/{c1:.0f}" in view._bl.text()
    lo, hi = view.image_item.levels
    assert (lo, hi) == pytest.approx((c1 - w1 / 2, c1 + w1 / 2))
    np.testing.assert_array_equal(view.current_image(), ct_volume().array[NZ // 2])  # data untouched

    view.drag_window(-10_000, 0, start=True, finish=True)
    assert view.window[1] >= 1  # width never collapses below one unit
    qtbot.keyClick(view.canvas, Qt.Key.Key_R)
    assert view.window == (c0, w0)


def test_default_window_without_source_window_uses_percentiles_and_monochrome1_inverts(view):
    arr = np.arange(100 * 10 * 10, dtype=np.float32).reshape(100, 10, 10)
    vol = Volume(arr, info=SourceInfo(modality="MG", photometric="MONOCHROME1"))
    c, w = default_window(vol)
    lo, hi = np.percentile(arr, [1, 99])
    assert (c, w) == pytest.approx(((lo + hi) / 2, hi - lo))
    view.set_volume(vol)
    assert view.window == pytest.approx((c, w))
    assert view.image_item.lut[0] == 255 and view.image_item.lut[-1] == 0  # inverted for display
    np.testing.assert_array_equal(view.current_image(), arr[50])  # values are not inverted
    view.set_volume(ct_volume())
    assert view.image_item.lut[0] == 0


def test_volume_problems_show_in_a_warning_label(view):
    vol = ct_volume()
    vol.problems = ["2 missing slice(s): kept as blank slices"]
    view.set_volume(vol)
    assert view.warning.isVisible() and "missing slice" in view.warning.text()
    view.set_volume(ct_volume())
    assert not view.warning.isVisible()


# -- cancel and errors ----------------------------------------------------------------------------
def test_cancel_scan_and_load_then_ui_still_works(qtbot, window, ct_dir):
    checks = []

    def stop_after_three():
        checks.append(1)
        return len(checks) > 3

    with qtbot.waitSignal(window.task_cancelled, timeout=10000):
        window.open_path(ct_dir, should_stop=stop_after_three)
    assert not window.busy and not window.progress.isVisible() and not window.cancel_button.isVisible()
    assert "cancelled" in window.message.text()
    assert window.slice_view.volume is None

    open_and_wait(qtbot, window, ct_dir)  # usable again
    series = window.browser.image_series()[0]
    window._cell_series.clear()  # forget what is shown, so the same series loads again
    with qtbot.waitSignal(window.task_cancelled, timeout=10000):
        window.load_series(series, should_stop=lambda: True)
    assert window.slice_view.volume is not None  # the volume already shown stays
    window.slice_view.step_slice(1)
    assert window.slice_view.slice_index == NZ // 2 + 1


def test_cancel_button_stops_a_running_scan(qtbot, window, ct_dir):
    started = threading.Event()

    def slow_check():  # each file takes a while, so the scan is still running when Cancel is clicked
        started.set()
        time.sleep(0.05)
        return False

    window.open_path(ct_dir, should_stop=slow_check)
    assert window.cancel_button.isVisible() and window.progress.isVisible()
    assert started.wait(5)
    with qtbot.waitSignal(window.task_cancelled, timeout=10000):
        qtbot.mouseClick(window.cancel_button, Qt.MouseButton.LeftButton)
    assert not window.cancel_button.isVisible()


def test_bad_paths_give_messages_not_crashes(qtbot, window, tmp_path):
    with qtbot.waitSignal(window.task_failed, timeout=2000):
        window.open_path(tmp_path / "does-not-exist")
    assert "no such file or folder" in window.message.text()

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "bad.dcm").write_bytes(b"\0" * 50)
    with qtbot.waitSignal(window.task_failed, timeout=10000) as blocker:
        window.open_path(junk)
    assert "nothing to show" in blocker.args[0] and "bad.dcm" in blocker.args[0]
    assert "bad.dcm" in window.browser.problem_texts()[0]


def test_worker_turns_exceptions_into_failed(qtbot):
    runner = TaskRunner()
    got, results, progress = {}, [], []

    def boom(report, should_stop):
        report(2, 2)
        raise RuntimeError("disk on fire")

    try:
        runner.start(boom, "boom", on_failed=lambda m: got.setdefault("msg", m),
                     on_progress=lambda d, t: progress.append((d, t)),
                     on_finished=results.append)
        qtbot.waitUntil(lambda: "msg" in got, timeout=5000)
        assert got["msg"] == "RuntimeError: disk on fire" and results == [] and progress == [(2, 2)]
        runner.start(lambda report, should_stop: 42, "ok", on_finished=results.append)
        qtbot.waitUntil(lambda: results == [42], timeout=5000)
    finally:
        runner.shutdown()
    assert not runner.busy


def test_a_late_cancel_does_not_hide_work_already_written(qtbot):
    """Cancel pressed while the last step runs: an uncommitted result is dropped as cancelled, a
    Committed one (files already on disk) is reported as finished."""
    import threading

    runner = TaskRunner()
    finished, cancelled = [], []
    inside, release = threading.Event(), threading.Event()

    def job(committed):
        def run(report, should_stop):
            inside.set()
            release.wait(5)
            return Committed("written") if committed else "loaded"
        return run

    try:
        for committed in (False, True):
            inside.clear()
            release.clear()
            task = runner.start(job(committed), "job", on_finished=finished.append,
                                on_cancelled=lambda: cancelled.append(True))
            assert inside.wait(5)
            task.cancel()
            release.set()
            qtbot.waitUntil(lambda n=int(committed) + 1: len(finished) + len(cancelled) == n, timeout=5000)
        assert cancelled == [True] and finished == ["written"]
    finally:
        runner.shutdown()


def test_drop_folder_opens_it(qtbot, window, ct_dir):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(ct_dir))])
    ev = QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                    Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.image_shown, timeout=15000):
        window.dropEvent(ev)
    assert window.source == ct_dir
    assert window.acceptDrops()


# -- about ------------------------------------------------------------------------------------------
def test_about_says_not_a_medical_device(qtbot, window):
    assert "not a medical device" in DISCLAIMER and "Not for diagnostic use" in about_text()
    menu_texts = [a.text() for a in window.menuBar().actions()]
    assert "&Help" in menu_texts and "&File" in menu_texts
    window.about_action.trigger()  # non-blocking box
    box = window.about_box
    assert box is not None and "not a medical device" in box.text()
    box.close()


# -- the screenshot entry point -------------------------------------------------------------------------
def test_run_with_screenshot_writes_png(tmp_path, ct_dir):
    out = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "screenshot.py"), str(out), str(ct_dir)],
                          check=False, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
