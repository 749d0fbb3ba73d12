"""Issue 14 §2 reading defects: the W/L preset box names the preset in effect, window numbers print plainly,
the heatmap threshold is kept per map, File ▸ Open adds to the browser, Open Recent keeps the path as opened."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("pyqtgraph")

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication
from test_main_window_features import load, press, write_ct

from viewer.core.windowing import Preset, window_value_text
from viewer.ui import settings as app_settings
from viewer.ui.analysis_panel import AnalysisPanel
from viewer.ui.main_window import MainWindow
from viewer.ui.presets import CUSTOM, preset_label
from qt_helpers import shown


@pytest.fixture(autouse=True)
def temp_settings(tmp_path_factory):
    where = tmp_path_factory.mktemp("settings")
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(where))
    yield where


@pytest.fixture
def window(qtbot):
    w = shown(qtbot, MainWindow(), (1100, 800))
    yield w
    w.shutdown()


# -- W/L labels and the preset box ------------------------------------------------------------------
@pytest.mark.parametrize("value,text", [(13680.0, "13680"), (4000.0, "4000"), (-600.0, "-600"),
                                        (13679.6, "13680"), (2.5, "2.5"), (0.0123, "0.0123"),
                                        (12.345, "12.3"), (0.00001, "0.00001")])
def test_window_values_print_as_plain_numbers(value, text):
    assert window_value_text(value) == text


def test_cr_preset_label_has_no_scientific_notation():
    label = preset_label(Preset("Full range", 13680.0, 4000.0))
    assert label == "Full range  (W 4000 / L 13680)"
    assert "e+" not in label


def combo_text(w) -> str:
    return w.preset_combo.currentText()


def test_preset_box_names_the_preset_in_effect(qtbot, window, tmp_path):
    w = window
    load(qtbot, w, write_ct(tmp_path / "ct", window=(40.0, 400.0)))  # the source's window is Soft tissue's
    assert combo_text(w).startswith("Soft tissue"), combo_text(w)
    press(qtbot, w, Qt.Key.Key_F2)
    assert combo_text(w).startswith("Lung")
    w.preset_action("Bone").trigger()
    assert combo_text(w).startswith("Bone")
    i = next(i for i in range(w.preset_combo.count()) if w.preset_combo.itemText(i).startswith("Liver"))
    w.preset_combo.activated.emit(i)
    assert combo_text(w).startswith("Liver")
    w.slice_view.set_window(123.0, 456.0)  # as a right-drag does
    assert combo_text(w) == CUSTOM and w.preset_combo.currentIndex() == 0
    w.slice_view.set_window(-600.0, 1500.0)
    assert combo_text(w).startswith("Lung")


def test_preset_box_custom_for_a_window_that_is_no_preset(qtbot, window, tmp_path):
    w = window
    load(qtbot, w, write_ct(tmp_path / "ct", window=(35.0, 333.0)))
    assert combo_text(w) == CUSTOM


# -- heatmap threshold per map kind -------------------------------------------------------------------
def test_heatmap_threshold_is_kept_per_map_kind(qtbot):
    panel = AnalysisPanel()
    qtbot.addWidget(panel)
    styled = []
    panel.heatmap_style_changed.connect(lambda: styled.append(panel.heatmap_threshold))
    panel.set_heatmaps(["mass", "calcification"], "mass")  # the mammograms
    panel.threshold.setValue(53)
    assert panel.heatmap_threshold == pytest.approx(0.53)
    panel.set_heatmaps(["lesion probability"], "lesion probability")  # the next study: a CT lesion map
    assert panel.heatmap_threshold == pytest.approx(0.30)  # never adjusted: the default, not 0.53
    assert styled[-1] == pytest.approx(0.30)  # the layers on screen are told
    assert panel.threshold_label.text() == "0.30"
    panel.threshold.setValue(40)
    panel.set_heatmaps(["mass", "calcification"], "mass")  # back to the mammograms: their 0.53
    assert panel.heatmap_threshold == pytest.approx(0.53)
    panel.heatmap_combo.setCurrentText("calcification")  # another kind in the same result
    assert panel.heatmap_threshold == pytest.approx(0.30)
    panel.heatmap_combo.setCurrentText("mass")
    assert panel.heatmap_threshold == pytest.approx(0.53)
    assert panel.threshold_for("lesion probability") == pytest.approx(0.40)


# -- Open Recent keeps the path as opened -----------------------------------------------------------
def test_open_recent_keeps_the_path_as_opened_and_merges_links(tmp_path, monkeypatch):
    real = tmp_path / "archive" / "ct-2024"
    real.mkdir(parents=True)
    link = tmp_path / "today"
    link.symlink_to(real, target_is_directory=True)
    app_settings.remember_recent(link)
    assert app_settings.recent_paths() == [str(link)]  # not the resolved archive path
    app_settings.remember_recent(real)  # the same folder by its real name: one entry, the newest
    assert app_settings.recent_paths() == [str(real)]
    monkeypatch.setenv("HOME", str(tmp_path))
    app_settings.remember_recent("~/today")
    assert app_settings.recent_paths() == [str(link)]  # ~ expanded, link kept
    monkeypatch.chdir(tmp_path)
    app_settings.remember_recent("archive")
    assert app_settings.recent_paths() == [str(tmp_path / "archive"), str(link)]


# -- File ▸ Open adds to the browser ---------------------------------------------------------------
def listed_keys(w) -> list[str]:
    return [s.key for s in w.browser.image_series()]


def test_opening_adds_to_the_browser_and_shows_the_new_study(qtbot, window, tmp_path):
    w = window
    first = write_ct(tmp_path / "first", n=6, series_description="first CT", patient_name="ONE^PATIENT",
                     patient_id="P-1")
    second = write_ct(tmp_path / "second", n=4, series_description="second CT", patient_name="TWO^PATIENT",
                      patient_id="P-2")
    load(qtbot, w, first)
    one = listed_keys(w)
    load(qtbot, w, second)
    both = listed_keys(w)
    assert len(both) == 2 and one[0] in both  # the first study is still listed
    assert w.shown_series.info.series_description == "second CT"  # the new study is the one shown
    assert w.slice_view.volume.shape[0] == 4
    load(qtbot, w, first)  # the same folder again: listed once
    assert sorted(listed_keys(w)) == sorted(both)
    assert w.shown_series.info.series_description == "first CT"
    load(qtbot, w, next(second.iterdir()))  # a file of a folder already open: its series is not listed twice
    assert sorted(listed_keys(w)) == sorted(both)
    assert len(w.workspace.scan_result.studies) == 2


def test_close_all_studies_asks_about_unsaved_edits(qtbot, window, tmp_path, monkeypatch):
    w = window
    load(qtbot, w, write_ct(tmp_path / "ct"))
    asked = []
    monkeypatch.setattr(w.editor, "confirm_close", lambda: asked.append(1) or False)  # the user cancels
    w.study.close_all_action.trigger()
    assert asked and listed_keys(w) and w.slice_view.volume is not None
    monkeypatch.setattr(w.editor, "confirm_close", lambda: True)
    w.study.close_all_action.trigger()
    QApplication.processEvents()
    assert listed_keys(w) == [] and w.slice_view.volume is None and w.workspace.scan_result is None
    assert w.preset_combo.currentText() == "W/L preset" and not w.preset_combo.isEnabled()
    load(qtbot, w, write_ct(tmp_path / "ct2", n=3))
    assert len(listed_keys(w)) == 1


def test_preset_box_on_the_mammography_hanging(qtbot, window, tmp_path):
    from test_mammo_layout import write_shuffled_exam

    w = window
    with qtbot.waitSignal(w.image_shown, timeout=15000):
        w.open_path(write_shuffled_exam(tmp_path / "mg"))
    assert w.views.currentWidget() is w.mammo_layout
    w.mammo_layout.preset_actions["Dense"].trigger()
    QApplication.processEvents()
    assert combo_text(w).startswith("Dense"), combo_text(w)
    w.mammo_layout.preset_actions["Full range"].trigger()
    assert combo_text(w).startswith("Full range")
    cell = next(c for c in w.mammo_layout.cells.values() if c.volume is not None)
    c, width = cell.window
    cell.set_window(c + 17.0, width * 0.7)  # dragged away from both
    assert combo_text(w) == CUSTOM


# -- MPR opens at the slice being read (issue 14: "pressing M at image 71 opened at 60") ---------------
def test_mpr_opens_and_reopens_at_the_slice_being_read(qtbot, window, tmp_path):
    w = window
    load(qtbot, w, write_ct(tmp_path / "ct", n=12))
    view = w.slice_view
    view.set_slice(9)  # the centre would be 6
    expected = np.asarray(view.reading_point(), dtype=float)  # the mouse is not on the image: the slice centre
    press(qtbot, w, Qt.Key.Key_M)
    assert w.views.currentWidget() is w.mpr_layout
    np.testing.assert_allclose(w.mpr_layout.crosshair_world, expected, atol=1e-6)
    centre_z = view.volume.index_to_world(np.array([6.0, 0.0, 0.0]))[2]
    assert abs(w.mpr_layout.crosshair_world[2] - centre_z) > 1.0
    w.set_layout("1x1")
    view.set_slice(2)
    expected = np.asarray(view.reading_point(), dtype=float)
    w.set_layout("mpr")  # the same volume again: the crosshair follows the reader, not the last MPR visit
    np.testing.assert_allclose(w.mpr_layout.crosshair_world, expected, atol=1e-6)
