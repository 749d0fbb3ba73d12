"""Train a new version of the infill cGAN on an exported dataset's positives (``lightbox train DATASET
--model mammo-infill-cgan``), with the same dataset reading, split and activation rule as the other models.

The dataset is the app's segmentation export (``imagesTr``/``labelsTr`` MG NIfTI, one view per case, read
as ``inference.finetune_seg2d`` reads it). Each view is prepared as every mammography model sees it; each
mass and calcification cluster becomes one training patch; views without lesions add nothing. The new
version is judged against its parent on the validation cases' lesions: the PSNR of the infilled region
against the real pixels, same inputs and noise for both (higher is better, as ``inference.activation``'s
"not worse" rule reads scores). One process: the networks are small, torchrun gains nothing here.
"""
from __future__ import annotations

import math
import os

import numpy as np

from inference import activation, registry
from inference.finetune_common import (
    FinetuneError,
    Plan,
    Progress,
    exam_of_pairs,
    label_counts,
    label_remap,
    read_dataset,
    save_version,
    segmentation_labels,
    split_by_exam,
)
from inference.infill_train import InfillPatches, extract_patches, train_infill, validate_infill
from inference.preprocess import mammo as mgp

METRIC = "infill PSNR (dB)"


def plan_infill(dataset, card, val_fraction: float = 0.2, seed: int = 0) -> Plan:
    """The checked plan: cases split as every fine-tuner splits them; validation counts cases with lesions."""
    from inference.finetune_seg2d import check_modality

    meta, pairs = read_dataset(dataset)
    check_modality(meta, card, dataset)
    lut = label_remap(meta.get("labels") or {}, list(card.classes))
    labels = segmentation_labels(meta, pairs, card)
    train_idx, val_idx, _val_exams = split_by_exam(exam_of_pairs(dataset, pairs), val_fraction, seed)
    with_lesion = [bool(any(n for v, n in label_counts(label).items() if v < len(lut) and lut[v]))
                   for _image, label in pairs]
    if not any(with_lesion[i] for i in train_idx or range(len(pairs))):
        raise FinetuneError(f"{dataset}: no training case holds a mass or calcification label; the infill cGAN "
                            "learns only from lesions")
    notes = []
    empty = with_lesion.count(False)
    if empty:
        notes.append(f"{empty} of {len(pairs)} cases hold no lesion label: the infill cGAN learns only from lesions")
    return Plan(card, labels, train_idx, val_idx, sum(with_lesion[i] for i in val_idx), len(pairs), "cases",
                (meta, pairs, lut), notes)


def case_patches(image, label, card, lut: np.ndarray) -> InfillPatches:
    """The lesion patches of one exported view, on the model grid (chest wall found from the pixels)."""
    from inference.finetune_seg2d import read_view
    from inference.infill import model_label

    pixels, labels, spacing = read_view(image, label)
    if labels.size and (int(labels.max()) >= len(lut) or int(labels.min()) < 0):
        raise FinetuneError(f"{label.name}: label values {int(labels.min())}..{int(labels.max())} are not all in "
                            "dataset.json")
    classes = lut[labels]
    prep = mgp.prepare(pixels, spacing, target_spacing=float(np.atleast_1d(card.input["spacing_mm"])[0]),
                       normalization=card.normalization or None)
    return extract_patches(prep.image, model_label(classes == 1, classes == 2, prep.geometry),
                           int(card.input.get("patch_size", 64)))


def finetune_infill(dataset, checked: Plan, epochs: int, steps_per_epoch: int, lr: float, batch: int, seed: int,
                    device: str, out_dir, progress: Progress | None, should_stop):
    """Train the plan's infill cGAN (generator and discriminator) from its weights; the new ModelCard."""
    import inference.models.infill_gan  # noqa: F401 - registers "infill-cgan"

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0:
        return None  # one process trains (see the module docstring); the other ranks have nothing to do
    _meta, pairs, lut = checked.data
    card = checked.card
    train = InfillPatches.concat([case_patches(*pairs[i], card, lut) for i in checked.train_idx])
    val = InfillPatches.concat([case_patches(*pairs[i], card, lut) for i in checked.val_idx])
    net, card = registry.load_model(card, device=device)
    before = validate_infill(net, val, seed=seed, device=device)
    steps = epochs * steps_per_epoch

    def report(record: dict) -> None:
        if progress is not None:
            progress({**record, "epoch": math.ceil(record["step"] / steps_per_epoch), "loss": record["loss_l1"]})

    net, history = train_infill(train, steps, seed, device, report, should_stop, net=net, lr=lr, batch=batch)
    after = validate_infill(net, val, seed=seed, device=device)
    verdict = activation.record(METRIC, before.get("psnr"), after.get("psnr"), checked.validation_cases if len(val)
                                else 0, f"{card.name} {card.version}")
    summary = (f"{len(train)} lesion patches from {len(checked.train_idx)} training cases, {len(val)} validation "
               f"patches from {len(checked.val_idx)} validation cases, {steps} steps (seed {seed})")
    metrics = {"val_before": before, "val": after, "n_val_cases": checked.validation_cases,
               "n_train_patches": len(train), "n_val_patches": len(val), "history": history,
               "val_on": "the validation cases' lesion regions, fixed noise, parent and new version alike"}
    return save_version(net, checked, dataset, summary, metrics, verdict, out_dir, {"processes": 1})
