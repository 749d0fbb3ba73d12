"""Measurement tools on a SliceView: ruler, rectangle / ellipse ROI, slice binding, navigate."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pg = pytest.importorskip("pyqtgraph")

from PySide6.QtCore import QEvent, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from conftest import ramp_volume  # noqa: E402
from viewer.core.volume import SourceInfo, Volume  # noqa: E402
from viewer.ui.measure_tools import EllipseRoiTool, RectRoiTool, RulerTool  # noqa: E402
from viewer.ui.slice_view import SliceView  # noqa: E402


def make_view(qtbot, volume, flips=None):
    view = SliceView()
    qtbot.addWidget(view)
    view.resize(500, 500)
    view.show()
    qtbot.waitExposed(view)
    view.set_volume(volume, flips=flips)
    QApplication.processEvents()
    return view


def aniso_volume():
    """CT with 0.5 mm rows and 2.0 mm columns; every pixel a distinct HU."""
    return ramp_volume(shape=(5, 60, 40), spacing=(3.0, 0.5, 2.0), modality="CT")


_clock = [10_000]


def _send(view, kind, pos, buttons, button=Qt.MouseButton.LeftButton):
    vp = view.canvas.viewport()
    glob = vp.mapToGlobal(pos.toPoint())
    ev = QMouseEvent(kind, QPointF(pos), QPointF(glob), button, buttons, Qt.KeyboardModifier.NoModifier)
    _clock[0] += 50  # Qt tracks event points by timestamp; synthetic events need increasing ones
    ev.setTimestamp(_clock[0])
    QApplication.sendEvent(vp, ev)


def drag_scene(view, p0_mm, p1_mm, steps=6):
    """A real left-button drag on the viewport between two scene points in mm."""
    def vp_pos(p):
        scene = view.view.mapViewToScene(QPointF(*p))
        return QPointF(view.canvas.mapFromScene(scene))
    a, b = vp_pos(p0_mm), vp_pos(p1_mm)
    left = Qt.MouseButton.LeftButton
    _send(view, QEvent.Type.MouseButtonPress, a, left)
    for i in range(1, steps + 1):
        t = i / steps
        QTest.qWait(20)  # pyqtgraph drops mouse moves closer than its rate limit (~16 ms)
        _send(view, QEvent.Type.MouseMove, a + (b - a) * t, left, Qt.MouseButton.NoButton)
    _send(view, QEvent.Type.MouseButtonRelease, b, Qt.MouseButton.NoButton)
    QApplication.processEvents()


def tool_drag(tool, p0_mm, p1_mm):
    tool.press(*p0_mm)
    tool.move((p0_mm[0] + p1_mm[0]) / 2, (p0_mm[1] + p1_mm[1]) / 2)
    return tool.release(*p1_mm)


@pytest.mark.parametrize("use_events", [False, True])
def test_ruler_anisotropic_pixels(qtbot, use_events):
    view = make_view(qtbot, aniso_volume())
    view.set_tool("ruler")
    assert isinstance(view.tool, RulerTool)
    cases = [((10, 5), (10, 13), 16.0),   # 8 columns x 2.0 mm
             ((25, 5), (31, 5), 3.0),     # 6 rows x 0.5 mm (apart from the others: a press on
             ((40, 5), (46, 7), 5.0)]     # a ruler's end edits it); 6 rows = 3 mm, 2 columns = 4 mm: 3-4-5
    for (r0, c0), (r1, c1), expected in cases:
        p0, p1 = view.pixel_center(r0, c0), view.pixel_center(r1, c1)
        if use_events:
            drag_scene(view, p0, p1)
            m = view.measurements[-1]
        else:
            m = tool_drag(view.tool, p0, p1)
        assert m.kind == "ruler"
        assert m.value == pytest.approx(expected, abs=0.05 if use_events else 1e-9)
        assert f"{expected:.1f} mm" in m.text
    assert len(view.measurements) == 3


def expected_stats(image, shape, r0, c0, r1, c1):
    cr, cc = (r0 + r1) / 2, (c0 + c1) / 2
    hr, hc = abs(r1 - r0) / 2, abs(c1 - c0) / 2
    rr, cc_ = np.ogrid[:image.shape[0], :image.shape[1]]
    if shape == "rect":
        mask = (np.abs(rr - cr) <= hr) & (np.abs(cc_ - cc) <= hc)
    else:
        mask = ((rr - cr) / hr) ** 2 + ((cc_ - cc) / hc) ** 2 <= 1
    vals = image[mask].astype(float)
    return vals, mask


@pytest.mark.parametrize("flips", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("tool_cls", [RectRoiTool, EllipseRoiTool])
def test_roi_stats_match_numpy(qtbot, flips, tool_cls):
    rng = np.random.default_rng(3)
    arr = rng.integers(-1000, 1500, size=(3, 50, 70)).astype(np.int16)
    arr[1, 10:30, 20:50] = 40  # a known HU block
    vol = Volume(arr, (2.0, 0.8, 1.3), info=SourceInfo(modality="CT"))
    view = make_view(qtbot, vol, flips=flips)
    tool = view.set_tool(tool_cls())
    image = view.current_image()
    r0, c0, r1, c1 = 8, 12, 31, 47
    m = tool_drag(tool, view.pixel_center(r0, c0), view.pixel_center(r1, c1))
    vals, mask = expected_stats(image, tool_cls.measurement_class.shape, r0, c0, r1, c1)
    s = m.value
    assert s.n_pixels == mask.sum() > 0
    assert s.mean == pytest.approx(vals.mean())
    assert s.std == pytest.approx(vals.std())
    assert (s.min, s.max) == (vals.min(), vals.max())
    assert s.area_mm2 == pytest.approx(mask.sum() * 0.8 * 1.3)
    assert "HU" in m.text and f"{s.area_mm2:.1f} mm²" in m.text
    assert f"min {s.min:.0f}" in m.text


def test_roi_inside_known_block(qtbot):
    arr = np.full((3, 50, 70), -1000, np.int16)
    arr[1, 10:30, 20:50] = 40
    view = make_view(qtbot, Volume(arr, (2.0, 0.8, 1.3), info=SourceInfo(modality="CT")), flips=(True, False))
    view.set_tool("ellipse")
    m = tool_drag(view.tool, view.pixel_center(12, 22), view.pixel_center(27, 47))
    assert (m.value.mean, m.value.std, m.value.min, m.value.max) == (40, 0, 40, 40)
    assert m.text.startswith("40.0 ± 0.0 HU")


def test_roi_with_real_mouse_drag(qtbot):
    vol = aniso_volume()
    view = make_view(qtbot, vol, flips=(True, False))
    view.set_tool("rect")
    drag_scene(view, view.pixel_center(10, 5), view.pixel_center(30, 20))
    m = view.measurements[-1]
    (a, b) = m.pixel_points()
    assert a == pytest.approx((10, 5), abs=0.2) and b == pytest.approx((30, 20), abs=0.2)
    vals, mask = expected_stats(view.current_image(), "rect", *a, *b)
    assert m.value.n_pixels == mask.sum()
    assert m.value.mean == pytest.approx(vals.mean())


def test_measurement_stays_on_its_slice_and_delete(qtbot):
    view = make_view(qtbot, aniso_volume())
    k = view.slice_index
    view.set_tool("ruler")
    m = tool_drag(view.tool, view.pixel_center(5, 5), view.pixel_center(5, 15))
    assert m.is_visible() and m.slice_index == k
    view.set_slice(k + 1)
    assert not m.is_visible()
    assert view.measurements_on_slice() == []
    assert not view.handle_key(Qt.Key.Key_Delete)  # nothing on this slice to delete
    view.set_slice(k)
    assert m.is_visible()
    view.set_tool("rect")
    m2 = tool_drag(view.tool, view.pixel_center(20, 5), view.pixel_center(30, 15))
    assert view.selected_measurement is m2
    qtbot.keyClick(view.canvas, Qt.Key.Key_Delete)
    assert view.measurements == [m]
    assert m2.items[0].scene() is None
    assert view.handle_key(Qt.Key.Key_Delete)
    assert view.measurements == []
    assert m.items[0].scene() is None and m.label.scene() is None


def test_escape_and_navigate_restore_panning(qtbot):
    view = make_view(qtbot, aniso_volume())
    w, h = view.image_size_mm()
    view.set_tool("ruler")
    before = view.view.viewRange()
    drag_scene(view, (w * 0.3, h * 0.3), (w * 0.6, h * 0.5))
    assert view.view.viewRange() == before  # drew, did not pan
    assert len(view.measurements) == 1
    qtbot.keyClick(view.canvas, Qt.Key.Key_Escape)
    assert view.tool is None and view.tool_name == "navigate"
    drag_scene(view, (w * 0.3, h * 0.3), (w * 0.6, h * 0.5))
    after = view.view.viewRange()
    assert after[0][0] < before[0][0] - 1  # content moved right: range moved left
    assert len(view.measurements) == 1


def test_main_window_tools(qtbot):
    from viewer.ui.main_window import MainWindow
    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(900, 700)
    win.show()
    qtbot.waitExposed(win)
    names = [a.text() for a in win.tools_toolbar.actions()]
    assert names[:4] == ["Navigate", "Ruler", "Rectangle ROI", "Ellipse ROI"]
    assert win.tool_group.isExclusive()
    view = win.slice_view
    view.set_volume(aniso_volume())
    QApplication.processEvents()
    win.tool_actions["ruler"].trigger()
    assert all(v.tool_name == "ruler" for v in win.all_views())
    assert win.tool_actions["ruler"].isChecked() and not win.tool_actions["navigate"].isChecked()
    tool_drag(view.tool, view.pixel_center(5, 5), view.pixel_center(5, 15))
    assert len(view.measurements) == 1
    win.clear_measurements_action.trigger()
    assert view.measurements == []
    view.handle_key(Qt.Key.Key_Escape)  # Escape in a view: navigate everywhere
    assert win.tool_actions["navigate"].isChecked()
    assert all(v.tool is None for v in win.all_views())
    win.tool_actions["ellipse"].trigger()
    win.tool_actions["navigate"].trigger()
    assert all(v.tool is None for v in win.all_views())
    win.shutdown()


def test_press_on_a_measurement_reshapes_or_moves_it(qtbot):
    view = make_view(qtbot, aniso_volume())
    view.set_tool("ruler")
    ruler = tool_drag(view.tool, view.pixel_center(10, 5), view.pixel_center(10, 13))
    assert ruler.value == pytest.approx(16.0)
    # grab the far end and drag it 6 rows down: a 3-4-5... here 8 cols = 16 mm, 6 rows = 3 mm
    tool_drag(view.tool, view.pixel_center(10, 13), view.pixel_center(16, 13))
    assert len(view.measurements) == 1 and ruler.value == pytest.approx(np.hypot(16.0, 3.0))
    # grab the middle of the line and move it: same length, new place
    mid = view.pixel_center(13, 9)
    tool_drag(view.tool, mid, (mid[0] + 4.0, mid[1] + 2.0))
    assert len(view.measurements) == 1 and ruler.value == pytest.approx(np.hypot(16.0, 3.0))
    assert ruler.p0 == pytest.approx((view.pixel_center(10, 5)[0] + 4.0, view.pixel_center(10, 5)[1] + 2.0))
    # a press away from it starts a new one
    tool_drag(view.tool, view.pixel_center(40, 5), view.pixel_center(46, 5))
    assert len(view.measurements) == 2

    view.set_tool("rect")
    box = tool_drag(view.tool, view.pixel_center(20, 10), view.pixel_center(30, 20))
    image = view.current_image()
    np.testing.assert_allclose(box.value.mean, image[20:31, 10:21].mean())
    tool_drag(view.tool, view.pixel_center(25, 15), view.pixel_center(27, 18))  # inside: move by 2 rows, 3 cols
    assert len(view.measurements) == 3
    np.testing.assert_allclose(box.value.mean, image[22:33, 13:24].mean())
    tool_drag(view.tool, view.pixel_center(32, 23), view.pixel_center(36, 25))  # corner x1y1: resize
    np.testing.assert_allclose(box.value.mean, image[22:37, 13:26].mean())
    assert box.value.area_mm2 == pytest.approx(15 * 0.5 * 13 * 2.0)
    assert view.selected_measurement is box
