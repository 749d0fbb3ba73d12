"""Importing and running a MONAI bundle: Lightbox's output equals MONAI's own bundle run.

The bundle is real (monai.bundle.init_bundle, ckpt_export), tiny and randomly initialised; the
input is oblique, anisotropic and LPS, so the bundle's Orientationd, Spacingd and Invertd all work.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from inference import formats, registry
from inference.formats import NotImportable, VolumeImage
from inference.formats.base import tree_digest
from inference.segment import Cancelled
from model_fixtures.monai_bundle import make_bundle, probability_config, zip_bundle



def rotation(ax_deg, ay_deg, az_deg):
    ax, ay, az = np.radians([ax_deg, ay_deg, az_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_ct() -> VolumeImage:
    """A soft-tissue ball in fat, noisy, on an oblique, anisotropic LPS grid (z, y, x)."""
    rng = np.random.default_rng(3)
    shape, spacing = (11, 22, 26), (3.0, 0.8, 1.1)
    z, y, x = np.indices(shape)
    mm = np.sqrt(((z - 5) * spacing[0]) ** 2 + ((y - 9) * spacing[1]) ** 2 + ((x - 14) * spacing[2]) ** 2)
    arr = np.where(mm < 10, 60.0, -90.0) + rng.normal(0, 25, shape)
    return VolumeImage(arr.astype(np.float32), spacing, origin=(-12.5, 30.0, -7.0),
                       direction=rotation(15, -10, 25)[:, ::-1].copy(), modality="CT")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return {"pt": make_bundle(root), "ts": make_bundle(root, name="tiny_spleen_ts", torchscript=True)}


@pytest.fixture(scope="module")
def input_nifti(tmp_path_factory):
    """The volume as the NIfTI a user would give MONAI (written as the runner writes its own)."""
    import SimpleITK as sitk

    path = tmp_path_factory.mktemp("input") / "case.nii.gz"
    sitk.WriteImage(oblique_ct().to_sitk(), str(path))
    return path


def monai_run(bundle: Path, nifti: Path, out: Path, config: Path | None = None) -> np.ndarray:
    """MONAI's own bundle run on ``nifti``; its SaveImaged output as (C, z, y, x)."""
    from monai.bundle import run

    run(run_id="run", meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(config or bundle / "configs" / "inference.json"), bundle_root=str(bundle),
        datalist=[str(nifti)], output_dir=str(out))
    (saved,) = sorted(out.glob("*.nii.gz"))
    arr = np.asarray(nib.load(str(saved)).dataobj, dtype=np.float32)  # x, y, z[, C]
    if arr.ndim == 2:  # a 2D image: z of one
        arr = arr[:, :, None]
    arr = arr.reshape(arr.shape[:3] + (-1,))
    return np.ascontiguousarray(np.transpose(arr, (3, 2, 1, 0)))


def installed(bundle, **kw):
    return formats.install(formats.inspect(bundle), confirmed=True, **kw)


# --------------------------------------------------------------------------
def test_plan_reads_the_bundle_and_lists_its_code_without_running_it(bundles, tmp_path):
    bundle = shutil.copytree(bundles["pt"], tmp_path / "spleen")
    marker = tmp_path / "ran"
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config["imports"].append("$import pathlib")
    config["touch"] = f"$pathlib.Path({str(marker)!r}).touch()"
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))

    plan = formats.inspect(bundle)
    assert plan.format == "monai-bundle" and formats.detect(bundle) == "monai-bundle"
    card = plan.card
    assert (card["name"], card["version"], card["task"], card["modality"]) == (
        "spleen", "0.3.1", "segmentation-3d", "CT")
    assert card["classes"] == ["background", "spleen"]
    assert card["input"]["spacing_mm"] == [2.0, 1.5, 1.5]  # pixdim (x, y, z) = 1.5, 1.5, 2.0
    assert card["input"]["patch_size"] == [16, 16, 16] and card["input"]["inferer"] == "SlidingWindowInferer"
    assert card["normalization"]["kind"] == "monai-bundle"
    assert "ScaleIntensityRanged" in card["normalization"]["transforms"]
    assert card["licence"].startswith("Apache-2.0") and "Task09_Spleen" in card["training_data"]
    assert card["domain"] == {} and plan.needs == []

    code = plan.runs_code
    assert "inference.json:network: $@network_def.to(@device)" in code
    assert "inference.json:preprocessing#transforms#0: _target_ monai.transforms.LoadImaged" in code
    assert "inference.json:network_def: _target_ monai.networks.nets.UNet" in code
    assert "inference.json:imports#2: $import pathlib" in code
    assert f"inference.json:touch: $pathlib.Path({str(marker)!r}).touch()" in code
    assert plan.needs_confirmation
    assert not marker.exists()  # planning executed nothing

    files = {p.as_posix() for p in plan.files}
    assert {"configs/metadata.json", "configs/inference.json", "models/model.pt", "LICENSE"} <= files
    assert not any(f.startswith("eval/") for f in files)

    runner, _ = registry.load_model(installed(bundle, dest=tmp_path / "models"))
    assert not marker.exists()  # running needs only network, pre/postprocessing and inferer


