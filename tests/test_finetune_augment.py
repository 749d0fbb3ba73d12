"""`--augment classic|cgan` when fine-tuning the three mammography models (issue 17): synthetic positives
made from the TRAINING split join training and never validation, the new card records the method,
count and (cgan) the infill model, a real-vs-synthetic grid PNG lies beside the weights, progress
reports the augment stage, and the CLI parses the options and refuses them for CT."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from inference import augment as augment_module
from inference import domain_fit, registry
from inference.finetune import FinetuneError, finetune, preflight
from inference.finetune_augment import MAX_SYNTHETIC, default_count
from inference.phantoms import mammo_image
from test_finetune_exam import write_exam_dataset
from test_finetune_patch import patch_dataset_views, write_lesion_views
from test_finetune_seg2d import SIZE as SEG_SIZE
from test_finetune_seg2d import phantom_view, write_views
from viewer.cli import main

COUNT = 3  # synthetic positives per run: enough to count, cheap to make


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    """One thread, and a version's domain description from the run's own views only (the demo-phantom
    subset it otherwise adds costs seconds and is tested with the fine-tuners themselves)."""
    torch.set_num_threads(1)
    monkeypatch.setattr(domain_fit, "DEMO_SUBSET", {})


TINY_VERSION = "1000.1"  # sorts after any shipped mammo-infill-cgan version


@pytest.fixture
def infill(models_dir):
    """A tiny untrained infill cGAN in the test's user model folder, versioned above the shipped one so it
    is the active version: these tests check the plumbing, tests/test_infill.py the lesions."""
    from inference.infill import new_card
    from inference.models.infill_gan import infill_cgan
    from test_augment import TINY

    torch.manual_seed(0)
    registry.save_model(infill_cgan(**TINY), new_card(dict(TINY), "tiny test cGAN", {}, {}, version=TINY_VERSION),
                        models_dir)


@pytest.fixture
def spy(monkeypatch):
    """What augment.synthesize was given, to count it against the plan's training split."""
    calls = []
    real = augment_module.synthesize

    def recording(method, normals, positives, n, seed, **kw):
        calls.append({"method": method, "normals": [np.asarray(a) for a in normals],
                      "positives": [(np.asarray(i), np.asarray(m)) for i, m in positives], "n": n})
        return real(method, normals, positives, n, seed, **kw)

    monkeypatch.setattr(augment_module, "synthesize", recording)
    return calls


