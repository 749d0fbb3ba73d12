"""Sliding-window segmentation of CT volumes and mammograms, in the source image's grid.

The network sees the image at the spacing it was trained at (the card's
input.spacing_mm), tiled into card-sized patches whose logits are blended with a
Gaussian weight, so borders of a window count less than its centre. Window
positions and weights are MONAI's (`sliding_window_inference`, mode="gaussian"),
which `monai_sliding_window` calls for comparison; ours adds what a desktop app
needs (progress, cancel between windows, no autograd, windows batched) and keeps
big volumes in slabs: the input is resampled slab by slab and only labels (and,
on request, probabilities) are mapped back to the source grid.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inference.device import halving_batch, in_precision, pick_device
from inference.preprocess import ct as ctp

Progress = Callable[[float], None]
Cancel = Callable[[], bool]


class Cancelled(Exception):
    """The user cancelled a segmentation; nothing partial is returned."""


# --------------------------------------------------------------------------
# sliding window
# --------------------------------------------------------------------------
def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices of windows along one axis, the same MONAI's dense_patch_slices picks.

    Step int(roi * (1 - overlap)); the last window is shifted back to end at the border.
    """
    if roi >= size:
        return [0]
    step = max(1, int(roi * (1.0 - overlap)))
    starts = []
    for k in range(int(math.ceil(size / step))):
        s = k * step
        starts.append(min(s, size - roi))
        if s + roi >= size:
            break
    return starts


def gaussian_weight(roi: Sequence[int], sigma_scale: float = 0.125, device="cpu") -> torch.Tensor:
    """Separable Gaussian (sigma = sigma_scale * size) peaking at 1, floored at max(min, 1e-3)."""
    w = None
    for i, n in enumerate(roi):
        x = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2.0
        g = torch.exp(x ** 2 / (-2.0 * (sigma_scale * n) ** 2))
        w = g if w is None else w.unsqueeze(-1) * g[(None,) * i]
    return w.clamp_(min=max(float(w.min()), 1e-3))


