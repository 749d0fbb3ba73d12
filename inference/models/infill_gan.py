"""Conditional infilling GAN for mammography lesions (after Wu et al. 2018, "Conditional infilling GANs
for data augmentation in mammogram classification"), registered as "infill-cgan".

Generator: pix2pix-style U-Nets in a cascade, as Wu et al. refine coarse to fine. A coarse U-Net sees the
conditioning at half resolution; its upsampled output joins the conditioning at full resolution, where
a second U-Net refines it; both add corrections to the first input channel. Input channels (N, 5, P, P):
the patch with the region filled smoothly from its surroundings (a background guess, so the networks
learn the lesion and the texture, not the whole tissue: what lets them train in minutes), the region,
the mass mask, the calcification mask, and noise inside the region (texture differs from call to call;
the seed decides it). Output: the whole patch; callers keep the real pixels outside the region
(:func:`composite`).

Discriminator: PatchGAN at two scales (full and half resolution) on the conditioning plus a patch.
Both halves live in one module so a fine-tuned version continues the adversarial game where its
parent stopped; inference only runs ``.generator``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from inference.registry import register_architecture

IN_CHANNELS = 5  # masked patch, region, mass mask, calcification mask, noise in the region


def composite(real: torch.Tensor, generated: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Real pixels outside the region, generated ones inside: out = real*(1-region) + gen*region."""
    return real * (1 - region) + generated * region


def _block(cin: int, cout: int, convs: int = 2) -> nn.Sequential:
    layers = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.InstanceNorm2d(cout, affine=True),
                   nn.LeakyReLU(0.2, inplace=True)]
    return nn.Sequential(*layers)


class SmallUNet(nn.Module):
    """Encoder (halving per level) and decoder with additive skips; (N, cin, H, W) -> (N, cout, H, W).

    Additive skips (a 1x1 projection, upsampled, plus the encoder's features) and one convolution at full
    resolution keep the cost low enough to train on two CPU cores; deeper levels get two convolutions."""

    def __init__(self, cin: int, cout: int, widths=(16, 32, 64)):
        super().__init__()
        widths = [int(w) for w in widths]
        self.down = nn.ModuleList(_block(cin if i == 0 else widths[i - 1], w, 1 if i == 0 else 2)
                                  for i, w in enumerate(widths))
        self.project = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1) for i in range(len(widths) - 1))
        self.up = nn.ModuleList(_block(widths[i], widths[i], 1 if i == 0 else 2) for i in range(len(widths) - 1))
        self.head = nn.Conv2d(widths[0], cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.avg_pool2d(x, 2))
            skips.append(x)
        for i in reversed(range(len(self.up))):
            skip = skips[i]
            x = F.interpolate(self.project[i](x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](x + skip)
        return self.head(x)


class InfillGenerator(nn.Module):
    """Coarse (half resolution) then refinement (full resolution); returns (patch, coarse patch)."""

    def __init__(self, widths=(16, 32, 64), coarse_widths=(16, 32, 48)):
        super().__init__()
        self.coarse = SmallUNet(IN_CHANNELS, 1, coarse_widths)
        self.refine = SmallUNet(IN_CHANNELS + 1, 1, widths)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        small = F.avg_pool2d(x, 2)
        coarse = small[:, :1] + self.coarse(small)  # a correction of the smoothly filled patch
        up = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return up + self.refine(torch.cat([x, up], 1)), coarse


class PatchDiscriminator(nn.Module):
    """70x70-style PatchGAN shrunk for 64 px patches: a map of real/fake logits, one per ~22 px receptive field."""

    def __init__(self, cin: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(cin, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.InstanceNorm2d(2 * width, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, 1, 1), nn.InstanceNorm2d(2 * width, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * width, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MultiscaleDiscriminator(nn.Module):
    """PatchGANs on the full patch and on its half-resolution copy (pix2pixHD's multiscale D)."""

    def __init__(self, cin: int = IN_CHANNELS, width: int = 32, scales: int = 2):
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(cin, width) for _ in range(int(scales)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, d in enumerate(self.scales):
            out.append(d(x if i == 0 else F.avg_pool2d(x, 2 ** i)))
        return out


class InfillGAN(nn.Module):
    """Generator + discriminator, saved together (one safetensors file, one card)."""

    def __init__(self, widths=(16, 32, 64), coarse_widths=(16, 32, 48), disc_width: int = 24, disc_scales: int = 2):
        super().__init__()
        self.generator = InfillGenerator(widths, coarse_widths)
        # conditioning without the noise channel, plus the (real or generated) patch
        self.discriminator = MultiscaleDiscriminator(IN_CHANNELS, disc_width, disc_scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The generated patch (inference entry point, so registry/ONNX tooling sees one output)."""
        return self.generator(x)[0]


@register_architecture("infill-cgan")
def infill_cgan(widths=(16, 32, 64), coarse_widths=(16, 32, 48), disc_width: int = 24,
                disc_scales: int = 2) -> InfillGAN:
    return InfillGAN(tuple(widths), tuple(coarse_widths), int(disc_width), int(disc_scales))
