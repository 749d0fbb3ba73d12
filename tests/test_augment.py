"""Fine-tuning augmentation: the transforms do what they say, on 2D and 3D crops, reproducibly."""
from __future__ import annotations

import numpy as np
import torch

from inference.augment import blur, intensity_augment


def test_blur_keeps_flat_images_and_the_mean_and_smooths_noise():
    flat = torch.full((1, 8, 12, 12), 40.0)
    assert torch.allclose(blur(flat, 1.0), flat)
    noise = torch.from_numpy(np.random.default_rng(0).normal(0, 100, (1, 16, 32, 32)).astype(np.float32))
    smooth = blur(noise, 1.0)
    assert smooth.shape == noise.shape
    assert abs(float(smooth.mean() - noise.mean())) < 2.0
    assert float(smooth.std()) < 0.5 * float(noise.std())
    image = torch.zeros(1, 21, 21)
    image[0, 10, 10] = 1.0
    out = blur(image, 1.0)  # 2D: a symmetric spot of the same total
    assert abs(float(out.sum()) - 1.0) < 1e-5 and torch.allclose(out, out.flip(-1)) and torch.allclose(out, out.transpose(1, 2))


def test_intensity_augment_is_reproducible_and_never_in_place():
    x = torch.from_numpy(np.random.default_rng(1).normal(0, 50, (1, 8, 16, 16)).astype(np.float32))
    keep = x.clone()
    a = intensity_augment(x, np.random.default_rng(5), noise_sd=100.0, p=1.0)
    b = intensity_augment(x, np.random.default_rng(5), noise_sd=100.0, p=1.0)
    assert torch.equal(x, keep) and torch.equal(a, b) and not torch.allclose(a, x)
    assert torch.equal(intensity_augment(x, np.random.default_rng(5), noise_sd=100.0, p=0.0), x)


def test_noise_sd_bounds_the_added_noise():
    x = torch.zeros(1, 16, 32, 32)
    sds = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        sds.append(float(intensity_augment(x, rng, noise_sd=60.0, p=1.0).std()))
    # noise up to 60, then a contrast of at most x1.15: never more than asked for
    assert max(sds) < 60.0 * 1.15 * 1.05 and max(sds) > 20.0
