"""Retraining the 2D mammography mass model from an exported dataset: views written by the app's own
exporter fine-tune mammo-lesion-unet2d into a new version segment_image can run; training sees
exactly the input inference sees (chest wall found from the pixels, mirrored views included); CT/MR
datasets are refused; and a few steps on a domain-shifted view measurably help."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from inference import registry
from inference.finetune import (
    FinetuneError,
    Stopped,
    default_model,
    finetune,
    next_version,
)
from inference.finetune_seg2d import load_view, read_view
from inference.phantoms import mammo_image, mammo_spacing
from inference.segment import segment_image
from inference.train_seg import dice
from viewer.core.export.dataset import DatasetWriter
from viewer.core.volume import SourceInfo, Volume

MODEL = "mammo-lesion-unet2d"
SIZE = (416, 320)  # a small detector matrix: 0.56 mm pixels over the full 233 x 179 mm field
SPACING = mammo_spacing(SIZE)


def phantom_view(seed: int, mirrored: bool = False, gain: float = 1.0):
    """(pixels uint16, mass mask) of a phantom view with a mass; mirrored = chest wall on the right
    (as a hung or differently acquired view); gain scales the detector signal (a domain shift)."""
    lat, view = ("R", "L")[seed % 2], ("CC", "MLO")[(seed // 2) % 2]
    img, masks = mammo_image(lat, view, size=SIZE, seed=seed, mass=True)
    img, mass = img.astype(np.float32) * gain, masks["mass"].astype(np.uint8)
    if mirrored:
        img, mass = img[:, ::-1], mass[:, ::-1]
    return np.rint(img).astype(np.uint16), np.ascontiguousarray(mass)


def write_views(root, views, name="Dataset601_Mammo") -> tuple:
    """Views through the app's exporter (DatasetWriter): (1, rows, cols) MG NIfTI pairs."""
    writer = DatasetWriter(root, name)
    cases = []
    for pixels, mass in views:
        volume = Volume(pixels[None], np.array([1.0, *SPACING]), info=SourceInfo(modality="MG"))
        cases.append(writer.add_case(volume, mass[None], {1: "mass"}))
    return writer.folder, cases


@pytest.fixture(scope="module")
def mammo_dataset(tmp_path_factory):
    """Three views with masses; the third is the first one mirrored (chest wall on the right)."""
    views = [phantom_view(2100), phantom_view(2101), phantom_view(2100, mirrored=True)]
    return write_views(tmp_path_factory.mktemp("export"), views)


def test_finetune_writes_a_new_version_segment_image_can_run(mammo_dataset, tmp_path):
    torch.set_num_threads(1)
    dataset, _ = mammo_dataset
    shipped = registry.find_model(MODEL)
    shipped_bytes = shipped.weights_path.read_bytes()
    epochs = []
    card = finetune(dataset, MODEL, epochs=1, steps_per_epoch=2, batch=2, out_dir=tmp_path, progress=epochs.append)
    assert card.name == MODEL and card.version == next_version(shipped)
    assert (tmp_path / f"{MODEL}-{card.version}.json").is_file()
    assert len(epochs) == 1 and np.isfinite(epochs[0]["loss"]) and set(epochs[0]["val_dice"]) == {"mass"}
    assert 0.0 <= epochs[0]["val_dice"]["mass"] <= 1.0
    assert card.metrics["val_dice"] == epochs[0]["val_dice"] and "mass" in card.metrics["val_dice_before"]
    assert f"fine-tuned from {MODEL} {shipped.version}" in card.training_data
    net, loaded = registry.load_model(tmp_path / f"{MODEL}-{card.version}.json")  # checksum verified
    pixels, _ = phantom_view(2102)
    labels, prob = segment_image(net, loaded, pixels, SPACING, device="cpu")
    assert labels.shape == prob.shape == SIZE and set(np.unique(labels)) <= {0, 1}
    assert shipped.weights_path.read_bytes() == shipped_bytes  # the shipped model is untouched


def test_a_mammography_dataset_defaults_to_the_2d_model(mammo_dataset, tmp_path):
    torch.set_num_threads(1)
    dataset, _ = mammo_dataset
    assert default_model(dataset) == MODEL
    card = finetune(dataset, epochs=1, steps_per_epoch=1, batch=1, out_dir=tmp_path)
    assert card.name == MODEL and card.task == "segmentation-2d"


