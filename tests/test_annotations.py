"""Angle, Cobb angle, arrow and text annotations (issue 14): drawn with the mouse, edited, saved in the
measurement SR (dciodvfy-clean, read back by highdicom and by us) and put back when the study reopens.

Angles are checked against hand-computed values on anisotropic pixels (0.5 mm rows x 2 mm
columns), where an angle measured in pixels would be wrong.
"""
from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest

pytest.importorskip("pytestqt")
pg = pytest.importorskip("pyqtgraph")

from PySide6.QtCore import QEvent, QPointF, Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from qt_helpers import close_quietly, editor_window, open_and_wait  # noqa: E402
from test_measure_tools import _clock, _send, aniso_volume, drag_scene, make_view  # noqa: E402
from test_measurement_sr import dciodvfy_errors, opened  # noqa: E402
from viewer.core.export.measurement_sr import (COMPREHENSIVE_3D_SR, COMPREHENSIVE_SR,  # noqa: E402
                                               read_measurements_sr, write_measurements_sr)
from viewer.core.measure_records import from_display_points, to_display_points  # noqa: E402
from viewer.core.mpr import native_geometry, plane_geometry  # noqa: E402
from viewer.core.synthetic import write_ct_study  # noqa: E402
from viewer.ui.measure_tools import (TOOLS, AngleTool, ArrowTool, CobbTool, TextTool,  # noqa: E402
                                     restore_measurement)
from viewer.ui.measurement_store import autosave_path  # noqa: E402
from viewer.ui.slice_view import SliceView  # noqa: E402

ATAN_HALF = math.degrees(math.atan(0.5))  # 26.565...


def click_scene(view, p_mm):
    """A real left click (press + release, no move) at a scene point in mm."""
    pos = QPointF(view.canvas.mapFromScene(view.view.mapViewToScene(QPointF(*p_mm))))
    _send(view, QEvent.Type.MouseButtonPress, pos, Qt.MouseButton.LeftButton)
    _send(view, QEvent.Type.MouseButtonRelease, pos, Qt.MouseButton.NoButton)
    _clock[0] += 1000  # the next click is a click of its own, not the second half of a double click
    QApplication.processEvents()


def changes(view) -> list:
    seen = []
    view.measurements_changed.connect(lambda: seen.append(1))
    return seen


# -- the tools, with the mouse ------------------------------------------------------------------
def test_every_new_tool_is_in_the_tool_table():
    assert {"angle", "cobb", "arrow", "text"} <= set(TOOLS)
    for name in ("angle", "cobb", "arrow", "text"):
        assert TOOLS[name].title and TOOLS[name].tip


def test_angle_by_three_real_clicks_is_measured_in_mm(qtbot):
    view = make_view(qtbot, aniso_volume())  # 0.5 mm rows, 2.0 mm columns
    view.set_tool("angle")
    seen = changes(view)
    # arm end 10 columns right of the vertex (20 mm), the other 20 rows down and 10 columns right
    # (10 mm, 20 mm): atan(10 / 20) in the patient, where the pixel grid would say atan(20 / 10)
    for rc in ((10, 15), (10, 5), (30, 15)):
        click_scene(view, view.pixel_center(*rc))
    assert len(view.measurements) == 1
    m = view.measurements[0]
    assert m.kind == "angle" and m.is_complete()
    assert m.value == pytest.approx(ATAN_HALF, abs=0.5)  # real clicks land on whole screen pixels
    assert m.text == f"{m.value:.1f}°"
    assert len(seen) == 1  # saved once, when finished, not at each click


def test_angle_by_drag_then_click_and_the_point_follows_the_mouse(qtbot):
    view = make_view(qtbot, aniso_volume())
    view.set_tool("angle")
    drag_scene(view, view.pixel_center(10, 15), view.pixel_center(10, 5))  # first arm: end -> vertex
    m = view.measurements[0]
    assert not m.is_complete() and m.placing == 2
    view.tool.hover(*view.pixel_center(30, 5))  # the free arm follows: straight down = 90 degrees
    assert m.value == pytest.approx(90.0, abs=0.5)
    click_scene(view, view.pixel_center(30, 15))
    assert m.is_complete() and m.value == pytest.approx(ATAN_HALF, abs=0.5)


