"""Fine-tuning imported models (issue 17 §3): a tiny MONAI bundle and a tiny nnU-Net v2 folder, each
made with its own tools and imported with ``lightbox models import``'s code, train on an exported
dataset; the loss falls, the new version reloads through its format and segments an image, its card
holds the verdict and the provenance; formats without trainable parameters are refused plainly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("monai")

import torch  # noqa: E402

from inference import activation, formats, registry  # noqa: E402
from inference.finetune_common import FinetuneError  # noqa: E402
from inference.finetune_imported import finetune_imported, plan_imported, trainable  # noqa: E402
from inference.formats.base import VolumeImage, file_digest  # noqa: E402
from tests.model_fixtures.monai_bundle import make_bundle  # noqa: E402
from tests.model_fixtures.nnunet_folder import synthetic_case  # noqa: E402


def write_dataset(root: Path, label_name: str, n_cases: int = 4, shape=(20, 24, 24), spacing=(2.0, 1.5, 1.5),
                  modality: str = "CT", seed: int = 3) -> Path:
    """An exported dataset as Lightbox writes it: imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz, dataset.json."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n_cases):
        image, label = synthetic_case(shape, spacing, modality, rng)
        for arr, path in ((image, root / "imagesTr" / f"case{i}_0000.nii.gz"),
                          (label, root / "labelsTr" / f"case{i}.nii.gz")):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
            img.SetOrigin((-20.0, 10.0, 5.0))
            sitk.WriteImage(img, str(path))
    meta = {"channel_names": {"0": modality}, "labels": {"background": 0, label_name: 1}, "numTraining": n_cases,
            "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def run(dataset, card, **kw):
    args = dict(epochs=3, steps_per_epoch=4, lr=3e-3, batch=2, val_fraction=0.25, seed=0, device="cpu",
                out_dir=None, progress=None, should_stop=None, allow_no_validation=False, ignore_extra_labels=False,
                warn=None)
    return finetune_imported(dataset, card, **{**args, **kw})


def check_new_version(parent, new, records, dataset):
    """What every fine-tuned imported version must show."""
    assert records[-1]["loss"] < records[0]["loss"], [r["loss"] for r in records]
    assert new.architecture == parent.architecture and new.name == parent.name
    assert new.version != parent.version and new.extra["parent"] == f"{parent.name} {parent.version}"
    verdict = new.extra["activation"]
    assert verdict["status"] in (activation.BETTER, activation.NOT_BETTER) and verdict["validation_cases"] == 1
    assert verdict["metric"] == "mean Dice" and verdict["parent_score"] is not None
    assert new.metrics["val_dice_before"] and new.metrics["val_dice"] and new.metrics["n_val_cases"] == 1
    assert Path(dataset).name in new.training_data and new.extra["finetune"]["format"] == parent.architecture
    assert registry.check_model(new) and registry.check_model(parent)  # both digests right; parent untouched
    assert Path(new.path) == Path(parent.path)  # installed beside its parent (the user model folder)


# --------------------------------------------------------------------------
# MONAI bundle
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle_source(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle"))


def test_bundle_fine_tunes_reloads_and_runs(bundle_source, models_dir, tmp_path):
    parent = formats.install(formats.inspect(bundle_source), confirmed=True)
    dataset = write_dataset(tmp_path / "Dataset_spleen", "spleen")
    records = []
    new = run(dataset, parent, progress=records.append)
    check_new_version(parent, new, records, dataset)
    assert new.version == "0.3.2" and new.weights == "tiny_spleen_ct_segmentation-0.3.2"
    old_w, new_w = (Path(c.weights_path) / "models" / "model.pt" for c in (parent, new))
    assert file_digest(old_w) != file_digest(new_w)
    state = torch.load(str(new_w), weights_only=True)  # a plain state dict, as the bundle's config loads it
    assert set(state) == set(torch.load(str(old_w), weights_only=True))
    assert (Path(new.weights_path) / "configs" / "inference.json").is_file()
    # reloads through the import format and segments an image
    runner = formats.load(registry.load_card(Path(new.path) / f"{new.weights}.json"), "cpu")
    image, _ = synthetic_case((18, 20, 22), (2.0, 1.5, 1.5), "CT", np.random.default_rng(9))
    pred = runner.predict(VolumeImage(image, (2.0, 1.5, 1.5)))
    assert pred.labels.shape == image.shape and set(np.unique(pred.labels)) <= {0, 1}


def test_bundle_preprocessing_step_that_cannot_carry_labels_is_refused(bundle_source, tmp_path):
    from inference.finetune_monai_bundle import LABEL_KEY, training_steps

    config = json.loads((bundle_source / "configs" / "inference.json").read_text())
    steps = training_steps(config, "image", "inference.json")
    by_name = {s["_target_"]: s for s in steps}
    assert by_name["Spacingd"]["keys"] == ["image", LABEL_KEY]
    assert by_name["Spacingd"]["mode"] == ["bilinear", "nearest"]  # the label map is resampled nearest
    assert by_name["Orientationd"]["keys"] == ["image", LABEL_KEY]
    assert by_name["ScaleIntensityRanged"]["keys"] == "image"  # intensity: image only
    config["preprocessing"]["transforms"].insert(2, {"_target_": "Lambdad", "keys": "image", "func": "$lambda x: x"})
    with pytest.raises(FinetuneError, match="Lambdad.*label map"):
        training_steps(config, "image", "inference.json")


def test_torchscript_bundle_is_refused_plainly(tmp_path, models_dir):
    card = formats.install(formats.inspect(make_bundle(tmp_path, name="ts_bundle", torchscript=True)), confirmed=True)
    assert "TorchScript" in trainable(card)
    with pytest.raises(FinetuneError, match="cannot be fine-tuned.*TorchScript"):
        run(write_dataset(tmp_path / "ds", "spleen", n_cases=2), card)


# --------------------------------------------------------------------------
# nnU-Net v2
# --------------------------------------------------------------------------
def test_nnunet_fine_tunes_reloads_and_runs(models_dir, tmp_path):
    pytest.importorskip("nnunetv2")
    pytest.importorskip("dynamic_network_architectures")
    from inference.formats import nnunet as nn_format
    from tests.model_fixtures.nnunet_folder import build_model_folder

    folder = build_model_folder(tmp_path / "nnunet", modality="CT", folds=(0,))
    plan = formats.inspect(folder)
    # test-time mirroring off (a card setting Analyze honours): validation runs 1 pass per window, not 8
    parent = formats.install(plan, {"input": {**plan.card["input"], "mirroring": False}}, confirmed=True)
    dataset = write_dataset(tmp_path / "Dataset_blob", "blob", shape=(24, 28, 20), spacing=(1.0, 1.0, 2.0))
    records = []
    new = run(dataset, parent, progress=records.append)
    check_new_version(parent, new, records, dataset)
    ck_path = Path(new.weights_path) / new.extra["nnunet"]["checkpoints"]["0"]
    assert ck_path.name == "checkpoint_final.pth"
    ck = nn_format.read_checkpoint(ck_path)  # weights-only, nnU-Net's allow-list
    old = nn_format.read_checkpoint(Path(parent.weights_path) / parent.extra["nnunet"]["checkpoints"]["0"])
    assert ck["trainer_name"] == old["trainer_name"] and ck["init_args"] == old["init_args"]
    assert set(ck["network_weights"]) == set(old["network_weights"])
    assert any(not torch.equal(ck["network_weights"][k], old["network_weights"][k]) for k in old["network_weights"])
    runner = formats.load(new, "cpu")
    image, _ = synthetic_case((22, 26, 18), (1.0, 1.0, 2.0), "CT", np.random.default_rng(5))
    pred = runner.predict(VolumeImage(image, (1.0, 1.0, 2.0)))
    assert pred.labels.shape == image.shape and pred.probabilities.shape == (2, *image.shape)
    # nnU-Net's own predictor loads the new folder too, and agrees
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_mirroring=False, device=torch.device("cpu"),
                                perform_everything_on_device=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(Path(new.weights_path) / new.extra["nnunet"]["model_dir"]),
                                                   ("0",))
    theirs = predictor.predict_single_npy_array(image[None], {"spacing": [1.0, 1.0, 2.0]}, None, None, False)
    assert np.mean(theirs == pred.labels) > 0.999


def test_nnunet_region_based_card_is_refused():
    card = registry.ModelCard(name="regions", version="1", task="segmentation-3d", modality="CT",
                              architecture="nnunet-v2", extra={"nnunet": {"region_based": True}})
    assert "regions" in trainable(card)


# --------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, words", [("onnx", "ONNX files hold no trainable parameters"),
                                        ("torch-export", "a torch.export program is a graph frozen")])
