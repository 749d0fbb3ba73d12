"""Fine-tune a model from its current weights on an exported dataset, writing a new version.

    python -m inference.finetune DATASET [--model NAME] --epochs 5 [--device auto] [--augment classic|cgan]

:func:`finetune` dispatches on the model's task: 3D segmentation (here), 2D segmentation
(``finetune_seg2d``), the mammography exam classifier (``finetune_exam``) and patch classifier
(``finetune_patch``); they share the dataset reading, the training run, versioning and card writing
in ``finetune_common`` (:func:`save_version`), which none of them imports back. Imported models go
to ``finetune_imported``, the lesion infill cGAN to ``infill_finetune``. The three mammography
fine-tuners can add synthetic positives to their training split (``--augment``, ``finetune_augment``).

3D segmentation reads ``DATASET/dataset.json`` (channel names, labels) and the ``imagesTr``/``labelsTr`` NIfTI
pairs, maps the dataset's label names onto the model's classes, splits cases into training and
validation (seeded), trains from the model's current weights with the same loss and crops as
``train_seg`` (Dice + cross-entropy, random patches, half of them on the rarest class), reports
loss and per-class validation Dice after every epoch, and writes a NEW version of the model
(weights + card with the training-data summary and metrics) into the user's model folder.
The shipped model is never overwritten.

Retraining cannot put a worse model in charge (``inference.activation`` holds the rule):

* The run starts from the version Analyze uses now (the parent) and needs validation cases: a
  dataset too small to hold one out is refused unless ``allow_no_validation`` is given, and a
  version trained that way is written "unvalidated" and never used automatically.
* The parent is scored on the same validation cases before training; the new version is
  "better" (used by Analyze from now on) only when its score is not worse, else it is kept as
  "not better" and Analyze keeps the parent. The verdict and both numbers are in the new card
  (``extra["activation"]``).
* Labels are matched before training: a dataset label the model lacks would be ignored, so the
  run is refused unless ``ignore_extra_labels`` is given; a model class without labels in the
  dataset is trained as background, which is said as a warning.

A new version gets its own domain description (``card.domain``, the out-of-distribution check of
``inference.domain``), computed with ITS network from all the exported cases, plus a few of the
demo training phantoms (``domain_fit.DEMO_SUBSET``) when the parent was described from them: the
cases it was trained on are no longer "unlike this model's training data". When that cannot be
done (fewer than 3 cases, another kind of description, an error) the parent's is kept;
``extra["domain_note"]`` says which (:func:`version_domain`).

Several GPUs or machines: run it under torchrun, e.g.

    torchrun --nproc_per_node 4 -m inference.finetune DATASET --epochs 20
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_endpoint HOST:29500 -m inference.finetune DATASET

Each process trains on its own random crops with DistributedDataParallel (NCCL on CUDA, gloo on
CPU) averaging the gradients; rank 0 validates and writes the new version.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from inference import activation, registry
from inference.device import DeviceError, pick_device
from inference.finetune_augment import METHODS, check_augment
from inference.preprocess import ct as ctp
from inference.finetune_common import (  # noqa: F401 - the public names callers import from here
    Progress,
    Warn,
    ALLOW_NO_VALIDATION,
    IGNORE_EXTRA_LABELS,
    FinetuneError,
    Stopped,
    read_dataset,
    label_values,
    label_remap,
    check_modality,
    dice_per_class,
    LabelCheck,
    label_counts,
    segmentation_labels,
    Plan,
    split_indices,
    split_by_exam,
    exam_of_pairs,
    parent_card,
    judge_segmentation,
    next_version,
    free_version,
    DomainCases,
    MIN_DOMAIN_CASES,
    version_domain,
    save_version,
    cosine_lr,
    Run,
    start_run,
    train_segmentation,
)

SEGMENTATION_TASKS = ("segmentation-3d", "segmentation-2d")
def load_case(image: Path, label: Path, card, lut: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalized input (C,z,y,x), labels (z,y,x) in model classes) on the model's grid."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(image))
    lab = sitk.ReadImage(str(label))
    if img.GetSize() != lab.GetSize():
        raise FinetuneError(f"{label.name}: size {lab.GetSize()} differs from its image {img.GetSize()}")
    hu = sitk.GetArrayFromImage(img).astype(np.float32)
    spacing = tuple(float(s) for s in reversed(img.GetSpacing()))
    labels = sitk.GetArrayFromImage(lab).astype(np.int64)
    if labels.max(initial=0) >= len(lut):
        raise FinetuneError(f"{label.name}: label value {labels.max()} is not in dataset.json")
    model_spacing = tuple(float(s) for s in card.input["spacing_mm"])
    x = ctp.to_model_grid(hu, spacing, model_spacing, card.normalization)
    classes = len(card.classes)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(lut[labels]).long(), classes)
    y = ctp.resample(onehot.permute(3, 0, 1, 2).to(torch.uint8), x.shape[1:]).argmax(0).to(torch.uint8)
    return x, y


def check_channels(meta: dict, card) -> None:
    channels = {str(v).upper() for v in meta.get("channel_names", {}).values()}
    if channels and card.modality.upper() not in channels:
        raise FinetuneError(f"dataset channels {sorted(channels)} do not match the model's modality {card.modality}")


def plan(dataset, card, val_fraction: float = 0.2, seed: int = 0) -> Plan:
    """The checked plan of fine-tuning ``card`` on ``dataset`` (reads dataset.json and the label maps
    or the classification rows; no image is prepared). Raises FinetuneError for a dataset this model
    cannot learn from at all."""
    if card.imported:
        return imported_module().plan_imported(dataset, card, val_fraction, seed)
    if card.task == "exam-classifier":
        from inference.finetune_exam import plan_exam

        return plan_exam(dataset, card, val_fraction, seed)
    if card.task == "lesion-infill":
        return infill_module().plan_infill(dataset, card, val_fraction, seed)
    if card.task not in SEGMENTATION_TASKS + ("patch-classifier",):
        raise FinetuneError(f"{card.name} is a {card.task} model; fine-tuning supports 3D and 2D segmentation "
                            "models, the patch and exam classifiers and the lesion infill cGAN")
    meta, pairs = read_dataset(dataset)
    if card.task == "segmentation-3d":
        check_channels(meta, card)
    else:
        check_modality(meta, card, dataset)
    learns = card  # whose classes the dataset's labels map to; a patch model learns mass/calcification masks
    if card.task == "patch-classifier":
        from inference.finetune_patch import label_card

        learns = label_card(card)
    lut = label_remap(meta.get("labels", {}), list(learns.classes))
    labels = segmentation_labels(meta, pairs, learns)
    train_idx, val_idx, val_exams = split_by_exam(exam_of_pairs(dataset, pairs), val_fraction, seed)
    unit = "cases" if card.task == "segmentation-3d" else "views"
    return Plan(card, labels, train_idx, val_idx, val_exams, len(pairs), unit, (meta, pairs, lut))


def infill_module():
    """inference.infill_finetune (training the lesion infill cGAN on a dataset's positives), or
    FinetuneError naming what is missing in an installation without it."""
    try:
        from inference import infill_finetune
    except ImportError as exc:
        raise FinetuneError(f"training the lesion infill cGAN is not available here ({exc})") from exc
    return infill_finetune


def imported_module():
    """inference.finetune_imported (fine-tuning MONAI bundles and nnU-Net folders), or FinetuneError
    naming what is missing in an installation without it."""
    try:
        from inference import finetune_imported
    except ImportError as exc:
        raise FinetuneError(f"fine-tuning imported models is not available in this installation ({exc})") from exc
    return finetune_imported


def preflight(dataset, model: str | None = None, val_fraction: float = 0.2, seed: int = 0) -> Plan:
    """The plan a run with these settings would follow, for a caller that asks the user first (the
    Train dialog shows the split and the label mismatches and asks before refusing)."""
    return plan(dataset, parent_card(model or default_model(dataset)), val_fraction, seed)


def default_model(dataset) -> str:
    """The shipped model a dataset trains when none is named: by its channel (CT -> the 3D organ
    model, MG -> the 2D mass model), or the exam classifier for a classification-only dataset."""
    root = Path(dataset)
    try:
        meta = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError):
        meta = {}
    channels = {str(v).upper() for v in (meta.get("channel_names") or {}).values()}
    has_masks = any((root / "labelsTr").glob("*.nii*"))
    if "MG" in channels and has_masks:
        return "mammo-lesion-unet2d"
    if not has_masks and ((root / "classification.json").is_file() or (root / "classification.csv").is_file()):
        return "mammo-exam"
    return "ct-organs-unet3d"


def check_arguments(epochs: int, steps_per_epoch: int, lr: float = 2e-4, batch: int = 2,
                    val_fraction: float = 0.2) -> None:
    """Refuse settings that would train nothing (and still write a "new" version) or cannot train."""
    for name, value in (("epochs", epochs), ("steps per epoch", steps_per_epoch), ("batch size", batch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise FinetuneError(f"{name} must be a whole number of at least 1, got {value!r}")
    if not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        raise FinetuneError(f"learning rate must be a positive number, got {lr!r}")
    if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
        raise FinetuneError(f"validation fraction must be at least 0 and below 1, got {val_fraction!r}")


def finetune(dataset, model: str | None = None, epochs: int = 5, steps_per_epoch: int = 20,
             lr: float = 2e-4, batch: int = 2, val_fraction: float = 0.2, seed: int = 0, device: str = "auto",
             out_dir=None, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
             allow_no_validation: bool = False, ignore_extra_labels: bool = False, warn: Warn | None = None,
             augment: str = "none", augment_count: int | None = None):
    """Fine-tune ``model`` (default: :func:`default_model`) from the version Analyze uses now on
    ``dataset``; returns the new ModelCard (saved in ``out_dir`` or the user's model folder), or None
    in a torchrun worker other than rank 0.

    Refused before training (FinetuneError): no validation case unless ``allow_no_validation``;
    dataset labels the model lacks unless ``ignore_extra_labels``. ``warn`` gets each model class the
    dataset does not label (trained as background). The new card's ``extra["activation"]`` says
    whether it beat its parent on the same validation cases (see :mod:`inference.activation`).

    ``augment`` ("none", "classic", "cgan"; mammography lesion U-Net, exam and patch classifiers only)
    adds ``augment_count`` synthetic positives (default: enough to bring the positives to about a third
    of the training items, see ``finetune_augment.default_count``) to the TRAINING split; the card's
    ``extra["augmentation"]`` records the method, count and, for "cgan", the infill model and its
    training data, and names the real-vs-synthetic grid PNG written beside the weights.

    ``progress`` gets a record after each epoch: {"epoch", "loss"} plus "val_dice": {class: dice}
    for segmentation models or "val_auc": {name: auc} for classifiers; while synthetic positives are
    made, {"stage": "augment", "done", "total"}.

    Imported models (MONAI bundles, nnU-Net folders) go to ``inference.finetune_imported``; the lesion
    infill cGAN to ``inference.infill_finetune`` (its plan and its training).
    """
    check_arguments(epochs, steps_per_epoch, lr, batch, val_fraction)
    card = parent_card(model or default_model(dataset))
    args = {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "lr": lr, "batch": batch, "seed": seed,
            "device": device, "out_dir": out_dir, "progress": progress, "should_stop": should_stop}
    check_augment(None if card.imported else card, augment, augment_count)  # imported: its fine-tuner decides
    if card.imported:
        return imported_module().finetune_imported(
            dataset, card, **args, val_fraction=val_fraction, allow_no_validation=allow_no_validation,
            ignore_extra_labels=ignore_extra_labels, warn=warn, augment=augment)
    checked = plan(dataset, card, val_fraction, seed)
    checked.require(allow_no_validation, ignore_extra_labels)
    for text in checked.labels.warnings():
        if warn is not None:
            warn(text)
    if card.task == "segmentation-3d":
        return _finetune_seg3d(dataset, checked, **args)
    if card.task == "lesion-infill":
        return infill_module().finetune_infill(dataset, checked, **args)
    augmented = {**args, "augment": augment, "augment_count": augment_count}
    if card.task == "segmentation-2d":
        from inference.finetune_seg2d import finetune_seg2d

        return finetune_seg2d(dataset, checked, **augmented)
    if card.task == "patch-classifier":
        from inference.finetune_patch import finetune_patch

        return finetune_patch(dataset, checked, **augmented)
    from inference.finetune_exam import finetune_exam

    return finetune_exam(dataset, checked, **augmented)


def _finetune_seg3d(dataset, checked: Plan, epochs: int, steps_per_epoch: int, lr: float, batch: int, seed: int,
                    device: str, out_dir, progress: Progress | None, should_stop):
    """3D fine-tuning: random crops (half on the rarest class) of the cases resampled to the model's
    spacing, the shared loop, validation by the same sliding window as inference on the model grid.
    No intensity augmentation: measured, it cost Dice on both benchmark shifts (docs/design-notes.md)."""
    from monai.inferers import sliding_window_inference

    from inference.train_seg import random_crop

    _meta, pairs, lut = checked.data
    card = checked.card
    run = start_run(device, seed, len(pairs), 0.0, split=(checked.train_idx, checked.val_idx))
    cases = [load_case(*pairs[i], card, lut) for i in range(len(pairs))]
    net, card = registry.load_model(card, device=run.device)
    patch = tuple(int(p) for p in card.input["patch_size"])
    rare = int(np.argmin([sum(int((c[1] == k).sum()) for c in cases) or 1 << 62
                          for k in range(len(card.classes))]))
    train_cases = [cases[int(i)] for i in run.train_idx] or cases[:1]

    def sample_batch():
        xs, ys = [], []
        for b in range(batch):
            x, y = train_cases[int(run.rng.integers(len(train_cases)))]
            xc, yc = random_crop(run.rng, x, y, patch, rare if b % 2 == 0 else None)  # padded as air (-1)
            xs.append(xc)
            ys.append(yc)
        return torch.stack(xs), torch.stack(ys)

    def validate() -> dict[str, float]:
        scores: dict[str, list[float]] = {}
        for i in run.val_idx:
            x, y = cases[i]
            logits = sliding_window_inference(x[None].to(run.device), patch, 4, net, overlap=0.25, mode="gaussian")
            for k, v in dice_per_class(logits[0].argmax(0).cpu(), y.long(), list(card.classes)).items():
                scores.setdefault(k, []).append(v)
        return {k: float(np.mean(v)) for k, v in scores.items()}

    before, history = train_segmentation(run, net, sample_batch, validate, epochs, steps_per_epoch, lr, progress,
                                         should_stop)
    if run.finished_worker():
        return None
    after = history[-1]["val_dice"] if history else {}
    summary = (f"{len(run.train_idx)} training and {len(run.val_idx)} validation cases, {epochs} epochs x "
               f"{steps_per_epoch} steps (seed {seed})")
    verdict = judge_segmentation(card, before, after, len(run.val_idx))
    new = save_version(net, checked, dataset, summary, {"val_dice_before": before, "val_dice": after,
                                                        "n_val_cases": len(run.val_idx), "epochs": history},
                       verdict, out_dir, {"processes": run.world}, volume_cases(pairs, run.device))
    run.close()
    return new


def volume_cases(pairs: list[tuple[Path, Path]], device) -> DomainCases:
    """The exported volumes as (HU (z, y, x), spacing (z, y, x)), as Analyze gets them, for
    segment_volume to run the new version on (its domain description)."""
    def cases():
        import SimpleITK as sitk

        for image, _label in pairs:
            img = sitk.ReadImage(str(image))
            yield (sitk.GetArrayFromImage(img).astype(np.float32),
                   tuple(float(s) for s in reversed(img.GetSpacing())))
    return DomainCases(len(pairs), cases, "cases", device)


def describe_metrics(record: dict) -> str:
    """'validation Dice lungs 0.981, ...' or 'validation AUC suspicious 0.912' for an epoch record."""
    parts = []
    for key, title in (("val_dice", "Dice"), ("val_auc", "AUC")):
        if key in record:
            values = ", ".join(f"{k} {v:.3f}" for k, v in record[key].items())
            parts.append(f"validation {title} {values or '-'}")
    return "; ".join(parts) or "no validation"


AUGMENT_HELP = ("add synthetic positives to the training split (mammography lesion U-Net, exam and patch "
                "classifiers): classic = flips, rotations, zoom and intensity jitter of the training positives; "
                "cgan = lesions infilled into the training normals by the mammo-infill-cgan model (Wu et al.); "
                "none (default). The new version's card records which, and a real-vs-synthetic grid PNG is "
                "written beside its weights")
AUGMENT_COUNT_HELP = ("how many synthetic positives (default: enough to bring the positives to about a third of "
                      "the training views, at most 64)")


def add_augment_options(ap: argparse.ArgumentParser) -> None:
    """--augment and --augment-count, shared by `lightbox train` and `python -m inference.finetune`."""
    ap.add_argument("--augment", choices=METHODS, default="none", help=AUGMENT_HELP)
    ap.add_argument("--augment-count", type=int, default=None, metavar="N", help=AUGMENT_COUNT_HELP)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="lightbox train", description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--model", default=None,
                    help="model to fine-tune (default: by the dataset: CT -> ct-organs-unet3d, MG masks -> "
                         "mammo-lesion-unet2d, classification only -> mammo-exam; MG masks also train "
                         "mammo-patch and mammo-infill-cgan; imported models by name)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="training steps per epoch")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="model folder (default: the user's model folder)")
    ap.add_argument("--allow-no-validation", action="store_true",
                    help="train even when no case is left for validation; the new version is written "
                         "'unvalidated' and Analyze never uses it unless you choose it")
    ap.add_argument("--ignore-extra-labels", action="store_true",
                    help="train even when the dataset has labels the model lacks (they become background)")
    add_augment_options(ap)
    args = ap.parse_args(argv)
    try:  # before any data is read or anything written: a typo must not cost a training run
        check_arguments(args.epochs, args.steps)
        check_augment(None, args.augment, args.augment_count)
        pick_device(args.device)
    except (FinetuneError, DeviceError) as exc:
        print(f"lightbox: {exc}", file=sys.stderr)
        return 2

    def warn(text: str) -> None:
        if int(os.environ.get("RANK", "0")) == 0:  # torchrun: said once
            print(f"lightbox: warning: {text}", file=sys.stderr, flush=True)

    def report(r: dict) -> None:
        if r.get("stage") == "augment":
            if r["done"] in (0, r["total"]):  # start and end: a line per synthetic item would drown the epochs
                print(f"lightbox: augment: {r['done']}/{r['total']} synthetic positives", file=sys.stderr, flush=True)
            return
        network = f"{r['network']}, " if "network" in r else ""  # a multi-fold nnU-Net trains each fold in turn
        print(f"lightbox: {network}epoch {r['epoch']}: loss {r['loss']:.4f}; {describe_metrics(r)}", file=sys.stderr,
              flush=True)

    try:
        card = finetune(args.dataset, args.model, args.epochs, args.steps, seed=args.seed, device=args.device,
                        out_dir=args.out, progress=report, allow_no_validation=args.allow_no_validation,
                        ignore_extra_labels=args.ignore_extra_labels, warn=warn, augment=args.augment,
                        augment_count=args.augment_count)
    except (FinetuneError, registry.ModelError, DeviceError) as exc:
        print(f"lightbox: {exc}", file=sys.stderr)
        return 2
    if card is not None:  # None: a torchrun worker other than rank 0
        print(f"lightbox: wrote {card.name} {card.version} to {card.path}", file=sys.stderr)
        print(f"lightbox: {activation.outcome(card)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
