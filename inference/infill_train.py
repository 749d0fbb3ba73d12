"""Training the infill cGAN: lesion patches with their conditioning, the GAN loop, and its validation.

A training example is a real lesion patch (PATCH px around one mass or calcification cluster, so the
rest of the patch is the normal tissue around it), the region to repaint (the lesion grown by GROW px),
and the lesion's mask. The generator learns to repaint the region from the context and the mask:
LSGAN loss against a two-scale PatchGAN, plus L1 to the real pixels in the region (weight L1_WEIGHT)
and on the coarse half-resolution output, as pix2pix / Wu et al. pair an adversarial and an L1 term.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from inference.lesion_shapes import KINDS, lesion_objects
from inference.models.infill_gan import InfillGAN, composite

PATCH = 64  # px at 0.42 mm: 27 mm, room for a 15 mm mass and its surroundings
GROW = {"mass": 8, "calcification": 5}  # px the region extends beyond the lesion mask
BORDER = 4  # px of real context always kept around the region
L1_WEIGHT, COARSE_WEIGHT = 20.0, 10.0
LESION_WEIGHT = 1.0  # 5.0 was tried for the shipped version: region PSNR 22.6 -> 22.2 dB and fewer synthetic
# calcifications called "calcification" by mammo-patch (19 % -> 6 %), so lesion pixels count once
PSNR_RANGE = 4.0  # normalized units spanned by mammogram tissue ((value - 2000) / 1000)


@dataclass
class InfillPatches:
    """N training/validation examples, each (PATCH, PATCH) float32."""

    real: np.ndarray
    region: np.ndarray
    mass: np.ndarray
    calcification: np.ndarray
    kinds: list

    def __len__(self) -> int:
        return len(self.real)

    @classmethod
    def concat(cls, parts: list[InfillPatches]) -> InfillPatches:
        parts = [p for p in parts if len(p)]
        if not parts:
            empty = np.zeros((0, PATCH, PATCH), np.float32)
            return cls(empty, empty, empty, empty, [])
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("real", "region", "mass",
                                                                               "calcification")),
                   [k for p in parts for k in p.kinds])

    def subset(self, idx) -> InfillPatches:
        idx = np.asarray(idx, int)
        return InfillPatches(self.real[idx], self.region[idx], self.mass[idx], self.calcification[idx],
                             [self.kinds[i] for i in idx])


def window(array: np.ndarray, centre, size: int, mode: str) -> np.ndarray:
    """size x size window centred on ``centre``; beyond the image: edge values ("edge") or zeros ("constant")."""
    half = size // 2
    padded = np.pad(array, size, mode=mode)
    r0, c0 = int(centre[0]) - half + size, int(centre[1]) - half + size
    return padded[r0:r0 + size, c0:c0 + size].copy()


def infill_region(lesion: np.ndarray, kind: str, patch: int = PATCH) -> np.ndarray:
    """The lesion grown by GROW[kind] px (a disc), kept BORDER px away from the patch edge."""
    from scipy.ndimage import distance_transform_edt

    region = distance_transform_edt(~lesion.astype(bool)) <= GROW[kind]
    inner = np.zeros_like(region)
    inner[BORDER:patch - BORDER, BORDER:patch - BORDER] = True
    return region & inner


def max_extent(kind: str, patch: int = PATCH) -> int:
    """The largest lesion side whose region still fits inside the patch's border."""
    return patch - 2 * (GROW[kind] + BORDER)


