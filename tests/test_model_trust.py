"""Which model weights Lightbox trusts: the shipped ones are checked against a manifest inside the package
(a writable card's sha256 catches corruption, not tampering); a corrupt or tampered user model is skipped
with a message naming it and Analyze falls back to the newest model that verifies, finally the shipped one;
user models are labelled "unverified" in the outputs and in AI ▸ Models…."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from inference import registry, shipped_manifest
from inference.registry import ChecksumError, ModelError
from viewer.analysis import run
from viewer.cli import main
from viewer.core.synthetic import write_ct_study

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CT = "ct-organs-unet3d"


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct")
    write_ct_study(out, shape=(24, 48, 48), spacing=(12.5, 7.5, 7.5), seed=5)
    return out


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    d = tmp_path / "user-models"
    d.mkdir()
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(d))
    run.PREFERRED_VERSIONS.clear()
    return d


def user_version(user: Path, version: str, damage: str | None = None, name: str = CT) -> Path:
    """A copy of a shipped model as a newer version in the user folder; ``damage``: "tampered" (weights
    bytes changed, card untouched), "truncated" (half a safetensors file, card checksum updated to it) or
    "not-json" (a card that is not JSON). Returns the card's path."""
    shipped = registry.shipped_models_dir()
    card = json.loads((shipped / f"{name}.json").read_text())
    data = bytearray((shipped / card["weights"]).read_bytes())
    stem = f"{name}-{version}"
    card.update(version=version, weights=f"{stem}.safetensors")
    if damage == "tampered":
        data[-3] ^= 0x40
    elif damage == "truncated":
        data = data[: len(data) // 2]
        card["sha256"] = registry.sha256_bytes(bytes(data))
    (user / card["weights"]).write_bytes(bytes(data))
    path = user / f"{stem}.json"
    path.write_text("{not json" if damage == "not-json" else json.dumps(card))
    return path


# -- the manifest ---------------------------------------------------------------------------------------------
def test_the_manifest_lists_every_shipped_weights_file_with_its_current_hash():
    """Stale manifest = the shipped models are refused: regenerate with python -m inference.shipped_manifest."""
    text = registry.MANIFEST.read_text()
    assert text == shipped_manifest.render(shipped_manifest.build()), \
        "inference/shipped_models.json is stale: run python -m inference.shipped_manifest"
    listed = {m["weights"]: m["sha256"] for m in json.loads(text)["models"]}
    on_disk = {p.name: registry.sha256_bytes(p.read_bytes())
               for p in registry.shipped_models_dir().glob("*.safetensors")}
    assert listed == on_disk and len(listed) >= 4
    assert shipped_manifest.main(["--check"]) == 0
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert "shipped_models.json" in pyproject  # installed with the package


def test_shipped_models_verify(user_dir):
    for card in registry.available_models():
        assert registry.check_model(card) == registry.VERIFIED, card.name


def test_a_shipped_model_whose_weights_differ_from_the_manifest_is_refused(tmp_path, monkeypatch):
    """Weights and card rewritten together (the card's own checksum is satisfied): the manifest catches it."""
    fake = tmp_path / "shipped"
    shutil.copytree(registry.shipped_models_dir(), fake)
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: fake)
    weights = fake / "mammo-patch.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x40
    weights.write_bytes(bytes(data))
    card = json.loads((fake / "mammo-patch.json").read_text())
    card["sha256"] = registry.sha256_bytes(bytes(data))
    (fake / "mammo-patch.json").write_text(json.dumps(card))
    shipped = registry.find_model("mammo-patch")
    with pytest.raises(ChecksumError, match="not the weights shipped with Lightbox"):
        registry.check_model(shipped)
    with pytest.raises(ChecksumError, match="mammo-patch.safetensors"):
        registry.load_model(shipped)
    # a model dropped into the shipped folder that the package never shipped is refused too
    registry.save_model(torch_module(), registry.ModelCard(name="intruder", version="1", task="t", modality="MG",
                                                           architecture="x"), fake)
    with pytest.raises(ChecksumError, match="not in the package's list"):
        registry.check_model(registry.find_model("intruder"))
    # and without the manifest nothing shipped verifies
    monkeypatch.setattr(registry, "MANIFEST", tmp_path / "missing.json")
    with pytest.raises(ModelError, match="list of shipped models"):
        registry.check_model(registry.find_model("mammo-exam"))


def torch_module():
    import torch

    return torch.nn.Linear(2, 2)


