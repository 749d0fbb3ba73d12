"""Intensity augmentation for fine-tuning on a handful of corrected cases.

A user's retraining set is tiny (a few exported cases), so the network would otherwise memorise
each case's particular noise and contrast. These are the intensity transforms nnU-Net applies
(Isensee et al. 2021: Gaussian noise, Gaussian blur, brightness, contrast), done in physical
units (HU for CT) *before* the windowing, so the clipping the model sees stays the real one.
No spatial flips: the demo anatomy is not left/right symmetric and mirroring would teach a liver
on the wrong side.
"""
from __future__ import annotations

import numpy as np
import torch


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, round(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (sigma in voxels) over every spatial axis of (C, *spatial)."""
    k = _gaussian_kernel(sigma).to(x.device)
    out = x[None]  # (1, C, *spatial)
    dims = x.dim() - 1
    conv = torch.nn.functional.conv3d if dims == 3 else torch.nn.functional.conv2d
    channels = x.shape[0]
    for axis in range(dims):
        shape = [1] * dims
        shape[axis] = len(k)
        weight = k.reshape(1, 1, *shape).repeat(channels, 1, *([1] * dims))
        pad = [0] * (2 * dims)
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = len(k) // 2
        out = conv(torch.nn.functional.pad(out, pad, mode="replicate"), weight, groups=channels)
    return out[0]


def intensity_augment(x: torch.Tensor, rng: np.random.Generator, noise_sd: float, p: float = 0.5) -> torch.Tensor:
    """One random draw of noise / blur / brightness / contrast on a (C, *spatial) crop in physical units.

    ``noise_sd`` is the largest added noise standard deviation (HU for CT); each transform is applied
    with probability ``p``. Contrast scales about the crop mean, brightness adds an offset of up to a
    tenth of ``noise_sd``.
    """
    x = x.clone()
    if rng.random() < p:
        x = blur(x, float(rng.uniform(0.5, 1.0)))
    if rng.random() < p:
        gen = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
        x = x + torch.randn(x.shape, generator=gen).to(x.device) * float(rng.uniform(0.0, noise_sd))
    if rng.random() < p:
        mean = x.mean()
        x = (x - mean) * float(rng.uniform(0.85, 1.15)) + mean
    if rng.random() < p:
        x = x + float(rng.uniform(-0.1, 0.1)) * noise_sd
    return x
