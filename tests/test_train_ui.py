"""AI ▸ Train…: fine-tuning from the app with a live plot, Cancel, and switching model versions."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

pytest.importorskip("pytestqt")

import torch
from qt_helpers import shown
from test_finetune import write_dataset

from viewer.analysis import run
from viewer.ui.main_window import MainWindow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("Dataset502_Lightbox"), 2, 3000)


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(tmp_path / "models"))
    torch.set_num_threads(1)
    w = shown(qtbot, MainWindow(), (1100, 800))
    yield w
    w.shutdown()
    run.PREFERRED_VERSIONS.clear()


def test_train_from_the_app_writes_a_version_analyze_then_uses(qtbot, window, dataset, tmp_path):
    dialog = window.analysis.show_train()
    assert "ct-organs-unet3d" in [dialog.model.itemText(i) for i in range(dialog.model.count())]
    dialog.dataset.setText(str(dataset))
    dialog.epochs.setValue(2)
    dialog.steps.setValue(1)
    with qtbot.waitSignal(dialog.finished_training, timeout=240000) as blocker:
        dialog.start()
    card = blocker.args[0]
    assert card is not None and card.version == "1.1" and card.path == tmp_path / "models"
    assert [r["epoch"] for r in dialog.records] == [1, 2]
    xs, ys = dialog.loss_curve.getData()
    assert list(xs) == [1, 2] and len(ys) == 2
    assert dialog.dice_curves  # validation Dice per class plotted
    assert run.pick_card("segmentation-3d", "CT").version == "1.1"  # the newest is used

    models = window.analysis.show_models()
    shipped = next(i for i, c in enumerate(models.cards) if c.name == "ct-organs-unet3d" and c.version == "1")
    models.tree.setCurrentItem(models.tree.topLevelItem(shipped))
    models.use_selected()  # switch back to the shipped version
    assert run.pick_card("segmentation-3d", "CT").version == "1"
    row = models.tree.topLevelItem(shipped)
    assert "in use" in row.text(4)
    models.tree.setCurrentItem(row)
    models.use_newest()
    assert run.pick_card("segmentation-3d", "CT").version == "1.1"
    models.close()
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
