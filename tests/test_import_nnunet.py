"""nnU-Net v2 model folders: import, card, refusal of unsafe files, and the same output as nnU-Net's
own predictor on the same volume (folds ensembled, mirroring on and off, resampling exercised)."""
from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nnunetv2")
pytest.importorskip("dynamic_network_architectures")

import torch  # noqa: E402

from inference import formats, registry  # noqa: E402
from inference.formats import nnunet as nnunet_format  # noqa: E402
from inference.formats.base import NotImportable, VolumeImage  # noqa: E402
from inference.segment import Cancelled  # noqa: E402
from tests.model_fixtures.nnunet_folder import CT_SPACING_ZYX, build_model_folder, synthetic_case  # noqa: E402

# anisotropic and unlike the training spacing (1, 1, 2): resampled, with the low-resolution axis apart
TEST_SPACING = (0.8, 1.3, 3.5)


@pytest.fixture(scope="session")
def ct_folder(tmp_path_factory) -> Path:
    return build_model_folder(tmp_path_factory.mktemp("nnunet-ct"), modality="CT", folds=(0, 1))


@pytest.fixture(scope="session")
def mr_folder(tmp_path_factory) -> Path:
    return build_model_folder(tmp_path_factory.mktemp("nnunet-mr"), modality="MR", dataset_id=502, folds=(0,))


def ct_volume(seed=1):
    img, _ = synthetic_case((30, 22, 9), TEST_SPACING, "CT", np.random.default_rng(seed))
    img[:2] = 0  # zero-valued padding, as scanners write outside the field of view: cropped by nnU-Net
    img[:, -3:] = 0
    return img