def test_formats_without_trainable_parameters_are_refused(fmt, words, tmp_path):
    card = registry.ModelCard(name="frozen", version="1", task="segmentation-3d", modality="CT", architecture=fmt)
    assert words in trainable(card)
    dataset = write_dataset(tmp_path / "ds", "organ", n_cases=2)
    with pytest.raises(FinetuneError, match=f"frozen 1 cannot be fine-tuned: {words}"):
        run(dataset, card)
    with pytest.raises(FinetuneError, match="cannot be fine-tuned"):
        plan_imported(dataset, card)


def test_augmentation_and_other_modality_are_refused(bundle_source, models_dir, tmp_path):
    card = formats.install(formats.inspect(bundle_source), confirmed=True)
    dataset = write_dataset(tmp_path / "ds", "spleen", n_cases=2)
    with pytest.raises(FinetuneError, match="without it"):
        run(dataset, card, augment="cgan")
    mr = write_dataset(tmp_path / "mr", "spleen", n_cases=2, modality="MR")
    with pytest.raises(FinetuneError, match="does not match the modality"):
        run(mr, card)
    with pytest.raises(FinetuneError, match="no validation case|nothing left to validate"):
        run(dataset, card, val_fraction=0.0)


# --------------------------------------------------------------------------
# TorchScript (a described card)
# --------------------------------------------------------------------------
def _torchscript(tmp_path, frozen: bool = False) -> Path:
    from tests.model_fixtures.monai_bundle import tiny_network

    net = tiny_network(seed=1)
    scripted = torch.jit.script(net.eval())
    if frozen:
        scripted = torch.jit.freeze(scripted)
    path = tmp_path / ("frozen.pt" if frozen else "organ.pt")
    torch.jit.save(scripted, str(path))
    return path


