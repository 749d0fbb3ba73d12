"""Retrain from an exported dataset: a tiny nnU-Net-layout dataset fine-tunes the CT model into a new,
loadable version in the user's model folder; bad datasets are refused with the reason; a run without
validation, or one worse than its parent on the same validation cases, never becomes the version
Analyze uses; label mismatches are named before training."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from inference import activation, registry
from inference.finetune import (
    FinetuneError,
    finetune,
    free_version,
    next_version,
    preflight,
    read_dataset,
)
from inference.phantoms import ct_phantom
from inference.train_seg import ct_label_map

SHAPE, SPACING = (30, 56, 56), (7.0, 6.4, 6.4)  # small, same field of view as the demo CT


def write_case(root, case, seed):
    hu, masks = ct_phantom(shape=SHAPE, spacing=SPACING, seed=seed)
    for arr, folder, name in ((hu.astype(np.int16), "imagesTr", f"{case}_0000.nii.gz"),
                              (ct_label_map(masks), "labelsTr", f"{case}.nii.gz")):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(tuple(reversed(SPACING)))
        (root / folder).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(img, str(root / folder / name))


def write_dataset(root, cases: int, first_seed: int):
    """An nnU-Net v2 raw dataset of CT phantoms labelled lungs 1, liver 2, lesions 3."""
    for i in range(cases):
        write_case(root, f"CASE_{i:04d}", seed=first_seed + i)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "lungs": 1, "liver": 2, "lesions": 3},
        "numTraining": cases, "file_ending": ".nii.gz"}))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("Dataset501_Lightbox"), 3, 2000)


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    """An empty user model folder: Analyze sees the shipped models and what a test writes here."""
    folder = tmp_path / "user-models"
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(folder))
    torch.set_num_threads(1)
    return folder


def ct_in_use():
    from viewer.analysis import run

    return run.pick_card("segmentation-3d", "CT").version


def test_finetune_writes_a_new_loadable_version(dataset, tmp_path):
    torch.set_num_threads(1)
    shipped = registry.find_model("ct-organs-unet3d")
    shipped_bytes = shipped.weights_path.read_bytes()
    epochs = []
    card = finetune(dataset, "ct-organs-unet3d", epochs=1, steps_per_epoch=2, batch=1, out_dir=tmp_path,
                    progress=epochs.append)
    assert card.version == next_version(shipped) == "1.1"
    assert card.path == tmp_path and (tmp_path / "ct-organs-unet3d-1.1.json").is_file()
    assert len(epochs) == 1 and np.isfinite(epochs[0]["loss"]) and set(epochs[0]["val_dice"]) <= \
        {"lungs", "liver", "lesions"}
    assert card.metrics["val_dice"] == epochs[-1]["val_dice"] and "val_dice_before" in card.metrics
    assert "fine-tuned from ct-organs-unet3d 1" in card.training_data and card.extra["parent"]
    verdict = card.extra["activation"]  # judged against the parent on the same validation case
    assert verdict["metric"] == "mean Dice" and verdict["validation_cases"] == 1
    assert verdict["parent"] == "ct-organs-unet3d 1" and verdict["status"] in ("better", "not better")
    assert verdict["parent_score"] == pytest.approx(np.mean(list(card.metrics["val_dice_before"].values())))
    assert (verdict["status"] == "better") == (verdict["score"] >= verdict["parent_score"])
    _net, loaded = registry.load_model(tmp_path / "ct-organs-unet3d-1.1.json")  # checksum verified
    assert loaded.sha256 == card.sha256
    assert shipped.weights_path.read_bytes() == shipped_bytes  # the shipped model is untouched


def test_datasets_the_model_cannot_learn_from_are_refused(dataset, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(FinetuneError, match="dataset.json"):
        read_dataset(bad)
    (bad / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"},
                                                   "labels": {"background": 0, "spleen": 1}}))
    write_case(bad, "CASE_0000", 1)
    with pytest.raises(FinetuneError, match="no dataset label"):
        finetune(bad, "ct-organs-unet3d", epochs=1, steps_per_epoch=1, out_dir=tmp_path)
    (bad / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {"liver": 1}}))
    with pytest.raises(FinetuneError, match="modality"):
        finetune(bad, "ct-organs-unet3d", epochs=1, steps_per_epoch=1, out_dir=tmp_path)


def test_train_cli(dataset, tmp_path, capsys):
    from viewer.cli import main

    assert main(["train", str(dataset), "--epochs", "1", "--steps", "1", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "epoch 1" in err and "wrote ct-organs-unet3d 1.1" in err
    assert "of its parent ct-organs-unet3d 1 on the same 1 validation case" in err  # the verdict, both numbers
    assert main(["train", str(tmp_path / "nope")]) == 2


def test_one_exported_case_is_refused_unless_training_without_validation_is_chosen(tmp_path, user_models, capsys):
    from inference.finetune import main as finetune_main

    one = write_dataset(tmp_path / "one", 1, 2000)
    with pytest.raises(FinetuneError, match=r"^1 case: nothing left to validate on; export at least 2 cases, or "
                                            r"train without validation explicitly"):
        finetune(one, "ct-organs-unet3d", epochs=1, steps_per_epoch=1, batch=1)
    assert not user_models.exists()
    assert finetune_main([str(one), "--epochs", "1", "--steps", "1"]) == 2
    assert "--allow-no-validation" in capsys.readouterr().err and not user_models.exists()

    card = finetune(one, "ct-organs-unet3d", epochs=1, steps_per_epoch=1, batch=1, allow_no_validation=True)
    assert (card.version, card.path) == ("1.1", user_models)
    assert card.extra["activation"] == {"status": "unvalidated", "score": None, "parent_score": None,
                                        "metric": "mean Dice", "validation_cases": 0, "parent": "ct-organs-unet3d 1"}
    assert ct_in_use() == "1"  # written, never used automatically
    assert activation.active_version("ct-organs-unet3d", registry.available_models())[1] == "newest"
    assert activation.outcome(card).startswith("kept, unvalidated") and "Analyze still uses ct-organs-unet3d 1" \
        in activation.outcome(card)
    with pytest.raises(FinetuneError, match="3 cases but no validation case"):  # a fraction of 0: refused too
        finetune(write_dataset(tmp_path / "three", 3, 2000), "ct-organs-unet3d", epochs=1, steps_per_epoch=1,
                 val_fraction=0.0)


def test_a_worse_run_is_kept_not_better_and_analyze_keeps_its_parent(dataset, user_models):
    """A learning rate of 1 wrecks the network in two steps: the version is written, marked "not better"
    with both numbers, and every way of choosing a model (pick_card, candidates, the next run's parent)
    stays with the shipped version until the user pins the new one."""
    from viewer.analysis import run

    card = finetune(dataset, "ct-organs-unet3d", epochs=1, steps_per_epoch=2, batch=1, lr=1.0)
    verdict = card.extra["activation"]
    assert verdict["status"] == "not better" and verdict["score"] < verdict["parent_score"], verdict
    assert verdict["parent_score"] == pytest.approx(np.mean(list(card.metrics["val_dice_before"].values())))
    assert ct_in_use() == "1" and [c.version for c in run.candidates("segmentation-3d", "CT")] == ["1"]
    text = activation.outcome(card)
    assert text.startswith(f"kept, not better (mean Dice {verdict['score']:.3f} < {verdict['parent_score']:.3f} of "
                           "ct-organs-unet3d 1 on the same 1 validation case)"), text
    assert text.endswith("Analyze still uses ct-organs-unet3d 1")
    assert activation.active_version("ct-organs-unet3d", registry.available_models())[0].version == "1"
    assert free_version(registry.find_model("ct-organs-unet3d", "1"), user_models) == "1.2"  # 1.1 is kept
    activation.pin("ct-organs-unet3d", "1.1")  # only the user's explicit choice puts it in charge
    assert ct_in_use() == "1.1" and [c.version for c in run.candidates("segmentation-3d", "CT")] == ["1.1", "1"]
    activation.unpin("ct-organs-unet3d")
    assert ct_in_use() == "1"


def mismatched_dataset(root):
    """The CT phantoms with the lesions labelled 'tumour core' (a name the model lacks) and the model's
    'lesions' declared on a value no voxel has."""
    write_dataset(root, 2, 2200)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "lungs": 1, "liver": 2, "tumour core": 3, "lesions": 4}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_label_mismatches_are_named_before_training(tmp_path, user_models):
    root = mismatched_dataset(tmp_path / "mismatch")
    checked = preflight(root, "ct-organs-unet3d")
    voxels = checked.labels.unknown["tumour core"]
    assert voxels > 0 and checked.labels.untaught == {"lesions": "no voxels"}
    assert checked.messages() == [
        "1 training and 1 validation cases",
        f"'tumour core' is in the dataset ({voxels} voxels) but not in model ct-organs-unet3d 1 (classes: lungs, "
        "liver, lesions): it would be ignored",
        "model class 'lesions' has no voxels in the dataset: it is trained as background"]
    with pytest.raises(FinetuneError, match=r"^'tumour core' is in the dataset .* it would be ignored\. .*"
                                            r"--ignore-extra-labels"):
        finetune(root, "ct-organs-unet3d", epochs=1, steps_per_epoch=1, batch=1)
    assert not user_models.exists()
    warnings = []
    card = finetune(root, "ct-organs-unet3d", epochs=1, steps_per_epoch=1, batch=1, ignore_extra_labels=True,
                    warn=warnings.append)
    assert warnings == ["model class 'lesions' has no voxels in the dataset: it is trained as background"]
    assert card.extra["ignored_labels"] == {"tumour core": voxels} and card.extra["label_warnings"] == warnings
    meta = json.loads((root / "dataset.json").read_text())  # a model class not declared at all
    del meta["labels"]["lesions"]
    (root / "dataset.json").write_text(json.dumps(meta))
    assert preflight(root, "ct-organs-unet3d").labels.untaught == {"lesions": "no label"}


def torchrun_finetune(dataset, out_dir, processes: int = 2, extra: tuple = ()):
    """``torchrun --nproc_per_node N -m inference.finetune DATASET`` on CPU (gloo), 1 epoch of 1 step."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                           "--master_port", str(port), "-m", "inference.finetune", str(dataset), "--epochs", "1",
                           "--steps", "1", "--device", "cpu", "--out", str(out_dir), *extra],
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def test_finetune_runs_as_two_ddp_processes_on_cpu(dataset, tmp_path):
    """The multi-GPU path, exercised with torchrun's launcher, 2 CPU processes and the gloo backend."""
    proc = torchrun_finetune(dataset, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cards = list(tmp_path.glob("*.json"))
    assert len(cards) == 1  # only rank 0 writes
    card = registry.load_card(cards[0])
    assert card.extra["processes"] == 2
    registry.load_model(card)
