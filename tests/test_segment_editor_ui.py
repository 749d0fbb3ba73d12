"""The segment editor in the window: tools on real views (MPR planes, mammo cells), keys, undo/redo,
statistics, save/load, closing with unsaved edits, and recovery after the process is killed."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QMessageBox
from qt_helpers import close_quietly, editor_window, open_and_wait

from viewer.core.editing import Stroke
from viewer.core.labels import LabelMap
from viewer.core.synthetic import write_ct_study, write_mammo_exam
from viewer.ui.editor_controller import EDIT_LAYER

REPO = Path(__file__).resolve().parents[1]
_clock = [50_000]


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct")
    write_ct_study(out, shape=(30, 64, 48), spacing=(5.0, 2.0, 3.0), seed=2)  # anisotropic on purpose
    return out


@pytest.fixture(scope="module")
def mg_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mg")
    write_mammo_exam(out, (256, 200), seed=2)
    return out


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path / "cache"))  # recovery files of this test only
    w = editor_window(qtbot)
    yield w
    close_quietly(w)


def _send(view, kind, pos, buttons, button=Qt.MouseButton.LeftButton):
    vp = view.canvas.viewport()
    ev = QMouseEvent(kind, QPointF(pos), QPointF(vp.mapToGlobal(pos.toPoint())), button, buttons,
                     Qt.KeyboardModifier.NoModifier)
    _clock[0] += 50
    ev.setTimestamp(_clock[0])
    QApplication.sendEvent(vp, ev)


def drag_pixels(view, pixels):
    """A real left-button drag through plane pixels (row, col) of the shown slice."""
    def vp_pos(rc):
        scene = view.view.mapViewToScene(QPointF(*view.pixel_center(*rc)))
        return QPointF(view.canvas.mapFromScene(scene))
    left = Qt.MouseButton.LeftButton
    _send(view, QEvent.Type.MouseButtonPress, vp_pos(pixels[0]), left)
    for rc in pixels[1:]:
        QTest.qWait(20)  # pyqtgraph's mouse-move rate limit
        _send(view, QEvent.Type.MouseMove, vp_pos(rc), left, Qt.MouseButton.NoButton)
    _send(view, QEvent.Type.MouseButtonRelease, vp_pos(pixels[-1]), Qt.MouseButton.NoButton)
    QApplication.processEvents()


def key(qtbot, w, view, k, modifier=Qt.KeyboardModifier.NoModifier):
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow, timeout=3000)
    view.canvas.setFocus()
    qtbot.keyClick(view.canvas, k, modifier)
    QApplication.processEvents()


def test_brush_drag_in_the_coronal_plane_paints_the_right_voxels_and_undoes(qtbot, window, ct_dir):
    w = window
    open_and_wait(qtbot, w, ct_dir)
    w.set_layout("mpr")
    coronal = w.mpr_layout.views["coronal"]
    key(qtbot, w, coronal, Qt.Key.Key_B)
    assert w.tool_name == "brush" and w.editor.dock.isVisible()
    w.editor.panel.radius.setValue(4.0)
    pixels = [(8, 10), (9, 13), (10, 16), (10, 19)]
    drag_pixels(coronal, pixels)
    lm, vol = w.editor.session.labelmap_for(coronal)
    assert lm.array.any() and lm.history.can_undo

    # the same stroke through the core on a fresh map: identical voxels (the UI adds nothing, loses nothing)
    expected = LabelMap(vol)
    expected.add_label("Segment 1")
    with Stroke(expected, vol, coronal.plane_geometry, coronal.slice_index, 4.0, 1) as s:
        for r, c in pixels:
            s.add(r, c)
    np.testing.assert_array_equal(lm.array, expected.array)
    # the coronal plane is one array row (y) here: nothing outside it changed
    ys = np.nonzero(lm.array)[1]
    assert set(ys.tolist()) == {coronal.slice_index}
    # every plane shows the edit layer, and the axial view through a painted voxel shows it painted
    axial = w.mpr_layout.views["axial"]
    assert all(v.layer(EDIT_LAYER) is not None for v in w.mpr_layout.views.values())
    axial.set_slice(next(k for k in range(axial.slice_count)
                         if (axial._cut(lm.array, k) > 0).any()))
    assert (axial.layer(EDIT_LAYER).image[..., 3] > 0).any()

    painted = lm.array.copy()
    key(qtbot, w, coronal, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not lm.array.any()
    key(qtbot, w, coronal, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(lm.array, painted)


def test_keys_labels_stats_fill_and_save_load(qtbot, window, ct_dir, tmp_path):
    import highdicom as hd

    w = window
    open_and_wait(qtbot, w, ct_dir)
    view = w.slice_view
    key(qtbot, w, view, Qt.Key.Key_B)
    r0 = w.editor.panel.radius.value()
    key(qtbot, w, view, Qt.Key.Key_BracketRight)
    assert w.editor.panel.radius.value() > r0
    key(qtbot, w, view, Qt.Key.Key_BracketLeft)
    assert w.editor.panel.radius.value() == pytest.approx(r0)
    view.tool.click(*view.pixel_center(20, 20))  # creates the map with "Segment 1"
    lm, vol = w.editor.session.labelmap_for(view)
    key(qtbot, w, view, Qt.Key.Key_2)  # the next value: a new label, active
    assert lm.active == 2 and len(lm.labels) == 2
    view.tool.click(*view.pixel_center(40, 30))
    assert set(np.unique(lm.array)) == {0, 1, 2}

    # statistics in the table: voxel counts and mL from the map itself
    w.editor.refresh_panel()
    stats = w.editor.panel.stats_texts()
    voxel_ml = float(np.prod(vol.spacing)) / 1000
    for value, lb in lm.labels.items():
        n = int((lm.array == value).sum())
        assert stats[lb.name]["voxels"] == str(n)
        assert stats[lb.name]["size"] == f"{n * voxel_ml:.2f} mL"

    # flood fill with F: the connected body region around a pixel at its intensity
    key(qtbot, w, view, Qt.Key.Key_F)
    w.editor.panel.tolerance.setValue(5000)  # everything connected
    w.editor.panel.fill_unlabelled.setChecked(True)
    key(qtbot, w, view, Qt.Key.Key_3)
    view.tool.click(*view.pixel_center(2, 2))
    k = view.slice_index
    assert (lm.array[k] == 0).sum() == 0 and (lm.array[k] == 3).any()  # 2D fill: this slice only
    assert not (lm.array[k + 1] == 3).any()

    # per-label opacity and visibility reach the drawn layer's table
    panel = w.editor.panel
    panel.table.selectRow(panel.values.index(1))
    panel.label_opacity.setValue(20)
    layer = view.layer(EDIT_LAYER)
    assert lm.labels[1].opacity == pytest.approx(0.2)
    assert layer.lut()[1, 3] == round(255 * layer.opacity * 0.2)
    panel.table.item(panel.values.index(2), 2).setCheckState(Qt.CheckState.Unchecked)  # hide label 2
    assert not lm.labels[2].visible and layer.lut()[2, 3] == 0

    # save as NIfTI and DICOM SEG, load back
    nii = w.editor.save(tmp_path / "seg.nii.gz")
    assert not lm.dirty
    seg_path = w.editor.save(tmp_path / "seg.dcm")
    seg = hd.seg.segread(seg_path)
    assert seg.number_of_segments == 3
    assert {seg.get_segment_description(i).SegmentLabel for i in (1, 2, 3)} == \
        {lb.name for lb in lm.labels.values()}
    saved = lm.array.copy()
    lm.undo()
    assert lm.dirty
    loaded = w.editor.load(nii)
    np.testing.assert_array_equal(loaded.array, saved)
    loaded = w.editor.load(seg_path)
    np.testing.assert_array_equal(loaded.array, saved)


def test_brush_on_a_mirrored_mammogram_paints_under_the_cursor(qtbot, window, mg_dir):
    w = window
    open_and_wait(qtbot, w, mg_dir)
    cell = w.mammo_layout.cells["RCC"]
    assert cell.flips[0]  # RCC is mirrored for the hanging
    w.set_tool("brush")
    w.editor.panel.radius.setValue(0.1)  # one pixel
    row, col = 100, 30  # display pixel (before display flips) -> stored column is mirrored
    cell.tool.click(*cell.pixel_center(row, col))
    lm, vol = w.editor.session.labelmap_for(cell)
    assert np.argwhere(lm.array).tolist() == [[0, row, col]]
    # the drawn layer shows it where the mouse was: at the mirrored screen column
    img = cell.layer(EDIT_LAYER).image
    assert img[row, vol.shape[2] - 1 - col, 3] > 0


def test_closing_with_unsaved_edits_asks(qtbot, window, ct_dir, monkeypatch):
    w = window
    open_and_wait(qtbot, w, ct_dir)
    w.set_tool("brush")
    w.slice_view.tool.click(*w.slice_view.pixel_center(10, 10))
    answers = []

    def ask(*_args, **_kw):
        answers.append(1)
        return QMessageBox.StandardButton.Cancel

    monkeypatch.setattr(QMessageBox, "question", ask)
    assert not w.close()  # cancelled: the window stays
    assert answers and w.isVisible()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Discard)
    assert w.close()


CHILD = textwrap.dedent("""
    import json, os, sys, time
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtWidgets import QApplication
    app = QApplication([])
    import viewer.ui
    from viewer.ui.main_window import MainWindow
    w = MainWindow(); w.resize(900, 700); w.show()
    def wait(cond, t=60):
        end = time.time() + t
        while time.time() < end and not cond():
            app.processEvents(); time.sleep(0.01)
    shown = []
    w.image_shown.connect(lambda: shown.append(1))
    w.open_path(sys.argv[1]); wait(lambda: shown and not w.busy)
    saved = []
    w.editor.autosaver.on_saved = lambda info: saved.append(info.version)
    w.set_tool("brush")
    v = w.slice_view
    for i in range(3):
        v.tool.click(*v.pixel_center(10 + 8 * i, 12 + 5 * i))
        lm, vol = w.editor.session.labelmap_for(v)
        version = lm.version
        wait(lambda: saved and saved[-1] >= version, 20)
        np_path = sys.argv[2] + f".{i}.npy"
        import numpy as np
        np.save(np_path, lm.array)
        print(json.dumps({"version": version, "array": np_path}), flush=True)
    time.sleep(600)  # killed here, edits unsaved by the user
