"""The Train dialog's augmentation preview, computed off the UI thread: a few training views of the chosen
dataset, prepared by the fine-tuning path's own loaders (``finetune_seg2d.load_view``,
``finetune_exam.load_prepared``), handed to the same synthesis a training run uses
(``finetune_seg2d.with_synthetic`` / ``finetune_augment.synthesize``), drawn by ``inference.augment.grid_image``.
So what the user judges is what training would add, not a look-alike. Qt-free; nothing is written."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

PREVIEW_READ = 12  # training views read at most: enough for a row of patches, seconds on a CPU
PREVIEW_NORMALS = 4  # normals the cGAN infills into (it cycles through them)
PREVIEW_POSITIVES = 8  # real positives shown in the top row (and the shape bank / classic's sources)
SEED = 0


def preview_grid(dataset, checked, method: str, n: int, progress: Callable[[str, int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, device: str = "auto") -> tuple[np.ndarray, str]:
    """(grid RGB (H, W, 3) uint8, caption): real positives of the plan's training split above ``n`` synthetic
    ones made by ``method``. ``progress(stage, done, total)``: "reading" views, then "augment". Raises
    FinetuneError when the split lacks what the method needs, Cancelled on Cancel."""
    from inference import augment
    from inference.device import pick_device
    from inference.finetune_common import FinetuneError, Stopped

    from ..core.errors import Cancelled

    dev = pick_device(device)
    card = checked.card
    try:
        if card.task == "exam-classifier":
            real, aug = _exam(checked, method, n, dev, progress, should_stop)
        else:
            real, aug = _segmentation(checked, method, n, dev, progress, should_stop)
    except Stopped as exc:
        raise Cancelled(str(exc)) from exc
    if aug.synthetic is None or not len(aug.synthetic):
        raise FinetuneError(f"{method} made no synthetic positive from {Path(dataset).name}")
    grid = augment.grid_image(real, aug.synthetic, n=n)
    text = caption(dataset, card, method, len(real), aug)
    if card.task == "exam-classifier":  # view labels only: the real row cannot be centred on a lesion
        text += "; the real views have no lesion masks, so their patches come from the middle of each view"
    return grid, text


def caption(dataset, card, method: str, n_real: int, aug) -> str:
    """What the grid shows, naming the generator version a cGAN preview used."""
    from .train_options import AUGMENT_NAMES

    made = len(aug.synthetic)
    by = f" by {aug.provenance['infill_model']}" if aug.provenance.get("infill_model") else ""
    return (f"{n_real} real positive{'s' if n_real != 1 else ''} of {Path(dataset).name}'s training split (top); "
            f"{made} synthetic ({AUGMENT_NAMES.get(method, method)}{by}) as training {card.name} would add them "
            "(bottom)")


def _step(progress, should_stop, done: int, total: int) -> None:
    from inference.finetune_common import Stopped

    if should_stop is not None and should_stop():
        raise Stopped("preview cancelled")
    if progress is not None:
        progress("reading", done, total)


def _augment_progress(progress):
    """finetune_augment reports {"stage": "augment", "done", "total"}; the preview's progress takes them apart."""
    if progress is None:
        return None
    return lambda record: progress(str(record["stage"]), int(record["done"]), int(record["total"]))


def _enough(method: str, normals: int, positives: int) -> bool:
    if method == "cgan":
        return normals >= PREVIEW_NORMALS and positives >= PREVIEW_POSITIVES
    return positives >= PREVIEW_POSITIVES


def _segmentation(checked, method, n, dev, progress, should_stop):
    """Views of a segmentation dataset (lesion U-Net, patch classifier) as finetune_seg2d loads them."""
    from inference.finetune_augment import lesion_mask
    from inference.finetune_seg2d import load_view, with_synthetic

    _meta, pairs, lut = checked.data
    card, classes = checked.card, list(checked.card.classes)
    order = [int(i) for i in checked.train_idx] or list(range(len(pairs)))
    views, normals, positives = [], 0, 0
    for k, i in enumerate(order[:PREVIEW_READ]):
        _step(progress, should_stop, k, min(len(order), PREVIEW_READ))
        view = load_view(*pairs[i], card, lut)
        has_lesion = bool(int(view.y.max()))
        if (has_lesion and positives >= PREVIEW_POSITIVES) or (not has_lesion and normals >= PREVIEW_NORMALS):
            continue
        views.append(view)
        positives, normals = positives + has_lesion, normals + (not has_lesion)
        if _enough(method, normals, positives):
            break
    _made, aug = with_synthetic(views, card, method, n, SEED, dev, _augment_progress(progress), should_stop)
    real = [(v.x[0].numpy(), lesion_mask(v.y.numpy(), classes)) for v in views if int(v.y.max())]
    return real, aug


def _exam(checked, method, n, dev, progress, should_stop):
    """Views of a classification dataset as finetune_exam prepares them: no lesion masks, only view labels."""
    from inference.finetune_augment import synthesize
    from inference.finetune_exam import load_prepared

    views, _skipped = checked.data
    order = [int(i) for i in checked.train_idx] or list(range(len(views)))
    normals, positives = [], []
    for k, i in enumerate(order[:PREVIEW_READ]):
        _step(progress, should_stop, k, min(len(order), PREVIEW_READ))
        positive = views[i].target == 1.0
        if (positive and len(positives) >= PREVIEW_POSITIVES) or (not positive and len(normals) >= PREVIEW_NORMALS):
            continue
        (positives if positive else normals).append(load_prepared(views[i], checked.card))
        if _enough(method, len(normals), len(positives)):
            break
    aug = synthesize(method, [p.image for p in normals], [(p.image, None) for p in positives],
                     len(normals) + len(positives), n, SEED, dev, _augment_progress(progress), should_stop,
                     breast_masks=[p.breast for p in normals])
    return [p.image for p in positives], aug
