"""Issue 17 in the Train dialog: the Augmentation choice (None / Classic / cGAN infill) applies to the mammography
lesion models only and says why elsewhere; Preview makes synthetic positives from the chosen dataset on a worker
and shows them beside real ones; training passes the choice to fine-tuning, shows the "augment" stage, honours
Cancel while synthesizing, and ends by showing the version's saved grid and naming the augmentation; imported
models are listed, greyed out with the reason when they cannot be trained."""
from __future__ import annotations

import os
import threading

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

pytest.importorskip("pytestqt")

import torch
from PySide6.QtCore import Qt

from inference import registry
from inference.phantoms import mammo_image
from qt_helpers import shown
from test_finetune_seg2d import SIZE, phantom_view, write_views

import viewer.ui.augment_sample as augment_sample
from viewer.ui.train_dialog import TrainDialog
from viewer.ui.train_options import augmentation_summary, grid_path, infill_card

U_NET = "mammo-lesion-unet2d"


def normal_view(seed: int):
    """(pixels uint16, empty mask) of a phantom view without a lesion."""
    img, _masks = mammo_image(("R", "L")[seed % 2], "CC", size=SIZE, seed=seed, mass=False)
    return np.rint(img).astype(np.uint16), np.zeros(SIZE, np.uint8)


@pytest.fixture(scope="module")
def lesion_dataset(tmp_path_factory):
    """Four views with a mass and three normal ones, exported as the app exports them."""
    views = [phantom_view(2200 + i) for i in range(4)] + [normal_view(3200 + i) for i in range(3)]
    return write_views(tmp_path_factory.mktemp("augment_export"), views)[0]


@pytest.fixture
def dialog(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(tmp_path / "models"))
    torch.set_num_threads(1)
    install_tiny_infill(tmp_path / "models")
    d = shown(qtbot, TrainDialog(), (720, 760))
    yield d
    d.shutdown()


def install_tiny_infill(folder) -> None:
    """A tiny untrained infill cGAN (as tests/test_finetune_augment.py installs one): the active version when
    none is shipped. These tests check the dialog's plumbing; tests/test_infill.py checks the lesions."""
    from inference.infill import new_card
    from inference.models.infill_gan import infill_cgan
    from test_augment import TINY

    torch.manual_seed(0)
    registry.save_model(infill_cgan(**TINY), new_card(dict(TINY), "tiny test cGAN", {}, {}, version="0.1"), folder)


def choose(d: TrainDialog, dataset, model: str, method: str) -> None:
    d.select_model(model)
    d.dataset.setText(str(dataset))
    assert d.check() is not None, d.plan_label.text()
    d.augment.setCurrentIndex(d.augment.findData(method))
    assert d.augment_method() == method


def test_the_choice_applies_to_mammography_lesion_models_and_says_why_not_elsewhere(dialog):
    assert [dialog.augment.itemText(i) for i in range(dialog.augment.count())] == ["None", "Classic", "cGAN infill"]
    dialog.select_model("ct-organs-unet3d")
    assert not dialog.augment.isEnabled() and not dialog.augment_count.isEnabled()
    assert dialog.augment_method() == "none" and not dialog.preview_button.isEnabled()
    assert not dialog.preview.isVisibleTo(dialog)  # no preview hint where nothing can be previewed
    assert "ct-organs-unet3d is a CT 3D segmentation model: synthetic lesions are made for the mammography" in \
        dialog.augment.toolTip()
    dialog.select_model("mammo-infill-cgan")  # the generator itself trains on real lesions only
    assert not dialog.augment.isEnabled() and "the lesion generator itself" in dialog.augment.toolTip()
    for model in (U_NET, "mammo-exam", "mammo-patch"):
        dialog.select_model(model)
        assert dialog.augment.isEnabled() and dialog.preview.isVisibleTo(dialog), model
    dialog.augment.setCurrentIndex(dialog.augment.findData("classic"))
    assert dialog.preview_button.isEnabled()
    tips = {dialog.augment.itemData(i): dialog.augment.itemData(i, Qt.ItemDataRole.ToolTipRole)
            for i in range(dialog.augment.count())}
    assert "flips, 90° rotations" in tips["classic"] and dialog.augment.toolTip() == tips["classic"]
    gan = infill_card()  # the generator in use names itself and its training data
    assert f"{gan.name} {gan.version} (the version in use; trained on {gan.training_data})" in tips["cgan"]
    assert dialog.augment.model().item(dialog.augment.findData("cgan")).isEnabled()