def reference(folder: Path, image: np.ndarray, spacing, mirroring: bool, folds=None):
    """nnU-Net's own predictor on the same array (labels, probabilities)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                device=torch.device("cpu"), perform_everything_on_device=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), folds)
    return predictor.predict_single_npy_array(image[None], {"spacing": list(spacing)}, None, None, True)


def copy_model(folder: Path, dest: Path) -> Path:
    target = dest / folder.name
    shutil.copytree(folder, target)
    return target


# --------------------------------------------------------------------------
# detect and plan
# --------------------------------------------------------------------------
def test_detects_the_model_folder_and_the_dataset_folder_above_it(ct_folder, tmp_path):
    assert formats.detect(ct_folder) == "nnunet-v2"
    assert formats.detect(ct_folder.parent) == "nnunet-v2"  # Dataset501_LbxCT/ holding one trained model
    (tmp_path / "plans.json").write_text("{}")
    assert not nnunet_format.detect(tmp_path)  # no dataset.json, no fold


def test_plan_prefills_the_card_from_the_folder(ct_folder):
    plan = formats.inspect(ct_folder)
    card = plan.card
    plans = json.loads((ct_folder / "plans.json").read_text())
    assert plan.format == "nnunet-v2"
    assert card["name"] == "Dataset501_LbxCT-3d_fullres" and card["version"] == "1"
    assert card["task"] == "segmentation-3d" and card["modality"] == "CT" and plan.needs == []
    assert card["classes"] == ["background", "blob"]
    assert plans["transpose_forward"] == [2, 0, 1]  # the fixture's x is the coarse axis: nnU-Net moves it first
    assert card["input"]["spacing_mm"] == pytest.approx(CT_SPACING_ZYX)  # back in the input's (z, y, x)
    assert card["input"]["patch_size"] == [16, 16, 16]
    assert card["input"]["configuration"] == "3d_fullres"
    assert card["input"]["folds"] == ["0", "1"] and card["input"]["mirroring"] is True
    assert card["input"]["mirror_axes"] == [0, 1, 2]
    assert card["normalization"]["kind"] == "nnunet"
    assert card["normalization"]["schemes"] == ["CTNormalization"]
    props = plans["foreground_intensity_properties_per_channel"]["0"]
    keys = ["mean", "std", "percentile_00_5", "percentile_99_5", "min", "max", "median"]
    assert card["domain"]["kind"] == "intensity"
    assert list(card["domain"]["channels"][0]) == keys
    assert [card["domain"]["channels"][0][k] for k in keys] == pytest.approx([props[k] for k in keys])
    assert card["domain"]["spacing_mm"] == pytest.approx(CT_SPACING_ZYX)
    assert card["licence"] == "" and "nnU-Net v2 model folder" in card["source"]
    assert plan.runs_code == [] and not plan.needs_confirmation
    assert any("nothing runs beyond the network" in n for n in plan.notes)
    # only what inference needs: no checkpoint_best, training logs, progress plots or fingerprints
    assert sorted(p.as_posix() for p in plan.files) == [
        "dataset.json", "fold_0/checkpoint_final.pth", "fold_1/checkpoint_final.pth", "plans.json"]
    assert (ct_folder / "fold_0" / "checkpoint_best.pth").exists()


def test_unknown_channel_name_leaves_the_modality_to_the_user(ct_folder, tmp_path):
    folder = copy_model(ct_folder, tmp_path)
    dataset = json.loads((folder / "dataset.json").read_text())
    dataset["channel_names"] = {"0": "zscore"}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    plan = formats.inspect(folder)
    assert plan.card["modality"] == "" and plan.needs == ["modality"]
    with pytest.raises(NotImportable, match="fill in modality"):
        formats.install(plan, dest=tmp_path / "models")
    assert nnunet_format.modality_of({"0": "T1", "1": "FLAIR"}) == "MR"
    assert nnunet_format.modality_of({"0": "CT", "1": "T2"}) == ""


def test_region_labels_name_the_values_they_write():
    labels = nnunet_format.labels_of({"labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                                                 "enhancing": 3}, "regions_class_order": [1, 2, 3]})
    assert labels.has_regions and labels.num_heads == 3
    assert labels.classes == ["background", "whole tumor", "tumor core", "enhancing"]


# --------------------------------------------------------------------------
# install, load and run: the same output as nnU-Net's predictor
# --------------------------------------------------------------------------
@pytest.fixture
def installed_ct(ct_folder, models_dir):
    card = formats.install(formats.inspect(ct_folder))
    return card


def test_install_copies_only_the_needed_files_and_records_the_digest(installed_ct, models_dir):
    card = installed_ct
    assert card.architecture == "nnunet-v2" and card.path == models_dir
    folder = card.weights_path
    assert folder.is_dir() and folder.name == "Dataset501_LbxCT-3d_fullres-1"
    assert sorted(p.as_posix() for p in formats.base.tree_files(folder)) == [
        "dataset.json", "fold_0/checkpoint_final.pth", "fold_1/checkpoint_final.pth", "plans.json"]
    assert card.sha256 == formats.base.tree_digest(folder)
    assert registry.check_model(card) == registry.UNVERIFIED
    assert card.name in [c.name for c in registry.available_models(task="segmentation-3d", modality="CT")]


@pytest.mark.parametrize("mirroring", [True, False])
def test_prediction_equals_nnunets_predictor(installed_ct, ct_folder, mirroring):
    card = installed_ct
    card.input["mirroring"] = mirroring
    runner, _ = registry.load_model(card)
    image = ct_volume()
    pred = runner.predict(VolumeImage(image, TEST_SPACING, modality="CT"))
    ref_labels, ref_probs = reference(ct_folder, image, TEST_SPACING, mirroring)
    assert pred.classes == ["background", "blob"]
    assert pred.labels.shape == image.shape and pred.labels.dtype == np.uint8
    assert pred.probabilities.shape == (2, *image.shape) and pred.probabilities.dtype == np.float32
    assert np.abs(pred.probabilities - ref_probs).max() < 1e-4
    assert np.array_equal(pred.labels, ref_labels)
    assert 0 < (ref_labels == 1).sum() < ref_labels.size  # not a trivial all-one-class answer
    assert (pred.labels[:2] == 0).all() and (pred.probabilities[0, :2] == 1).all()  # cropped away: background


def test_both_folds_count(installed_ct, ct_folder):
    """The ensemble is not one fold: fold 0 alone gives other probabilities."""
    image = ct_volume(seed=2)
    card = installed_ct
    card.input["mirroring"] = False
    runner, _ = registry.load_model(card)
    both = runner.predict(VolumeImage(image, TEST_SPACING)).probabilities
    _, fold0 = reference(ct_folder, image, TEST_SPACING, False, folds=(0,))
    _, ensemble = reference(ct_folder, image, TEST_SPACING, False, folds=(0, 1))
    assert np.abs(both - ensemble).max() < 1e-4
    assert np.abs(both - fold0).max() > 1e-3


def test_progress_rises_to_one_and_cancel_stops(installed_ct):
    runner, _ = registry.load_model(installed_ct)
    seen = []
    runner.predict(VolumeImage(ct_volume(), TEST_SPACING), progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 4
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3  # a few windows in

    with pytest.raises(Cancelled):
        runner.predict(VolumeImage(ct_volume(), TEST_SPACING), cancel=cancel)


def test_mr_zscore_model_equals_nnunets_predictor(mr_folder, models_dir):
    plan = formats.inspect(mr_folder)
    assert plan.card["modality"] == "MR"
    assert plan.card["normalization"]["schemes"] == ["ZScoreNormalization"]
    assert plan.card["normalization"]["use_mask_for_norm"] == [True]  # a head in air: normalised inside the mask
    card = formats.install(plan)
    runner, _ = registry.load_model(card)
    img, _ = synthetic_case((26, 20, 24), (1.5, 0.9, 1.1), "MR", np.random.default_rng(5))
    pred = runner.predict(VolumeImage(img, (1.5, 0.9, 1.1), modality="MR"))
    ref_labels, ref_probs = reference(mr_folder, img, (1.5, 0.9, 1.1), True)
    assert np.abs(pred.probabilities - ref_probs).max() < 1e-4
    assert np.array_equal(pred.labels, ref_labels)


# --------------------------------------------------------------------------
# untrusted files
# --------------------------------------------------------------------------
class SneakyDict(OrderedDict):
    """A dict subclass: unpickling it would import and call this test module's code."""


class RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload", ["subclass", "os.system"])
def test_checkpoint_with_a_foreign_global_is_refused(ct_folder, tmp_path, payload):
    folder = copy_model(ct_folder, tmp_path)
    checkpoint = folder / "fold_0" / "checkpoint_final.pth"
    data = torch.load(checkpoint, map_location="cpu", weights_only=False)
    marker = tmp_path / "ran"
    if payload == "subclass":
        data["network_weights"] = SneakyDict(data["network_weights"])
        expected = "SneakyDict"
    else:
        data["logging"] = RunsACommand(marker)
        expected = "system"  # posix.system on Linux
    torch.save(data, checkpoint)
    with pytest.raises(NotImportable, match=f"{expected}.*not allowed in an nnU-Net checkpoint"):
        formats.inspect(folder)
    with pytest.raises(NotImportable, match="not allowed in an nnU-Net checkpoint"):
        nnunet_format.read_checkpoint(checkpoint)
    assert not marker.exists()


def test_plans_naming_foreign_code_are_refused(ct_folder, tmp_path):
    folder = copy_model(ct_folder, tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["conv_op"] = "os.system"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(NotImportable, match=r"'os\.system'.*only classes from dynamic_network_architectures"):
        formats.inspect(folder)
    with pytest.raises(NotImportable, match="only classes from"):
        nnunet_format.resolve_name("subprocess.Popen")
    assert nnunet_format.resolve_name("torch.nn.modules.conv.Conv3d") is torch.nn.Conv3d


def test_tampered_installed_file_is_refused(installed_ct):
    card = installed_ct
    plans = card.weights_path / "plans.json"
    plans.write_text(plans.read_text().replace('"batch_size": 2', '"batch_size": 3'))
    with pytest.raises(registry.ChecksumError, match="does not match the card"):
        registry.check_model(card)
    with pytest.raises(registry.ChecksumError):
        registry.load_model(card)


def test_weights_that_do_not_fit_the_plans_are_refused(ct_folder, tmp_path):
    folder = copy_model(ct_folder, tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [8, 16, 32]
    (folder / "plans.json").write_text(json.dumps(plans))
    card = formats.install(formats.inspect(folder), dest=tmp_path / "models")
    with pytest.raises(registry.ModelError, match="do not fit the network"):
        registry.load_model(card)


def test_2d_configuration_runs_slice_wise_like_nnunet(tmp_path_factory, models_dir):
    folder = build_model_folder(tmp_path_factory.mktemp("nnunet-2d"), dataset_id=503, folds=(0,),
                                patch_size=(16, 16), configuration="2d")
    plan = formats.inspect(folder)
    assert plan.card["task"] == "segmentation-3d" and plan.card["input"]["configuration"] == "2d"
    assert plan.card["input"]["mirror_axes"] == [0, 1]
    runner, _ = registry.load_model(formats.install(plan))
    image = ct_volume(seed=3)
    pred = runner.predict(VolumeImage(image, TEST_SPACING))
    ref_labels, ref_probs = reference(folder, image, TEST_SPACING, True)
    assert np.abs(pred.probabilities - ref_probs).max() < 1e-4
    assert np.array_equal(pred.labels, ref_labels)


def test_region_based_model_equals_nnunets_predictor(tmp_path_factory, models_dir):
    folder = build_model_folder(tmp_path_factory.mktemp("nnunet-regions"), dataset_id=504, folds=(0,),
                                labels={"background": 0, "body": [1, 2], "blob": 2}, regions_class_order=[1, 2])
    plan = formats.inspect(folder)
    assert plan.card["classes"] == ["background", "body", "blob"]
    runner, _ = registry.load_model(formats.install(plan))
    image = ct_volume(seed=4)
    pred = runner.predict(VolumeImage(image, TEST_SPACING))
    ref_labels, ref_probs = reference(folder, image, TEST_SPACING, True)
    assert ref_probs.shape[0] == 2 and pred.probabilities.shape[0] == 3  # sigmoid per region; + background
    assert np.abs(pred.probabilities[1:] - ref_probs).max() < 1e-4
    assert np.allclose(pred.probabilities[0], 1 - ref_probs.max(0), atol=1e-4)
    assert np.array_equal(pred.labels, ref_labels)
