"""inference.formats.install, whatever the format: nested needs, Cancel between files, nothing half
written, links and zip members outside the folder refused, the folder digest that the card keeps."""
from __future__ import annotations

import os
import zipfile

import pytest

from inference import formats, registry
from inference.formats.base import FormatHandler, ImportPlan, NotImportable, tree_digest
from inference.segment import Cancelled


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(tmp_path / "models"))
    formats._import_handlers()  # the real handlers first, then a folder format of this test's own
    monkeypatch.setitem(formats.FORMATS, "test-folder", FormatHandler(
        "test-folder", detect=lambda p: False, plan=lambda p: None, load=lambda *a: None))
    return tmp_path / "models"


def folder_plan(tmp_path, needs=()):
    src = tmp_path / "artefact"
    (src / "fold_0").mkdir(parents=True)
    (src / "plans.json").write_text("{}")
    (src / "fold_0" / "weights.bin").write_bytes(os.urandom(4096))
    card = {"name": "demo folder", "version": "3", "task": "segmentation-3d", "modality": "CT",
            "classes": ["background", "organ"], "input": {}}
    return ImportPlan(format="test-folder", source=src, card=card, needs=list(needs))


def test_dotted_needs_and_the_card_digest(tmp_path, models):
    plan = folder_plan(tmp_path, needs=["input.spacing_mm", "modality"])
    with pytest.raises(NotImportable, match="input.spacing_mm"):
        formats.install(plan)
    seen = []
    card = formats.install(plan, {"input": {"spacing_mm": [3, 1, 1]}},
                           progress=lambda f, what: seen.append((round(f, 2), what)))
    assert card.name == "demo folder" and card.weights == "demo-folder-3" and card.path == models
    assert card.sha256 == tree_digest(models / "demo-folder-3")
    assert [w for _f, w in seen] == ["copying fold_0/weights.bin", "copying plans.json"]
    assert registry.check_model(card) == registry.UNVERIFIED
    with pytest.raises(NotImportable, match="already installed"):
        formats.install(plan, {"input": {"spacing_mm": [3, 1, 1]}})


def test_cancel_between_files_leaves_nothing(tmp_path, models):
    plan = folder_plan(tmp_path)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 1  # after the first file

    with pytest.raises(Cancelled):
        formats.install(plan, should_stop=stop)
    assert [p.name for p in models.iterdir()] == []  # no card, no folder, no staging


def test_links_inside_a_model_folder_are_refused(tmp_path, models):
    plan = folder_plan(tmp_path)
    (tmp_path / "secret").write_text("not the model's")
    (plan.source / "fold_0" / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(NotImportable, match="link"):
        formats.install(plan)
    assert not list(models.glob("*.json"))


def test_zip_members_outside_the_folder_are_refused(tmp_path):
    bad = tmp_path / "bundle.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("bundle/configs/metadata.json", "{}")
        zf.writestr("../../escaped.txt", "x")
    with pytest.raises(NotImportable, match="outside"):
        with formats.opened(bad):
            pass
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_a_tampered_file_in_an_installed_folder_is_refused(tmp_path, models):
    card = formats.install(folder_plan(tmp_path))
    (models / card.weights / "plans.json").write_text('{"changed": true}')
    with pytest.raises(registry.ChecksumError, match="does not match"):
        registry.check_model(card)