def _ts_answers(name: str) -> dict:
    return {"name": name, "task": "segmentation-3d", "modality": "CT", "classes": ["background", "organ"],
            "normalization": {"kind": "hu_window", "window": [-57, 164], "range": [0, 1]},
            "input": {"spacing_mm": [2.0, 1.5, 1.5], "patch_size": [16, 16, 16], "overlap": 0.25}}


def test_torchscript_fine_tunes_and_a_frozen_one_is_refused(models_dir, tmp_path):
    parent = formats.install(formats.inspect(_torchscript(tmp_path)), _ts_answers("organ-ts"))
    assert trainable(parent) is None
    dataset = write_dataset(tmp_path / "Dataset_organ", "organ")
    records = []
    new = run(dataset, parent, progress=records.append)
    check_new_version(parent, new, records, dataset)
    assert new.weights == "organ-ts-1.1.pt" and file_digest(new.weights_path) != file_digest(parent.weights_path)
    image, _ = synthetic_case((18, 20, 22), (2.0, 1.5, 1.5), "CT", np.random.default_rng(9))
    pred = formats.load(new, "cpu").predict(VolumeImage(image, (2.0, 1.5, 1.5)))
    assert pred.labels.shape == image.shape

    frozen = formats.install(formats.inspect(_torchscript(tmp_path, frozen=True)), _ts_answers("frozen-ts"))
    assert "no trainable parameters" in trainable(frozen)
    with pytest.raises(FinetuneError, match="frozen-ts 1 cannot be fine-tuned: the TorchScript file holds no"):
        run(dataset, frozen)


def test_parameters_the_forward_pass_never_uses_are_frozen_for_ddp():
    """nnU-Net built without deep supervision keeps its lower-resolution heads; DDP refuses them."""
    from inference.finetune_imported import freeze_unused

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.head = torch.nn.Conv3d(1, 2, 1), torch.nn.Conv3d(1, 2, 1)
            self.norm = torch.nn.BatchNorm3d(2)

        def forward(self, x):
            return self.norm(self.used(x))

    net = Net().train()
    stats = net.norm.running_mean.clone()
    assert freeze_unused(net, torch.ones(1, 1, 4, 4, 4)) == ["head.weight", "head.bias"]
    assert net.training and all(p.requires_grad for p in net.used.parameters())
    assert not any(p.requires_grad for p in net.head.parameters()) and net.used.weight.grad is None
    assert torch.equal(net.norm.running_mean, stats)  # probed in eval mode


def test_2d_bundle_fine_tunes_on_mammography_views(models_dir, tmp_path):
    """A 2D lesion bundle on single views (1, rows, cols), as the app exports mammograms."""
    import SimpleITK as sitk

    card = formats.install(formats.inspect(make_bundle(tmp_path, name="mg_lesion", spatial_dims=2)), confirmed=True)
    root = tmp_path / "Dataset_mg"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:60, :50]
    for i in range(4):
        lesion = ((yy - 30 - rng.integers(-5, 5)) ** 2 + (xx - 25) ** 2 < 64).astype(np.uint8)
        image = (1500 + 300 * rng.normal(size=lesion.shape) + 1500.0 * lesion).astype(np.float32)
        for arr, path in ((image, root / "imagesTr" / f"v{i}_0000.nii.gz"),
                          (lesion, root / "labelsTr" / f"v{i}.nii.gz")):
            img = sitk.GetImageFromArray(arr[None])
            img.SetSpacing((0.3, 0.3, 1.0))
            sitk.WriteImage(img, str(path))
    meta = {"channel_names": {"0": "MG"}, "labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    records = []
    new = run(root, card, progress=records.append, epochs=2, steps_per_epoch=3)
    check_new_version(card, new, records, root)
    pred = formats.load(new, "cpu").predict(VolumeImage(image[None], (1.0, 0.3, 0.3)))
    assert pred.labels.shape == (1, 60, 50)
