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
    FinetuneError,
    Plan,
    Progress,
    dice_per_class,
    judge_segmentation,
    save_version,
    start_run,
    train_segmentation,
)
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


def check_modality(meta: dict, card, root) -> None:
    """A CT or MR dataset must not silently train a mammography model: refuse, naming the channel."""
    channels = {str(k): str(v) for k, v in (meta.get("channel_names") or meta.get("modality") or {}).items()}
    wanted = str(card.modality).upper()
    if channels and not any(v.upper() == wanted for v in channels.values()):
        named = ", ".join(f"channel {k} is {v!r}" for k, v in channels.items())
        raise FinetuneError(f"{Path(root) / 'dataset.json'}: {named}; {card.name} segments {wanted} "
                            f"(mammography) views, not this modality")


def read_view(image: Path, label: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(pixels (rows, cols), labels (rows, cols), spacing (row, col) mm) of one exported view."""
    import SimpleITK as sitk

    def read(path: Path):
        try:
            return sitk.ReadImage(str(path))
        except RuntimeError as exc:  # ITK's I/O errors: name the file, keep ITK's last line
            raise FinetuneError(f"{path}: cannot be read ({str(exc).strip().splitlines()[-1]})") from exc

    img, lab = read(image), read(label)
    if img.GetSize() != lab.GetSize():
        raise FinetuneError(f"{label.name}: size {lab.GetSize()} differs from its image {img.GetSize()}")
    pixels = sitk.GetArrayFromImage(img)
    labels = sitk.GetArrayFromImage(lab)
    spacing = tuple(float(s) for s in reversed(img.GetSpacing()))  # array order
    if pixels.ndim == 3:
        if pixels.shape[0] != 1:
            raise FinetuneError(f"{image.name}: a volume of {pixels.shape[0]} slices; a 2D model trains on "
                                "single views of shape (1, rows, cols)")
        pixels, labels, spacing = pixels[0], labels[0], spacing[1:]
    if pixels.ndim != 2:
        raise FinetuneError(f"{image.name}: shape {pixels.shape} is not one 2D view")
    return pixels, labels, (float(spacing[0]), float(spacing[1]))


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
                pixels if keep_source else None, labels if keep_source else None, tuple(spacing))


def load_view(image: Path, label: Path, card, lut: np.ndarray, keep_source: bool = False) -> View:
    """One exported case as a View in the model's classes (dataset values mapped by ``lut``)."""
    pixels, labels, spacing = read_view(image, label)
    if labels.size and int(labels.max()) >= len(lut):
        raise FinetuneError(f"{label.name}: label value {int(labels.max())} is not in dataset.json")
    if labels.size and int(labels.min()) < 0:
        raise FinetuneError(f"{label.name}: negative label values")
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


def finetune_seg2d(dataset, checked: Plan, epochs: int, steps_per_epoch: int, lr: float, batch: int, seed: int,
                   device: str, out_dir, progress: Progress | None, should_stop):
    """Fine-tune the plan's "segmentation-2d" card on ``dataset``; the new ModelCard (None on torchrun ranks > 0)."""
    from inference.train_seg import random_crop

    _meta, pairs, lut = checked.data
    card = checked.card
    run = start_run(device, seed, len(pairs), 0.0, split=(checked.train_idx, checked.val_idx))
    val_set = {int(i) for i in run.val_idx}
    views = [load_view(*pairs[i], card, lut, keep_source=i in val_set and run.rank == 0) for i in range(len(pairs))]
    train_views = [views[int(i)] for i in run.train_idx] or views[:1]
    val_views = [views[int(i)] for i in run.val_idx]
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
    summary = (f"{len(run.train_idx)} training and {len(run.val_idx)} validation views, {epochs} epochs x "
               f"{steps_per_epoch} steps (seed {seed})")
    metrics = {"val_dice_before": before, "val_dice": after, "n_val_cases": len(val_views), "epochs": history,
               "val_dice_on": "each validation view's source grid, segmented by segment_image"}
    verdict = judge_segmentation(card, before, after, len(val_views))
    new = save_version(net, checked, dataset, summary, metrics, verdict, out_dir,
                       {"processes": run.world, "chest_wall": "found from the pixels (the NIfTI has no laterality)"},
                       view_cases(net, card, pairs, run.device))
    run.close()
    return new
