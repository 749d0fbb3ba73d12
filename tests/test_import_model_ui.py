"""AI ▸ Import model…: a real ONNX file is read, its card completed by hand (Import waits for every
needed field), installed in the user model folder, and then analyses an MR series in the window;
a plan that runs code needs the trust box ticked; refusals are shown in the dialog."""
from __future__ import annotations

import json
import os
import warnings

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from qt_helpers import close_quietly, editor_window, open_and_wait, shown

from viewer.ui.import_model_dialog import CODE_HEADING, INVALID_STYLE, NEEDED_STYLE, ImportModelDialog

CODE = ["$monai.utils.set_determinism(0)", "monai.networks.nets.UNet (network_def)",
        "$import os; os.system('echo hi')"]


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    """A tiny randomly initialised 3D segmentation network exported with torch's own ONNX exporter."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 1)).eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny-seg.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 16, 16),), str(path), input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                          dynamo=False)
    return path


def read(qtbot, dialog, path):
    dialog.open_path(path)
    qtbot.waitUntil(lambda: not dialog.busy, timeout=30000)


def install(qtbot, dialog):
    assert dialog.import_button.isEnabled()
    dialog.import_button.click()
    qtbot.waitUntil(lambda: not dialog.busy, timeout=30000)


def fill(dialog, key, text):
    widget = dialog.fields[key]
    if hasattr(widget, "setEditText"):
        widget.setEditText(text)
    else:
        widget.setText(text)
        widget.textEdited.emit(text)  # as typing does


def test_onnx_import_waits_for_the_needed_fields_and_writes_the_card(qtbot, onnx_file, models_dir):
    dialog = shown(qtbot, ImportModelDialog(), (720, 760))
    read(qtbot, dialog, onnx_file)
    assert "ONNX model" in dialog.format_label.text()
    assert dialog.fields["name"].text() == "tiny-seg" and dialog.fields["task"].currentText() == "segmentation-3d"
    assert any("opset" in n for n in dialog.plan.notes) and "opset" in dialog.notes.text()
    assert not dialog.code_box.isVisible()  # an ONNX graph runs no code from the file
    # the file does not say these: highlighted, Import off
    assert set(dialog.missing()) == {"modality", "classes", "spacing", "normalization"}
    for key in dialog.missing():
        assert dialog.fields[key].styleSheet() == NEEDED_STYLE, key
        assert "font-weight: bold" in dialog.labels[key].styleSheet()
    assert dialog.fields["name"].styleSheet() == "" and dialog.fields["patch_size"].styleSheet() == ""
    assert not dialog.import_button.isEnabled()
    assert "modality" in dialog.needs_hint.text()
    assert dialog.fields["classes"].placeholderText() == "suggested: background, class 1, class 2"

    dialog.use_suggestions()  # the file's suggestions, accepted by the user
    assert dialog.fields["classes"].text() == "background, class 1, class 2"
    assert dialog.fields["classes"].styleSheet() == ""
    fill(dialog, "classes", "background, brain, lesion")
    fill(dialog, "modality", "mr")
    fill(dialog, "normalization", "zscore")
    assert dialog.missing() == ["spacing"] and not dialog.import_button.isEnabled()
    fill(dialog, "spacing", "2, 1 mm")  # not numbers: said, and Import stays off
    assert dialog.fields["spacing"].styleSheet() == INVALID_STYLE and "spacing" in dialog.needs_hint.text()
    assert not dialog.import_button.isEnabled()
    fill(dialog, "spacing", "4, 3, 3")
    assert dialog.missing() == [] and dialog.import_button.isEnabled()

    with qtbot.waitSignal(dialog.imported, timeout=30000) as got:
        install(qtbot, dialog)
    card = got.args[0]
    assert dialog.status.text() == "Imported tiny-seg 1: Analyze uses it for MR segmentation-3d"
    assert not dialog.import_button.isEnabled()  # done: the same plan is not imported twice
    written = json.loads((models_dir / "tiny-seg-1.json").read_text())
    assert written["architecture"] == "onnx" and written["modality"] == "MR"
    assert written["classes"] == ["background", "brain", "lesion"]
    assert written["input"]["spacing_mm"] == [4.0, 3.0, 3.0] and written["input"]["patch_size"] == [8, 16, 16]
    assert written["normalization"] == {"kind": "zscore"}
    assert (models_dir / written["weights"]).is_file() and written["sha256"] == card.sha256

    # importing it again is refused by the registry, and the dialog says so
    dialog.show_plan(dialog.plan)
    fill(dialog, "modality", "MR")
    fill(dialog, "classes", "background, brain, lesion")
    fill(dialog, "normalization", "zscore")
    fill(dialog, "spacing", "4, 3, 3")
    install(qtbot, dialog)
    assert "nothing was installed" in dialog.status.text() and "already installed" in dialog.status.text()
    assert dialog.installed is None


def test_code_from_the_files_needs_the_trust_box(qtbot, onnx_file, models_dir):
    from inference.formats import ImportPlan

    card = {"name": "coded", "version": "2", "task": "segmentation-3d", "modality": "CT",
            "classes": ["background", "liver"], "input": {"spacing_mm": [3, 3, 3], "patch_size": [8, 16, 16]},
            "normalization": {"kind": "hu_window", "window": [-160, 240]}}
    plan = ImportPlan(format="onnx", source=onnx_file, card=card, runs_code=list(CODE))
    dialog = shown(qtbot, ImportModelDialog(), (720, 760))
    dialog.show_plan(plan)
    assert dialog.code_box.isVisible() and dialog.code_box.title() == CODE_HEADING
    assert dialog.code_list.toPlainText().splitlines() == CODE
    assert dialog.missing() == [] and not dialog.import_button.isEnabled()
    assert not dialog.trust.isChecked() and dialog.trust.isVisible()
    dialog.trust.setChecked(True)
    assert dialog.import_button.isEnabled()
    dialog.trust.setChecked(False)
    assert not dialog.import_button.isEnabled()
    dialog.trust.setChecked(True)
    install(qtbot, dialog)
    assert dialog.installed is not None, dialog.status.text()
    written = json.loads((models_dir / "coded-2.json").read_text())
    assert written["extra"]["import"]["code_confirmed"] == CODE
    assert written["normalization"] == {"kind": "hu_window", "window": [-160, 240]}

    dialog.show_plan(plan)  # a new plan: the box starts unticked again
    assert not dialog.trust.isChecked() and not dialog.import_button.isEnabled()


def test_what_cannot_be_imported_is_said_in_the_dialog(qtbot, tmp_path, models_dir):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a protobuf at all" * 10)
    dialog = shown(qtbot, ImportModelDialog(), (720, 600))
    read(qtbot, dialog, bad)
    assert dialog.plan is None and not dialog.import_button.isEnabled()
    assert dialog.status.text().startswith("Cannot import: ") and "broken.onnx" in dialog.status.text()
    read(qtbot, dialog, tmp_path / "nowhere")
    assert "no such file or folder" in dialog.status.text()
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    read(qtbot, dialog, empty)
    assert "not a model Lightbox can import" in dialog.status.text()


def test_imported_model_analyses_an_mr_series_in_the_window(qtbot, onnx_file, models_dir, tmp_path, monkeypatch):
    from viewer.core.synthetic import write_mr_study

    # the brush edit below is autosaved: recovery files of this test only, or every later window
    # (tests/test_real_window.py's real X window among them) would open with a "restore edits?" box
    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path / "cache"))
    from viewer.ui.analysis_controller import LABEL_LAYER
    from viewer.ui.editor_controller import EDIT_LAYER

    mr = tmp_path / "mr"
    write_mr_study(mr, shape=(12, 48, 48), spacing=(4.0, 3.0, 3.0), seed=2)
    w = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w, mr)
        w.analysis.action.trigger()  # no MR model yet: said, nothing runs
        assert "no model for MR images" in w.message.text() and "Import model" in w.message.text()

        models = w.analysis.show_models()
        ai_menu = next(a.menu() for a in w.menuBar().actions() if a.text() == "&AI")
        assert w.analysis.import_action in ai_menu.actions()
        w.analysis.import_action.trigger()
        dialog = w.analysis.import_dialog
        qtbot.waitExposed(dialog)
        read(qtbot, dialog, onnx_file)
        dialog.use_suggestions()
        fill(dialog, "modality", "MR")
        fill(dialog, "normalization", "zscore")
        fill(dialog, "spacing", "4, 3, 3")
        install(qtbot, dialog)
        assert dialog.installed is not None, dialog.status.text()
        assert w.message.text().startswith("Imported tiny-seg 1: Analyze uses it for MR")
        assert "tiny-seg" in models.model_names()  # the open models list was refreshed
        models.close()
        dialog.close()

        with qtbot.waitSignal(w.analysis.analysis_finished, timeout=120000) as done:
            w.analysis.action.trigger()
        result = done.args[0]
        assert result.kind == "mr" and result.models == {"segmentation": "tiny-seg 1"}
        (sr,) = result.series.values()
        seg = sr.overlay("segmentation")
        assert seg.array.shape == w.slice_view.volume.shape and seg.classes == ["background", "class 1", "class 2"]
        assert w.slice_view.layer(LABEL_LAYER).array is seg.array
        assert "MR segmentation" in w.analysis.panel.title.text()

        # the imported model's labels are edited like any AI result
        w.set_tool("brush")
        w.slice_view.tool.click(*w.slice_view.pixel_center(5, 5))
        lm, _ = w.editor.session.labelmap_for(w.slice_view)
        assert {lb.name for lb in lm.labels.values()} >= {"class 1", "class 2"}
        assert w.slice_view.layer(EDIT_LAYER) is not None and w.slice_view.layer(LABEL_LAYER) is None
        assert np.array_equal(sr.overlay("segmentation").array, seg.array)
    finally:
        close_quietly(w)
