"""Synthetic positives for fine-tuning (issue 17): which models take them, how many, and what the card says.

The mammography fine-tuners (``finetune_seg2d``, ``finetune_exam``, ``finetune_patch``) hand
:func:`synthesize` the normals and positives of their TRAINING split only, on the model-input grid
(``preprocess.mammo.prepare``); the synthetic items join training and never validation. The
method itself (flips/rotations/jitter, or the infill cGAN of Wu et al.) lives in
``inference.augment``; this module decides the count, reports progress as
{"stage": "augment", "done", "total"}, honours Cancel, and writes ``augment_grid.png`` (real vs
synthetic patches) beside the new version for its card's ``extra["augmentation"]``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.finetune_common import FinetuneError, Progress, Stopped

METHODS = ("none", "classic", "cgan")
AUGMENTABLE_TASKS = ("segmentation-2d", "exam-classifier", "patch-classifier")
MAX_SYNTHETIC = 64  # the default count's cap: a few minutes of cGAN infill on a CPU
LESION_VALUES = {"mass": 1, "calcification": 2}  # augment's mask convention (0 background)
GRID_SUFFIX = "-augment_grid.png"


def check_augment(card, augment: str, augment_count) -> None:
    """Refuse an unknown method, a count below 1, or synthetic mammography lesions for a model they do
    not apply to (CT, MR, the infill cGAN itself), before any data is read. ``card`` None: the
    arguments only (an imported model's fine-tuner decides for itself)."""
    if augment not in METHODS:
        raise FinetuneError(f"augmentation must be one of {', '.join(METHODS)}, got {augment!r}")
    if augment_count is not None and (isinstance(augment_count, bool) or not isinstance(augment_count, int)
                                      or augment_count < 1):
        raise FinetuneError(f"augmentation count must be a whole number of at least 1, got {augment_count!r}")
    if augment == "none" or card is None:
        return
    if card.task not in AUGMENTABLE_TASKS or str(card.modality).upper() != "MG":
        raise FinetuneError(f"--augment {augment} adds synthetic mammography lesions; {card.name} is a "
                            f"{card.modality} {card.task} model (augmentation applies to the mammography lesion "
                            "U-Net, exam classifier and patch classifier): use --augment none")


def default_count(n_train: int, n_positive: int) -> int:
    """Synthetic positives to add when the user names no count: enough to bring the positives to about a
    third of the training items, n = ceil((items - 3 x positives) / 2) (then (positives + n) / (items + n)
    is 1/3), at least 1 and at most MAX_SYNTHETIC."""
    return int(min(MAX_SYNTHETIC, max(1, math.ceil((n_train - 3 * n_positive) / 2))))


@dataclass
class Augmentation:
    """What one run added: the synthetic items (``inference.augment.Synthetic``, None for "none"), the
    real positive images they are shown beside in the grid, and the provenance for the card."""

    method: str = "none"
    synthetic: object | None = None
    real: list = field(default_factory=list)
    provenance: dict = field(default_factory=lambda: {"augment": "none"})

    @property
    def count(self) -> int:
        return len(self.synthetic.images) if self.synthetic is not None else 0

    def record(self, folder: Path, stem: str) -> dict:
        """The card's ``extra["augmentation"]``: provenance + count, and "grid", the PNG of real vs
        synthetic patches written beside the version's weights (a file name in the card's folder)."""
        rec = {**self.provenance, "augment": self.method, "n_synthetic": self.count}
        if self.count:
            from inference import augment

            Path(folder).mkdir(parents=True, exist_ok=True)
            path = augment.save_grid(self.real, self.synthetic, Path(folder) / f"{stem}{GRID_SUFFIX}")
            rec["grid"] = Path(path).name
        return rec


NONE = Augmentation()


def synthesize(method: str, normals: list[np.ndarray], positives: list[tuple[np.ndarray, np.ndarray | None]],
               n_train: int, count: int | None, seed: int, device, progress: Progress | None = None,
               should_stop: Callable[[], bool] | None = None, breast_masks: list[np.ndarray] | None = None
               ) -> Augmentation:
    """Synthetic positives from the training split: ``count`` of them (default :func:`default_count` of
    the ``n_train`` training items). "cgan" infills lesions into ``normals``; "classic" transforms
    ``positives`` ((image, lesion mask) pairs; mask None where only the view's class is known, as for the
    exam classifier: the cGAN then takes its lesion shapes from the phantoms). Refused with the reason
    when the split lacks what the method needs; Cancel raises Stopped."""
    if method == "none":
        return Augmentation()
    if method == "cgan" and not normals:
        raise FinetuneError("--augment cgan infills lesions into normal views, and the training split has none: "
                            "export some normal views too, or use --augment classic")
    if method == "classic" and not positives:
        raise FinetuneError("--augment classic transforms the training positives, and the training split has none")
    from inference import augment

    n = count if count is not None else default_count(n_train, len(positives))
    if method == "cgan":  # lesion shapes from the masks the positives have
        shapes = [(image, mask) for image, mask in positives if mask is not None and np.any(mask)]
    else:
        shapes = [(image, np.zeros(np.shape(image), np.uint8) if mask is None else mask) for image, mask in positives]
    try:
        synthetic = augment.synthesize(method, normals, shapes, n, seed, breast_masks=breast_masks, device=device,
                                       should_stop=should_stop, progress=progress)
    except ValueError as exc:  # augment's own refusals (shapes, counts): the user's dataset, in words
        raise FinetuneError(f"--augment {method}: {exc}") from exc
    if should_stop is not None and should_stop():
        raise Stopped("fine-tuning cancelled")
    return Augmentation(method, synthetic, list(positives), dict(synthetic.provenance))


def lesion_mask(model_labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """Model-class labels -> augment's lesion mask (1 mass, 2 calcification, 0 anything else)."""
    lut = np.zeros(len(classes), np.uint8)
    for i, name in enumerate(classes):
        lut[i] = LESION_VALUES.get(str(name).lower(), 0)
    return lut[np.asarray(model_labels, dtype=np.int64)]


def model_labels(mask: np.ndarray, classes: list[str]) -> np.ndarray:
    """augment's lesion mask -> the model's class indices; a lesion kind the model has no class for
    (calcifications for the mass U-Net) becomes background, as the dataset's own labels do."""
    index = {str(name).lower(): i for i, name in enumerate(classes)}
    lut = np.zeros(max(LESION_VALUES.values()) + 1, np.uint8)
    for name, value in LESION_VALUES.items():
        lut[value] = index.get(name, 0)
    return lut[np.asarray(mask, dtype=np.int64)]
