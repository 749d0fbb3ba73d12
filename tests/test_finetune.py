"""Retrain from an exported dataset: a tiny nnU-Net-layout dataset fine-tunes the CT model into a new,
loadable version in the user's model folder; bad datasets are refused with the reason."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from inference import registry
from inference.finetune import FinetuneError, finetune, next_version, read_dataset
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
    assert main(["train", str(tmp_path / "nope")]) == 2


def torchrun_finetune(dataset, out_dir, processes: int = 2):
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
                           "--steps", "1", "--device", "cpu", "--out", str(out_dir)],
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