def test_modality_the_bundle_does_not_name_must_be_filled_in(bundles, tmp_path):
    bundle = shutil.copytree(bundles["pt"], tmp_path / "mystery")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["inputs"]["image"].update(modality="ultrasound", format="magnitude")
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    plan = formats.inspect(bundle)
    assert plan.needs == ["modality"]
    with pytest.raises(NotImportable, match="modality"):
        formats.install(plan, confirmed=True, dest=tmp_path / "models")
    meta["network_data_format"]["inputs"]["image"]["modality"] = "MRI"
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    assert formats.inspect(bundle).card["modality"] == "MR"


def test_install_needs_confirmation_and_records_it(bundles, models_dir):
    plan = formats.inspect(bundles["pt"])
    with pytest.raises(NotImportable, match="confirm"):
        formats.install(plan)
    assert not list(models_dir.glob("*.json")) if models_dir.exists() else True

    card = formats.install(plan, confirmed=True)
    assert card.architecture == "monai-bundle" and card.imported
    assert card.extra["import"]["code_confirmed"] == plan.runs_code
    folder = card.weights_path
    assert folder.is_dir() and folder.parent == models_dir
    assert not (folder / "eval").exists() and (folder / "models" / "model.pt").is_file()
    assert card.sha256 == tree_digest(folder)
    assert registry.find_model(card.name).sha256 == card.sha256


def test_prediction_equals_monai_bundle_run(bundles, models_dir, input_nifti, tmp_path):
    """The key check: same labels and probabilities as `monai.bundle run` on the same NIfTI."""
    bundle = bundles["pt"]
    runner, card = registry.load_model(installed(bundle))
    image = oblique_ct()
    steps = []
    pred = runner.predict(image, progress=steps.append)
    assert steps == sorted(steps) and steps[-1] == 1.0

    assert pred.classes == ["background", "spleen"]
    assert pred.labels.shape == image.array.shape
    assert pred.probabilities.shape == (2,) + image.array.shape and pred.probabilities.dtype == np.float32
    assert set(np.unique(pred.labels)) == {0, 1}  # the check means something only if both occur

    ref_labels = monai_run(bundle, input_nifti, tmp_path / "labels")[0]
    ref_probs = monai_run(bundle, input_nifti, tmp_path / "probs",
                          config=probability_config(bundle, tmp_path / "inference_probs.json"))
    assert np.array_equal(pred.labels, ref_labels.astype(pred.labels.dtype))
    assert ref_probs.shape == pred.probabilities.shape
    assert float(np.abs(pred.probabilities - ref_probs).max()) < 1e-4
    assert np.array_equal(pred.labels, np.argmax(pred.probabilities, axis=0))
    # the bundle's SaveImaged (into <bundle_root>/eval) did not run: nothing written, digest intact
    assert not (card.weights_path / "eval").exists()
    assert registry.check_model(card) == registry.UNVERIFIED


def test_2d_bundle_on_a_mammogram(tmp_path, models_dir):
    """A 2D bundle gets one (1, rows, cols) image, as Analyze gives a mammogram view."""
    import SimpleITK as sitk

    bundle = make_bundle(tmp_path, name="tiny_mammo_lesion", spatial_dims=2)
    plan = formats.inspect(bundle)
    assert (plan.card["task"], plan.card["modality"]) == ("segmentation-2d", "MG")
    assert plan.card["input"]["spacing_mm"] == [0.3, 0.3] and plan.card["input"]["patch_size"] == [16, 16]
    runner, _ = registry.load_model(formats.install(plan, confirmed=True))
    rng = np.random.default_rng(5)
    view = VolumeImage(rng.uniform(0, 4095, (1, 30, 22)).astype(np.float32), (1.0, 0.2, 0.25),
                       direction=np.column_stack([[0, 0, 1], [0, 1, 0], [1, 0, 0]]).astype(float), modality="MG")
    pred = runner.predict(view)
    assert pred.labels.shape == (1, 30, 22) and pred.probabilities.shape == (2, 1, 30, 22)
    assert set(np.unique(pred.labels)) == {0, 1}

    nifti = tmp_path / "view.nii.gz"
    sitk.WriteImage(view.to_sitk()[:, :, 0], str(nifti))
    ref = monai_run(bundle, nifti, tmp_path / "out")  # (1, 1, rows, cols): z of a 2D NIfTI is 1
    assert np.array_equal(pred.labels, ref[0].astype(pred.labels.dtype))