def test_training_input_is_what_segment_image_feeds_the_model(mammo_dataset):
    """For the same pixels, the prepared training input equals the window segment_image gives the
    network (one window covering the whole view), and a view with its chest wall on the right is
    learned mirrored to the left together with its labels."""
    dataset, cases = mammo_dataset
    net, card = registry.load_model(registry.find_model(MODEL))
    whole = replace(card, input={**card.input, "patch_size": [2048, 2048]})  # one window sees everything
    lut = np.array([0, 1], np.uint8)

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.seen = net, []

        def forward(self, x):
            self.seen.append(x.detach().cpu().clone())
            return self.net(x)

    views = {}
    for case in (cases[0], cases[2]):
        image, label = dataset / "imagesTr" / f"{case}_0000.nii.gz", dataset / "labelsTr" / f"{case}.nii.gz"
        view = load_view(image, label, card, lut)
        pixels, _, spacing = read_view(image, label)
        assert spacing == pytest.approx(SPACING)
        rec = Recorder()
        segment_image(rec, whole, pixels, spacing, device="cpu")
        (window,) = rec.seen
        h, w = view.x.shape[1:]
        ph, pw = window.shape[2] - h, window.shape[3] - w
        inner = window[0, :, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]
        assert torch.equal(inner, view.x)
        if ph or pw:  # segment_image pads with the background level, as the training crops do
            assert torch.allclose(window[0, 0, :ph // 2], torch.tensor(view.pad_value))
        views[case] = view
    left, right = views[cases[0]], views[cases[2]]
    assert not left.geometry.flipped and right.geometry.flipped
    assert left.x.shape == right.x.shape and torch.allclose(left.x, right.x, atol=1e-5)
    assert int(left.y.sum()) > 20 and torch.equal(left.y, right.y)  # labels mirrored with the pixels


def test_datasets_of_another_modality_or_shape_are_refused(tmp_path):
    pixels, mass = phantom_view(2103)
    dataset, _ = write_views(tmp_path, [(pixels, mass)])
    meta = json.loads((dataset / "dataset.json").read_text())
    for channel in ("CT", "MR"):
        (dataset / "dataset.json").write_text(json.dumps({**meta, "channel_names": {"0": channel}}))
        with pytest.raises(FinetuneError, match=f"channel 0 is '{channel}'.*{MODEL}"):
            finetune(dataset, MODEL, epochs=1, steps_per_epoch=1, out_dir=tmp_path / "m")
    (dataset / "dataset.json").write_text(json.dumps(meta))
    (dataset / "labelsTr" / "CASE_0001.nii.gz").write_bytes(b"not a NIfTI")
    with pytest.raises(FinetuneError, match=r"CASE_0001\.nii\.gz: cannot be read"):
        finetune(dataset, MODEL, epochs=1, steps_per_epoch=1, out_dir=tmp_path / "m")
    stack = tmp_path / "stack"
    writer = DatasetWriter(stack, "Dataset602_Mammo")
    writer.add_case(Volume(np.stack([pixels, pixels]), np.array([1.0, *SPACING]), info=SourceInfo(modality="MG")),
                    np.stack([mass, mass]), {1: "mass"})
    with pytest.raises(FinetuneError, match=r"CASE_0001_0000\.nii\.gz: a volume of 2 slices"):
        finetune(writer.folder, MODEL, epochs=1, steps_per_epoch=1, out_dir=tmp_path / "m", allow_no_validation=True)


def test_cancel_between_steps(mammo_dataset, tmp_path):
    dataset, _ = mammo_dataset
    with pytest.raises(Stopped):
        finetune(dataset, MODEL, epochs=1, steps_per_epoch=5, out_dir=tmp_path, should_stop=lambda: True)
    assert not list(tmp_path.glob("*.json"))


def test_a_few_steps_on_a_shifted_domain_raise_held_out_dice(tmp_path, monkeypatch):
    """Half the detector signal (another vendor's calibration) defeats the shipped model; twelve
    steps on ONE corrected view of that domain must lift the Dice of ANOTHER such view, measured
    by segment_image on its source grid. Fails if training does not learn or learns misaligned labels.
    Better than its parent on that view, the new version is the one Analyze uses from now on."""
    from inference import activation
    from viewer.analysis import run

    torch.set_num_threads(1)
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(tmp_path / "m"))
    shifted = [phantom_view(11, gain=0.5), phantom_view(13, gain=0.5)]
    dataset, _ = write_views(tmp_path, shifted, "Dataset603_Shifted")
    shipped_net, shipped = registry.load_model(registry.find_model(MODEL))
    held_out = [dice(segment_image(shipped_net, shipped, p, SPACING, device="cpu")[0] == 1, m) for p, m in shifted]
    assert max(held_out) < 0.3, "the shift no longer defeats the shipped model: pick a harder one"
    card = finetune(dataset, MODEL, epochs=3, steps_per_epoch=4, batch=2, lr=1e-3, val_fraction=0.5,
                    out_dir=tmp_path / "m")
    before, after = card.metrics["val_dice_before"]["mass"], card.metrics["val_dice"]["mass"]
    assert before < 0.3 and after > before + 0.3, (before, after)
    assert card.extra["activation"] == {"status": "better", "score": after, "parent_score": before,
                                        "metric": "mean Dice", "validation_cases": 1,
                                        "parent": f"{MODEL} {shipped.version}"}
    assert activation.active_version(MODEL, registry.available_models()) == (card, "better on validation")
    assert run.pick_card("segmentation-2d", "MG").version == card.version
    assert activation.outcome(card).startswith(f"activated: mean Dice {after:.3f} ≥ {before:.3f} of {MODEL} "
                                               f"{shipped.version} on the same 1 validation case")


def test_finetune_seg2d_runs_as_two_ddp_processes_on_cpu(mammo_dataset, tmp_path):
    """torchrun with 2 CPU processes (gloo): each trains on its own crops, only rank 0 validates and writes."""
    from test_finetune import torchrun_finetune

    dataset, _ = mammo_dataset
    proc = torchrun_finetune(dataset, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {MODEL}" in proc.stderr and "validation Dice mass" in proc.stderr
    (path,) = tmp_path.glob("*.json")  # only rank 0 writes
    card = registry.load_card(path)
    assert card.extra["processes"] == 2
    registry.load_model(card)
