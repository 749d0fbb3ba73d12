"""Linked scrolling: the slice geometry (core.sync, no Qt) and the 1x2 / 2x2 viewports that follow it."""
from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path

import numpy as np
import pytest

from conftest import AXIAL, CORONAL, OBLIQUE, SAGITTAL, rotation
from viewer.core.io.dicom_write import write_series
from viewer.core.sync import matching_slice, plane_normal, same_frame_of_reference, slice_plane
from viewer.core.volume import SourceInfo, Volume

needs_qt = pytest.mark.skipif(importlib.util.find_spec("pytestqt") is None, reason="pytest-qt not installed")

FRAME = "1.2.826.0.1.77.1"


def stack(n, spacing, origin, direction=AXIAL, shape_yx=(8, 10)) -> Volume:
    return Volume(np.zeros((n, *shape_yx), np.int16), (spacing, 0.8, 0.7), origin, direction,
                  SourceInfo(frame_of_reference_uid=FRAME))


def world_along(volume, axis, k, normal) -> float:
    """Position of slice k along ``normal`` (mm), from the volume's own index->world mapping."""
    idx = np.zeros(3)
    idx[axis] = k
    return float(np.dot(volume.index_to_world(idx), normal))


def is_nearest(source, s_axis, k, target, t_axis, j) -> bool:
    """Brute force: no target slice plane lies closer to the source slice centre than slice j's (ties allowed)."""
    normal = plane_normal(target, t_axis)
    pos = float(np.dot(slice_plane(source, s_axis, k).point, normal))
    gaps = [abs(world_along(target, t_axis, i, normal) - pos) for i in range(target.shape[t_axis])]
    return j is not None and gaps[j] <= min(gaps) + 1e-9


# -- core geometry (no Qt) ---------------------------------------------------------------------------
def test_different_spacing_and_origin_meet_at_the_same_z():
    thin = stack(40, 1.25, (-20.0, -30.0, -50.0))  # z from -50 to -1.25
    thick = stack(9, 5.0, (3.0, 7.0, -42.5))  # z from -42.5 to -2.5, shifted in x/y too
    for k in range(thin.shape[0]):
        z = thin.index_to_world((k, 0, 0))[2]
        j = matching_slice(slice_plane(thin, 0, k), thick, 0)
        if z < -42.5 - 2.5 or z > -2.5 + 2.5:
            assert j is None, (k, z)  # more than half a thick slice outside the thick stack
            continue
        assert is_nearest(thin, 0, k, thick, 0, j)
        assert abs(thick.index_to_world((j, 0, 0))[2] - z) <= 2.5 + 1e-9


def test_reversed_stack_order_lines_up_by_position_not_index():
    up = stack(20, 2.0, (0.0, 0.0, 0.0))  # slice 0 at z = 0, going up
    down_dir = AXIAL.copy()
    down_dir[:, 0] *= -1  # slice axis towards the feet
    down_dir[:, 2] *= -1  # and the row direction mirrored, so the frame stays right-handed
    down = stack(13, 3.0, (20.0, 0.0, 36.0), down_dir)  # slice 0 at z = 36, last at z = 0
    assert matching_slice(slice_plane(up, 0, 0), down, 0) == 12
    assert matching_slice(slice_plane(up, 0, 18), down, 0) == 0  # z = 36
    assert matching_slice(slice_plane(up, 0, 19), down, 0) is None  # z = 38: beyond half a slice past z = 36
    for k in range(up.shape[0] - 1):
        assert is_nearest(up, 0, k, down, 0, matching_slice(slice_plane(up, 0, k), down, 0))
        j = matching_slice(slice_plane(down, 0, k % 13), up, 0)
        assert is_nearest(down, 0, k % 13, up, 0, j)


def test_native_coronal_and_sagittal_stacks_link_with_their_own_kind():
    a = stack(16, 2.0, (-10.0, -15.0, 30.0), CORONAL)
    b = stack(7, 4.5, (-12.0, -13.0, 28.0), CORONAL)
    for k in range(a.shape[0]):
        j = matching_slice(slice_plane(a, 0, k), b, 0)
        if j is not None:
            assert is_nearest(a, 0, k, b, 0, j)
    sag = stack(10, 3.0, (0.0, 0.0, 0.0), SAGITTAL)
    assert matching_slice(slice_plane(a, 0, 5), sag, 0) is None  # coronal vs sagittal: perpendicular
    assert matching_slice(slice_plane(stack(10, 2.0, (0, 0, 0)), 0, 5), a, 0) is None  # axial vs coronal


