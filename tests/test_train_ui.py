"""AI ▸ Train…: fine-tuning from the app with a live plot, Cancel, and switching model versions; the
exam classifier trains from a classification dataset with its validation AUC plotted; a run worse than
the version in use is kept but not used, and says so with both numbers; training without validation
or ignoring labels the model lacks needs the user's confirmation."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

pytest.importorskip("pytestqt")

import torch
from PySide6.QtCore import Qt

import inference.finetune_common as finetune_module
from qt_helpers import shown
from test_finetune import mismatched_dataset, write_dataset
from test_finetune_exam import write_exam_dataset

from viewer.analysis import run
from viewer.ui.main_window import MainWindow
from viewer.ui.models_dialog import COL


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("Dataset502_Lightbox"), 2, 3000)


@pytest.fixture(scope="module")
def exam_dataset(tmp_path_factory):
    return write_exam_dataset(tmp_path_factory.mktemp("exam_classes"), 4, 700)


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(tmp_path / "models"))
    torch.set_num_threads(1)
    w = shown(qtbot, MainWindow(), (1100, 800))
    yield w
    w.shutdown()


def test_a_worse_run_from_the_app_is_kept_and_analyze_keeps_the_version_in_use(qtbot, window, dataset, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setattr(finetune_module, "cosine_lr", lambda *_a: 5000.0)  # learning rate 1: the run gets worse
    dialog = window.analysis.show_train()
    assert dialog.model.itemText(0) == "Automatic (by dataset)" and dialog.model.currentData() is None
    assert {"ct-organs-unet3d", "mammo-exam"} <= set(dialog.model_names())
    assert "mammo-patch" in dialog.model_names()  # issue 17: the patch classifier fine-tunes too
    assert "only if it scores at least as well as the version in use on the same validation cases" in \
        dialog.rule.text()
    dialog.select_model("ct-organs-unet3d")
    dialog.dataset.setText(str(dataset))
    dialog.epochs.setValue(2)
    dialog.steps.setValue(1)
    assert dialog.check() is not None
    assert dialog.plan_label.text() == ("Starts from ct-organs-unet3d 1 (the version Analyze uses): 1 training and "
                                        "1 validation cases")
    with qtbot.waitSignal(dialog.finished_training, timeout=240000) as blocker:
        dialog.start()
    card = blocker.args[0]
    assert card is not None and card.version == "1.1" and card.path == tmp_path / "models"
    assert [r["epoch"] for r in dialog.records] == [1, 2]
    xs, ys = dialog.loss_curve.getData()
    assert list(xs) == [1, 2] and len(ys) == 2
    assert dialog.metric_curves and all(k.startswith("Dice ") for k in dialog.metric_curves)  # Dice per class
    assert "validation Dice" in dialog.plot.getPlotItem().getAxis("right").labelText
    verdict = card.extra["activation"]
    assert verdict["status"] == "not better", verdict
    assert (f"kept, not better (mean Dice {verdict['score']:.3f} < {verdict['parent_score']:.3f} of "
            "ct-organs-unet3d 1 on the same 1 validation case): Analyze still uses ct-organs-unet3d 1") \
        in dialog.status.text()
    assert run.pick_card("segmentation-3d", "CT").version == "1"  # the worse version is not used

    models = window.analysis.show_models()
    assert "ct-organs-unet3d 1 for CT segmentation-3d (newest)" in models.in_use_label.text()
    new = next(i for i, c in enumerate(models.cards) if c.name == "ct-organs-unet3d" and c.version == "1.1")
    row = models.tree.topLevelItem(new)
    assert row.text(COL["Validation"]).startswith("not better ") and row.text(COL["Analyze"]) == ""
    models.tree.setCurrentItem(row)
    models.use_selected()  # the user may still choose it
    assert run.pick_card("segmentation-3d", "CT").version == "1.1"
    assert models.tree.topLevelItem(new).text(COL["Analyze"]) == "✔ in use (pinned)"
    models.tree.setCurrentItem(models.tree.topLevelItem(new))
    models.use_rule()
    assert run.pick_card("segmentation-3d", "CT").version == "1"
    models.close()
    dialog.close()


def test_training_without_validation_or_ignoring_labels_needs_confirmation(qtbot, window, tmp_path):
    dialog = window.analysis.show_train()
    asked = []
    answers = iter([False, True])
    monkey_confirm = lambda title, text: asked.append((title, text)) or next(answers)  # noqa: E731
    dialog.confirm = monkey_confirm
    dialog.select_model("ct-organs-unet3d")
    dialog.dataset.setText(str(write_dataset(tmp_path / "one", 1, 3100)))
    dialog.epochs.setValue(1)
    dialog.steps.setValue(1)
    dialog.start()  # declined: nothing starts, nothing is written
    assert not dialog.running and asked[0][0] == "Train without validation?"
    assert "written as \"unvalidated\" and Analyze will not use it" in asked[0][1]
    assert dialog.status.text().startswith("Not started: no validation case")
    assert not (tmp_path / "models").exists()
    with qtbot.waitSignal(dialog.finished_training, timeout=240000) as blocker:
        dialog.start()  # confirmed
    card = blocker.args[0]
    assert card.extra["activation"]["status"] == "unvalidated"
    assert "kept, unvalidated (trained without validation cases): Analyze still uses ct-organs-unet3d 1" in \
        dialog.status.text()
    assert run.pick_card("segmentation-3d", "CT").version == "1"

    asked.clear()
    dialog.confirm = lambda title, text: asked.append((title, text)) or False
    dialog.dataset.setText(str(mismatched_dataset(tmp_path / "mismatch")))
    assert "'tumour core' is in the dataset" in dialog.check().messages()[1]
    assert "'tumour core' is in the dataset" in dialog.plan_label.text()
    assert "model class 'lesions' has no voxels in the dataset: it is trained as background" in \
        dialog.plan_label.text()
    dialog.start()
    assert [t for t, _ in asked] == ["Labels the model lacks"] and "it would be ignored" in asked[0][1]
    assert not dialog.running and dialog.status.text().startswith("Not started: the dataset has labels the model")
    dialog.close()


def test_cancel_stops_training_and_writes_nothing(qtbot, window, dataset, tmp_path):
    dialog = window.analysis.show_train()
    dialog.dataset.setText(str(dataset))
    dialog.epochs.setValue(50)
    dialog.steps.setValue(5)
    dialog.epoch_done.connect(lambda _r: dialog.cancel())  # cancel after the first epoch
    with qtbot.waitSignal(dialog.finished_training, timeout=240000) as blocker:
        dialog.start()
    assert blocker.args[0] is None and "cancelled" in dialog.status.text()
    assert len(dialog.records) < 50
    assert not list((tmp_path / "models").glob("*.json")) if (tmp_path / "models").exists() else True
    dialog.close()


def test_train_the_exam_classifier_automatically_from_a_classification_dataset(qtbot, window, exam_dataset,
                                                                               tmp_path):
    dialog = window.analysis.show_train()
    dialog.select_model(None)  # Automatic: a dataset of view classes only trains the exam classifier
    dialog.dataset.setText(str(exam_dataset))
    dialog.epochs.setValue(2)
    dialog.steps.setValue(2)
    statuses = []  # the status line after each epoch (queued after the dialog's own slot)
    dialog.epoch_done.connect(lambda _r: statuses.append(dialog.status.text()), Qt.ConnectionType.QueuedConnection)
    with qtbot.waitSignal(dialog.finished_training, timeout=240000) as blocker:
        dialog.start()
    card = blocker.args[0]
    assert card is not None and (card.name, card.version) == ("mammo-exam", "1.0.1"), dialog.status.text()
    assert len(statuses) == 2 and statuses[1].startswith("epoch 2/2: loss ")
    assert all("validation AUC suspicious" in t and "accuracy" in t for t in statuses), statuses
    assert card.path == tmp_path / "models"
    assert [r["epoch"] for r in dialog.records] == [1, 2]
    assert list(dialog.metric_curves) == ["AUC suspicious", "accuracy"]
    for name, key in (("AUC suspicious", ("val_auc", "suspicious")), ("accuracy", ("val_accuracy",))):
        xs, ys = dialog.metric_curves[name].getData()
        assert list(xs) == [1, 2] and all(0 <= y <= 1 for y in ys)
        expected = [r[key[0]][key[1]] if len(key) == 2 else r[key[0]] for r in dialog.records]
        assert list(ys) == pytest.approx(expected)
    assert dialog.plot.getPlotItem().getAxis("right").labelText == "validation AUC / accuracy"
    assert "Wrote mammo-exam 1.0.1 (last epoch: validation AUC suspicious" in dialog.status.text()
    verdict = card.extra["activation"]  # not worse than the shipped version on the same held-out case
    assert verdict["status"] == "better" and verdict["score"] >= verdict["parent_score"], verdict
    assert (f"activated: AUC suspicious {verdict['score']:.3f} ≥ {verdict['parent_score']:.3f} of mammo-exam 1.0.0 "
            "on the same 1 validation case; Analyze uses it now") in dialog.status.text()
    assert run.pick_card("exam-classifier", "MG").version == "1.0.1"  # Analyze uses it from now on

    models = window.analysis.show_models()
    assert ("mammo-exam", "1.0.1") in [(c.name, c.version) for c in models.cards]
    models.close()
    dialog.close()


def test_a_dataset_the_model_cannot_use_fails_with_the_reason(qtbot, window, exam_dataset, tmp_path):
    import json
    import shutil

    bad = tmp_path / "unlabelled"
    shutil.copytree(exam_dataset, bad)
    rows = json.loads((bad / "classification.json").read_text())["classification"]
    (bad / "classification.json").write_text(json.dumps({"classification": [{**r, "label": "BI-RADS 2"}
                                                                            for r in rows]}))
    dialog = window.analysis.show_train()
    dialog.select_model("mammo-exam")
    dialog.dataset.setText(str(bad))
    with qtbot.waitSignal(dialog.finished_training, timeout=60000) as blocker:
        dialog.start()  # found before any training: no worker starts
    assert blocker.args[0] is None and not dialog.running
    assert dialog.status.text().startswith("Cannot train on this dataset: ") and \
        "no view with an image and a usable label" in dialog.status.text()
    assert dialog.start_button.isEnabled() and not dialog.metric_curves
    dialog.close()


def test_loss_axis_is_readable_with_two_close_points(qtbot):
    """Issue 14: two epochs at 0.07114 and 0.07129 showed '71.14 .. 71.29 (x0.001)'. The axis keeps plain
    numbers, a span of at least a fifth of the loss, and both points inside."""
    from viewer.ui.train_dialog import TrainDialog, loss_axis_range

    dialog = shown(qtbot, TrainDialog(), (640, 520))
    for epoch, loss in ((1, 0.07114), (2, 0.07129)):
        dialog._epoch({"epoch": epoch, "loss": loss, "val_dice": {"lungs": 0.5 + 0.1 * epoch}})
    item = dialog.plot.getPlotItem()
    low, high = item.vb.viewRange()[1]
    assert low <= 0.07114 and 0.07129 <= high
    assert high - low >= 0.2 * 0.07129
    assert low >= 0  # a loss is not negative
    left = item.getAxis("left")
    assert not left.autoSIPrefix and left.autoSIPrefixScale == 1.0
    assert "0.001" not in left.labelString() and "×" not in left.labelString()
    assert not item.getAxis("right").autoSIPrefix
    for _spacing, values in item.getAxis("bottom").tickValues(1.0, 2.0, 500):  # whole epochs only
        assert all(float(v).is_integer() for v in values)
    # the range rule itself: wide losses keep their own range, a flat one gets a minimum span, 0 stays the floor
    assert loss_axis_range([2.0, 1.0, 0.5]) == pytest.approx((0.425, 2.075))
    lo, hi = loss_axis_range([0.5, 0.5])
    assert hi - lo == pytest.approx(0.11) and lo < 0.5 < hi
    assert loss_axis_range([0.0001, 0.0002])[0] == 0.0
    assert loss_axis_range([]) is None
    dialog.shutdown()