def test_output_without_inverting_postprocessing_is_resampled_back(bundles, tmp_path):
    """A bundle whose postprocessing has no Invertd: the runner maps the output from its affine
    back onto the input grid, as the bundle's Invertd would have."""
    bundle = shutil.copytree(bundles["pt"], tmp_path / "no_invert")
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config["postprocessing"]["transforms"] = [t for t in config["postprocessing"]["transforms"]
                                              if t["_target_"] != "Invertd"]
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    image = oblique_ct()
    with_invert, _ = registry.load_model(installed(bundles["pt"], dest=tmp_path / "a"))
    without, _ = registry.load_model(installed(bundle, dest=tmp_path / "b"))
    a, b = with_invert.predict(image), without.predict(image)
    assert b.probabilities.shape == a.probabilities.shape
    assert float(np.abs(a.probabilities - b.probabilities).max()) < 1e-4
    # labels: the bundle's argmax on its own grid resampled nearest, vs the argmax of probabilities
    # Invertd interpolated: they may differ only near a class border (within 2 voxels in either map)
    from scipy import ndimage

    def inside(labels):
        return ndimage.minimum_filter(labels, 5) == ndimage.maximum_filter(labels, 5)

    both = inside(a.labels) & inside(b.labels)
    assert both.mean() > 0.1 and np.array_equal(a.labels[both], b.labels[both])
    assert np.mean(a.labels == b.labels) > 0.9


def test_torchscript_bundle(bundles, models_dir, input_nifti, tmp_path):
    bundle = bundles["ts"]
    plan = formats.inspect(bundle)
    assert plan.card["extra"]["monai_bundle"]["weights"] == "models/model.ts"
    assert "models/model.ts" in {p.as_posix() for p in plan.files}
    # weights without code still come with a config that instantiates transforms
    assert "inference.json:preprocessing#transforms#0: _target_ monai.transforms.LoadImaged" in plan.runs_code
    runner, _ = registry.load_model(formats.install(plan, confirmed=True))
    assert isinstance(runner.network, torch.jit.ScriptModule)
    pred = runner.predict(oblique_ct())
    ref_labels = monai_run(bundle, input_nifti, tmp_path / "ts_out")[0]
    assert np.array_equal(pred.labels, ref_labels.astype(pred.labels.dtype))


def test_zip_bundle_imports_and_escaping_member_is_refused(bundles, models_dir, tmp_path):
    good = zip_bundle(bundles["pt"], tmp_path / "spleen.zip")
    plan = formats.inspect(good)
    assert plan.format == "monai-bundle" and plan.card["name"] == bundles["pt"].name
    card = formats.install(plan, confirmed=True)
    assert (card.weights_path / "configs" / "inference.json").is_file()
    assert card.extra["import"]["from"] == str(good.resolve())

    evil = zip_bundle(bundles["pt"], tmp_path / "evil.zip", extra_members={"../evil": b"owned"})
    with pytest.raises(NotImportable, match="outside"):
        formats.inspect(evil)
    assert not (tmp_path / "evil").exists()


def test_tampered_bundle_is_refused(bundles, models_dir):
    card = installed(bundles["pt"])
    assert registry.check_model(card) == registry.UNVERIFIED
    config = card.weights_path / "configs" / "inference.json"
    tampered = json.loads(config.read_text())
    tampered["network"] = "$__import__('os').system('echo owned')"
    config.write_text(json.dumps(tampered))
    with pytest.raises(registry.ChecksumError, match="sha256"):
        registry.check_model(card)
    with pytest.raises(registry.ChecksumError):
        registry.load_model(card)


def test_checkpoint_that_is_more_than_tensors_is_refused(bundles, tmp_path):
    bundle = shutil.copytree(bundles["pt"], tmp_path / "pickled")
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    torch.save({"model": state, "extra": copy.copy}, bundle / "models" / "model.pt")  # pickles a function
    card = installed(bundle, dest=tmp_path / "models")
    with pytest.raises(registry.ModelError, match="more than tensors"):
        registry.load_model(card)


def test_usual_checkpoint_layout_loads(bundles, tmp_path):
    """A CheckpointSaver-style checkpoint: {"model": state dict} with DataParallel's "module." prefix."""
    bundle = shutil.copytree(bundles["pt"], tmp_path / "saver")
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": torch.tensor(3)},
               bundle / "models" / "model.pt")
    image = oblique_ct()
    a, _ = registry.load_model(installed(bundles["pt"], dest=tmp_path / "a"))
    b, _ = registry.load_model(installed(bundle, dest=tmp_path / "b"))
    assert np.array_equal(a.predict(image).labels, b.predict(image).labels)


def test_cancel_stops_between_stages(bundles, tmp_path):
    runner, _ = registry.load_model(installed(bundles["pt"], dest=tmp_path / "models"))
    calls = []

    def cancel_after_preprocessing():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        runner.predict(oblique_ct(), cancel=cancel_after_preprocessing)
    assert len(calls) == 3


def test_image_the_bundle_cannot_take_is_reported_by_stage(bundles, tmp_path):
    """Two channels for a one-channel network: the error names the model and the failing stage."""
    runner, card = registry.load_model(installed(bundles["pt"], dest=tmp_path / "models"))
    ct = oblique_ct()
    two = VolumeImage(np.stack([ct.array, ct.array]), ct.spacing, ct.origin, ct.direction, "CT")
    with pytest.raises(RuntimeError, match=f"MONAI bundle {card.name} 0.3.1: its network failed"):
        runner.predict(two)