def test_cobb_angle_by_two_real_drags_with_perpendiculars(qtbot):
    view = make_view(qtbot, aniso_volume())
    view.set_tool("cobb")
    seen = changes(view)
    # upper line level, lower line 20 rows (10 mm) down over 10 columns (20 mm): atan(0.5) between them
    drag_scene(view, view.pixel_center(8, 3), view.pixel_center(8, 13))
    assert not view.measurements[0].is_complete() and not seen
    drag_scene(view, view.pixel_center(30, 3), view.pixel_center(50, 13))
    m = view.measurements[0]
    assert m.kind == "cobb" and m.is_complete() and len(seen) == 1
    assert m.value == pytest.approx(ATAN_HALF, abs=0.5)
    assert m.text == f"Cobb {m.value:.1f}°"
    xs, ys = m._perpendiculars.getData()
    assert len(xs) == 4  # one perpendicular from the middle of each line
    for (i, j), (a, b) in zip(((0, 1), (2, 3)), ((0, 1), (2, 3))):
        line = np.subtract(m.pts[j], m.pts[i])
        perp = np.array([xs[b] - xs[a], ys[b] - ys[a]])
        assert abs(float(np.dot(line, perp))) < 1e-6 * np.linalg.norm(line) * np.linalg.norm(perp)


def test_cobb_angle_by_four_clicks(qtbot):
    view = make_view(qtbot, aniso_volume())
    tool = view.set_tool(CobbTool())
    for rc in ((8, 3), (8, 13), (30, 3), (50, 13)):
        tool.click(*view.pixel_center(*rc))
    assert view.measurements[0].value == pytest.approx(ATAN_HALF, abs=1e-6)


def test_escape_cancels_a_half_placed_angle_and_delete_removes_a_finished_one(qtbot):
    view = make_view(qtbot, aniso_volume())
    tool = view.set_tool(AngleTool())
    seen = changes(view)
    tool.click(*view.pixel_center(10, 15))
    tool.click(*view.pixel_center(10, 5))
    assert len(view.measurements) == 1
    assert view.handle_key(Qt.Key.Key_Escape)
    assert view.measurements == [] and view.tool is None and not seen
    tool = view.set_tool("angle")
    for rc in ((10, 15), (10, 5), (30, 15)):
        tool.click(*view.pixel_center(*rc))
    assert len(view.measurements) == 1
    assert view.handle_key(Qt.Key.Key_Delete)
    assert view.measurements == [] and len(seen) == 2


def test_scrolling_away_drops_a_half_placed_cobb_angle(qtbot):
    view = make_view(qtbot, aniso_volume())
    tool = view.set_tool("cobb")
    for rc in ((8, 3), (8, 13)):
        tool.click(*view.pixel_center(*rc))
    view.set_slice(view.slice_index + 1)
    tool.click(*view.pixel_center(30, 3))  # starts a new one on this slice
    assert len(view.measurements) == 1 and view.measurements[0].slice_index == view.slice_index
    assert view.measurements[0].placing == 1


def test_finished_angle_is_edited_by_its_handles_and_moved_by_an_arm(qtbot):
    view = make_view(qtbot, aniso_volume())
    tool = view.set_tool("angle")
    for rc in ((10, 15), (10, 5), (30, 15)):
        tool.click(*view.pixel_center(*rc))
    m = view.measurements[0]
    seen = changes(view)
    # the free arm end dragged straight below the vertex: 90 degrees
    tool.press(*view.pixel_center(30, 15))
    tool.move(*view.pixel_center(30, 10))
    tool.release(*view.pixel_center(30, 5))
    assert m.value == pytest.approx(90.0) and len(view.measurements) == 1 and len(seen) == 1
    # the middle of an arm moves the whole angle, value unchanged
    before = list(m.pts)
    mid = np.add(view.pixel_center(10, 15), view.pixel_center(10, 5)) / 2
    drag_scene(view, tuple(mid), (mid[0] + 4.0, mid[1] + 3.0))
    assert m.value == pytest.approx(90.0)
    assert np.allclose(np.subtract(m.pts, before), [[4.0, 3.0]] * 3, atol=0.1)  # to a screen pixel
    assert len(seen) == 2


def test_arrow_by_a_real_drag_and_moved(qtbot):
    view = make_view(qtbot, aniso_volume())
    view.set_tool("arrow")
    assert isinstance(view.tool, ArrowTool)
    tail, head = view.pixel_center(40, 4), view.pixel_center(20, 15)
    drag_scene(view, tail, head)
    m = view.measurements[0]
    assert m.kind == "arrow" and np.allclose(m.pts, [tail, head], atol=0.1)  # to a screen pixel
    xs, ys = m.items[0].getData()
    assert len(xs) == 6  # shaft and two head wings, all meeting at the head
    assert sum(np.allclose((x, y), m.pts[1]) for x, y in zip(xs, ys)) == 3
    drag_scene(view, tuple(np.add(tail, head) / 2), tuple(np.add(tail, head) / 2 + (2.0, 1.0)))
    assert np.allclose(m.pts, [np.add(tail, (2.0, 1.0)), np.add(head, (2.0, 1.0))], atol=0.2)


