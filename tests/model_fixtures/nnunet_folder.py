"""A real nnU-Net v2 trained model folder, made with nnunetv2's own code, tiny and quick.

nnunetv2 writes the dataset fingerprint, plans the experiment and preprocesses the cases; its
nnUNetTrainer builds the network from the plans, runs one short epoch on the preprocessed cases
(two optimizer steps, one validation step: the checkpoint then holds what a trained one holds,
numpy scalars in its log included) and saves ``checkpoint_final.pth`` with its own save_checkpoint.
Only the plans are shrunk (few features, three stages, a small patch) so that all of it takes
seconds on a CPU. The result is laid out exactly as nnU-Net writes it:

    <results>/<DatasetXXX_Name>/nnUNetTrainer__nnUNetPlans__3d_fullres/
        dataset.json  plans.json  dataset_fingerprint.json  fold_0/checkpoint_final.pth ...
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np

CT_SPACING_ZYX = (1.0, 1.0, 2.0)  # largest spacing on x: nnU-Net transposes x to the front
MR_SPACING_ZYX = (1.2, 1.0, 1.0)


@contextlib.contextmanager
def nnunet_env(root: Path):
    """nnUNet_raw / _preprocessed / _results under ``root`` while nnU-Net runs; restored after."""
    names = {"nnUNet_raw": root / "raw", "nnUNet_preprocessed": root / "preprocessed",
             "nnUNet_results": root / "results", "nnUNet_compile": "f"}
    old = {k: os.environ.get(k) for k in names}
    try:
        for k, v in names.items():
            os.environ[k] = str(v)
            if isinstance(v, Path):
                v.mkdir(parents=True, exist_ok=True)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def synthetic_case(shape, spacing_zyx, modality: str, rng: np.random.Generator):
    """(image, label) in sitk array order: a bright ellipsoid blob in a body; MR has a zero background."""
    z, y, x = np.indices(shape, dtype=np.float32)
    centre = [s / 2 + rng.uniform(-2, 2) for s in shape]
    radius = [max(3.0, s / 6) for s in shape]
    blob = sum(((a - c) / r) ** 2 for a, c, r in zip((z, y, x), centre, radius)) <= 1.0
    size = 0.45 if modality == "CT" else 0.3  # MR: a head in air, so nnU-Net normalises inside the nonzero mask
    body = sum(((a - s / 2) / (size * s)) ** 2 for a, s in zip((y, x), shape[1:])) <= 1.0
    noise = rng.normal(0, 1, shape).astype(np.float32)
    if modality == "CT":
        img = np.where(body, 40.0 + 15 * noise, -1000.0 + 5 * noise)
        img = np.where(blob, 160.0 + 20 * noise, img)
    else:
        img = np.where(body, 300.0 + 30 * noise, 0.0)
        img = np.where(blob, 700.0 + 40 * noise, img)
    label = (blob & body).astype(np.uint8)
    return img.astype(np.float32), label


def _write(arr, spacing_zyx, path: Path):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    sitk.WriteImage(img, str(path))


def _shrink(plans: dict, configuration: str, patch_size, features=(4, 8, 16)) -> None:
    """Make the planned U-Net tiny: three stages, few features, one conv per stage, a small patch."""
    cfg = plans["configurations"][configuration]
    dim = len(patch_size)
    kw = cfg["architecture"]["arch_kwargs"]
    strides = [[1] * dim] + [[2] * dim] * (len(features) - 1)  # the patch must divide by 2 ** (stages - 1)
    kw.update(n_stages=len(features), features_per_stage=list(features), kernel_sizes=[[3] * dim] * len(features),
              strides=strides)
    conv_key = "n_conv_per_stage" if "n_conv_per_stage" in kw else "n_blocks_per_stage"
    kw[conv_key] = [1] * len(features)
    kw["n_conv_per_stage_decoder"] = [1] * (len(features) - 1)
    cfg["patch_size"] = list(patch_size)
    cfg["batch_size"] = 2
    for other in [c for c in plans["configurations"] if c != configuration]:
        del plans["configurations"][other]


def build_model_folder(root, *, modality: str = "CT", dataset_id: int = 501, folds=(0, 1),
                       patch_size=(16, 16, 16), features=(4, 8, 16), seed: int = 0,
                       labels: dict | None = None, regions_class_order: list | None = None,
                       configuration: str = "3d_fullres") -> Path:
    """Build a trained-model folder under ``root`` with nnunetv2; returns it (Trainer__Plans__<configuration>).

    ``features`` per stage and ``patch_size`` set the network's size (the benchmark uses a bigger one);
    ``configuration`` "2d" trains nnU-Net's slice-wise network (give a 2-entry patch_size); region-based
    ``labels`` need ``regions_class_order``."""
    import torch

    root = Path(root)
    name = f"Dataset{dataset_id:03d}_Lbx{modality}"
    spacing = CT_SPACING_ZYX if modality == "CT" else MR_SPACING_ZYX
    shape = (24, 28, 20) if modality == "CT" else (20, 28, 28)
    labels = labels or {"background": 0, "blob": 1}
    rng = np.random.default_rng(seed)
    quiet = io.StringIO()
    with nnunet_env(root), contextlib.redirect_stdout(quiet):
        raw = root / "raw" / name
        (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
        (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
        n_cases = 3
        for i in range(n_cases):
            img, lab = synthetic_case(shape, spacing, modality, rng)
            _write(img, spacing, raw / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
            _write(lab, spacing, raw / "labelsTr" / f"case_{i:03d}.nii.gz")
        channel = "CT" if modality == "CT" else "T2"
        dataset = {"channel_names": {"0": channel}, "labels": labels, "numTraining": n_cases,
                   "file_ending": ".nii.gz", "name": name}
        if regions_class_order is not None:
            dataset["regions_class_order"] = list(regions_class_order)
        (raw / "dataset.json").write_text(json.dumps(dataset, indent=2))

        from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor as fe
        from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiment_dataset
        from nnunetv2.run.run_training import get_trainer_from_args

        fpe = fe.DatasetFingerprintExtractor(dataset_id, 1, verbose=False)
        fpe.show_progress_bar = False
        fpe.num_foreground_voxels_for_intensitystats = 30000  # 1e8 by default: seconds of sorting for 3 tiny cases
        with _in_process_pool(fe):
            fpe.run(overwrite_existing=True)
        plan_experiment_dataset(dataset_id)
        pre = root / "preprocessed" / name
        plans_path = pre / "nnUNetPlans.json"
        plans = json.loads(plans_path.read_text())
        _shrink(plans, configuration, patch_size, features)
        plans_path.write_text(json.dumps(plans, indent=2))

        # preprocess every case the way nnUNetv2_preprocess does, without its process pool
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        pm = PlansManager(str(plans_path))
        cm = pm.get_configuration(configuration)
        dataset_json = json.loads((pre / "dataset.json").read_text()) if (pre / "dataset.json").exists() else \
            json.loads((raw / "dataset.json").read_text())
        out = pre / cm.data_identifier
        out.mkdir(parents=True, exist_ok=True)
        preprocessor = cm.preprocessor_class(verbose=False)
        for i in range(n_cases):
            image, label = raw / "imagesTr" / f"case_{i:03d}_0000.nii.gz", raw / "labelsTr" / f"case_{i:03d}.nii.gz"
            preprocessor.run_case_save(str(out / f"case_{i:03d}"), [str(image)], str(label), pm, cm, dataset_json)
        (pre / "dataset.json").write_text((raw / "dataset.json").read_text())

        torch.manual_seed(seed)
        for fold in folds:
            trainer = get_trainer_from_args(str(dataset_id), configuration, fold, device=torch.device("cpu"))
            trainer.initialize()
            trainer.logger.plot_progress_png = lambda folder: None  # matplotlib: seconds, nothing the model needs
            trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # sets the inference mirror axes
            _one_epoch(trainer, patch_size, labels, rng)
            trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_final.pth"))
            folder = Path(trainer.output_folder_base)
        # nnUNetv2_train copies these beside the folds
        (folder / "dataset.json").write_text((raw / "dataset.json").read_text())
        (folder / "plans.json").write_text(plans_path.read_text())
        (folder / "dataset_fingerprint.json").write_text((pre / "dataset_fingerprint.json").read_text())
    return folder


class _InlineResult:
    def __init__(self, value):
        self.value = value

    def ready(self):
        return True

    def get(self):
        return self.value


class _InlinePool:
    """What the fingerprint extractor uses of multiprocessing's Pool, run in this process: a spawned
    worker would import torch and nnunetv2 again (seconds) for three tiny cases."""

    _pool: list = []

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def starmap_async(self, fn, args):
        return _InlineResult([fn(*a) for a in args])


@contextlib.contextmanager
def _in_process_pool(module):
    import types

    real = module.multiprocessing
    module.multiprocessing = types.SimpleNamespace(get_context=lambda *a: types.SimpleNamespace(Pool=_InlinePool))
    try:
        yield
    finally:
        module.multiprocessing = real


def _one_epoch(trainer, patch_size, labels, rng) -> None:
    """One tiny epoch through the trainer's own hooks: two optimizer steps and a validation step,
    so the weights are not the initial ones and the log holds what a real training's does."""
    import torch

    n_out = trainer.label_manager.num_segmentation_heads
    scales = trainer._get_deep_supervision_scales()

    def batch():
        data = torch.from_numpy(rng.normal(0, 1, (2, 1, *patch_size)).astype(np.float32))
        seg = torch.from_numpy((data.numpy() > 0.8).astype(np.float32))
        if trainer.label_manager.has_regions:
            seg = torch.cat([seg] * n_out, 1)
        targets = [seg if s is None or all(v == 1 for v in s) else
                   torch.nn.functional.interpolate(seg, scale_factor=tuple(s), mode="nearest-exact")
                   for s in (scales or [None])]
        return {"data": data, "target": targets if trainer.enable_deep_supervision else targets[0]}

    trainer.on_epoch_start()
    trainer.on_train_epoch_start()
    trainer.on_train_epoch_end([trainer.train_step(batch()) for _ in range(2)])
    trainer.on_validation_epoch_start()
    with torch.no_grad():
        trainer.on_validation_epoch_end([trainer.validation_step(batch())])
    trainer.on_epoch_end()
