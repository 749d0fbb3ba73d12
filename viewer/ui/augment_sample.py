"""The Train dialog's augmentation preview, computed off the UI thread: a few training views of the chosen
dataset, prepared by the fine-tuning path's own loaders (``finetune_seg2d.load_view``,
``finetune_patch.prepare_patch_view``, ``finetune_exam.load_prepared``), handed to the synthesis a training
run uses (``finetune_seg2d.with_synthetic`` / ``finetune_augment.synthesize``), drawn by
``inference.augment.grid_image``. So what the user judges is what training would add, not a look-alike.
Qt-free; nothing is written."""
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
        paths = {"exam-classifier": _exam, "patch-classifier": _patches, "segmentation-2d": _segmentation}
        if card.task not in paths:
            raise FinetuneError(f"{card.name} is a {card.modality} {card.task} model: no synthetic positives for it")
        real, aug = paths[card.task](checked, method, n, dev, progress, should_stop)
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


def _gather(order: list[int], load, positive, method: str, progress, should_stop) -> tuple[list, list]:
    """(normals, positives) loaded from the training views in ``order`` until the method has enough of what it
    needs (cGAN: normals to infill into; both: real positives to show), reading at most PREVIEW_READ views."""
    normals, positives = [], []
    total = min(len(order), PREVIEW_READ)
    for k, i in enumerate(order[:total]):
        _step(progress, should_stop, k, total)
        item = load(i)
        pool, cap = (positives, PREVIEW_POSITIVES) if positive(item) else (normals, PREVIEW_NORMALS)
        if len(pool) < cap:
            pool.append(item)
        if len(positives) >= PREVIEW_POSITIVES and (method != "cgan" or len(normals) >= PREVIEW_NORMALS):
            break
    return normals, positives


def _training_order(checked, n_items: int) -> list[int]:
    return [int(i) for i in checked.train_idx] or list(range(n_items))


def _segmentation(checked, method, n, dev, progress, should_stop):
    """Views of a segmentation dataset as the lesion U-Net's fine-tuning loads and augments them."""
    from inference.finetune_augment import lesion_mask
    from inference.finetune_seg2d import load_view, with_synthetic

    _meta, pairs, lut = checked.data
    card = checked.card
    normals, positives = _gather(_training_order(checked, len(pairs)), lambda i: load_view(*pairs[i], card, lut),
                                 lambda v: bool(int(v.y.max())), method, progress, should_stop)
    _views, aug = with_synthetic(normals + positives, card, method, n, SEED, dev, _augment_progress(progress),
                                 should_stop)
    return [(v.x[0].numpy(), lesion_mask(v.y.numpy(), list(card.classes))) for v in positives], aug


def _patches(checked, method, n, dev, progress, should_stop):
    """Views of a segmentation dataset as the patch classifier's fine-tuning prepares them (lesion masks
    1 mass / 2 calcification on the model grid)."""
    from inference.finetune_augment import synthesize
    from inference.finetune_common import check_label_values, read_view
    from inference.finetune_patch import prepare_patch_view

    _meta, pairs, lut = checked.data
    card = checked.card
    patch = int(card.input.get("patch_size", 52))

    def load(i: int):
        pixels, labels, spacing = read_view(*pairs[i])
        check_label_values(labels, lut, pairs[i][1])
        _view, prep, mask = prepare_patch_view(i, pairs[i][1].name, pixels, lut[labels], spacing, card, patch)
        return prep, mask

    normals, positives = _gather(_training_order(checked, len(pairs)), load, lambda item: bool(item[1].any()),
                                 method, progress, should_stop)
    aug = synthesize(method, [p.image for p, _m in normals], [(p.image, m) for p, m in positives],
                     len(normals) + len(positives), n, SEED, dev, _augment_progress(progress), should_stop,
                     breast_masks=[p.breast for p, _m in normals])
    return [(p.image, m) for p, m in positives], aug


def _exam(checked, method, n, dev, progress, should_stop):
    """Views of a classification dataset as the exam classifier's fine-tuning prepares them: view labels,
    no lesion masks."""
    from inference.finetune_augment import synthesize
    from inference.finetune_exam import load_prepared

    views, _skipped = checked.data
    normals, positives = _gather(_training_order(checked, len(views)), lambda i: (views[i], load_prepared(views[i],
                                 checked.card)), lambda item: item[0].target == 1.0, method, progress, should_stop)
    aug = synthesize(method, [p.image for _v, p in normals], [(p.image, None) for _v, p in positives],
                     len(normals) + len(positives), n, SEED, dev, _augment_progress(progress), should_stop,
                     breast_masks=[p.breast for _v, p in normals])
    return [p.image for _v, p in positives], aug