def test_text_asks_for_its_words_edits_them_and_cancel_places_nothing(qtbot):
    view = make_view(qtbot, aniso_volume())
    answers = ["Lesion A", "Lesion B", None, "   "]
    asked = []

    def ask(parent, current):
        asked.append(current)
        return answers.pop(0)

    view.set_tool(TextTool(ask=ask))
    seen = changes(view)
    where = view.pixel_center(20, 8)
    click_scene(view, where)  # a real click: asks, places
    assert [m.text for m in view.measurements] == ["Lesion A"] and len(seen) == 1
    click_scene(view, where)  # on the text: asks again with its words, edits
    assert asked == ["", "Lesion A"]
    assert [m.text for m in view.measurements] == ["Lesion B"] and len(seen) == 2
    click_scene(view, view.pixel_center(50, 8))  # cancelled
    click_scene(view, view.pixel_center(50, 8))  # blank
    assert len(view.measurements) == 1 and len(seen) == 2
    m = view.measurements[0]
    drag_scene(view, where, (where[0] + 5.0, where[1] + 2.0))  # dragged: moved, same words
    assert np.allclose(m.pts[0], (where[0] + 5.0, where[1] + 2.0), atol=0.2) and m.text == "Lesion B"


def test_angle_on_an_mpr_view_uses_that_views_pixel_size(qtbot):
    """A coronal cut of 3 mm slices: rows are 3 mm, columns 2 mm (aniso_volume's x)."""
    view = SliceView(plane="coronal")
    qtbot.addWidget(view)
    view.resize(500, 500)
    view.show()
    qtbot.waitExposed(view)
    view.set_volume(aniso_volume())
    rows, cols = view.plane_geometry.pixel_size
    tool = view.set_tool("angle")
    for rc in ((1, 8), (1, 2), (3, 5)):  # vertex (1, 2): arms (0, 6) and (2, 3) pixels
        tool.click(*view.pixel_center(*rc))
    expected = math.degrees(math.atan2(2 * rows, 3 * cols))
    assert view.measurements[0].value == pytest.approx(expected, abs=1e-6)


# -- saved in the SR and read back ----------------------------------------------------------------
@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct-annotations")
    write_ct_study(folder, shape=(20, 64, 64), spacing=(3.0, 1.5, 1.5), seed=5, file_order="shuffled")
    return folder


SHAPES = {"angle": [(10.0, 30.0), (20.0, 20.0), (40.0, 22.5)],
          "cobb": [(10.0, 10.0), (12.0, 50.0), (40.0, 12.0), (33.0, 52.0)],
          "arrow": [(45.0, 8.0), (30.0, 20.0)],
          "text": [(50.0, 40.0)]}
TEXTS = {"arrow": "see here", "text": "Läsion 2 — 12 mm"}


def records_on(volume, plan, geometry, k):
    return [from_display_points(kind, geometry, k, pts, volume, plan, uid=pydicom.uid.generate_uid(),
                                value={"angle": 51.5, "cobb": 12.25}.get(kind, 0.0), text=TEXTS.get(kind, ""))
            for kind, pts in SHAPES.items()]


@pytest.mark.parametrize("plane", ["native", "coronal"])
def test_every_annotation_round_trips_through_the_sr(ct, tmp_path, plane):
    series, volume, plan = opened(ct)
    g = native_geometry(volume) if plane == "native" else plane_geometry(volume, plane)
    k = 7 if plane == "native" else 30
    recs = records_on(volume, plan, g, k)
    assert all(r.is_3d == (plane != "native") for r in recs)
    out = write_measurements_sr(recs, series, tmp_path / "a.dcm", observer="DOE^JANE")
    assert dciodvfy_errors(out) == []
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == (COMPREHENSIVE_SR if plane == "native" else COMPREHENSIVE_3D_SR)
    back = {r.kind: r for r in read_measurements_sr(out)}
    assert set(back) == set(SHAPES)
    for rec in recs:
        got = back[rec.kind]
        assert got.uid == rec.uid and got.text == rec.text and got.value == pytest.approx(rec.value)
        assert np.allclose(got.points or got.world, rec.points or rec.world)
        k_back, pts = to_display_points(got, g, volume, plan)
        assert k_back == k and np.allclose(pts, SHAPES[rec.kind], atol=1e-6)