def extract_patches(image: np.ndarray, label: np.ndarray, patch: int = PATCH) -> InfillPatches:
    """One example per mass and calcification cluster of ``label`` (0 bg / 1 mass / 2 calc), centred on it."""
    parts = []
    for kind, obj in lesion_objects(label):
        rows, cols = np.nonzero(obj)
        centre = ((rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2)
        lesion = window(obj, centre, patch, "constant")
        region = infill_region(lesion, kind, patch)
        lab = window(np.asarray(label), centre, patch, "constant")
        parts.append(InfillPatches(window(np.asarray(image, np.float32), centre, patch, "edge")[None],
                                   region[None].astype(np.float32),
                                   ((lab == KINDS["mass"]) & region)[None].astype(np.float32),
                                   ((lab == KINDS["calcification"]) & region)[None].astype(np.float32), [kind]))
    return InfillPatches.concat(parts)


FILL_SIGMA = 8.0  # px: the smooth background guess inside the region


def smooth_fill(real: torch.Tensor, region: torch.Tensor, sigma: float = FILL_SIGMA) -> torch.Tensor:
    """The region's pixels replaced by a Gaussian-weighted mean of the pixels around it (normalized
    convolution); the real pixels inside the region never enter."""
    radius = int(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=real.dtype, device=real.device)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()

    def blur(a: torch.Tensor) -> torch.Tensor:
        a = F.conv2d(F.pad(a, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        return F.conv2d(F.pad(a, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))

    keep = 1 - region
    num, den = blur(real * keep), blur(keep)
    mean = (real * keep).sum((-1, -2), keepdim=True) / keep.sum((-1, -2), keepdim=True).clamp_min(1.0)
    guess = torch.where(den > 1e-4, num / den.clamp_min(1e-4), mean)
    return real * keep + guess * region


def conditioning(real: torch.Tensor, region: torch.Tensor, mass: torch.Tensor, calc: torch.Tensor,
                 noise: torch.Tensor) -> torch.Tensor:
    """(N, 5, P, P) generator input from (N, 1, P, P) tensors; the region's real pixels are hidden
    (replaced by :func:`smooth_fill`'s guess from the surroundings)."""
    return torch.cat([smooth_fill(real, region), region, mass, calc, noise * region], 1)


def _tensors(p: InfillPatches, idx, device) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(getattr(p, k)[idx][:, None]).to(device)
                 for k in ("real", "region", "mass", "calcification"))


def _dihedral(tensors: tuple[torch.Tensor, ...], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """The same random flip/transpose for every tensor of the batch (lesions have no preferred direction)."""
    flips = torch.randint(0, 2, (3,), generator=gen).tolist()
    out = []
    for t in tensors:
        t = t.flip(-1) if flips[0] else t
        t = t.flip(-2) if flips[1] else t
        out.append(t.transpose(-1, -2) if flips[2] else t)
    return tuple(out)


def train_infill(patches: InfillPatches, steps: int, seed: int, device="cpu",
                 progress: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
                 net: InfillGAN | None = None, lr: float = 2e-4, batch: int = 16) -> tuple[InfillGAN, list[dict]]:
    """Train ``net`` (a fresh InfillGAN by default) for ``steps`` GAN steps; returns (net in eval mode, history).

    ``progress`` gets {"step", "steps", "loss_l1", "loss_g", "loss_d"} every 25 steps and at the end.
    """
    from inference.device import pick_device

    if not len(patches):
        raise ValueError("no lesion patches to train the infill cGAN on (the positives hold no mass or "
                         "calcification label)")
    dev = pick_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = (net if net is not None else InfillGAN()).to(dev).train()
    g_opt = torch.optim.Adam(net.generator.parameters(), lr=lr, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(net.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    history, window_losses = [], []
    for step in range(1, steps + 1):
        if should_stop is not None and should_stop():
            from inference.finetune_common import Stopped

            raise Stopped("infill training cancelled")
        idx = torch.randint(0, len(patches), (min(batch, len(patches)),), generator=gen).numpy()
        real, region, mass, calc = _dihedral(_tensors(patches, idx, dev), gen)
        noise = torch.randn(real.shape, generator=gen).to(dev)
        x = conditioning(real, region, mass, calc, noise)
        cond = x[:, :4]
        fake_full, coarse = net.generator(x)
        fake = composite(real, fake_full, region)
        # discriminator: real -> 1, fake -> 0 (LSGAN)
        d_loss = sum(F.mse_loss(o, torch.ones_like(o)) for o in net.discriminator(torch.cat([cond, real], 1)))
        d_loss = d_loss + sum(F.mse_loss(o, torch.zeros_like(o))
                              for o in net.discriminator(torch.cat([cond, fake.detach()], 1)))
        d_opt.zero_grad(set_to_none=True)
        (0.5 * d_loss).backward()
        d_opt.step()
        # generator: fool D, match the real pixels in the region at both scales
        adv = sum(F.mse_loss(o, torch.ones_like(o)) for o in net.discriminator(torch.cat([cond, fake], 1)))
        # lesion pixels count LESION_WEIGHT times: calcification dots are a few pixels of a larger region
        weight = region * (1 + (LESION_WEIGHT - 1) * torch.clamp(mass + calc, max=1))
        l1 = region_l1(fake_full, real, weight)
        coarse_l1 = region_l1(coarse, F.avg_pool2d(real, 2), F.avg_pool2d(weight, 2))
        g_loss = adv + L1_WEIGHT * l1 + COARSE_WEIGHT * coarse_l1
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        window_losses.append((float(l1.detach()), float(adv.detach()), float(d_loss.detach())))
        if step % 25 == 0 or step == steps:
            l1m, gm, dm = np.mean(window_losses, 0)
            record = {"step": step, "steps": steps, "loss_l1": float(l1m), "loss_g": float(gm), "loss_d": float(dm)}
            history.append(record)
            window_losses = []
            if progress is not None:
                progress(record)
    return net.eval(), history


def region_l1(pred: torch.Tensor, real: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over the region's pixels only (``region`` may weight them)."""
    return ((pred - real).abs() * region).sum() / region.sum().clamp_min(1.0)


@torch.no_grad()
def generate(net: InfillGAN, real: np.ndarray, region: np.ndarray, mass: np.ndarray, calc: np.ndarray,
             seed: int, device="cpu", batch: int = 64) -> np.ndarray:
    """Composited infills (N, P, P) float32 for (N, P, P) inputs, batched; noise from ``seed``."""
    from inference.device import pick_device

    gen = torch.Generator().manual_seed(int(seed))
    dev = pick_device(device)
    generator = net.generator.to(dev).eval()
    out = np.empty_like(real, dtype=np.float32)
    for s in range(0, len(real), batch):
        r, g, m, c = (torch.from_numpy(np.ascontiguousarray(a[s:s + batch], np.float32)[:, None]).to(dev)
                      for a in (real, region, mass, calc))
        noise = torch.randn(r.shape, generator=gen).to(dev)
        full, _ = generator(conditioning(r, g, m, c, noise))
        out[s:s + batch] = composite(r, full, g)[:, 0].cpu().numpy()
    return out


def validate_infill(net: InfillGAN, patches: InfillPatches, seed: int = 0, device="cpu") -> dict:
    """{"l1", "psnr"} of the infill vs the real pixels in the regions (fixed noise: parent and new versions
    are scored on identical inputs); PSNR in dB over PSNR_RANGE, higher is better."""
    if not len(patches):
        return {}
    out = generate(net, patches.real, patches.region, patches.mass, patches.calcification, seed, device)
    diff = (out - patches.real) * patches.region
    n = max(float(patches.region.sum()), 1.0)
    mse = float((diff ** 2).sum()) / n
    return {"l1": float(np.abs(diff).sum()) / n, "psnr": float(10 * np.log10(PSNR_RANGE ** 2 / max(mse, 1e-12)))}
