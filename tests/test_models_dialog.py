"""AI ▸ Models…: which version Analyze uses and why (newest, better on validation, pinned), each fine-tuned
version's verdict with both scores, the whole card of every model (imports included), and pinning /
unpinning that Analyze follows."""
from __future__ import annotations

import hashlib
import json
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

pytest.importorskip("pytestqt")

from test_activation import CT, user_copy

from inference import activation
from inference.activation import BETTER, NOT_BETTER
from viewer.analysis import run
from viewer.ui.models_dialog import COL, ModelsDialog


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(folder))
    return folder


def row(dialog: ModelsDialog, name: str, version: str):
    i = next(i for i, c in enumerate(dialog.cards) if (c.name, c.version) == (name, version))
    return dialog.tree.topLevelItem(i)


def details(dialog: ModelsDialog, name: str, version: str) -> str:
    dialog.tree.setCurrentItem(row(dialog, name, version))
    return dialog.details.toPlainText()


def test_the_dialog_shows_which_version_analyze_uses_and_why(qtbot, user_dir):
    dialog = ModelsDialog()
    qtbot.addWidget(dialog)
    assert f"{CT} 1 for CT segmentation-3d (newest)" in dialog.in_use_label.text()
    assert row(dialog, CT, "1").text(COL["Analyze"]) == "✔ in use (newest)"

    user_copy(user_dir, "1.1", NOT_BETTER)
    user_copy(user_dir, "1.2", BETTER)
    dialog.reload()
    assert f"{CT} 1.2 for CT segmentation-3d (better on validation)" in dialog.in_use_label.text()
    assert row(dialog, CT, "1.2").text(COL["Analyze"]) == "✔ in use (better on validation)"
    assert row(dialog, CT, "1.1").text(COL["Analyze"]) == "" and row(dialog, CT, "1").text(COL["Analyze"]) == ""
    assert row(dialog, CT, "1.1").text(COL["Validation"]) == "not better 0.500 < 0.600"
    text = details(dialog, CT, "1.1")
    assert f"Analyze: uses {CT} 1.2 for CT segmentation-3d (better on validation)" in text
    assert f"Validation: not better: mean Dice 0.500 < 0.600 of its parent {CT} 1 on the same 1 validation case" \
        in text

    dialog.use_selected()  # pin 1.1: the dialog, Analyze and the next process agree
    assert activation.pins() == {CT: "1.1"} and run.pick_card("segmentation-3d", "CT").version == "1.1"
    assert row(dialog, CT, "1.1").text(COL["Analyze"]) == "✔ in use (pinned)"
    assert f"{CT} 1.1 for CT segmentation-3d (pinned)" in dialog.in_use_label.text()
    assert dialog.selected_card().version == "1.1"  # the selection survives the reload
    dialog.use_rule()
    assert activation.pins() == {} and run.pick_card("segmentation-3d", "CT").version == "1.2"
    assert row(dialog, CT, "1.2").text(COL["Analyze"]) == "✔ in use (better on validation)"


def test_every_card_is_shown_whole_including_imports(qtbot, user_dir):
    user_dir.mkdir(parents=True)
    weights = b"not really a TorchScript file"
    (user_dir / "brain-1.ts").write_bytes(weights)
    (user_dir / "brain-1.json").write_text(json.dumps({
        "name": "brain", "version": "1", "task": "segmentation-3d", "modality": "MR", "architecture": "monai-bundle",
        "classes": ["background", "tumour"], "input": {"spacing_mm": [1, 1, 1]},
        "normalization": {"kind": "zscore"}, "source": "https://example.org/bundle", "licence": "CC-BY-4.0",
        "weights": "brain-1.ts", "sha256": hashlib.sha256(weights).hexdigest(), "disclaimer": "research only",
        "domain": {"threshold": 3.0},
        "extra": {"import": {"format": "monai-bundle", "code_confirmed": ["$monai.transforms.LoadImaged(...)"]}}}))
    dialog = ModelsDialog()
    qtbot.addWidget(dialog)
    assert row(dialog, "brain", "1").text(COL["Format"]) == "monai-bundle"
    assert row(dialog, "brain", "1").text(COL["Source"]) == "imported"
    text = details(dialog, "brain", "1")
    for line in ("Format: monai-bundle (imported)", "Task: segmentation-3d", "Modality: MR",
                 "Classes: background, tumour", "Spacing: [1, 1, 1]", 'Normalisation: {"kind": "zscore"}',
                 "Source: https://example.org/bundle", "Licence: CC-BY-4.0",
                 f"sha256: {hashlib.sha256(weights).hexdigest()}",
                 "Domain description: present (threshold 3.0)", "Code confirmed at import: 1 item(s)",
                 "  $monai.transforms.LoadImaged(...)", "Disclaimer: research only",
                 "Analyze: uses this version (newest"):
        assert line in text, line
    shipped = details(dialog, CT, "1")
    assert "Format: unet3d (Lightbox network)" in shipped and "\nDomain description: " in shipped
    assert "Code confirmed" not in shipped and "Weights verified" in shipped
