"""Overlay layers: label/probability RGBA per slice and plane, geometry, visibility, refusal."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pg = pytest.importorskip("pyqtgraph")

from conftest import CORONAL, SAGITTAL, ramp_volume
from PySide6.QtCore import Qt
from qt_helpers import shown as show_widget

from viewer.core.mpr import extract_slice
from viewer.core.volume import SourceInfo, Volume
from viewer.ui.overlays import LabelLayer, ProbabilityLayer, colormap_lut
from viewer.ui.slice_view import SliceView

SHAPE = (14, 22, 26)
RED, GREEN = (255, 0, 0), (0, 200, 50)


def labels():
    lab = np.zeros(SHAPE, np.uint8)
    lab[3:10, 5:15, 6:18] = 1
    lab[5:8, 8:12, 9:14] = 2  # nested inside label 1
    lab[0, 0, 0] = 1  # a corner voxel: edge of every plane
    return lab


def make_view(qtbot, plane=None, direction=None, flips=None):
    v = SliceView(plane=plane)
    qtbot.addWidget(v)
    v.resize(400, 360)
    kw = {} if direction is None else {"direction": direction}
    v.set_volume(ramp_volume(shape=SHAPE, spacing=(2.5, 0.7, 0.9), **kw), flips=flips)
    return v


def shown(view, plane_slice):
    return view._shown(plane_slice)


def check_labels(view, layer, lab):
    k = view.slice_index
    expect = shown(view, extract_slice(lab, view.plane_geometry, k)) if view.plane else shown(view, lab[k])
    img = layer.item.image
    assert np.array_equal(img, layer.image) and img.shape == (*expect.shape, 4) and img.dtype == np.uint8
    alpha = round(0.4 * 255)
    assert np.array_equal(img[..., 3] > 0, expect != 0)
    assert np.all(img[expect == 0] == 0)
    for value, rgb in ((1, RED), (2, GREEN)):
        sel = expect == value
        assert np.all(img[sel, :3] == rgb) and np.all(img[sel, 3] == alpha)
    return expect


def test_label_layer_axial_and_scroll(qtbot):
    view = make_view(qtbot)
    lab = labels()
    layer = view.add_layer("seg", LabelLayer(lab, colors={1: RED, 2: GREEN}))
    assert view.layer("seg") is layer
    assert (check_labels(view, layer, lab) == 2).any()  # middle slice shows both labels
    for k in (0, 3, 9, 13):
        view.set_slice(k)
        check_labels(view, layer, lab)
    view.set_slice(6)
    view.wheel(-120)  # the wheel path: one notch toward the user = next slice
    assert view.slice_index == 7
    check_labels(view, layer, lab)


@pytest.mark.parametrize("plane,direction", [("axial", None), ("coronal", None), ("sagittal", None),
                                             ("coronal", CORONAL), ("sagittal", SAGITTAL)])
def test_label_layer_follows_mpr_planes(qtbot, plane, direction):
    view = make_view(qtbot, plane=plane, direction=direction)
    lab = labels()
    layer = view.add_layer("seg", LabelLayer(lab, colors={1: RED, 2: GREEN}))
    found = 0
    for k in range(view.slice_count):
        view.set_slice(k)
        found += check_labels(view, layer, lab).any()
    assert found > 2


def test_label_outline_only_boundary(qtbot):
    view = make_view(qtbot)
    lab = labels()
    layer = view.add_layer("seg", LabelLayer(lab, colors={1: RED, 2: GREEN}, outline=True))
    view.set_slice(6)
    s = lab[6]
    img = layer.item.image
    # boundary by hand: non-zero pixels with a 4-neighbour of a different value (outside = 0)
    p = np.pad(s, 1)
    c = p[1:-1, 1:-1]
    edge = (c != p[:-2, 1:-1]) | (c != p[2:, 1:-1]) | (c != p[1:-1, :-2]) | (c != p[1:-1, 2:])
    expect = edge & (s != 0)
    assert np.array_equal(img[..., 3] > 0, expect)
    assert expect.sum() < (s != 0).sum()  # interiors are empty
    assert np.all(img[expect & (s == 1), :3] == RED) and np.all(img[expect & (s == 2), :3] == GREEN)
    assert img[13, 16, 3] == 0  # inside label 1, away from label 2
    layer.outline = False  # switching back fills
    assert np.array_equal(layer.item.image[..., 3] > 0, s != 0)


def prob_ramp():
    p = np.zeros(SHAPE, np.float32)
    p[:] = np.linspace(0, 1, SHAPE[2], dtype=np.float32)[None, None, :]  # ramp along columns
    p[:, 0, 0] = np.nan
    return p


def test_probability_threshold_opacity_colormap(qtbot):
    view = make_view(qtbot)
    p = prob_ramp()
    layer = view.add_layer("ai", ProbabilityLayer(p, colormap="inferno", opacity=0.6, threshold=0.5))
    img = layer.item.image
    s = p[view.slice_index]
    above = s >= 0.5
    assert np.all(img[~above, 3] == 0) and img[0, 0, 3] == 0  # below threshold and NaN
    assert np.all(img[above, 3] == round(0.6 * 255))
    # colour follows the colormap: inferno's luminance rises monotonically along the ramp
    row = img[5, :, :3].astype(float)
    lum = row @ [0.299, 0.587, 0.114]
    assert np.all(np.diff(lum[above[5]]) >= 0) and lum[above[5]][-1] > lum[above[5]][0]
    lut = layer.lut()
    assert lut.shape == (256, 4) and np.array_equal(lut[:, :3], colormap_lut("inferno"))
    assert np.array_equal(img[5, -1, :3], lut[255, :3])  # value 1.0 -> top of the table

    layer.threshold = 0.2  # property changes redraw
    assert np.array_equal(layer.item.image[..., 3] > 0, s >= 0.2)
    layer.opacity = 1.0
    assert set(np.unique(layer.item.image[..., 3])) == {0, 255}
    layer.colormap = "jet"
    assert np.array_equal(layer.item.image[5, -1, :3], colormap_lut("jet")[255])
    assert layer.item.image[5, -1, 0] > layer.item.image[5, -1, 2]  # jet ends red
    with pytest.raises(ValueError, match="unknown colormap"):
        layer.colormap = "no-such-map"


@pytest.mark.parametrize("flips", [(False, False), (True, False), (False, True), (True, True)])
def test_overlay_geometry_matches_image(qtbot, flips):
    view = make_view(qtbot, flips=flips)
    lab = labels()
    layer = view.add_layer("seg", LabelLayer(lab, colors={1: RED}))
    prob = view.add_layer("ai", ProbabilityLayer(prob_ramp()))
    for it in (layer.item, prob.item):
        assert it.mapRectToView(it.boundingRect()) == view.image_item.mapRectToView(view.image_item.boundingRect())
        assert it.zValue() > view.image_item.zValue()
    assert prob.item.zValue() > layer.item.zValue()
    # the overlay is flipped exactly like the image: compare with the flipped label slice
    k = view.slice_index
    e = lab[k][:, ::-1] if flips[0] else lab[k]
    e = e[::-1] if flips[1] else e
    assert np.array_equal(layer.item.image[..., 3] > 0, e != 0)
    assert np.array_equal(view.image_item.image, view._shown(view.volume.array[k]))


def test_visibility_remove_and_shape_check(qtbot):
    view = make_view(qtbot)
    lab = labels()
    layer = view.add_layer("seg", LabelLayer(lab))
    view.set_layer_visible("seg", False)
    assert not layer.item.isVisible()
    view.set_slice(3)  # hidden layers still catch up when shown again
    view.set_layer_visible("seg", True)
    assert layer.item.isVisible() and np.array_equal(layer.item.image[..., 3] > 0, lab[3] != 0)
    assert view.remove_layer("seg") is layer
    assert view.layer("seg") is None and layer.item.scene() is None
    with pytest.raises(KeyError):
        view.remove_layer("seg")
    with pytest.raises(ValueError, match=r"shape \(14, 22, 25\).*volume is \(14, 22, 26\)"):
        view.add_layer("bad", LabelLayer(np.zeros((14, 22, 25), np.uint8)))
    with pytest.raises(ValueError, match="shape"):
        view.add_layer("bad", ProbabilityLayer(np.zeros((22, 26), np.float32)))
    assert view.layer("bad") is None
    with pytest.raises(ValueError, match="integer"):
        LabelLayer(np.zeros(SHAPE, np.float32))
    # a new volume of another grid drops layers that no longer fit
    view.add_layer("seg", LabelLayer(lab))
    view.set_volume(ramp_volume(shape=(5, 8, 9)))
    assert view.layer("seg") is None
    empty = SliceView()
    qtbot.addWidget(empty)
    with pytest.raises(ValueError, match="no volume"):
        empty.add_layer("seg", LabelLayer(lab))


def test_overlay_renders_on_screen(qtbot):
    view = make_view(qtbot)
    view.show()
    qtbot.waitExposed(view)
    before = view.canvas.grab().toImage()
    lab = np.zeros(SHAPE, np.uint8)
    lab[:, 4:18, 4:22] = 1
    view.add_layer("seg", LabelLayer(lab, colors={1: (255, 0, 0)}, opacity=1.0))
    after = view.canvas.grab().toImage()
    b = before.pixelColor(before.width() // 2, before.height() // 2)
    c = after.pixelColor(after.width() // 2, after.height() // 2)
    assert (b.red(), b.green(), b.blue()) != (255, 0, 0)  # the red comes from the layer
    assert (c.red(), c.green(), c.blue()) == (255, 0, 0)


# -- H / S toggles and the colour bar ------------------------------------------------------------
def test_h_and_s_toggle_heatmaps_and_label_maps_in_every_view(qtbot):
    from viewer.ui.main_window import MainWindow

    w = show_widget(qtbot, MainWindow(), (1000, 700))
    try:
        vol = Volume(np.zeros((4, 20, 30), np.int16), spacing=(2.0, 1.0, 1.0),
                     info=SourceInfo(modality="CT", series_uid="1.2.3"))
        view = w.slice_view
        view.set_volume(vol)
        prob = view.add_layer("heat", ProbabilityLayer(np.full(vol.shape, 0.9, np.float32)))
        labels = view.add_layer("seg", LabelLayer(np.ones(vol.shape, np.uint8)))
        assert view.legend.isVisible()

        def key(k):  # as a user types it: the window active, the image focused
            w.activateWindow()
            qtbot.waitUntil(w.isActiveWindow, timeout=3000)
            view.canvas.setFocus()
            qtbot.keyClick(view.canvas, k)

        key(Qt.Key.Key_H)
        assert not prob.visible and not prob.item.isVisible() and labels.visible
        assert not view.legend.isVisible()  # no visible heatmap: no colour bar
        key(Qt.Key.Key_S)
        assert not labels.visible and not labels.item.isVisible()
        key(Qt.Key.Key_H)
        assert prob.visible and prob.item.isVisible() and view.legend.isVisible()
        assert not w.segmentation_action.isChecked()
    finally:
        w.shutdown()


def test_legend_shows_the_layer_colours_and_dims_below_threshold(qtbot):
    from viewer.ui.legend import BAR_HEIGHT

    view = show_widget(qtbot, make_view(qtbot), (400, 360))

    layer = view.add_layer("heat", ProbabilityLayer(np.zeros(view.volume.shape, np.float32), colormap="jet",
                                                    threshold=0.25))
    legend = view.legend
    assert legend.isVisible() and legend.title == "heat"
    bar = legend.bar_image()
    lut = layer.lut()[:, :3]
    np.testing.assert_array_equal(bar[0], lut[255])  # vmax at the top, in the layer's own colours
    row = legend.threshold_row()
    assert row == round(0.75 * (BAR_HEIGHT - 1))
    assert bar[row + 2:].astype(int).sum(axis=1).max() < bar[:row - 1].astype(int).sum(axis=1).max()
    layer.threshold = 0.5  # the bar follows the layer
    assert legend.threshold_row() == round(0.5 * (BAR_HEIGHT - 1))
    view.remove_layer("heat")
    assert not legend.isVisible()


def test_another_image_drops_the_previous_overlays(qtbot):
    view = make_view(qtbot)
    view.add_layer("heat", ProbabilityLayer(np.zeros(view.volume.shape, np.float32)))
    same = view.volume
    view.set_volume(same)  # the same image again keeps them
    assert "heat" in view.layers
    other = Volume(np.ones(same.shape, same.array.dtype), same.spacing, same.origin, same.direction,
                   info=SourceInfo(modality="CT", series_uid="9.9.9"))
    view.set_volume(other)  # same grid, other series: a heatmap of the first image must not stay
    assert view.layers == {}