def _check(cancel: Cancel | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("segmentation cancelled")


def sliding_window(net: nn.Module, image: torch.Tensor, roi: Sequence[int], *, overlap: float = 0.25,
                   sw_batch_size: int = 4, sigma_scale: float = 0.125, pad_value: float = 0.0,
                   progress: Progress | None = None, cancel: Cancel | None = None) -> torch.Tensor:
    """Gaussian-blended logits (1, K, *spatial) of `net` over a (1, C, *spatial) image.

    Images smaller than the window are padded symmetrically with pad_value and the
    padding is cropped again, as MONAI does. `cancel()` is polled before every batch
    of windows and raises Cancelled when it returns True; `progress(f)` gets the
    fraction of windows done.
    """
    if image.ndim != len(roi) + 2 or image.shape[0] != 1:
        raise ValueError(f"image must be (1, C, {'x'.join('n' * len(roi))}), got {tuple(image.shape)}")
    roi = tuple(int(r) for r in roi)
    size0 = tuple(image.shape[2:])
    pads = [max(r - s, 0) for r, s in zip(roi, size0)]
    if any(pads):
        pad_arg = []
        for p in reversed(pads):
            pad_arg += [p // 2, p - p // 2]
        image = F.pad(image, pad_arg, value=float(pad_value))
    size = tuple(image.shape[2:])
    starts = list(itertools.product(*(window_starts(s, r, overlap) for s, r in zip(size, roi))))
    device = image.device
    weight = gaussian_weight(roi, sigma_scale, device)
    norm = torch.zeros(size, dtype=torch.float32, device=device)
    for st in starts:
        norm[tuple(slice(a, a + r) for a, r in zip(st, roi))] += weight
    n = len(starts)

    def blend() -> torch.Tensor:
        out = None
        for b0 in range(0, n, sw_batch_size):
            _check(cancel)
            batch = starts[b0:b0 + sw_batch_size]
            sls = [tuple(slice(a, a + r) for a, r in zip(st, roi)) for st in batch]
            x = torch.cat([image[(slice(None), slice(None)) + sl] for sl in sls])
            y = net(x).float()
            if out is None:
                out = torch.zeros((1, y.shape[1], *size), dtype=torch.float32, device=device)
            for k, sl in enumerate(sls):
                out[(0, slice(None)) + sl].addcmul_(y[k], weight)
            if progress is not None:
                progress(min(1.0, (b0 + len(batch)) / n))
        return out.div_(norm)

    with torch.inference_mode():
        out = in_precision(blend, device)
    if any(pads):
        out = out[(slice(None), slice(None)) + tuple(slice(p // 2, p // 2 + s) for p, s in zip(pads, size0))]
    return out


def monai_sliding_window(net: nn.Module, image: torch.Tensor, roi: Sequence[int], *, overlap: float = 0.25,
                         sw_batch_size: int = 4, sigma_scale: float = 0.125, pad_value: float = 0.0) -> torch.Tensor:
    """MONAI's sliding_window_inference with the same windows and weights, for comparison."""
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        return sliding_window_inference(image, tuple(int(r) for r in roi), sw_batch_size, net,
                                        overlap=overlap, mode="gaussian", sigma_scale=sigma_scale,
                                        cval=float(pad_value))


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _stage(progress: Progress | None, lo: float, hi: float) -> Progress | None:
    if progress is None:
        return None
    return lambda f: progress(lo + (hi - lo) * float(f))


def _card_input(card, key, default=None):
    value = (card.input or {}).get(key, default)
    if value is None:
        raise ValueError(f"model {card.name!r}: card input lacks {key!r}")
    return value


def _fit_roi(roi: Sequence[int], size: Sequence[int], divisor: int) -> tuple[int, ...]:
    """Shrink the window to the image where the image is smaller (keeps it a multiple of divisor, and at
    least twice it: a window of one divisor leaves a 1-voxel bottleneck, which instance norm refuses;
    the padding is cropped again)."""
    out = []
    for r, s in zip(roi, size):
        r = int(r)
        if s < r:
            r = min(r, max(2 * divisor, int(math.ceil(s / divisor)) * divisor))
        out.append(r)
    return tuple(out)


# --------------------------------------------------------------------------
# CT volumes
# --------------------------------------------------------------------------
def segment_volume(model: nn.Module, card, volume_zyx, spacing_zyx: Sequence[float], device="auto",
                   progress: Progress | None = None, cancel: Cancel | None = None, *,
                   probabilities: str = "lazy", sw_batch_size: int = 4, overlap: float | None = None,
                   chunk: int | None = None, notify: Callable[[str], None] | None = None):
    """(labels uint8 (Z,Y,X), probabilities) of a 3D model on a volume, both on the volume's grid.

    volume_zyx: HU, any real dtype; spacing_zyx: mm per array axis. Labels index
    card.classes (0 = background). probabilities="lazy" gives a GridProbabilities
    (resampled per class / slab on demand; np.asarray() for all), "full" a float32
    (C,Z,Y,X) array, "none" None. Raises Cancelled if cancel() turns True.
    chunk: slices per resampling slab (default: 16 on a CPU, the whole volume where the GPU
    holds it, ctp.slab_chunk). A GPU that runs out of memory in the windows retries with half
    as many at a time (`notify` is told) before the caller's CPU fallback.
    """
    from inference.models.unet import divisor

    dev = pick_device(device)
    model = model.to(dev).eval()
    spacing_model = tuple(float(s) for s in _card_input(card, "spacing_mm"))
    shape = tuple(int(v) for v in np.shape(volume_zyx))
    if len(shape) != 3:
        raise ValueError(f"segment_volume needs a (z, y, x) volume, got shape {shape}")
    _check(cancel)
    if chunk is None:  # per source slice: the larger of the input and class slabs, with temporaries
        width = max(len(card.classes), len(ctp.hu_windows(card.normalization)), 2)
        chunk = ctp.slab_chunk(dev, 3 * 4 * width * shape[1] * shape[2])
    source = ctp.on_device(volume_zyx, dev)
    x = ctp.to_model_grid(source, spacing_zyx, spacing_model, card.normalization, chunk=chunk, device=dev)
    del source
    if progress:
        progress(0.1)
    _check(cancel)
    roi = _fit_roi(_card_input(card, "patch_size"), x.shape[1:], divisor(card))
    ov = float(overlap if overlap is not None else (card.input or {}).get("overlap", 0.25))
    logits = halving_batch(lambda batch: sliding_window(
        model, x[None], roi, overlap=ov, sw_batch_size=batch, pad_value=ctp.air_value(card.normalization),
        progress=_stage(progress, 0.1, 0.9), cancel=cancel), sw_batch_size, dev, notify)
    probs = torch.softmax(logits[0], dim=0)
    del logits
    x = None  # the model-grid input is not needed any more (the lambda above still names it)
    _check(cancel)
    labels = ctp.labels_to_grid(probs, shape, chunk=chunk)
    if progress:
        progress(0.97)
    classes = list(card.classes) or [str(i) for i in range(probs.shape[0])]
    if probabilities == "none":
        out = None
    elif probabilities == "lazy":
        out = ctp.GridProbabilities(probs, shape, classes, chunk=16)  # kept on the host: CPU-sized slabs
    elif probabilities == "full":
        out = ctp.resample(probs, shape, chunk=chunk, antialias=False, device=dev).cpu().numpy()
    else:
        raise ValueError(f"probabilities must be 'lazy', 'full' or 'none', got {probabilities!r}")
    if progress:
        progress(1.0)
    return labels, out


# --------------------------------------------------------------------------
# mammograms
# --------------------------------------------------------------------------
def labels_over_background(fg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 labels, P(any foreground)) from foreground probabilities (K-1, H, W), background being
    1 - their sum: argmax over [background, fg...] (first maximum wins) by running comparisons, on the
    tensor's device and without stacking a K-channel copy of a full-field map."""
    if fg.shape[0] == 1:  # a binary model: p > 1 - p is p > 0.5, also in float32 (every value checked)
        return (fg[0] > 0.5).to(torch.uint8), fg[0]
    lesion = fg.sum(0)
    best = 1.0 - lesion
    labels = (fg[0] > best).to(torch.uint8)  # masked_fill_ is several times slower on a CPU
    for c in range(1, fg.shape[0]):
        torch.maximum(best, fg[c - 1], out=best)
        labels = torch.where(fg[c] > best, torch.tensor(c + 1, dtype=torch.uint8, device=fg.device), labels)
    return labels, lesion


def segment_image(model: nn.Module, card, image, spacing_yx: Sequence[float], laterality: str | None = None,
                  view: str | None = None, device="auto", progress: Progress | None = None,
                  cancel: Cancel | None = None, *, chest_wall: str | None = None, sw_batch_size: int = 4,
                  overlap: float | None = None, notify: Callable[[str], None] | None = None,
                  prepared=None):
    """(labels uint8 (H,W), lesion probability float32 (H,W)) of a 2D model, on the image as given.

    The image goes through inference.preprocess.mammo.prepare (resample to the
    card's spacing, breast crop, chest wall mirrored to the left, card
    normalization), so every mammography model sees views the same way; the
    probabilities come back with its to_source. chest_wall ("left"/"right") is
    found from the pixels when not given; laterality alone does not say it (raw
    and hung images differ). Labels index card.classes; the probability map is
    1 - P(background), i.e. P(lesion) for a binary model. ``prepared``: the view as another model of
    the exam already prepared it (inference.classify); used when it is what this card would make.
    """
    from inference.models.unet import divisor
    from inference.preprocess import mammo as mgp

    dev = pick_device(device)
    model = model.to(dev).eval()
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"segment_image needs a 2D image, got shape {img.shape}")
    _check(cancel)
    spacing_model = [float(s) for s in np.atleast_1d(_card_input(card, "spacing_mm"))]
    margin = int((card.input or {}).get("crop_margin_px", 26))
    if prepared is not None and prepared.fits(img.shape, spacing_yx, spacing_model[0], margin,
                                              card.normalization or None, chest_wall):
        prep = prepared
    else:
        prep = mgp.prepare(img, spacing_yx, laterality, view, chest_wall=chest_wall, target_spacing=spacing_model[0],
                           margin=margin, normalization=card.normalization or None, device=dev)
    background = prep.image[~prep.breast]
    pad_value = float(np.median(background)) if background.size else float(prep.image.min())
    if progress:
        progress(0.1)
    _check(cancel)
    x = torch.from_numpy(prep.image).to(dev)[None, None]
    roi = _fit_roi(_card_input(card, "patch_size"), x.shape[2:], divisor(card))
    ov = float(overlap if overlap is not None else (card.input or {}).get("overlap", 0.25))
    logits = halving_batch(lambda batch: sliding_window(
        model, x, roi, overlap=ov, sw_batch_size=batch, pad_value=pad_value,
        progress=_stage(progress, 0.1, 0.9), cancel=cancel), sw_batch_size, dev, notify)
    probs = torch.softmax(logits[0], dim=0)
    del logits
    _check(cancel)
    # back on the source grid where the network ran: only uint8 labels and one float map reach the host
    fg = mgp.to_source(probs[1:], prep.geometry, fill=0.0)  # outside the crop: background
    labels, lesion = labels_over_background(fg)
    if progress:
        progress(1.0)
    return labels.cpu().numpy(), lesion.cpu().numpy()
