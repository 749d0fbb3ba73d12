"""Rulers and ROIs drawn in the main window come back when the study is reopened (autosaved DICOM SR).

A real drag draws a ruler, the tool API draws a rectangle and an ellipse on other slices of a
shuffled CT; the window closes; a new window opens the folder and finds them on the same
slices with the same values. A measurement SR found in the opened folder (as retrieved from a
PACS) is restored too (and one deleted after that stays deleted), and File > Save measurements
as DICOM SR writes one that highdicom reads; an ROI on the mirrored RCC of the 4-view hanging is
saved in image coordinates. Each test keeps its autosaves in its own LIGHTBOX_CACHE_DIR.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QEvent, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from qt_helpers import close_quietly, editor_window, open_and_wait  # noqa: E402
from viewer.core.export.measurement_sr import read_measurements_sr  # noqa: E402
from viewer.core.synthetic import write_ct_study  # noqa: E402
from viewer.ui.measurement_store import autosave_path  # noqa: E402

_clock = [50_000]


def _send(view, kind, pos, buttons, button=Qt.MouseButton.LeftButton):
    vp = view.canvas.viewport()
    ev = QMouseEvent(kind, QPointF(pos), QPointF(vp.mapToGlobal(pos.toPoint())), button, buttons,
                     Qt.KeyboardModifier.NoModifier)
    _clock[0] += 50
    ev.setTimestamp(_clock[0])
    QApplication.sendEvent(vp, ev)


def drag_scene(view, p0_mm, p1_mm, steps=6):
    """A real left-button drag on the viewport between two scene points (mm)."""
    def at(p):
        return QPointF(view.canvas.mapFromScene(view.view.mapViewToScene(QPointF(*p))))
    a, b = at(p0_mm), at(p1_mm)
    left = Qt.MouseButton.LeftButton
    _send(view, QEvent.Type.MouseButtonPress, a, left)
    for i in range(1, steps + 1):
        QTest.qWait(20)
        _send(view, QEvent.Type.MouseMove, a + (b - a) * (i / steps), left, Qt.MouseButton.NoButton)
    _send(view, QEvent.Type.MouseButtonRelease, b, Qt.MouseButton.NoButton)
    QApplication.processEvents()


def tool_drag(tool, p0, p1):
    tool.press(*p0)
    tool.move((p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2)
    return tool.release(*p1)


def summary(view):
    """What a user sees of each measurement: kind, slice, value(s), text."""
    out = []
    for m in view.measurements:
        s = m.stats()
        out.append((m.kind, m.slice_index, round(s["value"], 4),
                    None if s["mean"] is None else round(s["mean"], 4), m.text))
    return sorted(out, key=lambda t: (t[1], t[0]))


@pytest.fixture
def ct(tmp_path):
    folder = tmp_path / "ct"
    write_ct_study(folder, shape=(20, 64, 64), spacing=(3.0, 1.5, 1.5), seed=4, file_order="shuffled")
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    where = tmp_path / "cache"
    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(where))
    return where


def draw_three(qtbot, w):
    view = w.slice_view
    view.set_slice(7)
    w.set_tool("ruler")
    drag_scene(view, view.pixel_center(10, 12), view.pixel_center(40, 50))
    view.set_slice(12)
    w.set_tool("rect")
    tool_drag(view.tool, view.pixel_center(20, 20), view.pixel_center(35, 44))
    w.set_tool("ellipse")
    tool_drag(view.tool, view.pixel_center(40, 10), view.pixel_center(55, 30))
    w.set_tool("navigate")
    return view


def test_measurements_come_back_after_reopening(qtbot, ct, cache):
    w = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w, ct)
        view = draw_three(qtbot, w)
        before = summary(view)
        assert [b[:2] for b in before] == [("ruler", 7), ("ellipse", 12), ("rect", 12)]
        assert w.measurement_store.flush()
        study = view.volume.info.study_uid
    finally:
        close_quietly(w)
    saved = autosave_path(study, cache / "measurements")
    assert saved.exists()
    records = read_measurements_sr(saved)
    assert sorted(r.kind for r in records) == ["ellipse", "rect", "ruler"]

    w2 = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w2, ct)
        view2 = w2.slice_view
        assert summary(view2) == before
        view2.set_slice(12)
        assert [m.kind for m in view2.measurements if m.is_visible()] and \
            all(m.slice_index == 12 for m in view2.measurements if m.is_visible())
        # deleting one is saved too: the next open has two
        ruler = next(m for m in view2.measurements if m.kind == "ruler")
        assert view2.remove_measurement(ruler)
        assert w2.measurement_store.flush()
    finally:
        close_quietly(w2)
    assert sorted(r.kind for r in read_measurements_sr(saved)) == ["ellipse", "rect"]


def test_sr_in_the_opened_folder_is_restored_and_save_as_writes_one(qtbot, ct, cache, tmp_path):
    w = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w, ct)
        view = draw_three(qtbot, w)
        before = summary(view)
        out = w.measurement_store.save_as(tmp_path / "chosen.sr.dcm")
    finally:
        close_quietly(w)
    import highdicom as hd

    sr = hd.sr.srread(out)
    assert len(sr.content.get_planar_roi_measurement_groups()) == 2
    assert len(sr.content.get_image_measurement_groups()) == 1

    # a fresh machine: no autosave; the SR lies in the study folder as retrieved from a PACS
    shutil.rmtree(cache, ignore_errors=True)
    pacs = tmp_path / "retrieved"
    shutil.copytree(ct, pacs)
    shutil.copy(out, pacs / "SR000001.dcm")
    w2 = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w2, pacs)
        assert summary(w2.slice_view) == before
        ruler = next(m for m in w2.slice_view.measurements if m.kind == "ruler")
        assert w2.slice_view.remove_measurement(ruler)  # deleted here: the PACS copy must not bring it back
        assert w2.measurement_store.flush()
    finally:
        close_quietly(w2)
    w3 = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w3, pacs)
        assert summary(w3.slice_view) == [b for b in before if b[0] != "ruler"]
    finally:
        close_quietly(w3)


def test_a_measurement_on_a_coronal_reformat_comes_back_there(qtbot, ct, cache):
    w = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w, ct)
        w.set_layout("mpr")
        QApplication.processEvents()
        cor = w.mpr_layout.views["coronal"]
        cor.set_slice(30)
        w.set_tool("ruler")
        tool_drag(cor.tool, cor.pixel_center(3, 10), cor.pixel_center(15, 50))
        before = summary(cor)
        assert w.measurement_store.flush()
        study = cor.volume.info.study_uid
    finally:
        close_quietly(w)
    (rec,) = read_measurements_sr(autosave_path(study, cache / "measurements"))
    assert rec.is_3d and len(rec.world) == 2  # a coronal cut of an axial CT is no acquired image
    w2 = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w2, ct)
        w2.set_layout("mpr")
        QApplication.processEvents()
        assert summary(w2.mpr_layout.views["coronal"]) == before
        assert w2.mpr_layout.views["axial"].measurements == []
    finally:
        close_quietly(w2)
    assert np.isfinite(rec.value)


def test_an_roi_on_a_mirrored_mammogram_is_saved_on_the_image_and_comes_back(qtbot, cache, tmp_path):
    from viewer.core.synthetic import write_mammo_exam

    write_mammo_exam(tmp_path / "mg", (256, 192), seed=2, lesion_side="R")
    w = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w, tmp_path / "mg")
        assert w.views.currentWidget() is w.mammo_layout
        cell = w.mammo_layout.cells["RCC"]
        assert cell.flips[0]  # the right breast is mirrored on screen
        w.set_tool("ellipse")
        tool_drag(cell.tool, cell.pixel_center(40, 10), cell.pixel_center(70, 30))
        w.set_tool("navigate")
        before = summary(cell)
        assert w.measurement_store.flush()
        study = cell.volume.info.study_uid
    finally:
        close_quietly(w)
    (rec,) = read_measurements_sr(autosave_path(study, cache / "measurements"))
    pts = np.asarray(rec.points)  # image (column, row), not the mirrored screen's
    assert (pts[:, 0].min(), pts[:, 0].max(), pts[:, 1].min(), pts[:, 1].max()) == (10.5, 30.5, 40.5, 70.5)
    w2 = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w2, tmp_path / "mg")
        assert summary(w2.mammo_layout.cells["RCC"]) == before
        assert all(not c.measurements for n, c in w2.mammo_layout.cells.items() if n != "RCC")
    finally:
        close_quietly(w2)