def test_sr_codes_for_angles_arrows_and_texts(ct, tmp_path):
    import highdicom as hd

    series, volume, plan = opened(ct)
    out = write_measurements_sr(records_on(volume, plan, native_geometry(volume), 7), series, tmp_path / "a.dcm")
    sr = hd.sr.srread(out)
    names = {}
    for group in sr.content.get_image_measurement_groups():
        for m in group.get_measurements():
            names[(m.name.value, m.name.scheme_designator)] = (m.unit.value, len(m.referenced_coordinates))
    assert names == {("1483009", "SCT"): ("deg", 1), ("285285000", "SCT"): ("deg", 2)}
    regions = sorted(str(g.roi.GraphicType) for g in sr.content.get_planar_roi_measurement_groups())
    assert regions == ["POINT", "POLYLINE"]
    def items(ds):
        for item in getattr(ds, "ContentSequence", []):
            yield item
            yield from items(item)

    ds = pydicom.dcmread(out)
    assert ds.SpecificCharacterSet == "ISO_IR 192"  # the words are not Latin-1
    comments = [item.TextValue for item in items(ds)
                if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == "121106"]
    assert sorted(comments) == sorted(TEXTS.values())


# -- restored on reopen, in the main window --------------------------------------------------------
@pytest.fixture
def cache(tmp_path, monkeypatch):
    where = tmp_path / "cache"
    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(where))
    return where


def summary(view):
    out = []
    for m in view.measurements:
        pts = np.round(m.pixel_points(), 3)
        out.append((m.kind, m.slice_index, round(m.stats()["value"], 4), m.text, pts.tolist()))
    return sorted(out, key=lambda t: (t[1], t[0]))


def test_annotations_come_back_after_reopening(qtbot, ct, cache):
    w = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w, ct)
        view = w.slice_view
        view.set_slice(6)
        w.set_tool("angle")
        for rc in SHAPES["angle"]:
            view.tool.click(*view.pixel_center(*rc))
        w.set_tool("cobb")
        for rc in SHAPES["cobb"]:
            view.tool.click(*view.pixel_center(*rc))
        view.set_slice(9)
        w.set_tool("arrow")
        drag_scene(view, view.pixel_center(*SHAPES["arrow"][0]), view.pixel_center(*SHAPES["arrow"][1]))
        w.set_tool("text")
        view.tool.ask = lambda parent, current: "Lesion A"
        view.tool.click(*view.pixel_center(*SHAPES["text"][0]))
        w.set_tool("angle")
        view.tool.click(*view.pixel_center(5, 5))  # half placed when the window closes: not saved
        before = [s for s in summary(view) if s[0] != "angle" or s[1] == 6]
        assert [b[:2] for b in before] == [("angle", 6), ("cobb", 6), ("arrow", 9), ("text", 9)]
        assert w.measurement_store.flush()
        study = view.volume.info.study_uid
    finally:
        close_quietly(w)
    saved = autosave_path(study, cache / "measurements")
    assert sorted(r.kind for r in read_measurements_sr(saved)) == ["angle", "arrow", "cobb", "text"]
    assert dciodvfy_errors(saved) == []

    w2 = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w2, ct)
        view2 = w2.slice_view
        assert summary(view2) == before
        view2.set_slice(9)
        assert sorted(m.kind for m in view2.measurements if m.is_visible()) == ["arrow", "text"]
        text = next(m for m in view2.measurements if m.kind == "text")
        assert text.text == "Lesion A"
        assert view2.remove_measurement(text)  # deleting one is saved too
        assert w2.measurement_store.flush()
    finally:
        close_quietly(w2)
    assert sorted(r.kind for r in read_measurements_sr(saved)) == ["angle", "arrow", "cobb"]


def test_restore_measurement_puts_each_kind_on_its_slice(qtbot):
    view = make_view(qtbot, aniso_volume())
    for kind, pts in SHAPES.items():
        small = [(r / 2, c / 2) for r, c in pts]  # inside the 60 x 40 image
        m = restore_measurement(view, kind, 1, small, pydicom.uid.generate_uid(), TEXTS.get(kind, ""))
        assert m.kind == kind and m.slice_index == 1 and m.text.startswith(TEXTS.get(kind, "")[:3])
        assert not m.is_visible()  # slice 1 is not the one shown
    view.set_slice(1)
    assert all(m.is_visible() for m in view.measurements)
