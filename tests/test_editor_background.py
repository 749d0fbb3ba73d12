"""Heavy segment-editor effects run off the UI thread: the event loop keeps going while they compute,
the result equals the synchronous core function's, it is one undo step, Cancel changes nothing, edits
meanwhile are refused with a message, a map changed anyway is not written over, locked labels stay.

The compute step is patched to wait on a gate the test opens (no timing assertions)."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt, QTimer

from viewer.core.editing import flood_fill, keep_largest_island
from viewer.core.labels import LabelMap
from viewer.core.synthetic import write_ct_study
from viewer.ui import editor_controller
from viewer.ui.main_window import MainWindow

SEED = (20, 20)  # a body pixel of the phantom's shown slice


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct")
    write_ct_study(out, shape=(30, 64, 48), spacing=(5.0, 2.0, 3.0), seed=2)
    return out


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch, ct_dir):
    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path / "cache"))
    w = MainWindow()
    w.resize(1300, 850)
    w.show()
    qtbot.waitExposed(w)
    with qtbot.waitSignal(w.image_shown, timeout=30000):
        w.open_path(ct_dir)
    qtbot.waitUntil(lambda: not w.busy, timeout=30000)
    yield w
    w.shutdown()  # after shutdown, closing does not ask about unsaved edits
    w.close()
    w.deleteLater()


class Gate:
    """Wraps a plan function: it waits (honouring Cancel) until the test opens the gate."""

    def __init__(self, monkeypatch, name: str):
        self.real = getattr(editor_controller, name)
        self.started, self.opened = threading.Event(), threading.Event()
        self.thread = None
        monkeypatch.setattr(editor_controller, name, self.plan)

    def plan(self, *args, should_stop=None, **kw):
        self.thread = threading.current_thread()
        self.started.set()
        while not self.opened.wait(0.005):
            if should_stop is not None and should_stop():
                break
        return self.real(*args, should_stop=should_stop, **kw)


def start_3d_fill(qtbot, w, gate, unlabelled_only=True, new_label=False):
    """Fill tool, 3D, everything connected, from a body pixel; returns (labelmap, view, plane pixel,
    a copy of the map before the fill, undo steps before). The gate holds the compute."""
    view = w.slice_view
    w.set_tool("brush")
    view.tool.click(*view.pixel_center(40, 30))  # creates the map (label 1) with one dab
    lm = w.editor.session.maps[editor_controller.map_key(view.volume)]
    if new_label:
        w.editor.add_label()  # label 2, active: fills with it
    w.set_tool("fill")
    p = w.editor.panel
    p.fill_3d.setChecked(True)
    p.fill_unlabelled.setChecked(unlabelled_only)
    p.tolerance.setValue(5000)
    rc = view.tool.plane_pixel(*view.pixel_center(*SEED))
    before = LabelMap(view.volume, lm.array.copy(), list(lm.labels.values()))
    steps = len(lm.history)
    view.tool.click(*view.pixel_center(*SEED))
    qtbot.waitUntil(gate.started.is_set, timeout=10000)
    return lm, view, rc, before, steps


def sync_fill(before: LabelMap, view, rc, value, unlabelled_only=True) -> np.ndarray:
    """The synchronous core function on a copy of the map as it was."""
    ref = LabelMap(view.volume, before.array.copy(), list(before.labels.values()))
    flood_fill(ref, view.volume, view.plane_geometry, view.slice_index, *rc, value, 5000, three_d=True,
               over=0 if unlabelled_only else None)
    return ref.array


def finish(qtbot, w, gate):
    gate.opened.set()
    qtbot.waitUntil(lambda: not w.editor.session.effects.running and not w.busy, timeout=30000)


def test_3d_fill_runs_in_the_background_equals_the_core_and_is_one_undo_step(qtbot, window, monkeypatch):
    w = window
    gate = Gate(monkeypatch, "plan_flood_fill")
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(10)
    lm, view, rc, before, steps = start_3d_fill(qtbot, w, gate)
    assert gate.thread is not threading.main_thread()  # computed on a worker...
    qtbot.waitUntil(lambda: len(ticks) >= 5, timeout=10000)  # ...while the event loop keeps processing
    np.testing.assert_array_equal(lm.array, before.array)  # nothing written yet
    assert w.cancel_button.isVisible() and not w.editor.undo_action.isEnabled()
    assert not w.editor.panel.keep_largest.isEnabled()
    finish(qtbot, w, gate)
    timer.stop()

    expected = sync_fill(before, view, rc, lm.active)
    assert (expected != before.array).sum() > 1000  # the body: many slices, not one
    assert len(np.unique(np.nonzero(expected != before.array)[0])) > 1
    np.testing.assert_array_equal(lm.array, expected)
    assert len(lm.history) == steps + 1 and lm.history.undo_name == "fill"
    assert "3D fill" in w.message.text() and "voxels changed" in w.message.text()
    assert w.editor.undo_action.isEnabled() and w.editor.panel.keep_largest.isEnabled()
    w.editor.undo()
    np.testing.assert_array_equal(lm.array, before.array)
    w.editor.redo()
    np.testing.assert_array_equal(lm.array, expected)


def test_edits_while_computing_are_refused_and_cancel_changes_nothing(qtbot, window, monkeypatch):
    w = window
    gate = Gate(monkeypatch, "plan_flood_fill")
    lm, view, _rc, before, steps = start_3d_fill(qtbot, w, gate)
    version = lm.version

    w.set_tool("brush")  # a brush dab on the computing map: refused, said so
    view.tool.click(*view.pixel_center(10, 10))
    assert "refused" in w.message.text() and "3D fill" in w.message.text()
    w.editor.undo()  # undo too
    assert "refused" in w.message.text()
    w.editor.effect("keep largest island", lambda lm_, v: None)  # and another effect
    assert "refused" in w.message.text()
    w.set_tool("fill")
    w.editor.panel.fill_3d.setChecked(False)  # a 2D fill, synchronous, on the same map
    view.tool.click(*view.pixel_center(*SEED))
    assert "refused" in w.message.text()
    assert lm.version == version
    np.testing.assert_array_equal(lm.array, before.array)

    w.cancel_button.click()  # the window's Cancel: the compute stops at its next check
    qtbot.waitUntil(lambda: not w.editor.session.effects.running and not w.busy, timeout=30000)
    assert "cancelled" in w.message.text()
    np.testing.assert_array_equal(lm.array, before.array)
    assert len(lm.history) == steps and lm.version == version
    w.set_tool("brush")  # the map is free again
    view.tool.click(*view.pixel_center(10, 10))
    assert len(lm.history) == steps + 1


def test_a_map_changed_anyway_is_not_written_over(qtbot, window, monkeypatch):
    w = window
    gate = Gate(monkeypatch, "plan_flood_fill")
    lm, view, _rc, _before, steps = start_3d_fill(qtbot, w, gate)
    k = view.slice_index
    with lm.edit("elsewhere") as e:  # not through the refused tools: e.g. a script or another view's path
        e.write((k, k + 1, 0, 2, 0, 2), None, lm.active)
    edited = lm.array.copy()
    finish(qtbot, w, gate)
    assert "not applied" in w.message.text()
    np.testing.assert_array_equal(lm.array, edited)
    assert len(lm.history) == steps + 1 and lm.history.undo_name == "elsewhere"


def test_locked_labels_stay_even_when_locked_while_computing(qtbot, window, monkeypatch):
    w = window
    gate = Gate(monkeypatch, "plan_flood_fill")
    # label 2 over everything connected, labels included: only a lock protects label 1's dab
    lm, view, rc, before, steps = start_3d_fill(qtbot, w, gate, unlabelled_only=False, new_label=True)
    assert lm.active == 2
    dab = lm.array == 1
    assert dab.any()
    panel = w.editor.panel  # lock label 1 in the table: not an edit, allowed meanwhile
    panel.table.item(panel.values.index(1), 3).setCheckState(Qt.CheckState.Checked)
    assert lm.labels[1].locked
    finish(qtbot, w, gate)
    assert (lm.array[dab] == 1).all()
    locked = LabelMap(view.volume, before.array.copy(), list(lm.labels.values()))
    np.testing.assert_array_equal(lm.array, sync_fill(locked, view, rc, 2, unlabelled_only=False))
    assert len(lm.history) == steps + 1

    # the fill's own label locked: refused at once, nothing computed
    lm.set_locked(2, True)
    gate.started.clear()
    view.tool.click(*view.pixel_center(*SEED))
    assert "locked" in w.message.text() and not w.editor.session.effects.running
    assert not gate.started.is_set() and len(lm.history) == steps + 1


def test_panel_effect_runs_in_the_background_and_equals_the_core(qtbot, window, monkeypatch):
    w = window
    gate = Gate(monkeypatch, "plan_keep_largest_island")
    view = w.slice_view
    w.set_tool("brush")
    view.tool.click(*view.pixel_center(40, 30))
    lm = w.editor.session.maps[editor_controller.map_key(view.volume)]
    k = view.slice_index
    with lm.edit("two pieces") as e:  # a second, smaller piece of label 1
        e.write((k, k + 1, 2, 4, 2, 4), None, 1)
    before = lm.array.copy()
    steps = len(lm.history)
    w.editor.panel.keep_largest.click()
    qtbot.waitUntil(gate.started.is_set, timeout=10000)
    assert gate.thread is not threading.main_thread()
    finish(qtbot, w, gate)
    ref = LabelMap(view.volume, before.copy(), list(lm.labels.values()))
    assert keep_largest_island(ref, 1) > 0
    np.testing.assert_array_equal(lm.array, ref.array)
    assert len(lm.history) == steps + 1 and lm.history.undo_name == "keep largest island"
    w.editor.undo()
    np.testing.assert_array_equal(lm.array, before)


def test_an_effect_stopped_by_another_task_says_so_and_changes_nothing(qtbot, window, monkeypatch):
    w = window
    gate = Gate(monkeypatch, "plan_flood_fill")
    lm, _view, _rc, before, steps = start_3d_fill(qtbot, w, gate)
    messages = []
    monkeypatch.setattr(w, "show_message", lambda text, kind="info": messages.append(text))
    w._start("Opening another series", lambda progress, should_stop: 1, lambda result: None)
    finish(qtbot, w, gate)
    np.testing.assert_array_equal(lm.array, before.array)
    assert len(lm.history) == steps
    assert any("stopped by Opening another series" in m and "nothing changed" in m for m in messages), messages
    assert not w.editor.session.effects.running  # the map is free again
