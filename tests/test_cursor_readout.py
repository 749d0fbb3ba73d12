"""The value under the cursor in every view: HU / stored value, AI probability, patient mm, voxel index
(issue 14). The probe must read the very pixel that is drawn under the mouse, in native, MPR and
mirrored (mammography) views."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from conftest import OBLIQUE, SAGITTAL, ramp_volume
from PySide6.QtCore import QPointF
from PySide6.QtGui import QMouseEvent
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from viewer.core.mpr import PLANES, pixel_to_world
from viewer.core.probe import format_position
from viewer.ui.mpr_layout import MprLayout
from viewer.ui.overlays import ProbabilityLayer
from viewer.ui.slice_view import SliceView
from qt_helpers import shown


def hover_pixel(view: SliceView, row: float, col: float) -> None:
    """Put the cursor over the centre of displayed pixel (row, col)."""
    view.set_cursor(view.pixel_center(row, col))


def shown_pixel(view: SliceView, row: int, col: int):
    """The value drawn at displayed pixel (row, col): the image item's array after display flips."""
    return view.image_item.image[row, col]


@pytest.fixture
def view(qtbot):
    return shown(qtbot, SliceView(), (600, 500))


def test_ct_view_shows_hu_position_and_voxel(view):
    vol = ramp_volume(shape=(6, 30, 40), modality="CT")
    view.set_volume(vol)
    k = view.slice_index
    hover_pixel(view, 7, 12)
    p = view.cursor_probe
    assert p.index_zyx == (k, 7, 12) and p.value == vol.array[k, 7, 12]
    text = view.cursor_readout().splitlines()
    assert text[0] == f"{int(vol.array[k, 7, 12])} HU"
    assert text[1] == format_position(vol.index_to_world([k, 7, 12])) + " mm"
    assert text[2] == f"voxel (12, 7, {k})"
    view.step_slice(1)  # scrolling under a still mouse reads the new slice
    assert view.cursor_probe.index_zyx == (k + 1, 7, 12)
    assert view.cursor_readout().splitlines()[0] == f"{int(vol.array[k + 1, 7, 12])} HU"


def test_outside_the_image_or_leaving_the_view_blanks_it(view):
    view.set_volume(ramp_volume(shape=(3, 10, 10), modality="MR"))
    hover_pixel(view, 2, 2)
    assert view.cursor_readout() and "HU" not in view.cursor_readout()  # MR: the stored value, no unit
    view.set_cursor((-1.0, 3.0))  # left of the image
    assert view.cursor_readout() == "" and view.cursor_probe is None
    hover_pixel(view, 2, 2)
    view.set_cursor(None)
    assert view.cursor_readout() == ""


def test_a_real_mouse_move_updates_the_readout(view, qtbot):
    vol = ramp_volume(shape=(3, 20, 20), modality="CT")
    view.set_volume(vol)
    vp = view.canvas.viewport()
    scene = view.view.mapViewToScene(QPointF(*view.pixel_center(5, 9)))
    pos = QPointF(view.canvas.mapFromScene(scene))
    ev = QMouseEvent(QMouseEvent.Type.MouseMove, pos, QPointF(vp.mapToGlobal(pos.toPoint())),
                     Qt.MouseButton.NoButton, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(vp, ev)
    qtbot.waitUntil(lambda: view.cursor_probe is not None, timeout=2000)
    assert view.cursor_probe.index_zyx == (view.slice_index, 5, 9)


def test_ai_probability_is_read_while_the_heatmap_is_shown(view):
    vol = ramp_volume(shape=(3, 10, 12), modality="CT")
    heat = np.random.default_rng(0).random(vol.shape).astype(np.float32)
    view.set_volume(vol)
    view.add_layer("heat", ProbabilityLayer(heat))
    hover_pixel(view, 4, 5)
    k = view.slice_index
    assert view.cursor_probe.overlays == {"heat": pytest.approx(float(heat[k, 4, 5]))}
    assert view.cursor_readout().splitlines()[0].endswith(f"AI {heat[k, 4, 5]:.2f}")
    view.set_layer_visible("heat", False)  # H hides the heatmap: its value goes too
    assert "AI" not in view.cursor_readout()


def test_mirrored_cells_read_the_pixel_drawn_under_the_mouse(view):
    vol = ramp_volume(shape=(1, 16, 24), spacing=(1.0, 0.5, 0.7), modality="MG")
    for flips in [(True, False), (False, True), (True, True)]:
        view.set_volume(vol, flips=flips)
        for row, col in [(0, 0), (3, 20), (15, 23)]:
            x, y = (col + 0.5) * 0.7, (row + 0.5) * 0.5  # scene point over displayed pixel (row, col)
            view.set_cursor((x, y))
            assert view.cursor_probe.value == shown_pixel(view, row, col), (flips, row, col)
        assert "HU" not in view.cursor_readout()
        # a projection image has no patient position: its own mm, said so
        assert view.cursor_readout().splitlines()[1].endswith("mm (image)")


@pytest.mark.parametrize("direction", [OBLIQUE, SAGITTAL], ids=["oblique", "sagittal"])
def test_every_mpr_pane_reads_its_own_pixel_and_position(qtbot, direction):
    mpr = shown(qtbot, MprLayout(), (900, 800))
    vol = ramp_volume(shape=(14, 18, 22), direction=direction, modality="CT")
    mpr.set_volume(vol)
    for plane in PLANES:
        v = mpr.views[plane]
        g = v.plane_geometry
        for row, col in [(1, 2), (g.n_rows - 2, g.n_cols - 1)]:
            hover_pixel(v, row, col)
            p = v.cursor_probe
            assert p.value == v.current_image()[row, col], plane  # the drawn value, not a transposed one
            want = pixel_to_world(vol, g, v.slice_index, row, col)
            assert np.allclose(p.world_lps, want), plane
            assert np.allclose(vol.index_to_world(p.index_zyx), want), plane


def test_hiding_the_corner_text_hides_the_readout(view):
    view.set_volume(ramp_volume(shape=(3, 10, 10)))
    hover_pixel(view, 1, 1)
    view.set_corner_text_visible(False)
    assert view.cursor_readout() == ""
    view.set_corner_text_visible(True)
    assert view.cursor_readout()
