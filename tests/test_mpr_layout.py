"""MPR layout: crosshair clicks and scrolling, aspect, edge letters, linked W/L, main-window switch."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pg = pytest.importorskip("pyqtgraph")

from conftest import AXIAL, CORONAL, OBLIQUE, SAGITTAL, ramp_volume
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication

from viewer.core.io.dicom_write import write_series
from viewer.core.mpr import PLANES, extract_slice, pixel_to_world, plane_geometry
from viewer.ui.main_window import MainWindow
from viewer.ui.mpr_layout import MprLayout
from viewer.ui.slice_view import SliceView
from qt_helpers import shown

DIRECTIONS = {"axial": AXIAL, "coronal": CORONAL, "sagittal": SAGITTAL}


def volume(direction=AXIAL):
    return ramp_volume(shape=(20, 30, 40), spacing=(2.5, 0.7, 0.9), direction=direction)


@pytest.fixture
def mpr(qtbot):
    return shown(qtbot, MprLayout(), (900, 800))


def viewport_pos(view: SliceView, row: float, col: float) -> QPointF:
    """Viewport position of the centre of displayed pixel (row, col)."""
    x, y = view.pixel_center(row, col)
    scene = view.view.mapViewToScene(QPointF(x, y))
    return QPointF(view.canvas.mapFromScene(scene))


def click(view: SliceView, row: int, col: int, modifiers=Qt.KeyboardModifier.NoModifier):
    vp = view.canvas.viewport()
    pos = viewport_pos(view, row, col)
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    for kind, button, buttons in ((QMouseEvent.Type.MouseButtonPress, left, left),
                                  (QMouseEvent.Type.MouseButtonRelease, left, none)):
        ev = QMouseEvent(kind, pos, QPointF(vp.mapToGlobal(pos.toPoint())), button, buttons, modifiers)
        QApplication.sendEvent(vp, ev)
    QApplication.processEvents()


def wheel(view: SliceView, delta: int):
    vp = view.canvas.viewport()
    pos = QPointF(vp.width() / 2, vp.height() / 2)
    ev = QWheelEvent(pos, QPointF(vp.mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, delta),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(vp, ev)


@pytest.mark.parametrize("acquired", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("modifiers", [Qt.KeyboardModifier.NoModifier, Qt.KeyboardModifier.ShiftModifier])
def test_click_in_axial_moves_the_other_views_to_the_clicked_point(mpr, acquired, modifiers):
    vol = volume(DIRECTIONS[acquired])
    mpr.set_volume(vol)
    ax = mpr.views["axial"]
    g = ax.plane_geometry
    row, col = g.n_rows // 4, (3 * g.n_cols) // 4
    click(ax, row, col, modifiers)
    expected = pixel_to_world(vol, g, ax.slice_index, row, col)
    np.testing.assert_allclose(mpr.crosshair_world, expected, atol=1e-6)
    target = vol.world_to_index(expected)
    for plane in PLANES:
        view = mpr.views[plane]
        pg_ = view.plane_geometry
        # the view's slice passes through the clicked point (within half a voxel along its normal)
        shown = vol.world_to_index(pixel_to_world(vol, pg_, view.slice_index, 0, 0))
        assert abs(shown[pg_.axis] - target[pg_.axis]) <= 0.5
        np.testing.assert_array_equal(view.current_image(), extract_slice(vol, pg_, view.slice_index))
        np.testing.assert_array_equal(view.image_item.image, extract_slice(vol, pg_, view.slice_index))
    # every view's lines cross at the clicked point
    for plane in PLANES:
        view = mpr.views[plane]
        idx = np.rint(target).astype(int)
        pg_ = view.plane_geometry
        r = idx[pg_.row_axis] if not pg_.flip_rows else pg_.n_rows - 1 - idx[pg_.row_axis]
        c = idx[pg_.col_axis] if not pg_.flip_cols else pg_.n_cols - 1 - idx[pg_.col_axis]
        x, y = view.pixel_center(r, c)
        positions = sorted(mpr.line_position(plane, o) for o in PLANES if o != plane)
        assert positions[0] == (0, pytest.approx(y)) and positions[1] == (90, pytest.approx(x))
        assert all(line.isVisible() for line in mpr.lines[plane].values())
    # the clicked voxel is where it should be in the axial image
    assert ax.current_image()[row, col] == vol.array[tuple(np.rint(target).astype(int))]


@pytest.mark.parametrize("acquired", ["axial", "coronal", "sagittal"])
def test_scrolling_coronal_moves_the_crosshair_one_voxel_along_its_normal(mpr, acquired):
    vol = volume(DIRECTIONS[acquired])
    mpr.set_volume(vol)
    cor = mpr.views["coronal"]
    g = cor.plane_geometry
    before, k0 = mpr.crosshair_world, cor.slice_index
    others = {p: mpr.views[p].slice_index for p in ("axial", "sagittal")}
    _, y0 = mpr.line_position("axial", "coronal")
    wheel(cor, -120)  # one notch toward the user: next slice
    assert cor.slice_index == k0 + 1
    step = mpr.crosshair_world - before
    np.testing.assert_allclose(np.linalg.norm(step), vol.spacing[g.axis], atol=1e-6)
    assert abs(step[1]) == pytest.approx(vol.spacing[g.axis])  # along A-P, the coronal normal
    angle, y1 = mpr.line_position("axial", "coronal")
    assert angle == 0  # the coronal plane is a horizontal line in the axial view
    assert y1 - y0 == pytest.approx(step[1])  # down = posterior in the axial view, 1 unit = 1 mm
    # the axial and sagittal views stay where they were
    assert {p: mpr.views[p].slice_index for p in ("axial", "sagittal")} == others


@pytest.mark.parametrize("direction", [AXIAL, CORONAL, SAGITTAL, OBLIQUE])
def test_aspect_and_edge_letters_follow_plane_geometry(mpr, direction):
    vol = volume(direction)
    mpr.set_volume(vol)
    for plane, view in mpr.views.items():
        g = plane_geometry(vol, plane)
        rect = view.image_item.mapRectToParent(view.image_item.boundingRect())
        assert rect.width() == pytest.approx(g.n_cols * g.pixel_size[1])
        assert rect.height() == pytest.approx(g.n_rows * g.pixel_size[0])
        assert view.view.state["aspectLocked"] == 1.0
        for side, letter in g.edge_letters.items():
            assert view._edge[side].text() == letter
            assert view._edge[side].isVisible()
    if direction is not OBLIQUE:  # radiology conventions whatever the acquisition
        expect = {"axial": "RLAP", "coronal": "RLSI", "sagittal": "APSI"}
        for plane, view in mpr.views.items():
            assert "".join(view._edge[s].text() for s in ("left", "right", "top", "bottom")) == expect[plane]


def test_right_drag_window_level_is_linked(mpr):
    mpr.set_volume(volume())
    sag = mpr.views["sagittal"]
    vp = sag.canvas.viewport()
    c0, w0 = sag.window
    start = QPointF(vp.width() / 2, vp.height() / 2)
    right, none = Qt.MouseButton.RightButton, Qt.MouseButton.NoButton
    for i, (kind, button, buttons) in enumerate(((QMouseEvent.Type.MouseButtonPress, right, right),
                                                 (QMouseEvent.Type.MouseMove, none, right),
                                                 (QMouseEvent.Type.MouseMove, none, right),
                                                 (QMouseEvent.Type.MouseButtonRelease, right, none))):
        pos = start + QPointF(40 * i, 20 * i)
        QApplication.sendEvent(vp, QMouseEvent(kind, pos, QPointF(vp.mapToGlobal(pos.toPoint())),
                                               button, buttons, Qt.KeyboardModifier.NoModifier))
    c1, w1 = sag.window
    assert w1 > w0 and c1 > c0
    for view in mpr.views.values():
        assert view.window == (c1, w1)
        assert tuple(view.image_item.levels) == pytest.approx((c1 - w1 / 2, c1 + w1 / 2))


def test_single_view_default_is_unchanged_for_a_coronal_acquisition(qtbot):
    vol = volume(CORONAL)
    v = SliceView()
    qtbot.addWidget(v)
    v.set_volume(vol)
    assert v.plane is None and v.slice_count == 20
    np.testing.assert_array_equal(v.current_image(), vol.array[10])


def test_main_window_switches_to_mpr_and_back(qtbot, tmp_path):
    vol = ramp_volume(shape=(12, 24, 20), spacing=(2.0, 0.8, 0.8), origin=(-10.0, -12.0, 40.0))
    write_series(vol, tmp_path / "ct", intercept=-1024, stored_dtype=np.uint16)
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1100, 800)
    w.show()
    try:
        assert not w.layout_mpr_action.isEnabled()
        with qtbot.waitSignal(w.image_shown, timeout=15000):
            w.open_path(tmp_path / "ct")
        assert w.views.currentWidget() is w.grid
        assert w.layout_mpr_action.isEnabled()
        w.layout_mpr_action.trigger()
        QApplication.processEvents()
        assert w.views.currentWidget() is w.mpr_layout and w.layout_mode == "mpr"
        loaded = w.slice_view.volume
        assert w.mpr_layout.volume is loaded
        for plane, view in w.mpr_layout.views.items():
            assert view.isVisible() and view.volume is loaded
            np.testing.assert_array_equal(view.current_image(),
                                          extract_slice(loaded, plane_geometry(loaded, plane), view.slice_index))
        # loading again keeps the chosen layout
        w._cell_series.clear()  # forget what is shown, so the same series loads again
        with qtbot.waitSignal(w.image_shown, timeout=15000):
            w.load_series(w.browser.image_series()[0])
        assert w.views.currentWidget() is w.mpr_layout
        assert w.mpr_layout.volume is w.slice_view.volume
        w.layout_1x1_action.trigger()
        assert w.views.currentWidget() is w.grid and w.layout_mode == "1x1"
        assert w.layout_1x1_action.isChecked() and not w.layout_mpr_action.isChecked()
    finally:
        w.shutdown()


@pytest.mark.parametrize("acquired", ["axial", "coronal", "sagittal"])
def test_mpr_opens_where_the_reader_was_not_at_the_centre(qtbot, mpr, acquired):
    """Issue 14: M pressed at image 71 opened at 60. The single view's reading point is the MPR's start."""
    vol = volume(DIRECTIONS[acquired])
    single = shown(qtbot, SliceView(), (400, 400))
    single.set_volume(vol)
    k = vol.shape[0] - 3  # far from the middle
    single.set_slice(k)
    mpr.set_volume(vol, single.window, at=single.reading_point())
    native_plane = acquired  # the native slices are this plane's slices
    assert mpr.views[native_plane].slice_index == k
    assert vol.world_to_index(mpr.crosshair_world)[0] == pytest.approx(k)
    # with the mouse on the image, the crosshair starts under the mouse
    x, y = single.pixel_center(4, 7)
    single.set_cursor((x, y))
    mpr.set_volume(vol, single.window, at=single.reading_point())
    np.testing.assert_allclose(vol.world_to_index(mpr.crosshair_world), [k, 4, 7], atol=1e-6)
    mpr.set_volume(vol)  # no reading point: the centre, as before
    np.testing.assert_allclose(vol.world_to_index(mpr.crosshair_world), (np.asarray(vol.shape) - 1) // 2, atol=1e-6)


def _screen_and_fresh(widget):
    """What the screen holds for ``widget`` (the backing store, as partial repaints left it) and a full fresh
    render of the same widget, as (h, w, 4) arrays."""
    from PySide6.QtGui import QImage

    def arr(img):
        img = img.convertToFormat(QImage.Format.Format_RGB32)
        return np.array(img.constBits()).reshape(img.height(), img.width(), 4).copy()

    app = QApplication.instance()
    for _ in range(5):
        app.processEvents()
    on_screen = app.primaryScreen().grabWindow(widget.winId()).toImage()
    return arr(on_screen), arr(widget.grab().toImage())


def test_a_click_leaves_no_piece_of_the_old_crosshair_on_screen(mpr):
    """Issue 14: after a click, pieces of the old crosshair stayed drawn (outside the image too) until the
    pane was redrawn. The screen after each click must equal a fresh render of the layout."""
    vol = volume()
    mpr.set_volume(vol)
    ax = mpr.views["axial"]
    _screen_and_fresh(mpr)
    for plane, row, col in [("axial", 5, 5), ("coronal", 3, 30), ("sagittal", 15, 2), ("axial", 25, 35)]:
        view = mpr.views[plane]
        old_x = ax.view.mapViewToScene(QPointF(*ax.pixel_center(0, mpr.lines["axial"]["sagittal"].pos().x()
                                                               / ax.plane_geometry.pixel_size[1] - 0.5)))
        click(view, row, col)
        screen, fresh = _screen_and_fresh(mpr)
        stale = (screen != fresh).any(-1)
        assert not stale.any(), f"{int(stale.sum())} stale pixels after a click in {plane}"
        # and the axial pane's old vertical line is gone above the image (outside it) as well
        col_px = int(round(ax.mapTo(mpr, ax.canvas.mapFromScene(old_x)).x()))
        new_px = int(round(ax.mapTo(mpr, ax.canvas.mapFromScene(
            ax.view.mapViewToScene(QPointF(mpr.lines["axial"]["sagittal"].pos().x(), 0)))).x()))
        if abs(col_px - new_px) > 3:
            top = ax.mapTo(mpr, ax.canvas.mapFromScene(ax.view.mapViewToScene(QPointF(0, 0)))).y()
            strip = screen[max(0, top - 20):max(1, top - 2), col_px - 1:col_px + 2, :3]
            yellow = (strip[..., 2] > 150) & (strip[..., 1] > 150) & (strip[..., 0] < 120)  # BGRA: R, G high, B low
            assert not yellow.any(), "old sagittal line still drawn above the axial image"
