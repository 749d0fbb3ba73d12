"""Segment ▸ Export for training…: the dialog on the real window, CT segmentation and 4-view mammography."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import csv
import json

import numpy as np
import pytest

pytest.importorskip("pytestqt")

import SimpleITK as sitk
from PySide6.QtCore import Qt
from qt_helpers import close_quietly, editor_window, open_and_wait

from viewer.core.export.dataset import DatasetWriter
from viewer.core.synthetic import write_ct_study, write_mammo_exam
from viewer.ui.export_dialog import ExportDialog


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct")
    write_ct_study(out, shape=(16, 48, 40), spacing=(5.0, 2.0, 3.0), seed=5)
    return out


@pytest.fixture(scope="module")
def mg_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mg")
    write_mammo_exam(out, (192, 150), seed=5)
    return out


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    """Shown but not registered with qtbot: a window with unsaved edits asks before closing."""
    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path / "cache"))
    w = editor_window(qtbot)
    yield w
    close_quietly(w)


def paint(w, row, col, radius_mm=6.0):
    w.set_tool("brush")
    w.editor.panel.radius.setValue(radius_mm)
    view = w.slice_view
    view.tool.click(*view.pixel_center(row, col))


def open_dialog(qtbot, w) -> ExportDialog:
    w.editor.export_action.trigger()
    dialog = w.editor.export_box
    assert isinstance(dialog, ExportDialog)
    qtbot.waitExposed(dialog)
    return dialog


def export_through(qtbot, w, dialog) -> dict:
    assert dialog.export_button.isEnabled(), dialog.warning.text()
    with qtbot.waitSignal(w.editor.exported, timeout=60000) as blocker:
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.busy, timeout=10000)
    return blocker.args[0]


def test_ct_segmentation_into_a_new_dataset_then_appended_from_the_combo(qtbot, window, ct_dir, tmp_path):
    w = window
    open_and_wait(qtbot, w, ct_dir)
    paint(w, 20, 20)
    root = tmp_path / "datasets"
    root.mkdir()
    dialog = open_dialog(qtbot, w)
    assert "Segment 1" in dialog.segmentation.text() and dialog.segmentation.isChecked()
    assert not dialog.class_boxes  # no classes for a CT
    assert not dialog.keep_mapping.isChecked() and "PS3.15" in dialog.deid_text.text()
    dialog.root.setText(str(root))
    dialog.dataset.setCurrentText("Dataset601_Test")
    assert dialog.summary.text().startswith("New dataset")
    out = export_through(qtbot, w, dialog)
    ds = root / "Dataset601_Test"
    assert out["case"] == "CASE_0001" and out["dataset"] == ds
    assert out["image"].is_file() and out["label"].is_file() and out["seg"].is_file()
    assert out["mapping"] is None and not list(ds.glob("deid-mapping-*"))  # keep-mapping off: no PHI file
    assert "CASE_0001" in w.message.text() and str(ds) in w.message.text()

    paint(w, 10, 30)
    dialog = open_dialog(qtbot, w)
    assert dialog.root.text() == str(root)  # remembered
    dialog.dataset.setCurrentText("")
    index = dialog.dataset.findText("Dataset601_Test")
    assert index >= 0  # the existing dataset is offered
    dialog.dataset.setCurrentIndex(index)
    assert dialog.summary.text().startswith("1 segmentation case ·") and "channel CT" in dialog.summary.text()
    assert "Segment 1" in dialog.summary.text() and not dialog.warning.isVisible()
    out = export_through(qtbot, w, dialog)
    assert out["case"] == "CASE_0002"
    assert json.loads((ds / "dataset.json").read_text())["numTraining"] == 2
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out["label"])))
    lm, _vol = w.editor.session.labelmap_for(w.slice_view, create=False)
    np.testing.assert_array_equal(labels > 0, lm.array > 0)

    # a destination that cannot be written: the error names it in the status bar; the app goes on
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("x")
    dialog = open_dialog(qtbot, w)
    dialog.root.setText(str(blocked))
    with qtbot.waitSignal(w.task_failed, timeout=30000):
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    assert "failed" in w.message.text() and str(blocked) in w.message.text()


def test_mammography_exam_classes_from_the_dialog(qtbot, window, mg_dir, tmp_path):
    w = window
    open_and_wait(qtbot, w, mg_dir)
    assert w.views.currentWidget() is w.mammo_layout
    with qtbot.waitSignal(w.analysis.analysis_finished, timeout=120000):
        w.analysis.action.trigger()
    qtbot.waitUntil(lambda: not w.busy, timeout=10000)
    result = w.analysis.cache[w.analysis.cache_key(w.analysis.target())]
    root = tmp_path / "datasets"
    ct_case = tmp_path / "ct-image"
    write_ct_study(ct_case, shape=(6, 16, 16), spacing=(5.0, 4.0, 4.0), seed=1)
    from viewer.core.io import load_series, scan

    ct = load_series(scan(ct_case).series[0])
    labels = np.zeros(ct.shape, np.uint8)
    labels[2:4, 4:8, 4:8] = 1
    DatasetWriter(root, "Dataset602_CT").add_case(ct, labels, {1: "liver"}, {})

    cell = w.mammo_layout.cells["LCC"]  # a correction of the AI's lesion mask on one view
    w.set_tool("brush")
    w.editor.panel.radius.setValue(3.0)
    cell.tool.click(*cell.pixel_center(60, 50))
    dialog = open_dialog(qtbot, w)
    assert set(dialog.class_boxes) == {"RCC", "LCC", "RMLO", "LMLO", "exam"}
    assert dialog.segmentation.isChecked() and dialog.segmentation.text().startswith("Corrected segmentation: LCC")
    for name, sr in result.series.items():  # pre-filled from the AI, marked as its suggestion
        p = sr.scores["malignancy"]
        assert dialog.class_boxes[name].currentText() == ("suspicious" if p >= 0.5 else "normal")
        assert dialog.class_hints[name].text().startswith("AI suggestion")
    dialog.root.setText(str(root))
    dialog.dataset.setCurrentIndex(dialog.dataset.findText("Dataset602_CT"))
    assert dialog.warning.isVisible() and "channel 0 is 'CT'" in dialog.warning.text()
    assert not dialog.export_button.isEnabled()  # a CT dataset cannot take mammograms

    dialog.dataset.setCurrentText("Dataset603_MG")
    assert not dialog.warning.isVisible()
    suggested = dialog.class_boxes["LCC"].currentText()
    corrected = "normal" if suggested == "suspicious" else "suspicious"
    dialog.class_boxes["LCC"].setCurrentText(corrected)
    assert dialog.class_hints["LCC"].text().startswith("corrected")
    dialog.class_boxes["RMLO"].setCurrentText("")  # not labelled: no row, its image still goes
    dialog.class_boxes["exam"].setCurrentText("suspicious")
    dialog.keep_mapping.setChecked(True)
    out = export_through(qtbot, w, dialog)

    ds = root / "Dataset603_MG"
    for name, view in w.mammo_layout.cells.items():
        image = sitk.ReadImage(str(ds / "imagesCls" / f"{out['case']}_{name}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), view.volume.array)
    with open(ds / "classification.csv", newline="") as f:
        rows = {r["view"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"RCC", "LCC", "LMLO", "exam"}
    assert rows["LCC"]["label"] == corrected and rows["exam"]["label"] == "suspicious"
    assert rows["LCC"]["image"] == f"imagesCls/{out['case']}_LCC.nii.gz" and rows["LCC"]["chest_wall"] == "left"
    assert rows["exam"]["image"] == ""
    record = json.loads((ds / "provenance.jsonl").read_text().splitlines()[0])
    assert record["model"]["name"] == result.models["exam"].rpartition(" ")[0]
    assert out["mapping"] is not None and out["mapping"].is_file()  # asked for: kept
    seg_case = out["segmentations"]["LCC"]  # the corrected view also as a 2D segmentation pair
    assert seg_case["case"] == f"{out['case']}_LCC" and seg_case["seg"].is_file()
    lm, _vol = w.editor.session.labelmap_for(cell, create=False)
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(seg_case["label"])))
    np.testing.assert_array_equal(written > 0, lm.array > 0)
    seg_record = json.loads((ds / "provenance.jsonl").read_text().splitlines()[1])
    assert seg_record["extra"] == {"exam_case": out["case"], "view": "LCC"}
    assert seg_record["model"]["name"] == result.models["segmentation"].rpartition(" ")[0]
    assert seg_record["edits"]["voxels_changed"] > 0
    assert json.loads((ds / "dataset.json").read_text())["channel_names"] == {"0": "MG"}


# -- burned-in patient data in the pixels ------------------------------------------------------------
def _pixel_dialog(qtbot, folder, root):
    from test_burned_in import loaded

    from viewer.ui.export_dialog import ExportSubject

    volume, series = loaded(folder)
    dialog = ExportDialog(ExportSubject(volume, "organ (25 voxels)", {1: "organ"}))
    qtbot.addWidget(dialog)
    dialog.root.setText(str(root))
    return dialog, volume, series


def test_burned_in_image_disables_export_with_the_apis_words(qtbot, tmp_path):
    from test_burned_in import a_mask, us_burned

    from viewer.core.export.pixel_safety import BurnedInPixels
    from viewer.core.export.training import export_case

    path = us_burned(tmp_path / "us")
    dialog, volume, series = _pixel_dialog(qtbot, tmp_path / "us", tmp_path / "datasets")
    assert not dialog.export_button.isEnabled()
    assert dialog.warning.isVisibleTo(dialog) and path in dialog.warning.text()
    with pytest.raises(BurnedInPixels) as caught:
        export_case(tmp_path / "datasets", volume, a_mask(volume), {1: "organ"}, series)
    assert dialog.warning.text() == str(caught.value)  # the same text as the API's error
    assert not dialog.pixels_checked.isVisibleTo(dialog)  # no box to tick: never exportable
    dialog.pixels_checked.setChecked(True)
    assert not dialog.export_button.isEnabled()
    dialog._accept()
    assert dialog.result() == 0 and not (tmp_path / "datasets").exists()
    dialog.resize(640, dialog.sizeHint().height())
    dialog.grab().save(str(tmp_path / "burned_in_dialog.png"))


def test_untagged_ultrasound_needs_the_box_ticked(qtbot, tmp_path):
    from test_burned_in import us_untagged

    from viewer.ui.export_dialog import PIXELS_CONFIRM

    path = us_untagged(tmp_path / "us")
    dialog, _volume, _series = _pixel_dialog(qtbot, tmp_path / "us", tmp_path / "datasets")
    assert dialog.pixels_checked.isVisibleTo(dialog) and dialog.pixels_checked.text() == PIXELS_CONFIRM
    assert path in dialog.pixel_note.text() and "US image without BurnedInAnnotation" in dialog.pixel_note.text()
    assert not dialog.export_button.isEnabled() and PIXELS_CONFIRM in dialog.warning.text()
    assert not dialog.request().allow_unverified_pixels
    dialog.pixels_checked.setChecked(True)
    assert dialog.export_button.isEnabled(), dialog.warning.text()
    assert dialog.request().allow_unverified_pixels


def test_plain_ct_asks_nothing_about_pixels(qtbot, tmp_path):
    from test_burned_in import ct_series

    ct_series(tmp_path / "ct")
    dialog, _volume, _series = _pixel_dialog(qtbot, tmp_path / "ct", tmp_path / "datasets")
    assert not dialog.pixels_checked.isVisibleTo(dialog) and not dialog.pixel_note.isVisibleTo(dialog)
    assert dialog.export_button.isEnabled(), dialog.warning.text()


def test_ticked_box_reaches_the_export_from_the_window(qtbot, window, tmp_path):
    from test_burned_in import us_untagged

    w = window
    us_untagged(tmp_path / "us")
    open_and_wait(qtbot, w, tmp_path / "us")
    paint(w, 20, 20, radius_mm=3.0)
    dialog = open_dialog(qtbot, w)
    dialog.root.setText(str(tmp_path / "datasets"))
    assert not dialog.export_button.isEnabled()
    dialog.pixels_checked.setChecked(True)
    out = export_through(qtbot, w, dialog)
    assert out["image"].exists()
