"""Current vs prior: the 8-cell mammography hanging (placement, mirroring, dates, missing views, linked
W/L and zoom across both exams) and "Compare with prior" in the main window (MG and CT)."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("pyqtgraph")

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from prior_fixtures import ct_study, two_mg_exams_and_a_stranger
from qt_helpers import close_quietly, editor_window, open_and_wait, shown
from test_mammo_layout import right_drag, wall_on_left
from viewer.core.io import scan
from viewer.core.mammo import FOUR_VIEWS
from viewer.core.priors import mammo_priors
from viewer.ui.mammo_layout import PRIOR, MammoLayout, load_four_view
from viewer.ui.priors import PriorScrollLink, compare_with_prior, offer_prior


@pytest.fixture
def exams(tmp_path):
    result = scan(two_mg_exams_and_a_stranger(tmp_path / "mg"))
    current = next(st for st in result.studies if st.date == "20240301")
    exam, older = mammo_priors(result, current)
    return current, older[0].as_study()


@pytest.fixture
def hanging(qtbot, exams):
    layout = shown(qtbot, MammoLayout(), (1400, 700))
    current, prior = exams
    layout.set_views(load_four_view(current), current)
    layout.set_prior_views(load_four_view(prior), prior)
    QApplication.processEvents()
    return layout


def test_eight_cells_in_place_and_mirrored(hanging):
    grid = hanging.layout().itemAt(1).layout()
    assert hanging.comparing
    for name, (row, col) in {"RCC": (0, 0), "LCC": (0, 1), "RMLO": (1, 0), "LMLO": (1, 1)}.items():
        assert grid.itemAtPosition(row, col).widget() is hanging.cells[name]
        prior = hanging.prior_cells[name]
        assert grid.itemAtPosition(row, col + 3).widget() is prior and prior.isVisible()
        for cell, series in ((hanging.cells[name], hanging.series[name]), (prior, hanging.prior_series[name])):
            if name == "LMLO" and cell is prior:
                continue  # missing from the prior exam
            assert cell.volume.info.laterality + cell.volume.info.view_position == name
            assert series.info.series_description == f"{name[0]} {name[1:]}"
            raw, drawn = cell.current_image(), cell.image_item.image
            assert wall_on_left(raw)
            if name[0] == "R":  # right breast mirrored: chest wall towards the middle of its pair
                np.testing.assert_array_equal(drawn, raw[:, ::-1])
                assert not wall_on_left(drawn)
            else:
                np.testing.assert_array_equal(drawn, raw)
    # the pairs meet in the middle of each half: prior RCC right of the gap, prior LCC beside it
    rcc, lcc = hanging.prior_cells["RCC"], hanging.prior_cells["LCC"]
    assert rcc.geometry().right() < lcc.geometry().left()
    assert hanging.cells["LCC"].geometry().right() < rcc.geometry().left() - 8  # the gap between the exams


def test_dates_in_every_cell_and_missing_prior_view_labelled(hanging):
    for name in FOUR_VIEWS:
        assert "CURRENT 2024-03-01" in hanging.cell_label(name)
        assert "CURRENT 2024-03-01" in (hanging.cells[name]._tl.text() + hanging.cells[name]._tr.text())
    for name in ("RCC", "LCC", "RMLO"):
        assert "PRIOR 2022-02-14" in hanging.cell_label(PRIOR + name)
    missing = hanging.prior_cells["LMLO"]
    assert missing.volume is None and missing._placeholder.isVisible()
    assert hanging.cell_label(PRIOR + "LMLO") == "prior LMLO — not in the 2022-02-14 exam"
    assert "2024-03-01 vs prior 2022-02-14" in hanging.header.text()
    hanging.apply_preset("Dense")  # the empty cell is skipped
    hanging.reset_all()


def test_linked_window_level_across_current_and_prior(hanging, qtbot):
    start = {k: c.window for k, c in hanging.linked_cells().items() if c.volume is not None}
    assert len(start) == 7
    assert all(start[PRIOR + n] == start[n] for n in ("RCC", "LCC", "RMLO"))  # each prior view: its current's W/L
    right_drag(hanging.prior_cells["LCC"])
    after = {k: c.window for k, c in hanging.linked_cells().items() if c.volume is not None}
    assert after["prior:LCC"] != start["prior:LCC"] and len(set(after.values())) == 1
    qtbot.keyClick(hanging.prior_cells["RCC"].canvas, Qt.Key.Key_R)  # R resets all eight
    assert {k: c.window for k, c in hanging.linked_cells().items() if c.volume is not None} == start
    hanging.set_linked(False)
    right_drag(hanging.cells["RMLO"], dx=-60, dy=30)
    assert hanging.prior_cells["RMLO"].window != hanging.cells["RMLO"].window


def wheel(cell, notches=3):
    vp = cell.canvas.viewport()
    pos = QPointF(vp.width() / 2, vp.height() / 2)
    for _ in range(notches):
        QApplication.sendEvent(vp, QWheelEvent(pos, QPointF(vp.mapToGlobal(pos.toPoint())), QPoint(0, 0),
                                               QPoint(0, 120), Qt.MouseButton.NoButton,
                                               Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase,
                                               False))


def test_linked_zoom_and_pan_across_current_and_prior(hanging):
    wheel(hanging.prior_cells["RMLO"])
    zoom = hanging.zoom_of("prior:RMLO")
    depth, dy = hanging.pan_of("prior:RMLO")
    assert zoom > 1.2
    for key, cell in hanging.linked_cells().items():
        if cell.volume is None:
            continue
        assert hanging.zoom_of(key) == pytest.approx(zoom, rel=1e-2), key
        assert hanging.pan_of(key)[0] == pytest.approx(depth, abs=0.5), key  # mirrored: same depth from the wall
        assert hanging.pan_of(key)[1] == pytest.approx(dy, abs=0.5), key
    hanging.reset_all()
    assert all(hanging.zoom_of(k) == pytest.approx(1.0, rel=1e-3) for k, c in hanging.linked_cells().items()
               if c.volume is not None)


def test_a_new_exam_or_none_puts_the_prior_away(hanging, exams, qtbot):
    current, _ = exams
    assert hanging.prior_action.isChecked() and hanging.prior_action.isEnabled()
    with qtbot.waitSignal(hanging.prior_requested, timeout=1000):
        hanging.prior_action.trigger()  # the window answers by putting the prior away
    assert hanging.comparing  # ... the layout itself does not
    hanging.set_prior_views(None)
    assert not hanging.prior_action.isChecked()
    assert not hanging.comparing and not any(c.isVisible() for c in hanging.prior_cells.values())
    assert "PRIOR" not in hanging.cell_label("RCC") and "2024-03-01" in hanging.cell_label("RCC")
    assert set(hanging.linked_cells()) == set(FOUR_VIEWS)
    hanging.set_prior_views(load_four_view(exams[1]), exams[1])
    hanging.set_views(load_four_view(current), current)  # another exam opened: back to four cells
    assert not hanging.comparing and all(c.volume is None for c in hanging.prior_cells.values())
    assert not hanging.prior_action.isEnabled()  # until the window finds this exam's prior


# -- the action, in the main window ------------------------------------------------------------------------
def test_compare_with_prior_on_the_mammo_hanging(tmp_path, qtbot):
    root = two_mg_exams_and_a_stranger(tmp_path / "mg")
    w = editor_window(qtbot, (1500, 800))
    try:
        open_and_wait(qtbot, w, root)
        current = next(st for st in w.scan_result.studies if st.date == "20240301")
        w.load_mammo(current)
        qtbot.waitUntil(lambda: w.shown_mammo is current and not w.busy, timeout=30000)
        # the wiring the main window gets: the hanging's button asks, the window hangs the prior
        w.mammo_layout.prior_requested.connect(lambda: compare_with_prior(w, w.tasks.start))
        assert offer_prior(w) == "20220214" and w.mammo_layout.prior_action.isEnabled()
        assert "2022-02-14" in w.mammo_layout.prior_action.toolTip()
        w.mammo_layout.prior_action.trigger()
        qtbot.waitUntil(lambda: w.mammo_layout.comparing and not w.busy, timeout=30000)
        assert w.mammo_layout.prior_study.date == "20220214" and w.mammo_layout.prior_action.isChecked()
        assert "PRIOR 2022-02-14" in w.mammo_layout.cell_label("prior:RCC")
        assert "put away" in compare_with_prior(w, w.tasks.start)  # pressed again: back to four cells
        assert not w.mammo_layout.comparing
        stranger = next(st for st in w.scan_result.studies if st.date == "20230505")
        w.load_mammo(stranger)
        qtbot.waitUntil(lambda: w.shown_mammo is stranger and not w.busy, timeout=30000)
        assert "No prior" in compare_with_prior(w, w.tasks.start)
        assert offer_prior(w) is None and not w.mammo_layout.prior_action.isEnabled()
    finally:
        close_quietly(w)


def test_compare_from_a_viewport_the_1x2_hides(tmp_path, qtbot):
    """Read in the third viewport of 1x1: the current series moves to the left viewport, the prior to the right."""
    ct_study(tmp_path / "ct" / "cur", "C1", "20240101")
    ct_study(tmp_path / "ct" / "other", "C1", "20240101", description="Bone", seed=3)
    ct_study(tmp_path / "ct" / "pri", "C1", "20230101", shift_mm=20.0)
    w = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w, tmp_path / "ct")
        current = next(s for st in w.scan_result.studies if st.date == "20240101" for s in st.series
                       if s.info.series_description != "Bone")
        w.grid.set_active(w.grid.cells[2])
        w.load_series(current)
        qtbot.waitUntil(lambda: w.grid.cells[2].volume is not None and not w.busy, timeout=30000)
        compare_with_prior(w, w.tasks.start)
        left, right = w.grid.visible_cells()[:2]
        qtbot.waitUntil(lambda: right.volume is not None and right.volume.info.study_date == "20230101"
                        and not w.busy, timeout=30000)
        qtbot.wait(200)  # nothing else lands in the viewports afterwards
        assert left.volume.info.series_uid == current.uid and right.volume.info.study_date == "20230101"
        for k in (3, 17):  # the same body 20 mm further along the table: the same slice numbers
            left.set_slice(k)
            assert right.slice_index == k
        right.set_slice(9)
        assert left.slice_index == 9
    finally:
        close_quietly(w)


def test_compare_with_prior_for_ct_opens_1x2_scrolling_by_anatomy(tmp_path, qtbot):
    ct_study(tmp_path / "ct" / "cur", "C1", "20240101")
    ct_study(tmp_path / "ct" / "pri", "C1", "20230101", shift_mm=137.0,
             drop=tuple(f"IM{i:05d}" for i in range(1, 6)))
    w = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w, tmp_path / "ct")
        current = next(s for st in w.scan_result.studies if st.date == "20240101" for s in st.series)
        if w.shown_series is None or w.shown_series.key != current.key:
            w.load_series(current)
            qtbot.waitUntil(lambda: w.shown_series is not None and w.shown_series.key == current.key
                            and not w.busy, timeout=30000)
        text = compare_with_prior(w, w.tasks.start)
        assert "2023-01-01" in text
        left, right = w.grid.visible_cells()[:2]
        qtbot.waitUntil(lambda: right.volume is not None and right.volume.info.study_date == "20230101"
                        and not w.busy, timeout=30000)
        assert w.layout_mode == "1x2" and left.volume.info.study_date == "20240101"
        link = w.grid.findChildren(PriorScrollLink)[0]
        assert link.offset_mm is not None
        left.set_slice(12)  # the prior lacks the first 5 slices of the same body
        assert right.slice_index == 7
        np.testing.assert_array_equal(left.current_image(), right.current_image())
        right.set_slice(2)
        assert left.slice_index == 7
        w.link_scroll_action.setChecked(False)  # the window's Link scroll switch holds for the prior too
        left.set_slice(15)
        assert right.slice_index == 2
    finally:
        close_quietly(w)


def test_compare_with_prior_explains_when_there_is_nothing_to_compare():
    said = []
    window = SimpleNamespace(scan_result=None, shown_mammo=None, shown_series=None,
                             show_message=lambda text, level="info": said.append((text, level)))
    assert "Open a study first" in compare_with_prior(window, run_task=None)
    window.scan_result = object()
    assert "Show a series first" in compare_with_prior(window, run_task=None)
    assert [level for _, level in said] == ["warning", "warning"]
