"""Which version Analyze uses (inference.activation): the pinned one, else the newest version not shown
worse than its parent; "not better" and "unvalidated" versions only when pinned; pins persist in the
user model folder and every process (Analyze, CLI, AI ▸ Models…) reads the same choice."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inference import activation, registry
from inference.activation import (
    BETTER,
    NOT_BETTER,
    UNVALIDATED,
    active_version,
    dice_scores,
    ranked,
    record,
    status_of,
)
from inference.registry import ModelCard

CT = "ct-organs-unet3d"


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(folder))
    return folder


def card(version: str, status: str | None = None, name: str = "m", score=0.8, parent_score=0.7) -> ModelCard:
    extra = {}
    if status is not None:
        extra = {"parent": f"{name} 1", "activation": record("mean Dice", parent_score, score,
                                                             0 if status == UNVALIDATED else 2, f"{name} 1")}
        extra["activation"]["status"] = status
    return ModelCard(name, version, "segmentation-3d", "CT", "unet3d", extra=extra)


def test_the_verdict_is_not_worse_on_the_same_cases():
    assert record("mean Dice", 0.7, 0.7, 2, "m 1")["status"] == BETTER  # a tie is not worse
    assert record("mean Dice", 0.7, 0.69, 2, "m 1")["status"] == NOT_BETTER
    assert record("mean Dice", 0.7, 0.9, 0, "m 1")["status"] == UNVALIDATED
    assert record("accuracy", None, None, 3, "m 1")["status"] == UNVALIDATED
    # a class scored on one side only was absent from prediction and truth on the other: a perfect 1.0
    assert dice_scores({"lungs": 0.9, "spleen": 0.0}, {"lungs": 0.8}) == pytest.approx((0.45, 0.9))
    assert dice_scores({}, {}) == (1.0, 1.0)


def test_versions_fine_tuned_before_verdicts_existed_are_judged_from_their_metrics():
    old = ModelCard("m", "1.1", "segmentation-3d", "CT", "unet3d", extra={"parent": "m 1"},
                    metrics={"val_dice_before": {}, "val_dice": {}})  # the "validation Dice –"
    assert status_of(old) == UNVALIDATED
    old.metrics = {"val_dice_before": {"lungs": 0.9}, "val_dice": {"lungs": 0.5}}
    assert status_of(old) == NOT_BETTER
    old.metrics = {"val_auc_before": {"x": 0.6}, "val_auc": {"x": 0.8}, "val_accuracy": 0.7, "n_val_views": 8}
    assert status_of(old) == BETTER
    assert status_of(ModelCard("m", "1", "segmentation-3d", "CT", "unet3d")) is None  # shipped / imported


def test_the_rule_picks_the_newest_version_not_shown_worse(user_dir):
    shipped, better, worse, unvalidated = card("1"), card("1.1", BETTER), card("1.2", NOT_BETTER), \
        card("1.3", UNVALIDATED)
    assert active_version("m", [shipped]) == (shipped, "newest")
    assert active_version("m", [shipped, better, worse, unvalidated]) == (better, "better on validation")
    assert active_version("m", [shipped, worse, unvalidated]) == (shipped, "newest")
    assert active_version("m", [worse, unvalidated]) == (None, "")  # never chosen automatically
    activation.pin("m", "1.3")
    assert active_version("m", [shipped, better, worse, unvalidated]) == (unvalidated, "pinned")
    activation.pin("m", "7")  # a pinned version that is gone: the rule again
    assert active_version("m", [shipped, better]) == (better, "better on validation")
    activation.unpin("m")
    assert activation.pins() == {}


def test_analyze_tries_the_active_version_then_eligible_fallbacks(user_dir):
    cards = [card("1"), card("1.1", BETTER), card("1.2", NOT_BETTER), card("2", name="other"),
             card("2.1", UNVALIDATED, name="other")]
    assert [(c.name, c.version) for c in ranked(cards)] == [("other", "2"), ("m", "1.1"), ("m", "1")]
    activation.pin("m", "1.2")  # a pinned model comes first; the pinned version is tried before the rest
    assert [(c.name, c.version) for c in ranked(cards)] == [("m", "1.2"), ("m", "1.1"), ("m", "1"), ("other", "2")]
    same = [card("1"), card("1")]  # the same version in the shipped and the user folder: the user's (later) wins
    activation.unpin("m")
    assert ranked(same)[0] is same[1]


def test_pins_persist_in_the_user_model_folder_for_every_process(user_dir):
    activation.pin(CT, "1")
    path = user_dir / "state" / "active.json"
    assert json.loads(path.read_text()) == {"pinned": {CT: "1"}}
    assert not list(user_dir.glob("*.json"))  # beside the cards it would be read as a broken card
    code = ("from inference import activation, registry; "
            f"c, why = activation.active_version({CT!r}, registry.available_models()); print(c.version, why)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.split() == ["1", "pinned"]
    problems: list[str] = []
    registry.available_models(problems=problems)
    assert problems == []
    path.write_text("{not json")  # a damaged file: the rule, and the listing still works
    assert activation.pins() == {}
    assert active_version(CT, registry.available_models())[1] == "newest"


def test_the_old_preferred_versions_mapping_reads_and_writes_the_pins(user_dir):
    from viewer.analysis import run

    run.PREFERRED_VERSIONS["m"] = "1.1"
    assert activation.pins() == {"m": "1.1"} and run.PREFERRED_VERSIONS.get("m") == "1.1"
    assert dict(run.PREFERRED_VERSIONS) == {"m": "1.1"}
    run.PREFERRED_VERSIONS.pop("m")
    assert activation.pins() == {} and run.PREFERRED_VERSIONS.get("m") is None
    with pytest.raises(KeyError):
        del run.PREFERRED_VERSIONS["m"]
    run.PREFERRED_VERSIONS.update({"a": "1", "b": "2"})
    run.PREFERRED_VERSIONS.clear()
    assert activation.pins() == {}


def user_copy(user: Path, version: str, status: str | None) -> Path:
    """The shipped CT model as another version in the user folder, with the given verdict."""
    shipped = registry.shipped_models_dir()
    data = json.loads((shipped / f"{CT}.json").read_text())
    weights = f"{CT}-{version}.safetensors"
    user.mkdir(parents=True, exist_ok=True)
    shutil.copy(shipped / data["weights"], user / weights)
    data.update(version=version, weights=weights)
    if status is not None:
        data["extra"] = {**data.get("extra", {}), "parent": f"{CT} 1",
                         "activation": {"status": status, "score": 0.5, "parent_score": 0.6, "metric": "mean Dice",
                                        "validation_cases": 1, "parent": f"{CT} 1"}}
    path = user / f"{CT}-{version}.json"
    path.write_text(json.dumps(data))
    return path


def test_analyze_and_can_analyze_agree_with_the_rule(user_dir):
    from viewer.analysis import run

    user_copy(user_dir, "1.1", NOT_BETTER)
    user_copy(user_dir, "1.2", UNVALIDATED)
    assert run.pick_card("segmentation-3d", "CT").version == "1" and run.can_analyze("CT")
    assert [c.version for c in run.candidates("segmentation-3d", "CT")] == ["1"]
    user_copy(user_dir, "1.3", BETTER)
    assert run.pick_card("segmentation-3d", "CT").version == "1.3"
    assert [c.version for c in run.candidates("segmentation-3d", "CT")] == ["1.3", "1"]
    activation.pin(CT, "1.1")
    assert run.pick_card("segmentation-3d", "CT").version == "1.1"
    (user_dir / f"{CT}-1.1.safetensors").write_bytes(b"damaged")  # a pinned version that fails its checksum
    skipped: list[str] = []
    assert run.pick_card("segmentation-3d", "CT", skipped).version == "1.3" and "1.1 skipped" in skipped[0]
