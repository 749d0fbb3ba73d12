"""All-convolutional mammography patch classifier (no Linear layers).

Because every layer is a valid (unpadded) convolution or a 2x2/2 max-pool and the
classifier is a convolution, the network applied to a whole image gives, at output
position (i, j), exactly what it gives on the patch cropped at (i*stride, j*stride)
of size `patch_size` (= its receptive field). That is what lets inference.heatmap
compute a dense heatmap in one pass instead of one pass per patch.
"""
from __future__ import annotations

from torch import nn

from inference.registry import register_architecture


def conv_block(cin: int, cout: int, padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class PatchTrunk(nn.Sequential):
    """Stages of two valid 3x3 convolutions then a 2x2 max-pool; total stride 2**stages."""

    def __init__(self, in_channels: int = 1, widths=(8, 16, 24, 32, 48, 64)):
        if len(widths) % 2:
            raise ValueError("widths come in pairs (two convolutions per stage)")
        layers: list[nn.Module] = []
        cin = in_channels
        for s in range(len(widths) // 2):
            layers += conv_block(cin, widths[2 * s]) + conv_block(widths[2 * s], widths[2 * s + 1])
            layers.append(nn.MaxPool2d(2, 2))
            cin = widths[2 * s + 1]
        super().__init__(*layers)
        self.stages = len(widths) // 2
        self.out_channels = cin

    @property
    def stride(self) -> int:
        return 2 ** self.stages

    @property
    def receptive_field(self) -> int:
        # stage s (pixel jump 2**s): two 3x3 convs add 4 * 2**s, the pool adds 2**s
        return 1 + sum(5 * 2 ** s for s in range(self.stages))


@register_architecture("mammo-patch-net")
class PatchNet(nn.Module):
    """Trunk + 3x3 conv + 1x1 conv classifier: (N,1,H,W) -> per-class logit maps (N,C,H',W').

    H' = (H - patch_size) // stride + 1; a patch_size crop gives a 1x1 map.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 4, widths=(8, 16, 24, 32, 48, 64),
                 head: int = 64):
        super().__init__()
        self.trunk = PatchTrunk(in_channels, tuple(widths))
        self.head = nn.Sequential(*conv_block(self.trunk.out_channels, head),
                                  nn.Conv2d(head, num_classes, 1))
        self.num_classes = num_classes

    @property
    def stride(self) -> int:
        return self.trunk.stride

    @property
    def patch_size(self) -> int:
        return self.trunk.receptive_field + 2 * self.trunk.stride  # + the head's 3x3 conv

    def forward(self, x):
        return self.head(self.trunk(x))