def normal_view(seed: int):
    """(pixels, empty mass mask) of a phantom view without a lesion: the cGAN's canvas."""
    lat, view = ("R", "L")[seed % 2], ("CC", "MLO")[(seed // 2) % 2]
    img, masks = mammo_image(lat, view, size=SEG_SIZE, seed=seed)
    return np.rint(img).astype(np.uint16), np.zeros(masks["mass"].shape, np.uint8)


@pytest.fixture(scope="module")
def seg_dataset(tmp_path_factory):
    """Five views for the lesion U-Net: three with a mass, two normal."""
    views = [phantom_view(2400), phantom_view(2401), phantom_view(2402), normal_view(2403), normal_view(2404)]
    return write_views(tmp_path_factory.mktemp("seg_aug"), views, "Dataset621_SegAug")[0]


@pytest.fixture(scope="module")
def exam_dataset(tmp_path_factory):
    return write_exam_dataset(tmp_path_factory.mktemp("exam_aug"), 4, 700)


@pytest.fixture(scope="module")
def patch_dataset(tmp_path_factory):
    return write_lesion_views(tmp_path_factory.mktemp("patch_aug"), patch_dataset_views(), "Dataset622_PatchAug")


def check_augmented(card, method: str, records: list, folder) -> dict:
    """The card's augmentation record, its grid PNG and the augment progress records, checked."""
    rec = card.extra["augmentation"]
    assert rec["augment"] == method and rec["n_synthetic"] == COUNT
    if method == "cgan":
        assert rec["infill_model"].startswith("mammo-infill-cgan ") and rec["infill_training"]
    grid = folder / rec["grid"]
    assert grid.is_file() and grid.parent == card.path
    picture = sitk.GetArrayFromImage(sitk.ReadImage(str(grid)))
    assert picture.ndim == 3 and picture.shape[-1] == 3 and picture.std() > 0
    stages = [r for r in records if r.get("stage") == "augment"]
    assert stages and stages[-1]["done"] == stages[-1]["total"] == COUNT
    assert records.index(stages[-1]) < next(i for i, r in enumerate(records) if "epoch" in r)
    return rec


@pytest.mark.parametrize("method", ["classic", "cgan"])
def test_lesion_unet_trains_with_synthetic_views_in_training_only(seg_dataset, tmp_path, spy, infill, method):
    checked = preflight(seg_dataset, "mammo-lesion-unet2d", val_fraction=0.4)
    records = []
    card = finetune(seg_dataset, "mammo-lesion-unet2d", epochs=1, steps_per_epoch=2, batch=2, val_fraction=0.4,
                    out_dir=tmp_path, progress=records.append, augment=method, augment_count=COUNT)
    check_augmented(card, method, records, tmp_path)
    m = card.metrics
    assert m["n_val_cases"] == len(checked.val_idx) == 2 and m["n_train_views"] == len(checked.train_idx) == 3
    assert m["n_synthetic_train_views"] == COUNT
    (call,) = spy
    assert len(call["normals"]) + len(call["positives"]) == len(checked.train_idx)  # the training views, no more
    assert all(mask.max() == 1 for _image, mask in call["positives"])  # the U-Net's mass as augment's 1
    registry.load_model(tmp_path / f"{card.name}-{card.version}.json")


@pytest.mark.parametrize("method", ["classic", "cgan"])
def test_exam_classifier_trains_with_synthetic_positive_views(exam_dataset, tmp_path, spy, infill, method):
    checked = preflight(exam_dataset, "mammo-exam", val_fraction=0.5)
    records = []
    card = finetune(exam_dataset, "mammo-exam", epochs=1, steps_per_epoch=2, batch=2, val_fraction=0.5,
                    out_dir=tmp_path, progress=records.append, augment=method, augment_count=COUNT,
                    ignore_extra_labels=True)
    check_augmented(card, method, records, tmp_path)
    m = card.metrics
    assert m["n_val_views"] == len(checked.val_idx) == 8 and m["n_train_views"] == len(checked.train_idx) == 8
    assert m["n_synthetic_train_views"] == COUNT and m["n_positive_train_views"] == 4
    (call,) = spy
    assert len(call["normals"]) == 4  # the training split's negatives
    # classic transforms the 4 positive training views; cgan gets no lesion shapes (view labels have no
    # masks) and draws the phantoms' instead
    assert len(call["positives"]) == (4 if method == "classic" else 0)
    assert f"+ {COUNT} synthetic positive ({method})" in card.training_data


@pytest.mark.parametrize("method", ["classic", "cgan"])
def test_patch_classifier_trains_with_synthetic_lesion_patches(patch_dataset, tmp_path, spy, infill, method):
    checked = preflight(patch_dataset, "mammo-patch", val_fraction=0.34)
    records = []
    card = finetune(patch_dataset, "mammo-patch", epochs=1, steps_per_epoch=2, batch=4, val_fraction=0.34,
                    out_dir=tmp_path, progress=records.append, augment=method, augment_count=COUNT)
    check_augmented(card, method, records, tmp_path)
    m = card.metrics
    assert m["n_val_views"] == len(checked.val_idx) == 2 and m["n_train_views"] == 4
    assert m["n_synthetic_train_views"] == COUNT and m["n_synthetic_train_patches"] > 0
    (call,) = spy
    assert len(call["normals"]) + len(call["positives"]) == 4
    assert card.extra["activation"]["validation_cases"] == 2


def test_the_default_count_brings_positives_to_a_third():
    assert default_count(30, 4) == 9 and (4 + 9) / (30 + 9) == pytest.approx(1 / 3)
    assert default_count(12, 6) == 1  # already half positive: one synthetic item still shows the method
    assert default_count(1000, 1) == MAX_SYNTHETIC


def test_a_cancel_while_synthesizing_writes_nothing(seg_dataset, tmp_path):
    from inference.finetune import Stopped

    seen = []

    def stop() -> bool:
        return any(r.get("stage") == "augment" for r in seen)

    with pytest.raises(Stopped):
        finetune(seg_dataset, "mammo-lesion-unet2d", epochs=1, steps_per_epoch=1, val_fraction=0.4, out_dir=tmp_path,
                 progress=seen.append, should_stop=stop, augment="classic", augment_count=COUNT)
    assert not list(tmp_path.glob("*"))


def test_augmentation_none_is_recorded_and_ct_refuses_synthetic_lesions(tmp_path, capsys):
    from test_finetune import write_dataset

    ct = write_dataset(tmp_path / "ct", 2, 3300)
    with pytest.raises(FinetuneError, match="ct-organs-unet3d is a CT segmentation-3d model.*--augment none"):
        finetune(ct, augment="classic", out_dir=tmp_path / "m")
    with pytest.raises(FinetuneError, match="augmentation must be one of none, classic, cgan"):
        finetune(ct, augment="mixup", out_dir=tmp_path / "m")
    assert main(["train", str(ct), "--augment", "cgan", "--epochs", "1", "--steps", "1", "--device", "cpu",
                 "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--augment cgan adds synthetic mammography lesions" in err[0], err
    assert main(["train", str(ct), "--augment-count", "0", "--epochs", "1", "--steps", "1", "--device", "cpu",
                 "--out", str(tmp_path / "m")]) == 2
    assert "augmentation count must be a whole number of at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", str(ct), "--augment", "mixup"])
    assert exc.value.code == 2 and "invalid choice: 'mixup'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    card = finetune(ct, epochs=1, steps_per_epoch=1, batch=1, device="cpu", out_dir=tmp_path / "m")
    assert card.extra["augmentation"] == {"augment": "none", "n_synthetic": 0}
    assert not list((tmp_path / "m").glob("*.png"))


def test_cli_passes_augment_options_through(seg_dataset, tmp_path, capsys):
    code = main(["train", str(seg_dataset), "--model", "mammo-lesion-unet2d", "--epochs", "1", "--steps", "1",
                 "--device", "cpu", "--out", str(tmp_path), "--augment", "classic", "--augment-count", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "augment: 2/2 synthetic positives" in err
    (path,) = tmp_path.glob("*.json")
    card = json.loads(path.read_text())
    assert card["extra"]["augmentation"]["augment"] == "classic" and card["extra"]["augmentation"]["n_synthetic"] == 2
    assert (tmp_path / card["extra"]["augmentation"]["grid"]).is_file()


def test_train_reaches_the_infill_cgan_and_refuses_augmenting_it(seg_dataset, tmp_path, infill):
    """`lightbox train DATASET --model mammo-infill-cgan` trains a new cGAN version from the dataset's lesions
    (inference.infill_finetune); synthetic lesions to train the lesion maker itself are refused."""
    with pytest.raises(FinetuneError, match="mammo-infill-cgan is a MG lesion-infill model"):
        finetune(seg_dataset, "mammo-infill-cgan", augment="classic", out_dir=tmp_path / "m")
    card = finetune(seg_dataset, "mammo-infill-cgan", epochs=1, steps_per_epoch=1, batch=2, val_fraction=0.4,
                    out_dir=tmp_path / "m")
    assert card.name == "mammo-infill-cgan" and card.task == "lesion-infill" and card.version == "1000.2"
    assert card.extra["parent"] == f"mammo-infill-cgan {TINY_VERSION}" and card.extra["activation"]["status"]
    registry.load_model(tmp_path / "m" / "mammo-infill-cgan-1000.2.json")
