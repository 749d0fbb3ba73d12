"""The lesion-infill cGAN: network shapes, the composite, training lowers the L1, the shipped version's
weights match its card, and fine-tuning on an exported dataset writes a new version naming its data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inference import activation, registry
from inference.infill import NAME, TASK, new_card
from inference.infill_finetune import METRIC, finetune_infill, plan_infill
from inference.infill_train import (
    BORDER,
    PATCH,
    InfillPatches,
    extract_patches,
    generate,
    train_infill,
    validate_infill,
)
from inference.models.infill_gan import IN_CHANNELS, composite, infill_cgan

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = {"widths": [8, 16], "coarse_widths": [8, 16], "disc_width": 8, "disc_scales": 2}
SHIPPED = Path(__file__).resolve().parents[1] / "resources" / "models" / f"{NAME}.json"


def blob_patches(n=6, seed=0) -> InfillPatches:
    """Tissue-like noise with a bright disc (mass) in the middle of each patch."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:PATCH, :PATCH]
    images, labels = [], []
    for _ in range(n):
        r = rng.uniform(6, 12)
        disc = (yy - PATCH // 2) ** 2 + (xx - PATCH // 2) ** 2 <= r * r
        images.append((rng.normal(0, 0.15, (PATCH, PATCH)) + 0.9 * disc).astype(np.float32))
        labels.append(disc.astype(np.uint8))
    return InfillPatches.concat([extract_patches(i, lab) for i, lab in zip(images, labels)])


def test_generator_and_discriminator_shapes():
    net = infill_cgan()
    x = torch.randn(2, IN_CHANNELS, PATCH, PATCH)
    full, coarse = net.generator(x)
    assert full.shape == (2, 1, PATCH, PATCH) and coarse.shape == (2, 1, PATCH // 2, PATCH // 2)
    scores = net.discriminator(torch.randn(2, IN_CHANNELS, PATCH, PATCH))
    assert len(scores) == 2 and scores[0].shape[-1] == 2 * scores[1].shape[-1]
    n_bytes = 4 * sum(p.numel() for p in net.parameters())
    assert n_bytes < 3e6  # small enough to ship and to train on two CPU cores


def test_composite_keeps_every_pixel_outside_the_region():
    real, gen = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 8, 8)
    region = torch.zeros(1, 1, 8, 8)
    region[..., 2:5, 3:6] = 1
    out = composite(real, gen, region)
    assert torch.equal(out[region == 0], real[region == 0]) and torch.equal(out[region == 1], gen[region == 1])
    torch.manual_seed(0)
    p = blob_patches(3)
    made = generate(infill_cgan(**TINY), p.real, p.region, p.mass, p.calcification, seed=0)
    outside = p.region == 0
    assert np.array_equal(made[outside], p.real[outside]) and not np.array_equal(made, p.real)


def test_patches_are_centred_on_each_lesion_with_a_border_of_context():
    image = np.zeros((120, 120), np.float32)
    label = np.zeros((120, 120), np.uint8)
    label[30:40, 30:40] = 1
    label[90, 90] = label[92, 95] = label[96, 91] = 2  # one cluster of three dots
    p = extract_patches(image, label)
    assert len(p) == 2 and sorted(p.kinds) == ["calcification", "mass"]
    m = p.kinds.index("mass")
    assert p.mass[m].sum() == 100 and p.calcification[m].sum() == 0
    assert p.calcification[1 - m].sum() == 3
    assert (p.region >= np.maximum(p.mass, p.calcification)).all()
    assert not p.region[:, :BORDER].any() and not p.region[:, :, -BORDER:].any()


def test_a_few_training_steps_lower_the_l1():
    p = blob_patches(6)
    torch.manual_seed(0)
    net = infill_cgan(**TINY)
    before = validate_infill(net, p)["l1"]
    net, history = train_infill(p, 60, seed=0, net=net, lr=2e-3, batch=6)
    after = validate_infill(net, p)["l1"]
    assert after < 0.8 * before and history[-1]["loss_l1"] < history[0]["loss_l1"]


def test_the_shipped_cgan_loads_with_safetensors_and_matches_its_card(models_dir):
    from safetensors.torch import load_file

    card = registry.load_card(SHIPPED)
    assert (card.name, card.task, card.modality) == (NAME, TASK, "MG")
    assert "trained on synthetic phantoms" in card.training_data and "python -m inference.infill demo" in \
        card.training_data
    data = card.weights_path.read_bytes()
    assert len(data) < 3e6 and registry.sha256_bytes(data) == card.sha256
    net = infill_cgan(**card.arch_kwargs)
    net.load_state_dict(load_file(str(card.weights_path)), strict=True)
    assert card.metrics["val"]["psnr"] > 0 and "realism" in card.metrics
    # Analyze never runs it: no Analyze role has the task "lesion-infill"
    from viewer.analysis import run

    assert TASK not in {task for _role, task in run.MAMMO_ROLES}


@pytest.fixture
def mammo_positives(tmp_path_factory):
    """Three exported MG views with a mass each (the app's own exporter)."""
    from inference.phantoms import mammo_image, mammo_spacing
    from viewer.core.export.dataset import DatasetWriter
    from viewer.core.volume import SourceInfo, Volume

    size = (416, 320)
    writer = DatasetWriter(tmp_path_factory.mktemp("export"), "Dataset611_Infill")
    for seed in (2200, 2201, 2202):
        pixels, masks = mammo_image(("R", "L")[seed % 2], "CC", size=size, seed=seed, mass=True)
        volume = Volume(pixels[None], np.array([1.0, *mammo_spacing(size)]), info=SourceInfo(modality="MG"))
        writer.add_case(volume, masks["mass"][None].astype(np.uint8), {1: "mass"})
    return writer.folder


def test_finetune_on_an_exported_dataset_writes_a_new_version(models_dir, mammo_positives, tmp_path):
    torch.manual_seed(0)
    registry.save_model(infill_cgan(**TINY), new_card(dict(TINY), "parent data", {}, {}, version="0.1"), models_dir)
    parent = registry.find_model(NAME, "0.1")
    checked = plan_infill(mammo_positives, parent, val_fraction=0.34, seed=0)
    assert checked.validation_cases == 1 and len(checked.train_idx) == 2
    seen = []
    card = finetune_infill(mammo_positives, checked, epochs=1, steps_per_epoch=4, lr=2e-4, batch=4, seed=0,
                           device="cpu", out_dir=tmp_path, progress=seen.append, should_stop=None)
    assert card.name == NAME and card.version == "0.2" and card.task == TASK
    assert "Dataset611_Infill" in card.training_data and "parent data" in card.training_data
    assert "lesion patches from 2 training cases" in card.training_data
    record = card.extra["activation"]
    assert record["metric"] == METRIC and record["validation_cases"] == 1
    assert record["status"] in (activation.BETTER, activation.NOT_BETTER)
    assert seen and seen[-1]["step"] == 4 and np.isfinite(seen[-1]["loss"])
    net, loaded = registry.load_model(tmp_path / f"{NAME}-0.2.json")  # checksum verified, safetensors
    assert json.loads((tmp_path / f"{NAME}-0.2.json").read_text())["sha256"] == loaded.sha256


def test_a_dataset_without_lesions_is_refused(models_dir, tmp_path):
    from inference.finetune_common import FinetuneError
    from inference.phantoms import mammo_image, mammo_spacing
    from viewer.core.export.dataset import DatasetWriter
    from viewer.core.volume import SourceInfo, Volume

    writer = DatasetWriter(tmp_path / "export", "Dataset612_Normals")
    for seed in (1, 2):
        pixels, _ = mammo_image("R", "CC", size=(208, 160), seed=seed)
        volume = Volume(pixels[None], np.array([1.0, *mammo_spacing((208, 160))]), info=SourceInfo(modality="MG"))
        writer.add_case(volume, np.zeros((1, 208, 160), np.uint8), {1: "mass"})
    registry.save_model(infill_cgan(**TINY), new_card(dict(TINY), "x", {}, {}, version="0.1"), models_dir)
    with pytest.raises(FinetuneError, match="no training case holds a mass or calcification|no dataset label"):
        plan_infill(writer.folder, registry.find_model(NAME, "0.1"), 0.5, 0)
