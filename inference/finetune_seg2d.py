"""Fine-tune a 2D mammography segmentation model (mammo-lesion-unet2d) on an exported dataset.

Called by :func:`inference.finetune.finetune` for "segmentation-2d" cards; shares its dataset
reading, label matching, split, DDP set-up and versioning, and differs where mammograms differ:

* Each case is ONE view, ``imagesTr/CASE_0000.nii.gz`` of shape (1, rows, cols) as the app's
  exporter writes it. The NIfTI carries no laterality or PatientOrientation, so the chest-wall
  side is found from the pixels, exactly as ``segment_image`` does for an image without the tag.
* Training crops come from the image put through ``inference.preprocess.mammo.prepare`` (model
  spacing, breast crop, chest wall to the left, card normalization) - the very call
  ``segment_image`` makes - and the label map goes through the same resample/crop/mirror, so a
  right-facing view cannot be learned mirrored (the classic train/inference mismatch).
* Validation Dice is computed the way users see the model: ``segment_image`` on the view's own
  source grid against the exported label map (not on the model grid).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inference import registry
from inference.finetune_common import (
    DomainCases,
    Plan,
    Progress,
    check_label_values,
    check_modality,  # noqa: F401 - moved to finetune_common; still importable from here
    dice_per_class,
    judge_segmentation,
    read_view,
    save_version,
    start_run,
    train_segmentation,
)
from inference.finetune_augment import NONE, Augmentation, lesion_mask, model_labels, synthesize
from inference.preprocess import mammo as mgp


@dataclass
class View:
    """One case ready to train on; the source pixels are kept only for validation views."""

    name: str
    x: torch.Tensor  # (1, h, w) float32: prepared exactly as segment_image prepares
    y: torch.Tensor  # (h, w) uint8 model classes on the same grid
    pad_value: float  # background level, as segment_image pads windows
    geometry: mgp.MammoGeometry
    image: np.ndarray | None = None  # source pixels (rows, cols), modality values
    labels: np.ndarray | None = None  # source labels (rows, cols) in model classes
    spacing: tuple[float, float] = (1.0, 1.0)  # source (row, col) mm
    breast: np.ndarray | None = None  # bool (h, w) on the model grid: where synthetic lesions may go


def labels_to_model(labels: np.ndarray, geometry: mgp.MammoGeometry, n_classes: int) -> np.ndarray:
    """Source label map -> model grid through the image's own resample/crop/mirror (per-class
    fractions, argmax; background outside the image), so labels and pixels cannot drift apart."""
    fractions = [mgp.to_model((labels == k).astype(np.float32), geometry, fill=1.0 if k == 0 else 0.0)
                 for k in range(n_classes)]
    return np.stack(fractions).argmax(0).astype(np.uint8)


def prepare_view(name: str, pixels: np.ndarray, labels: np.ndarray, spacing, card, keep_source: bool) -> View:
    """A View of source pixels and model-class labels, prepared with segment_image's own call."""
    prep = mgp.prepare(pixels, spacing, target_spacing=float(np.atleast_1d(card.input["spacing_mm"])[0]),
                       normalization=card.normalization or None)
    background = prep.image[~prep.breast]
    pad = float(np.median(background)) if background.size else float(prep.image.min())
    y = labels_to_model(labels, prep.geometry, len(card.classes))
    return View(name, torch.from_numpy(prep.image)[None], torch.from_numpy(y), pad, prep.geometry,
                pixels if keep_source else None, labels if keep_source else None, tuple(spacing), prep.breast)


def load_view(image: Path, label: Path, card, lut: np.ndarray, keep_source: bool = False) -> View:
    """One exported case as a View in the model's classes (dataset values mapped by ``lut``)."""
    pixels, labels, spacing = read_view(image, label)
    check_label_values(labels, lut, label)
    return prepare_view(label.name, pixels, lut[labels], spacing, card, keep_source)


def validate(net: torch.nn.Module, card, views: list[View], device) -> dict[str, float]:
    """Mean Dice per class over ``views``, each segmented by segment_image on its source grid
    (chest wall from the pixels, as for a view without PatientOrientation)."""
    from inference.segment import segment_image

    scores: dict[str, list[float]] = {}
    for v in views:
        pred, _ = segment_image(net, card, v.image, v.spacing, device=device)
        for k, d in dice_per_class(pred, v.labels, list(card.classes)).items():
            scores.setdefault(k, []).append(d)
    return {k: float(np.mean(d)) for k, d in scores.items()}


def view_cases(net: torch.nn.Module, card, pairs: list[tuple[Path, Path]], device) -> DomainCases:
    """The exported views for the new version's domain description: each one segmented by
    segment_image on its source grid, chest wall from the pixels (as validation does)."""
    from inference.segment import segment_image

    def cases():
        for image, label in pairs:
            pixels, _labels, spacing = read_view(image, label)
            yield lambda pixels=pixels, spacing=spacing: segment_image(net, card, pixels, spacing, device=device)
    return DomainCases(len(pairs), cases, "views", device)