def test_a_reformatted_plane_links_with_the_matching_axis_of_another_volume():
    axial = stack(30, 1.5, (0.0, 0.0, -20.0))
    coronal = stack(12, 2.0, (-5.0, -4.0, 25.0), CORONAL, shape_yx=(30, 16))  # rows run to the feet
    # the y axis (array axis 1) of the axial stack is the coronal stack's slice axis
    for k in range(axial.shape[1]):
        j = matching_slice(slice_plane(axial, 1, k), coronal, 0)
        y = axial.index_to_world((0, k, 0))[1]
        if j is not None:
            assert abs(coronal.index_to_world((j, 0, 0))[1] - y) <= 1.0 + 1e-9
            assert is_nearest(axial, 1, k, coronal, 0, j)


def test_oblique_stack_does_not_link_but_a_slightly_tilted_one_does():
    axial = stack(20, 2.0, (0.0, 0.0, 0.0))
    oblique = stack(20, 2.0, (0.0, 0.0, 0.0), OBLIQUE)
    assert matching_slice(slice_plane(axial, 0, 10), oblique, 0) is None
    assert matching_slice(slice_plane(oblique, 0, 10), axial, 0) is None
    tilted = stack(20, 2.0, (0.0, 0.0, 0.0), rotation(4, 0, 0)[:, ::-1].copy())  # 4 degrees: cos 0.998
    assert is_nearest(axial, 0, 10, tilted, 0, matching_slice(slice_plane(axial, 0, 10), tilted, 0))


def test_gantry_tilt_uses_the_true_plane_normal():
    """A sheared stack (slices stepped along a tilted vector) still has axial planes."""
    d = AXIAL.copy()
    d[:, 0] = [0.0, np.sin(np.radians(20)), np.cos(np.radians(20))]  # stacking vector tilted 20 degrees
    sheared = stack(15, 2.0, (0.0, 0.0, 0.0), d)
    np.testing.assert_allclose(np.abs(plane_normal(sheared, 0)), [0, 0, 1], atol=1e-12)
    axial = stack(30, 1.0, (0.0, 0.0, 0.0))
    j = matching_slice(slice_plane(sheared, 0, 6), axial, 0)
    assert j == round(sheared.index_to_world((6, 0, 0))[2])


def test_frame_of_reference_must_match_and_be_known():
    assert same_frame_of_reference(SourceInfo(frame_of_reference_uid="1.2"), SourceInfo(frame_of_reference_uid="1.2"))
    assert not same_frame_of_reference(SourceInfo(frame_of_reference_uid="1.2"), SourceInfo(frame_of_reference_uid="1.3"))
    assert not same_frame_of_reference(SourceInfo(), SourceInfo())  # unknown (e.g. NIfTI): never assume


# -- the viewport grid ------------------------------------------------------------------------------
THIN = dict(n=24, spacing=2.0, origin=(-60.0, -60.0, -40.0))  # z -40 .. 6
THICK = dict(n=9, spacing=5.0, origin=(-58.0, -61.0, -33.0))  # z -33 .. 7
OTHER = dict(n=24, spacing=2.0, origin=(-60.0, -60.0, -40.0))  # the same grid as THIN, another frame


# slice 0 at the top (z = 10), stacked toward the feet: the row direction is mirrored so that
# row x column = slice axis, as the DICOM loader derives it
REVERSED_AXIAL = np.column_stack([[0, 0, -1], [0, 1, 0], [-1, 0, 0]]).astype(float)
REVERSED = dict(n=11, spacing=4.0, origin=(60.0, -60.0, 10.0), direction=REVERSED_AXIAL)  # z 10 .. -30


def z_volume(n, spacing, origin, number, description, frame, direction=AXIAL) -> Volume:
    """Every pixel of a slice holds 1000 + its z in mm, so what is shown tells where it is."""
    z = origin[2] + direction[2, 0] * spacing * np.arange(n)
    arr = np.broadcast_to((1000 + np.rint(z)).astype(np.int16)[:, None, None], (n, 24, 24)).copy()
    info = SourceInfo(modality="CT", patient_name="LINK^TEST", patient_id="L-1", study_uid="1.2.826.0.1.77",
                      series_uid=f"1.2.826.0.1.77.{number}", series_number=number,
                      series_description=description, frame_of_reference_uid=frame)
    return Volume(arr, (spacing, 1.0, 1.0), origin, direction, info=info)