""")


def test_edits_survive_a_kill_and_are_offered_back(qtbot, tmp_path, ct_dir, monkeypatch):
    cache = tmp_path / "cache"
    env = {**os.environ, "LIGHTBOX_CACHE_DIR": str(cache), "QT_QPA_PLATFORM": "offscreen",
           "PYTHONPATH": str(REPO)}
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(ct_dir), str(tmp_path / "state")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        reports = []
        while len(reports) < 3:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()[-3000:]
            if line.startswith("{"):
                reports.append(json.loads(line))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    expected = np.load(reports[-1]["array"])

    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(cache))
    w = editor_window(qtbot, (1100, 800))
    try:
        offered = w.editor.offer_recovery()
        assert len(offered) == 1 and offered[0].version >= reports[-1]["version"]
        assert w.editor.recovery_box is not None and w.editor.recovery_box.isVisible()
        restore = next(b for b in w.editor.recovery_box.buttons() if b.text() == "Restore")
        with qtbot.waitSignal(w.image_shown, timeout=30000):
            restore.click()  # opens the study it belongs to ...
        qtbot.waitUntil(lambda: w.editor.pending_restore is None, timeout=30000)
        lm, _vol = w.editor.session.labelmap_for(w.slice_view, create=False)
        np.testing.assert_array_equal(lm.array, expected)  # ... with the edits, bit for bit
        assert lm.dirty and w.slice_view.layer(EDIT_LAYER) is not None
    finally:
        close_quietly(w)


def test_the_edited_map_replaces_the_ai_labels_and_s_toggles_it(qtbot, window, ct_dir):
    from viewer.ui.analysis_controller import LABEL_LAYER

    w = window
    open_and_wait(qtbot, w, ct_dir)
    with qtbot.waitSignal(w.analysis.analysis_finished, timeout=120000):
        w.analysis.action.trigger()
    view = w.slice_view
    assert view.layer(LABEL_LAYER) is not None
    ai = w.analysis.current.series[w.shown_series.key].overlay("segmentation")
    w.set_tool("brush")
    view.tool.click(*view.pixel_center(5, 5))
    lm, _ = w.editor.session.labelmap_for(view)
    assert {lb.name for lb in lm.labels.values()} >= set(ai.classes[1:])  # the model's class names
    assert view.layer(LABEL_LAYER) is None and view.layer(EDIT_LAYER) is not None
    assert not np.array_equal(lm.array, ai.array) and ai.array[lm.array != ai.array].size  # AI result kept
    w.set_segmentation_visible(False)
    assert not view.layer(EDIT_LAYER).visible
    w.set_segmentation_visible(True)
    w.analysis.refresh_overlays()  # e.g. after a layout change: the AI labels do not come back
    assert view.layer(LABEL_LAYER) is None and view.layer(EDIT_LAYER).visible


def test_export_for_training_from_the_editor(qtbot, window, ct_dir, tmp_path):
    w = window
    open_and_wait(qtbot, w, ct_dir)
    with qtbot.waitSignal(w.analysis.analysis_finished, timeout=120000):
        w.analysis.action.trigger()
    w.set_tool("brush")
    w.editor.panel.radius.setValue(6.0)
    view = w.slice_view
    view.tool.click(*view.pixel_center(20, 20))
    with qtbot.waitSignal(w.editor.exported, timeout=60000) as blocker:
        w.editor.export(tmp_path / "datasets")
    out = blocker.args[0]
    lines = (out["dataset"] / "provenance.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["model"]["name"] == "ct-organs-unet3d"
    assert record["edits"]["voxels_changed"] > 0  # what the user changed against the model's map
    assert out["seg"] is not None and out["seg"].is_file()
    assert out["image"].is_file() and out["label"].is_file()