def with_synthetic(train_views: list[View], card, method: str, count: int | None, seed: int, device,
                   progress: Progress | None, should_stop) -> tuple[list[View], Augmentation]:
    """The training views plus synthetic ones made from them (``finetune_augment.synthesize``): "cgan"
    infills lesions into the views without a lesion, "classic" transforms those with one. The infill
    mask is the label, mapped to the model's classes (a kind it lacks becomes background)."""
    if method == "none":
        return train_views, NONE
    classes = list(card.classes)
    normals = [v for v in train_views if not int(v.y.max())]
    positives = [v for v in train_views if int(v.y.max())]
    aug = synthesize(method, [v.x[0].numpy() for v in normals],
                     [(v.x[0].numpy(), lesion_mask(v.y.numpy(), classes)) for v in positives], len(train_views),
                     count, seed, device, progress, should_stop, breast_masks=[v.breast for v in normals])
    pool = normals if method == "cgan" else positives
    made = [View(f"synthetic {i + 1}", torch.from_numpy(np.asarray(image, np.float32))[None],
                 torch.from_numpy(model_labels(mask, classes)), pool[src].pad_value, pool[src].geometry)
            for i, (image, mask, src) in enumerate(zip(aug.synthetic.images, aug.synthetic.masks,
                                                        aug.synthetic.sources))]
    return train_views + made, aug


def finetune_seg2d(dataset, checked: Plan, epochs: int, steps_per_epoch: int, lr: float, batch: int, seed: int,
                   device: str, out_dir, progress: Progress | None, should_stop, augment: str = "none",
                   augment_count: int | None = None):
    """Fine-tune the plan's "segmentation-2d" card on ``dataset``; the new ModelCard (None on torchrun ranks > 0).
    ``augment`` adds synthetic views to the training split only (:func:`with_synthetic`)."""
    from inference.train_seg import random_crop

    _meta, pairs, lut = checked.data
    card = checked.card
    run = start_run(device, seed, len(pairs), 0.0, split=(checked.train_idx, checked.val_idx))
    val_set = {int(i) for i in run.val_idx}
    views = [load_view(*pairs[i], card, lut, keep_source=i in val_set and run.rank == 0) for i in range(len(pairs))]
    train_views = [views[int(i)] for i in run.train_idx] or views[:1]
    val_views = [views[int(i)] for i in run.val_idx]
    real_train = len(train_views)
    train_views, aug = with_synthetic(train_views, card, augment, augment_count, seed, run.device,
                                      progress if run.rank == 0 else None, should_stop)
    net, card = registry.load_model(card, device=run.device)
    patch = tuple(int(p) for p in card.input["patch_size"])
    counts = [sum(int((v.y == k).sum()) for v in train_views) for k in range(len(card.classes))]
    rare = int(np.argmin([c or 1 << 62 for c in counts]))
    where = [{} for _ in train_views]  # random_crop's cache of class positions per view

    def sample_batch():
        xs, ys = [], []
        for b in range(batch):
            i = int(run.rng.integers(len(train_views)))
            v = train_views[i]
            xc, yc = random_crop(run.rng, v.x, v.y, patch, rare if b % 2 == 0 else None, where[i], v.pad_value)
            if run.rng.random() < 0.5:  # up/down mirror keeps the chest wall left (as train_mammo)
                xc, yc = xc.flip(-2), yc.flip(-2)
            xs.append(xc)
            ys.append(yc)
        return torch.stack(xs), torch.stack(ys)

    before, history = train_segmentation(
        run, net, sample_batch, lambda: validate(net, card, val_views, run.device) if val_views else {},
        epochs, steps_per_epoch, lr, progress, should_stop)
    if run.finished_worker():
        return None
    after = history[-1]["val_dice"] if history else before
    synthetic = f" + {aug.count} synthetic ({augment})" if aug.count else ""
    summary = (f"{len(run.train_idx)} training{synthetic} and {len(run.val_idx)} validation views, {epochs} epochs "
               f"x {steps_per_epoch} steps (seed {seed})")
    metrics = {"val_dice_before": before, "val_dice": after, "n_val_cases": len(val_views), "epochs": history,
               "val_dice_on": "each validation view's source grid, segmented by segment_image",
               "n_train_views": real_train, "n_synthetic_train_views": aug.count}
    verdict = judge_segmentation(card, before, after, len(val_views))
    new = save_version(net, checked, dataset, summary, metrics, verdict, out_dir,
                       {"processes": run.world, "chest_wall": "found from the pixels (the NIfTI has no laterality)"},
                       view_cases(net, card, pairs, run.device), aug)
    run.close()
    return new
