"""Patch-classifier heatmaps: one fully convolutional pass, and the patch-by-patch reference.

Why they agree exactly: the patch network uses only valid convolutions, 2x2/2
max-pools and a convolutional classifier, so its total stride S is 8 and its
receptive field P (52) is the patch size. Output (i, j) of the whole image then
depends on exactly the pixels [i*S, i*S+P) x [j*S, j*S+P) and is computed by the
same arithmetic as the crop there (every pool window of the crop coincides with a
pool window of the image because i*S is a multiple of every intermediate stride).
`naive_heatmap` crops those patches explicitly; differences are float rounding only.
A finer stride S/k is reached by shift-and-stitch: k*k passes on the image shifted
by multiples of S/k, interleaved - still exact, still no per-patch work.
"""
from __future__ import annotations

import numpy as np
import torch

from inference.device import in_precision, model_device
from inference.preprocess import sample_bilinear


def _as_tensor(image, device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(image, dtype=np.float32) if not torch.is_tensor(image) else image)
    t = t.to(device=device, dtype=torch.float32)
    while t.dim() < 4:
        t = t.unsqueeze(0)
    return t


def _geometry(model) -> tuple[int, int]:
    return int(model.patch_size), int(model.stride)


def grid_shape(image_shape, patch_size: int, stride: int) -> tuple[int, int]:
    """Number of patch positions (rows, cols) at `stride` that fit in the image."""
    return tuple(max(0, (n - patch_size) // stride + 1) for n in image_shape[-2:])


def centers(patch_size: int, stride: int) -> tuple[float, float]:
    """(origin, step) of heatmap samples in image pixel coordinates: the patch centres."""
    return (patch_size - 1) / 2.0, float(stride)


@torch.no_grad()
def dense_heatmap(model, image, stride: int | None = None, device=None) -> np.ndarray:
    """float32 class probabilities (C, H', W'); value (c, i, j) is for the patch at (i*stride, j*stride).

    stride defaults to the network's own; it may be any divisor of it (shift-and-stitch).
    device defaults to where the model is.
    """
    P, S = _geometry(model)
    stride = S if stride is None else int(stride)
    if stride <= 0 or S % stride:
        raise ValueError(f"stride must divide the network stride {S}, got {stride}")
    dev = model_device(model, device)
    x = _as_tensor(image, dev)
    gh, gw = grid_shape(x.shape, P, stride)
    if gh == 0 or gw == 0:
        raise ValueError(f"image {tuple(x.shape[-2:])} is smaller than one patch ({P} px)")
    k = S // stride

    def stitch() -> torch.Tensor:
        out = None
        for a in range(k):
            for b in range(k):
                sub = x[..., a * stride:, b * stride:]
                if sub.shape[-2] < P or sub.shape[-1] < P:
                    continue
                logits = model(sub).float()[0]
                if out is None:
                    out = torch.zeros((logits.shape[0], gh, gw), dtype=torch.float32, device=dev)
                hi, wi = len(range(a, gh, k)), len(range(b, gw, k))
                out[:, a::k, b::k] = torch.softmax(logits[:, :hi, :wi], dim=0)
        return out

    return in_precision(stitch, dev).cpu().numpy()


@torch.no_grad()
def naive_heatmap(model, image, stride: int | None = None, device=None, batch_size: int = 256) -> np.ndarray:
    """Reference: crop every patch at `stride`, classify each, same layout as dense_heatmap."""
    P, S = _geometry(model)
    stride = S if stride is None else int(stride)
    dev = model_device(model, device)
    x = _as_tensor(image, dev)[0, 0]
    gh, gw = grid_shape(x.shape, P, stride)
    if gh == 0 or gw == 0:
        raise ValueError(f"image {tuple(x.shape)} is smaller than one patch ({P} px)")
    # (gh, gw, P, P) view of all patches, no copy until a batch is taken
    windows = x.unfold(0, P, stride).unfold(1, P, stride)[:gh, :gw].reshape(gh * gw, 1, P, P)

    def classify() -> torch.Tensor:
        probs = []
        for i in range(0, gh * gw, batch_size):
            logits = model(windows[i:i + batch_size].contiguous()).float().flatten(1)
            probs.append(torch.softmax(logits, dim=1))
        return torch.cat(probs)

    return in_precision(classify, dev).T.reshape(-1, gh, gw).cpu().numpy()


def to_image_grid(probs: np.ndarray, image_shape, patch_size: int, stride: int) -> np.ndarray:
    """Heatmap -> map the size of the image it was computed on: each value at its patch
    centre, bilinear in between, constant beyond the outermost centres."""
    origin, step = centers(patch_size, stride)
    rows = (np.arange(image_shape[-2]) - origin) / step
    cols = (np.arange(image_shape[-1]) - origin) / step
    return sample_bilinear(probs, rows, cols)
