"""The mammography 4-view hanging: placement, mirroring, missing views, linked W/L, main-window switch."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import random
import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pg = pytest.importorskip("pyqtgraph")

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication

from viewer.core.io import scan
from viewer.core.io.dicom_write import write_series
from viewer.core.mammo import FOUR_VIEWS
from viewer.core.synthetic import write_mammo_exam
from viewer.core.volume import SourceInfo, Volume
from viewer.ui.main_window import MainWindow
from viewer.ui.mammo_layout import MammoLayout, load_four_view, preset_window
from qt_helpers import shown


SIZE = (104, 80)
DESCRIPTION = {"RCC": "R CC", "LCC": "L CC", "RMLO": "R MLO", "LMLO": "L MLO"}


def write_shuffled_exam(folder: Path, views=FOUR_VIEWS, seed=0) -> Path:
    """A small exam whose file names say nothing about the views, written in random order."""
    folder.mkdir(parents=True, exist_ok=True)
    order = list(views)
    random.Random(seed).shuffle(order)
    write_mammo_exam(folder, size=SIZE, seed=seed, views=tuple(order))
    for f in sorted(folder.glob("*.dcm")):
        f.rename(folder / f"{uuid.UUID(int=random.Random(f.name).getrandbits(128)).hex}.dcm")
    return folder


@pytest.fixture
def layout(qtbot):
    return shown(qtbot, MammoLayout(), (900, 700))


def hang(layout, folder):
    study = scan(folder).studies[0]
    layout.set_views(load_four_view(study), study)
    QApplication.processEvents()
    return study


def wall_on_left(image: np.ndarray) -> bool:
    band = max(2, image.shape[1] // 10)
    return float(image[:, :band].mean()) > float(image[:, -band:].mean())


@pytest.mark.parametrize("seed", [0, 3])
def test_views_in_their_cells_and_right_views_mirrored(tmp_path, layout, seed):
    folder = write_shuffled_exam(tmp_path / "mg", seed=seed)
    assert not any(p.stem in FOUR_VIEWS for p in folder.iterdir())  # names carry no hint
    hang(layout, folder)
    grid = layout.layout().itemAt(1).layout()
    for name, (row, col) in {"RCC": (0, 0), "LCC": (0, 1), "RMLO": (1, 0), "LMLO": (1, 1)}.items():
        cell = layout.cells[name]
        assert grid.itemAtPosition(row, col).widget() is cell
        assert layout.series[name].info.series_description == DESCRIPTION[name]
        assert cell.volume.info.series_description == DESCRIPTION[name]
        label = layout.cell_label(name)
        assert label.startswith(name) and DESCRIPTION[name] in label and "W/L" in label
        raw = cell.current_image()
        shown = cell.image_item.image
        assert wall_on_left(raw)  # the phantom writes every chest wall on the left
        if name[0] == "R":
            np.testing.assert_array_equal(shown, raw[:, ::-1])
            assert not wall_on_left(shown), name  # chest wall on the cell's right, towards the middle
        else:
            np.testing.assert_array_equal(shown, raw)
            assert wall_on_left(shown), name


def test_images_aligned_against_the_chest_wall_with_true_aspect(tmp_path, layout):
    hang(layout, write_shuffled_exam(tmp_path / "mg"))
    for name, cell in layout.cells.items():
        vol = cell.volume
        rect = cell.image_item.mapRectToParent(cell.image_item.boundingRect())
        assert rect.width() == pytest.approx(SIZE[1] * vol.spacing[2])
        assert rect.height() == pytest.approx(SIZE[0] * vol.spacing[1])
        # where the image edges land on screen (viewbox pixels)
        left = cell.view.mapViewToScene(QPointF(rect.left(), rect.top())).x()
        right = cell.view.mapViewToScene(QPointF(rect.right(), rect.top())).x()
        vb = cell.view.sceneBoundingRect()
        assert right - left < vb.width() - 10  # cells are wider than the images here
        if name[0] == "R":
            assert right == pytest.approx(vb.right(), abs=2), name
        else:
            assert left == pytest.approx(vb.left(), abs=2), name


def test_missing_view_shows_labelled_empty_cell(tmp_path, layout):
    hang(layout, write_shuffled_exam(tmp_path / "mg", views=("RCC", "LCC", "RMLO")))
    missing = layout.cells["LMLO"]
    assert missing.volume is None and layout.series["LMLO"] is None
    assert missing._placeholder.isVisible()
    assert layout.cell_label("LMLO") == "LMLO — not in this study"
    for name in ("RCC", "LCC", "RMLO"):
        assert layout.cells[name].volume is not None and layout.cells[name].image_item.image is not None
    layout.apply_preset("Full range")  # the empty cell is skipped, nothing breaks
    layout.reset_all()


def right_drag(cell, dx=100, dy=50):
    vp = cell.canvas.viewport()
    start = QPointF(vp.width() / 2, vp.height() / 2)
    right, none = Qt.MouseButton.RightButton, Qt.MouseButton.NoButton
    for kind, pos, button, buttons in [(QMouseEvent.Type.MouseButtonPress, start, right, right),
                                       *[(QMouseEvent.Type.MouseMove, start + QPointF(dx * i / 5, dy * i / 5),
                                          none, right) for i in range(1, 6)],
                                       (QMouseEvent.Type.MouseButtonRelease, start + QPointF(dx, dy), right, none)]:
        ev = QMouseEvent(kind, pos, QPointF(vp.mapToGlobal(pos.toPoint())), button, buttons,
                         Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(vp, ev)


def test_linked_and_unlinked_window_level(tmp_path, layout, qtbot):
    hang(layout, write_shuffled_exam(tmp_path / "mg"))
    assert layout.linked  # default on
    before = {n: c.window for n, c in layout.cells.items()}
    right_drag(layout.cells["LCC"])
    after = {n: c.window for n, c in layout.cells.items()}
    assert after["LCC"] != before["LCC"]
    assert all(after[n] == after["LCC"] for n in FOUR_VIEWS)  # all four follow
    assert f"W/L {after['LCC'][1]:.0f}" in layout.cells["RMLO"]._bl.text()

    qtbot.keyClick(layout.cells["RCC"].canvas, Qt.Key.Key_R)  # R resets every cell
    assert {n: c.window for n, c in layout.cells.items()} == before

    layout.set_linked(False)
    right_drag(layout.cells["RMLO"], dx=-60, dy=30)
    now = {n: c.window for n, c in layout.cells.items()}
    assert now["RMLO"] != before["RMLO"]
    assert all(now[n] == before[n] for n in FOUR_VIEWS if n != "RMLO")


def test_linked_zoom_and_presets(tmp_path, layout):
    hang(layout, write_shuffled_exam(tmp_path / "mg"))
    assert all(layout.zoom_of(n) == pytest.approx(1.0, rel=1e-3) for n in FOUR_VIEWS)
    vp = layout.cells["RCC"].canvas.viewport()
    pos = QPointF(vp.width() / 2, vp.height() / 2)
    for _ in range(3):  # plain wheel zooms in a cell (no slices to scroll)
        QApplication.sendEvent(vp, QWheelEvent(pos, QPointF(vp.mapToGlobal(pos.toPoint())), QPoint(0, 0),
                                               QPoint(0, 120), Qt.MouseButton.NoButton,
                                               Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase,
                                               False))
    zoom = layout.zoom_of("RCC")
    assert zoom > 1.2
    assert all(layout.zoom_of(n) == pytest.approx(zoom, rel=1e-2) for n in FOUR_VIEWS)
    depth, dy = layout.pan_of("RCC")  # zooming about the mouse moved RCC's region off the chest wall ...
    assert depth > 1.0
    for name in ("LCC", "RMLO", "LMLO"):  # ... and the others show the mirror-image region
        cell = layout.cells[name]
        (x0, x1), _ = cell.view.viewRange()
        width = cell.volume.shape[2] * cell.volume.spacing[2]
        inner = (width - x1) if name[0] == "R" else x0  # distance of the inner edge from the chest wall
        assert inner == pytest.approx(depth, abs=0.5)
        assert layout.pan_of(name)[1] == pytest.approx(dy, abs=0.5)

    # a pan in one view pans the others, mirrored between sides (LCC right = RCC left on screen)
    lcc, rcc = layout.cells["LCC"], layout.cells["RCC"]
    (l0, _), _ = lcc.view.viewRange()
    (r0, r1), (ry0, _) = rcc.view.viewRange()
    lcc.view.translateBy(x=5.0, y=3.0)
    lcc.view.sigRangeChangedManually.emit(lcc.view.state["mouseEnabled"])
    (nl0, _), _ = lcc.view.viewRange()
    (nr0, nr1), (nry0, _) = rcc.view.viewRange()
    assert nl0 - l0 == pytest.approx(5.0, abs=1e-3)
    assert nr1 - r1 == pytest.approx(-5.0, abs=1e-3) and nry0 - ry0 == pytest.approx(3.0, abs=1e-3)
    layout.reset_all()
    assert all(layout.zoom_of(n) == pytest.approx(1.0, rel=1e-3) for n in FOUR_VIEWS)

    layout.apply_preset("Full range")
    for c in layout.cells.values():
        img = c.current_image()
        assert c.window == pytest.approx(((float(img.min()) + float(img.max())) / 2, float(img.max() - img.min())))
    layout.apply_preset("Dense")
    for c in layout.cells.values():
        img = c.current_image()
        center, width = c.window
        assert width < float(img.max() - img.min()) / 2  # narrower ...
        assert center > (float(img.min()) + float(img.max())) / 2  # ... on the upper range
    assert preset_window(np.zeros((4, 4)), "Dense") == (0.0, 1.0)


def test_main_window_switches_between_mammo_layout_and_slice_view(tmp_path, qtbot):
    root = tmp_path / "mixed"
    z, y, x = np.indices((6, 32, 32))
    ct = Volume(((z * 37 + y * 11 + x * 5) % 1500 - 1000).astype(np.int16), spacing=(2.5, 0.8, 0.8),
                info=SourceInfo(modality="CT", patient_name="CT^PATIENT", patient_id="CT-1",
                                series_description="ct axial", window=(40, 400)))
    write_series(ct, root / "ct", intercept=-1024, stored_dtype=np.uint16)
    write_shuffled_exam(root / "mg")

    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1000, 700)
    w.show()
    try:
        with qtbot.waitSignal(w.image_shown, timeout=15000):
            w.open_path(root)
        studies = w.scan_result.studies
        mg = next(st for st in studies if "MG" in st.modalities)
        ct_series = next(s for st in studies for s in st.series if s.modality == "CT")

        study_item = w.browser.item_for(mg.series[0]).parent()
        with qtbot.waitSignal(w.image_shown, timeout=15000):
            w.browser.setCurrentItem(study_item)  # the study row
        assert w.views.currentWidget() is w.mammo_layout
        assert all(w.mammo_layout.cells[n].volume is not None for n in FOUR_VIEWS)
        assert w.mammo_layout.cell_label("LMLO").startswith("LMLO")

        with qtbot.waitSignal(w.image_shown, timeout=15000):
            w.browser.select_series(ct_series)
        assert w.views.currentWidget() is w.grid
        assert w.slice_view.volume.info.modality == "CT"

        with qtbot.waitSignal(w.image_shown, timeout=15000):
            w.browser.select_series(mg.series[-1])  # any series of the MG study: the hanging again
        assert w.views.currentWidget() is w.mammo_layout
        assert not w.progress.isVisible() and not w.cancel_button.isVisible()
    finally:
        w.shutdown()
