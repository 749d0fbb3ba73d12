"""Fine-tune the mammography patch classifier (mammo-patch) on exported views with lesion masks.

Called by :func:`inference.finetune.finetune` for "patch-classifier" cards. The dataset is the one
the lesion U-Net trains on (nnU-Net layout, one MG view per case, labels named "mass" and/or
"calcification"); the plan, split (by exam where the export recorded one, else by view), label checks and versioning are the shared ones.
What is particular to patches comes from ``train_mammo``, the script that trained the shipped model,
so a fine-tuned version learns exactly what its parent learned:

* each view is put through ``preprocess.mammo.prepare`` with the card's spacing, margin and
  normalization (the chest wall found from the pixels: the NIfTI carries no laterality), its masks
  through the same resample/crop/mirror, and every patch position is labelled by
  ``train_mammo.patch_labels`` (background, normal tissue, mass, calcification; ambiguous near a
  lesion: ignored); training patches are drawn by ``train_mammo.sample_patches`` and mirrored by
  ``train_mammo.augment``;
* the whole network trains (trunk included: patch labels are plentiful, unlike the exam
  classifier's view labels), but BatchNorm keeps its running statistics: a few patches per step
  would otherwise replace statistics learned from seventeen thousand;
* each step draws ``batch`` patches of every class present, so rare lesion patches are taught;
* validation is ``train_mammo.patch_metrics`` on patches of the held-out views (one-vs-rest AUC per
  class); the activation verdict compares the mean mass/calcification AUC of parent and new version
  on the same patches (the accuracy when validation holds no lesion patch).

``augment`` adds synthetic positive views made from the training split (cGAN infills into its
normal views, or its positive views transformed); only their lesion patches join training.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from inference import activation, registry
from inference import train_mammo as tm
from inference.finetune_augment import NONE, Augmentation, synthesize
from inference.finetune_common import (
    DomainCases,
    FinetuneError,
    Plan,
    Progress,
    Stopped,
    check_label_values,
    read_view,
    save_version,
    start_run,
)
from inference.preprocess.mammo import PreparedMammo, prepare, to_model
from inference.train_mammo import BG, CALC, CLASSES, MASS, NORMAL, View, patch_labels

LESION_CLASSES = ["background", "mass", "calcification"]  # the dataset labels a patch model learns from
LESION_SCORE = "mass/calcification mean"
TRAIN_CAPS = {BG: 1000, NORMAL: 2000, MASS: 2000, CALC: 2000}  # patches per class, as train_mammo (fewer)
VAL_CAPS = {BG: 300, NORMAL: 600, MASS: 500, CALC: 500}
TRAIN_STRIDE, VAL_STRIDE = 2, 3  # train_mammo's strides


def label_card(card):
    """The card as the shared label check sees it: a patch model learns the dataset's "mass" and
    "calcification" labels; background and normal tissue come from the breast mask, not from labels."""
    if list(card.classes) != CLASSES:
        raise FinetuneError(f"{card.name}: classes {card.classes}; patch fine-tuning knows {', '.join(CLASSES)}")
    return replace(card, classes=list(LESION_CLASSES))


def prepare_patch_view(index: int, name: str, pixels: np.ndarray, lesions: np.ndarray, spacing, card, patch: int
                       ) -> tuple[View, PreparedMammo, np.ndarray]:
    """(train_mammo View with patch labels, the prepared view, its lesion mask on the model grid: 1 mass,
    2 calcification) of one exported view whose labels are already 0/1/2."""
    inp = card.input or {}
    prep = prepare(np.asarray(pixels, np.float32), spacing, target_spacing=float(inp.get("spacing_mm", 0.42)),
                   margin=int(inp.get("crop_margin_px", 26)), normalization=card.normalization or None)
    mass = to_model((lesions == 1).astype(np.float32), prep.geometry)
    calc = to_model((lesions == 2).astype(np.float32), prep.geometry)
    mask = np.where(mass >= 0.5, 1, np.where(calc > 0, 2, 0)).astype(np.uint8)
    labels = patch_labels(mass, calc, prep.breast, patch)
    return View(index, name, prep.image, labels, bool(mask.any())), prep, mask


def synthetic_views(aug: Augmentation, patch: int) -> list[View]:
    """The synthetic views with patch labels from their infill masks (the breast taken as everywhere:
    only their mass and calcification patches are used)."""
    if not aug.count:
        return []
    views = []
    for j, (image, mask) in enumerate(zip(aug.synthetic.images, aug.synthetic.masks)):
        mass, calc = (mask == 1).astype(np.float32), (mask == 2).astype(np.float32)
        labels = patch_labels(mass, calc, np.ones(mask.shape, bool), patch)
        views.append(View(-1 - j, f"synthetic {j + 1}", np.asarray(image, np.float32), labels, True))
    return views


def patches(views: list[View], patch: int, caps: dict[int, int], stride: int, rng) -> tuple[torch.Tensor, ...]:
    """sample_patches over ``views`` for the classes that have a position there (empty tensors if none)."""
    present = {k: cap for k, cap in caps.items() if any((v.labels[::stride, ::stride] == k).any() for v in views)}
    if not present:
        return torch.zeros((0, 1, patch, patch)), torch.zeros(0, dtype=torch.long)
    return tm.sample_patches(views, patch, present, stride, rng)


def lesion_auc(metrics: dict) -> dict[str, float]:
    """{LESION_SCORE: mean one-vs-rest AUC of mass and calcification} over the lesion classes the
    validation patches hold; {} when they hold none (then the accuracy judges)."""
    values = [metrics.get(f"{name}_auc") for name in ("mass", "calcification")]
    values = [v for v in values if v is not None]
    return {LESION_SCORE: round(float(np.mean(values)), 4)} if values else {}


def class_aucs(metrics: dict) -> dict[str, float]:
    return {name: metrics[f"{name}_auc"] for name in CLASSES if metrics.get(f"{name}_auc") is not None}


def patch_view_cases(pairs: list[tuple[Path, Path]], device) -> DomainCases:
    """The exported views as domain_fit reads MG cases (pixels, spacing, laterality, view): prepared and
    run densely as Analyze runs the patch classifier (chest wall from the pixels)."""
    def cases():
        for image, label in pairs:
            pixels, _labels, spacing = read_view(image, label)
            yield np.asarray(pixels, np.float32), spacing, None, None
    return DomainCases(len(pairs), cases, "views", device)


def finetune_patch(dataset, checked: Plan, epochs: int, steps_per_epoch: int, lr: float, batch: int, seed: int,
                   device: str, out_dir, progress: Progress | None, should_stop, augment: str = "none",
                   augment_count: int | None = None):
    """Fine-tune the plan's patch classifier on ``dataset``; the new ModelCard (None on torchrun ranks > 0).

    ``progress`` gets {"epoch", "loss", "val_auc": {class: auc}, "val_accuracy"} after each epoch, and
    {"stage": "augment", "done", "total"} while synthetic positives are made.
    """
    _meta, pairs, lut = checked.data
    card = checked.card
    run = start_run(device, seed, len(pairs), 0.0, split=(checked.train_idx, checked.val_idx))
    net, card = registry.load_model(card, device=run.device)
    patch = int(card.input.get("patch_size", 52))
    views, preps, masks = [], [], []
    training = {int(i) for i in run.train_idx}
    for i, (image, label) in enumerate(pairs):
        if should_stop is not None and should_stop():
            raise Stopped("fine-tuning cancelled")
        pixels, labels, spacing = read_view(image, label)
        check_label_values(labels, lut, label)
        view, prep, mask = prepare_patch_view(i, label.name, pixels, lut[labels], spacing, card, patch)
        views.append(view)
        preps.append(prep if i in training else None)  # breast masks for the cGAN
        masks.append(mask)
    train = [int(i) for i in run.train_idx] or [0]
    val = [int(i) for i in run.val_idx]
    aug = NONE
    if augment != "none":
        normals = [i for i in train if not views[i].lesion]
        positives = [i for i in train if views[i].lesion]
        aug = synthesize(augment, [preps[i].image for i in normals], [(preps[i].image, masks[i]) for i in positives],
                         len(train), augment_count, seed, run.device, progress if run.rank == 0 else None,
                         should_stop, breast_masks=[preps[i].breast for i in normals])
    del preps
    rng = np.random.default_rng([seed, run.rank, 5])
    x, y = patches([views[i] for i in train], patch, TRAIN_CAPS, TRAIN_STRIDE, rng)
    sx, sy = patches(synthetic_views(aug, patch), patch, {MASS: TRAIN_CAPS[MASS], CALC: TRAIN_CAPS[CALC]},
                     TRAIN_STRIDE, rng)
    x, y = torch.cat([x, sx]), torch.cat([y, sy])
    xv, yv = (patches([views[i] for i in val], patch, VAL_CAPS, VAL_STRIDE, np.random.default_rng([seed, 6]))
              if val else (None, None))
    by_class = {k: torch.nonzero(y == k).flatten() for k in range(len(CLASSES)) if (y == k).any()}
    gen = torch.Generator().manual_seed(seed * 1000 + run.rank)

    def validate() -> dict:
        if xv is None or not len(xv) or run.rank != 0:
            return {}
        net.eval()
        return _metrics_on(net, xv, yv, run.device)

    before = validate()
    trained = run.wrap(net)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    history = []
    for epoch in range(1, epochs + 1):
        net.eval()  # BatchNorm on running statistics (module docstring); gradients flow all the same
        losses = []
        for _ in range(steps_per_epoch):
            if should_stop is not None and should_stop():
                raise Stopped("fine-tuning cancelled")
            idx = torch.cat([pool[torch.randint(len(pool), (batch,), generator=gen)] for pool in by_class.values()])
            xb = tm.augment(x[idx], gen).to(run.device)
            loss = F.cross_entropy(trained(xb).flatten(1), y[idx].to(run.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        after = validate()
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "val_auc": class_aucs(after),
                  "val_accuracy": after.get("accuracy")}
        history.append((record, after))
        if progress is not None and run.rank == 0:
            progress(record)
    net.eval()
    if run.finished_worker():
        return None
    after = history[-1][1] if history else before
    metrics = {"val_auc_before": class_aucs(before), "val_auc": class_aucs(after),
               "val_accuracy_before": before.get("accuracy"), "val_accuracy": after.get("accuracy"),
               "val_patch_metrics_before": before, "val_patch_metrics": after,
               "val_lesion_auc_before": lesion_auc(before).get(LESION_SCORE),
               "val_lesion_auc": lesion_auc(after).get(LESION_SCORE),
               "n_train_views": len(train), "n_val_views": len(val), "n_train_patches": int(len(x)),
               "n_synthetic_train_views": aug.count, "n_synthetic_train_patches": int(len(sx)),
               "train_patches_per_class": {CLASSES[k]: int((y == k).sum()) for k in range(len(CLASSES))},
               "epochs": [r for r, _ in history]}
    metric, old, new = activation.classifier_scores(lesion_auc(before), lesion_auc(after),
                                                    before.get("accuracy"), after.get("accuracy"))
    verdict = activation.record(metric, old, new, len(val), f"{card.name} {card.version}")
    synthetic = f" + {aug.count} synthetic ({augment})" if aug.count else ""
    summary = (f"{len(train)} training{synthetic} and {len(val)} validation views, {len(x)} training patches, "
               f"{epochs} epochs x {steps_per_epoch} steps of {batch} patches per class (seed {seed})")
    new_card = save_version(net, checked, dataset, summary, metrics, verdict, out_dir,
                            {"processes": run.world, "finetune": "whole network trained, BatchNorm statistics kept",
                             "chest_wall": "found from the pixels (the NIfTI has no laterality)"},
                            patch_view_cases(pairs, run.device), aug)
    run.close()
    return new_card


@torch.no_grad()
def _metrics_on(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device) -> dict:
    """train_mammo.patch_metrics with the network on ``device`` (it feeds batches of the CPU tensors it is given)."""
    class OnDevice(torch.nn.Module):
        def forward(self, batch):
            return net(batch.to(device)).cpu()

    return tm.patch_metrics(OnDevice(), x, y)
