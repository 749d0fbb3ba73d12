"""Whole-image mammography classifier built on the patch network's trunk.

Following Shen et al. 2019 ("Deep learning to improve breast cancer detection on
screening mammography", all-convolutional end-to-end training): a patch classifier
learns what lesions look like from small labelled patches, then a few convolutional
layers on top of its feature maps and a global pooling turn it into an image
classifier that needs only an image-level label. Max pooling of a score map keeps a
small lesion from being averaged away by a large normal breast, and the score map
before pooling is what Grad-CAM explains.
"""
from __future__ import annotations

import torch
from torch import nn

from inference.models.patch_net import PatchTrunk, conv_block
from inference.registry import register_architecture


@register_architecture("mammo-exam-net")
class ExamNet(nn.Module):
    """(N,1,H,W) image at model spacing -> (N,) malignancy logit."""

    def __init__(self, in_channels: int = 1, widths=(8, 16, 24, 32, 48, 64), top=(32, 32)):
        super().__init__()
        self.trunk = PatchTrunk(in_channels, tuple(widths))
        layers: list[nn.Module] = []
        cin = self.trunk.out_channels
        for width in top:  # padded: the top sees whole images, patch equivalence is not needed here
            layers += conv_block(cin, width, padding=1)
            cin = width
        self.top = nn.Sequential(*layers)
        self.score = nn.Conv2d(cin, 1, 1)

    def score_map(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """(N,1,h,w) logit map at trunk stride; `features` reuses an already computed trunk output."""
        f = self.trunk(x) if features is None else features
        return self.score(self.top(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_map(x).flatten(1).amax(dim=1)