@pytest.fixture(scope="module")
def link_study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("linked")
    write_series(z_volume(**THIN, number=1, description="thin", frame=FRAME), out / "thin")
    write_series(z_volume(**THICK, number=2, description="thick", frame=FRAME), out / "thick")
    write_series(z_volume(**OTHER, number=3, description="other frame", frame="1.2.826.0.1.77.2"), out / "other")
    write_series(z_volume(**REVERSED, number=4, description="reversed", frame=FRAME), out / "reversed")
    return out


@pytest.fixture
def window(qtbot):
    from qt_helpers import shown
    from viewer.ui.main_window import MainWindow

    w = shown(qtbot, MainWindow(), (1100, 750))
    yield w
    w.shutdown()


def z_of(view) -> float:
    return float(view.volume.index_to_world((view.slice_index, 0, 0))[2])


def series_named(w, description):
    return next(s for s in w.browser.image_series() if s.info.series_description == description)


def open_1x2(qtbot, w, path, right="thick"):
    """Open the study, thin series on the left, ``right`` on the right."""
    with qtbot.waitSignal(w.image_shown, timeout=15000):
        w.open_path(path)
    qtbot.waitUntil(lambda: not w.busy, timeout=15000)
    left = w.grid.cells[0]
    if left.volume.info.series_description != "thin":
        with qtbot.waitSignal(w.image_shown, timeout=15000):
            w.load_series(series_named(w, "thin"), viewport=left)
    w.set_layout("1x2")
    qtbot.waitUntil(lambda: not w.busy, timeout=15000)
    right_view = w.grid.cells[1]
    if right_view.volume is None or right_view.volume.info.series_description != right:
        with qtbot.waitSignal(w.image_shown, timeout=15000):
            w.load_series(series_named(w, right), viewport=right_view)
    w.grid.set_active(left)
    return left, right_view


def assert_follows(left, right):
    """The right view shows the thick slice nearest to the left view's z (or stays, outside its extent)."""
    z = z_of(left)
    zs = THICK["origin"][2] + THICK["spacing"] * np.arange(THICK["n"])
    nearest = int(np.argmin(np.abs(zs - z)))
    assert right.slice_index == nearest, (z, z_of(right))
    assert abs(z_of(right) - z) <= THICK["spacing"] / 2 + 1e-6
    assert int(right.current_image()[0, 0]) == 1000 + round(zs[nearest])  # the pixels shown come from there


@needs_qt
def test_scrolling_one_viewport_moves_the_other_to_the_same_position(qtbot, window, link_study):
    left, right = open_1x2(qtbot, window, link_study)
    assert window.link_scroll_action.isChecked()  # on by default
    assert_follows(left, right)  # the series loaded second joined at the left one's position

    left.set_slice(5)  # z = -30
    assert_follows(left, right)
    for _ in range(6):
        left.wheel(-120)  # the wheel: one notch toward the user = next slice
        assert_follows(left, right)
    from PySide6.QtCore import Qt

    left.handle_key(Qt.Key.Key_PageDown)
    assert_follows(left, right)
    left.handle_key(Qt.Key.Key_End)  # z = 6: within the thick stack's last slab
    assert_follows(left, right)

    before = right.slice_index
    left.set_slice(0)  # z = -40: more than half a thick slice below its first (-33): the right one stays put
    assert right.slice_index == before == THICK["n"] - 1
    left.set_slice(1)  # z = -38: still outside
    assert right.slice_index == before

    # and the other way round: the thick one drives the thin one
    right.set_slice(3)  # z = -18
    assert left.slice_index == 11 and z_of(left) == -18.0


