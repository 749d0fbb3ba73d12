"""Synthetic positives for fine-tuning with few lesions: none, classic, or the infill cGAN (Wu et al.).

Every method returns a :class:`Synthetic` on the mammography model-input grid (the output of
``inference.preprocess.mammo.prepare``: 0.42 mm/px, chest wall LEFT, ``(value - 2000) / 1000``) with
uint8 label masks (0 background, 1 mass, 2 calcification), so the same call feeds the patch
classifier, the exam classifier and the lesion U-Net:

* "classic": new positives from the real ones by flips, 90 degree rotations, a small zoom and
  intensity / gamma jitter, image and mask moved together. A whole view (both sides at least
  ``WHOLE_VIEW_MIN`` px) is only mirrored up/down and zoomed about its chest-wall edge, so the chest
  wall stays on the left as every model expects; a patch gets all eight flips/rotations.
* "cgan": a normal image with a lesion infilled by the ``mammo-infill-cgan`` generator at a site
  inside the breast; the pasted lesion mask IS the label (``inference.infill`` does the work).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from inference.augment_grid import grid_image, save_grid  # noqa: F401 - part of this module's contract

METHODS = ("none", "classic", "cgan")
WHOLE_VIEW_MIN = 160  # px (67 mm): smaller images are patches, free to rotate
MASS, CALCIFICATION = 1, 2
KIND_NAMES = {MASS: "mass", CALCIFICATION: "calcification"}


@dataclass
class Synthetic:
    """Synthetic positives and where they came from (the new version's card records ``provenance``)."""

    images: list = field(default_factory=list)  # float32 2D, same shape as its source
    masks: list = field(default_factory=list)  # uint8, same shape: 0 bg / 1 mass / 2 calcification
    kinds: list = field(default_factory=list)  # "mass" | "calcification"
    sources: list = field(default_factory=list)  # index into normals (cgan) or positives (classic)
    provenance: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


def kind_of(mask: np.ndarray) -> str:
    """"mass" when the label holds any mass pixel, else "calcification"."""
    return "mass" if bool((np.asarray(mask) == MASS).any()) else "calcification"


def check_positives(positives) -> list[tuple[np.ndarray, np.ndarray]]:
    """(float32 image, uint8 mask) pairs; refuses (naming the index) a pair that is not two equal 2D arrays."""
    out = []
    for i, pair in enumerate(positives or []):
        try:
            image, mask = pair
        except (TypeError, ValueError) as exc:
            raise ValueError(f"positive {i}: expected an (image, mask) pair") from exc
        image, mask = np.asarray(image, np.float32), np.asarray(mask)
        if image.ndim != 2 or mask.shape != image.shape:
            raise ValueError(f"positive {i}: image {image.shape} and mask {mask.shape} must be the same 2D shape")
        out.append((image, mask.astype(np.uint8)))
    return out


def check_normals(normals) -> list[np.ndarray]:
    out = []
    for i, image in enumerate(normals or []):
        image = np.asarray(image, np.float32)
        if image.ndim != 2:
            raise ValueError(f"normal {i}: shape {image.shape} is not one 2D image")
        out.append(image)
    return out


def synthesize(method: str, normals, positives, n: int, seed: int, breast_masks=None, infill_model: str | None = None,
               device="cpu", should_stop: Callable[[], bool] | None = None,
               progress: Callable[[dict], None] | None = None) -> Synthetic:
    """``n`` synthetic positives by ``method`` (see the module docstring); deterministic for a seed.

    normals: 2D model-input images without lesions (cgan); positives: (image, mask) pairs (classic;
    cgan takes its lesion shapes from their masks, or from the phantom shapes when there are none).
    breast_masks: one bool mask per normal (else found by thresholding the normalized image).
    infill_model: "NAME[:VERSION]" of the infill cGAN (default: the active ``mammo-infill-cgan``).
    ``progress`` gets {"stage": "augment", "done", "total"}; ``should_stop`` cancels (Stopped).
    """
    if method not in METHODS:
        raise ValueError(f"augmentation must be one of {', '.join(METHODS)}, got {method!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"the number of synthetic positives must be a whole number >= 0, got {n!r}")
    if method == "none" or n == 0:
        return Synthetic(provenance={"augment": method, "n_synthetic": 0})
    if method == "classic":
        return classic(check_positives(positives), int(n), seed, should_stop, progress)
    from inference.infill import synthesize_cgan

    return synthesize_cgan(check_normals(normals), check_positives(positives), int(n), seed, breast_masks,
                           infill_model, device, should_stop, progress)


def report(progress, done: int, total: int, should_stop) -> None:
    """One progress record; raises Stopped when cancelled (the fine-tuners catch the same exception)."""
    if should_stop is not None and should_stop():
        from inference.finetune_common import Stopped

        raise Stopped("augmentation cancelled")
    if progress is not None:
        progress({"stage": "augment", "done": done, "total": total})


# --------------------------------------------------------------------------
# classic
# --------------------------------------------------------------------------
def classic(positives: list[tuple[np.ndarray, np.ndarray]], n: int, seed: int, should_stop=None,
            progress=None) -> Synthetic:
    """``n`` geometric + intensity variants of the real positives (image and mask together)."""
    if not positives:
        raise ValueError("classic augmentation needs at least one real positive (an image with a lesion mask)")
    rng = np.random.default_rng([int(seed), 17])
    out = Synthetic(provenance={"augment": "classic", "n_synthetic": n})
    for i in range(n):
        report(progress, i, n, should_stop)
        j = int(rng.integers(len(positives)))
        image, mask = classic_variant(*positives[j], rng)
        out.images.append(image)
        out.masks.append(mask)
        out.kinds.append(kind_of(mask))
        out.sources.append(j)
    report(progress, n, n, should_stop)
    return out


def classic_variant(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random flip/rotation, zoom (0.9-1.1) and gamma/gain/offset jitter; shape and dtype kept."""
    whole_view = min(image.shape) >= WHOLE_VIEW_MIN
    img, lab = image, mask
    if rng.random() < 0.5:
        img, lab = img[::-1], lab[::-1]
    if not whole_view:
        if rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        k = int(rng.integers(4)) if img.shape[0] == img.shape[1] else 2 * int(rng.integers(2))
        img, lab = np.rot90(img, k), np.rot90(lab, k)
    img, lab = zoom(np.ascontiguousarray(img), np.ascontiguousarray(lab), float(rng.uniform(0.9, 1.1)),
                    anchor_left=whole_view)
    img = jitter_intensity(img, rng)
    return img.astype(np.float32), lab.astype(np.uint8)


def zoom(image: np.ndarray, mask: np.ndarray, scale: float, anchor_left: bool) -> tuple[np.ndarray, np.ndarray]:
    """Magnify by ``scale`` about the centre (a view: about the middle of its chest-wall edge, which stays put)."""
    from scipy.ndimage import affine_transform

    centre = np.array([(image.shape[0] - 1) / 2, 0.0 if anchor_left else (image.shape[1] - 1) / 2])
    matrix = np.full(2, 1.0 / scale)
    offset = centre - centre / scale
    img = affine_transform(image, matrix, offset, order=1, mode="nearest")
    lab = affine_transform(mask, matrix, offset, order=0, mode="constant", cval=0)
    return img, lab


def jitter_intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma 0.8-1.25 over the image's own range, then gain 0.95-1.05 and offset +-0.05 (normalized units)."""
    lo, hi = float(image.min()), float(image.max())
    if hi > lo:
        t = (image - lo) / (hi - lo)
        image = lo + (hi - lo) * t ** float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    return image * float(rng.uniform(0.95, 1.05)) + float(rng.uniform(-0.05, 0.05))