def test_user_models_are_unverified_but_usable(user_dir):
    path = user_version(user_dir, "1.1")
    card = registry.load_card(path)
    assert registry.check_model(card) == registry.UNVERIFIED and not registry.is_verified(card)
    registry.load_model(card)  # matches its own card: loads
    shipped = registry.find_model(CT, version="1")
    assert registry.is_verified(shipped)


@pytest.mark.parametrize("damage", ["tampered", "truncated", "not-json"])
def test_a_damaged_newer_user_model_is_skipped_for_the_shipped_one(user_dir, damage):
    path = user_version(user_dir, "1.1", damage)
    skipped: list[str] = []
    card = run.pick_card("segmentation-3d", "CT", skipped)
    assert card.version == "1" and registry.is_shipped(card)
    notes: list[str] = []
    _module, loaded = run.load_role("segmentation-3d", "CT", "cpu", notes)
    assert loaded.version == "1"
    assert len(notes) == 1 and path.stem in notes[0], notes  # the card or its weights, by name


def test_analyze_skips_damaged_models_names_them_and_uses_the_newest_that_verifies(user_dir, ct_dir, tmp_path,
                                                                                   capsys):
    bad = [user_version(user_dir, v, d) for v, d in (("1.4", "not-json"), ("1.3", "truncated"), ("1.2", "tampered"))]
    user_version(user_dir, "1.1")  # a good, fine-tuned-like version below them
    out = tmp_path / "out"
    assert main(["analyze", str(ct_dir), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for path in bad:
        assert path.name in err or path.with_suffix(".safetensors").name in err, (path, err)
    (result,) = json.loads((out / "results.json").read_text())["results"]
    assert result["models"] == {"segmentation": f"{CT} 1.1"}
    assert result["models_verified"] == {"segmentation": False}
    assert any("unverified" in w for w in result["warnings"])

    (user_dir / f"{CT}-1.1.safetensors").write_bytes(b"\0" * 64)  # now every user version is damaged
    out2 = tmp_path / "out2"
    assert main(["analyze", str(ct_dir), "--out", str(out2)]) == 0
    err = capsys.readouterr().err
    assert f"{CT}-1.1.safetensors" in err
    (result,) = json.loads((out2 / "results.json").read_text())["results"]
    assert result["models"] == {"segmentation": f"{CT} 1"} and result["models_verified"] == {"segmentation": True}
    assert not any("unverified" in w for w in result["warnings"])


def test_the_app_analysis_lists_a_skipped_model_in_its_warnings(user_dir, ct_dir):
    """The viewer's Analyze calls run.analyze_ct: the panel shows result.warnings."""
    from viewer.core.io import load_series, scan

    bad = user_version(user_dir, "1.1", "tampered")
    (series,) = scan(ct_dir).series
    result = run.analyze_ct(series, load_series(series), "cpu")
    assert result.models == {"segmentation": f"{CT} 1"} and result.verified == {"segmentation": True}
    assert any(bad.with_suffix(".safetensors").name in w and "skipped" in w for w in result.warnings)


def test_no_model_that_verifies_is_a_clear_no_model(user_dir, tmp_path, monkeypatch):
    bad = user_version(user_dir, "2", "tampered")
    empty = tmp_path / "no-shipped"
    empty.mkdir()
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: empty)
    with pytest.raises(run.NoModel, match=bad.with_suffix(".safetensors").name):
        run.ct_model()
    assert run.load_role("segmentation-3d", "CT", "cpu", []) is None


# -- AI ▸ Models… --------------------------------------------------------------------------------------------
def test_models_dialog_shows_verified_unverified_and_refused(qtbot, user_dir):
    pytest.importorskip("pytestqt")
    from viewer.ui.models_dialog import ModelsDialog

    user_version(user_dir, "1.1")
    user_version(user_dir, "1.2", "tampered")
    dialog = ModelsDialog()
    qtbot.addWidget(dialog)
    rows = {(dialog.tree.topLevelItem(i).text(0), dialog.tree.topLevelItem(i).text(1)): dialog.tree.topLevelItem(i)
            for i in range(dialog.tree.topLevelItemCount())}
    assert rows[(CT, "1")].text(5) == "verified" and rows[(CT, "1")].text(4) == "shipped"
    assert rows[(CT, "1.1")].text(5) == "unverified" and rows[(CT, "1.1")].text(4) == "yours"
    assert "refused" in rows[(CT, "1.2")].text(5)
    dialog.tree.setCurrentItem(rows[(CT, "1.1")])
    assert "unverified" in dialog.details.toPlainText() and "not shipped" in dialog.details.toPlainText()
    dialog.tree.setCurrentItem(rows[(CT, "1.2")])
    assert "does not match the card" in dialog.details.toPlainText()