@needs_qt
def test_2x2_reversed_stack_follows_and_another_frame_stays(qtbot, window, link_study):
    left, right = open_1x2(qtbot, window, link_study)
    window.set_layout("2x2")
    qtbot.waitUntil(lambda: not window.busy and all(v.volume is not None for v in window.grid.visible_cells()),
                    timeout=15000)
    views = {v.volume.info.series_description: v for v in window.grid.visible_cells()}
    assert set(views) == {"thin", "thick", "other frame", "reversed"}
    rev, other = views["reversed"], views["other frame"]
    assert rev.volume.index_to_world((0, 0, 0))[2] == 10.0  # loaded as stored: slice 0 at the top
    window.grid.set_active(left)
    k_other = other.slice_index
    for k in (3, 10, 15, 20, 23):  # z = -34, -20, -10, 0, 6
        left.set_slice(k)
        assert_follows(left, right)
        z = z_of(left)
        if z < -32:  # beyond half a slice below the reversed stack's last slice (-30): it stays
            continue
        assert abs(z_of(rev) - z) <= REVERSED["spacing"] / 2 + 1e-6
        assert int(rev.current_image()[0, 0]) == 1000 + round(z_of(rev))
    assert other.slice_index == k_other

    rev.set_slice(1)  # z = 6: the thin and thick ones follow the reversed one too
    assert z_of(left) == 6.0 and z_of(right) == 7.0 and other.slice_index == k_other


@needs_qt
def test_cine_moves_the_linked_viewport_too(qtbot, window, link_study):
    left, right = open_1x2(qtbot, window, link_study)
    left.set_slice(8)
    window._cine_step()  # one frame of cine on the active viewport
    assert left.slice_index == 9
    assert_follows(left, right)


@needs_qt
def test_no_recursion_each_move_sets_every_viewport_once(qtbot, window, link_study):
    left, right = open_1x2(qtbot, window, link_study)
    left.set_slice(3)
    moves = {"left": [], "right": []}
    left.slice_changed.connect(moves["left"].append)
    right.slice_changed.connect(moves["right"].append)
    left.set_slice(20)  # z = 0 -> thick slice 7 (z = 2)
    assert moves == {"left": [20], "right": [7]}
    right.set_slice(3)  # z = -18 -> thin slice 11
    assert moves == {"left": [20, 11], "right": [7, 3]}


@needs_qt
def test_another_frame_of_reference_does_not_link(qtbot, window, link_study):
    left, right = open_1x2(qtbot, window, link_study, right="other frame")
    k = right.slice_index
    left.set_slice(2)
    left.set_slice(20)
    assert right.slice_index == k  # same grid, but not the same patient coordinates


@needs_qt
def test_toggle_off_unlinks_and_is_remembered(qtbot, window, link_study):
    from viewer.ui.main_window import LINK_SCROLL_KEY, settings

    act = window.link_scroll_action
    view_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&View")
    assert act in view_menu.actions() and act in window.layout_toolbar.actions() and act.isCheckable()
    assert act.text().replace("&", "") == "Link scroll"
    left, right = open_1x2(qtbot, window, link_study)
    left.set_slice(10)
    k = right.slice_index
    window.link_scroll_action.trigger()  # the View menu / toolbar button
    assert not window.link_scroll_action.isChecked() and not window.grid.link_scroll
    assert settings().value(LINK_SCROLL_KEY, True, type=bool) is False
    left.set_slice(20)
    assert right.slice_index == k
    window.set_link_scroll(True)  # on again: the others line up with the active viewport at once
    assert window.link_scroll_action.isChecked()
    assert settings().value(LINK_SCROLL_KEY, False, type=bool) is True
    assert_follows(left, right)


@needs_qt
def test_the_setting_is_read_at_start(qtbot, link_study):
    from qt_helpers import shown
    from viewer.ui.main_window import LINK_SCROLL_KEY, MainWindow, settings

    settings().setValue(LINK_SCROLL_KEY, False)
    try:
        w = shown(qtbot, MainWindow(), (1100, 750))
        try:
            assert not w.link_scroll_action.isChecked() and not w.grid.link_scroll
            left, right = open_1x2(qtbot, w, link_study)
            k = right.slice_index
            left.set_slice(20)
            assert right.slice_index == k
        finally:
            w.shutdown()
    finally:
        settings().setValue(LINK_SCROLL_KEY, True)


@needs_qt
def test_1x1_and_mpr_scroll_alone(qtbot, window, link_study):
    left, right = open_1x2(qtbot, window, link_study)
    left.set_slice(10)
    k = right.slice_index
    window.set_layout("1x1")
    left.set_slice(20)  # the right viewport is not shown: it does not follow
    assert right.slice_index == k
    window.set_layout("mpr")
    axial = window.mpr_layout.views["axial"]
    axial.set_slice(3)
    assert right.slice_index == k and left.slice_index == 20
    window.set_layout("1x2")  # shown again: it lines up with the active viewport
    assert_follows(left, right)