def test_preview_makes_synthetic_positives_on_a_worker_and_shows_the_grid(qtbot, dialog, lesion_dataset,
                                                                          monkeypatch, tmp_path):
    threads, stages = [], []
    original = augment_sample.preview_grid

    def recorded(*args, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        return original(*args, **kwargs)

    monkeypatch.setattr(augment_sample, "preview_grid", recorded)
    dialog.stage_progress.connect(lambda stage, done, total: stages.append((stage, done, total)))
    choose(dialog, lesion_dataset, U_NET, "classic")
    dialog.augment_count.setValue(5)
    with qtbot.waitSignal(dialog.preview_finished, timeout=60000) as blocker:
        dialog.start_preview()
        assert dialog.running and not dialog.start_button.isEnabled() and dialog.cancel_button.isEnabled()
    assert blocker.args == [True], dialog.status.text()
    assert threads == [False]  # computed off the UI thread
    assert ("augment", 5, 5) in stages and any(s == "reading" for s, _, _ in stages)
    image = dialog.preview.image
    assert image is not None and not dialog.preview.picture.pixmap().isNull()
    assert image.width() > 5 * 64 and image.height() >= 2 * 64  # a row of real and a row of synthetic patches
    caption = dialog.preview.caption.text()
    assert "real positives of Dataset601_Mammo's training split (top); 5 synthetic (Classic)" in caption
    assert dialog.start_button.isEnabled() and not dialog.cancel_button.isEnabled() and not dialog.running
    assert not list((tmp_path / "models").glob(f"{U_NET}-*"))  # a preview writes no model
    dialog.augment.setCurrentIndex(dialog.augment.findData("none"))  # other settings: the grid is taken away
    assert dialog.preview.image is None and not dialog.preview_button.isEnabled()


def test_cgan_preview_names_the_generator_version(qtbot, dialog, lesion_dataset):
    choose(dialog, lesion_dataset, U_NET, "cgan")
    with qtbot.waitSignal(dialog.preview_finished, timeout=90000) as blocker:
        dialog.start_preview()
    assert blocker.args == [True], dialog.status.text()
    gan = infill_card()
    assert f"synthetic (cGAN infill by {gan.name} {gan.version})" in dialog.preview.caption.text()
    assert dialog.preview.image is not None


def test_cancel_stops_a_preview(qtbot, dialog, lesion_dataset):
    choose(dialog, lesion_dataset, U_NET, "classic")
    dialog.stage_progress.connect(lambda *_a: dialog.cancel())  # cancel at the first report
    with qtbot.waitSignal(dialog.preview_finished, timeout=60000) as blocker:
        dialog.start_preview()
    assert blocker.args == [False] and dialog.status.text() == "Preview cancelled."
    assert dialog.preview.image is None and not dialog.running and dialog.preview_button.isEnabled()


def test_cancel_while_synthesizing_stops_training_and_writes_nothing(qtbot, dialog, lesion_dataset, tmp_path):
    choose(dialog, lesion_dataset, U_NET, "classic")
    dialog.augment_count.setValue(400)  # long enough for the Cancel to land during synthesis
    dialog.epochs.setValue(1)
    dialog.steps.setValue(1)
    seen = []

    def on_stage(stage, done, total):
        seen.append((stage, dialog.progress_bar.format()))
        if stage == "augment":
            dialog.cancel()

    dialog.stage_progress.connect(on_stage, Qt.ConnectionType.QueuedConnection)
    with qtbot.waitSignal(dialog.finished_training, timeout=120000) as blocker:
        dialog.start()
    assert blocker.args[0] is None and "cancelled" in dialog.status.text()
    assert seen and seen[0] == ("augment", "synthesizing %v/%m")
    assert dialog.records == []  # stopped before the first epoch
    assert not list((tmp_path / "models").glob(f"{U_NET}-*"))  # no version written


def test_training_with_classic_augmentation_shows_its_grid_and_names_it(qtbot, dialog, lesion_dataset, tmp_path,
                                                                        monkeypatch):
    from inference import domain_fit, finetune_common

    # the new version's domain description (two dozen segmentations) is not what this test is about: kept
    monkeypatch.setattr(domain_fit, "DEMO_SUBSET", {})
    monkeypatch.setattr(finetune_common, "MIN_DOMAIN_CASES", 1000)
    choose(dialog, lesion_dataset, U_NET, "classic")
    dialog.augment_count.setValue(3)
    dialog.epochs.setValue(1)
    dialog.steps.setValue(1)
    stages = []
    dialog.stage_progress.connect(lambda stage, done, total: stages.append((stage, done, total)))
    with qtbot.waitSignal(dialog.finished_training, timeout=240000) as blocker:
        dialog.start()
    card = blocker.args[0]
    assert card is not None, dialog.status.text()
    record = card.extra["augmentation"]
    assert record["augment"] == "classic" and record["n_synthetic"] == 3
    assert ("augment", 3, 3) in stages
    assert "augmentation: Classic, 3 synthetic positives" in augmentation_summary(card)
    assert augmentation_summary(card) in dialog.status.text()
    grid = grid_path(card)
    assert grid.is_file() and grid.parent == tmp_path / "models"
    assert dialog.preview.image is not None and str(grid) in dialog.preview.caption.text()
    assert not dialog.progress_bar.isVisible()


def test_imported_models_are_listed_and_untrainable_ones_greyed_with_the_reason(qtbot, dialog, monkeypatch):
    from inference.finetune_imported import trainable

    onnx = registry.ModelCard("tiny-onnx", "1", "segmentation-3d", "CT", "onnx", weights="tiny.onnx")
    shipped = registry.available_models

    monkeypatch.setattr(registry, "available_models", lambda *a, **k: shipped(*a, **k) + [onnx])
    dialog.reload_models()
    index = dialog.model.findData("tiny-onnx")
    assert index > 0 and dialog.model.itemText(index) == "tiny-onnx (imported onnx, segmentation-3d)"
    item = dialog.model.model().item(index)
    assert not item.isEnabled() and item.toolTip() == trainable(onnx)
    assert "ONNX files hold no trainable parameters" in dialog.model_reason("tiny-onnx")
    assert dialog.model_reason(U_NET) is None
    dialog.model.setCurrentIndex(index)  # even when forced, Start refuses with the reason
    with qtbot.waitSignal(dialog.finished_training, timeout=5000) as blocker:
        dialog.start()
    assert blocker.args[0] is None and dialog.status.text().startswith("tiny-onnx cannot be fine-tuned: ONNX files")
    assert not dialog.running


def test_the_card_words_for_augmentation_grid_and_models_without_it(tmp_path):
    from viewer.ui.train_options import augment_reason

    card = registry.ModelCard("m", "1.1", "segmentation-2d", "MG", "unet2d", path=tmp_path, extra={"augmentation": {
        "augment": "cgan", "n_synthetic": 1, "infill_model": "mammo-infill-cgan 1.0",
        "infill_training": "600 phantom lesion patches", "grid": "m-1.1-augment_grid.png"}})
    assert augmentation_summary(card) == ("augmentation: cGAN infill, 1 synthetic positive by mammo-infill-cgan 1.0 "
                                          "(trained on 600 phantom lesion patches)")
    assert grid_path(card) == tmp_path / "m-1.1-augment_grid.png"  # a file name in the card's folder
    card.extra["augmentation"] = {"augment": "none", "n_synthetic": 0}
    assert augmentation_summary(card) == "augmentation: none" and grid_path(card) is None
    card.extra = {}
    assert augmentation_summary(card) == "" and grid_path(card) is None  # a card from before issue 17
    assert augment_reason(card) is None
    imported = registry.ModelCard("mg-bundle", "1", "segmentation-2d", "MG", "monai-bundle")
    assert augment_reason(imported) == ("mg-bundle is imported: augmentation applies to Lightbox's own mammography "
                                        "models")
    gan = registry.ModelCard("mammo-infill-cgan", "1", "lesion-infill", "MG", "infill_gan")
    assert "the lesion generator itself" in augment_reason(gan)
