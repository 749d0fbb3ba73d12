"""U-Net segmentation networks (2D mammography, 3D CT), registered by name.

Thin builders around MONAI's `UNet` (residual units, strided convolutions), so a
card's arch_kwargs fully describe the network and trained weights from any MONAI
UNet of the same configuration can replace ours. Channel counts are small: the
demo models must train in minutes on a laptop CPU and ship in a few megabytes.
"""
from __future__ import annotations

from monai.networks.nets import UNet
from torch import nn

from inference.registry import register_architecture


def _unet(spatial_dims: int, in_channels: int, out_channels: int, channels, strides,
          num_res_units: int, norm: str, dropout: float) -> nn.Module:
    channels = tuple(int(c) for c in channels)
    strides = tuple(int(s) for s in strides) if strides is not None else (2,) * (len(channels) - 1)
    if len(strides) != len(channels) - 1:
        raise ValueError(f"need one stride per down step: {len(channels) - 1} for channels {channels}, "
                         f"got {strides}")
    return UNet(spatial_dims=spatial_dims, in_channels=int(in_channels), out_channels=int(out_channels),
                channels=channels, strides=strides, num_res_units=int(num_res_units), norm=norm,
                dropout=float(dropout))


@register_architecture("unet3d")
def unet3d(in_channels: int = 1, out_channels: int = 2, channels=(12, 24, 48, 96), strides=None,
           num_res_units: int = 1, norm: str = "instance", dropout: float = 0.0) -> nn.Module:
    """3D U-Net: (N, in, Z, Y, X) -> per-class logits (N, out, Z, Y, X).

    Each spatial size must be divisible by the product of the strides (8 by default),
    which is what the sliding-window patch size guarantees.
    """
    return _unet(3, in_channels, out_channels, channels, strides, num_res_units, norm, dropout)


@register_architecture("unet2d")
def unet2d(in_channels: int = 1, out_channels: int = 2, channels=(16, 32, 64, 128), strides=None,
           num_res_units: int = 1, norm: str = "instance", dropout: float = 0.0) -> nn.Module:
    """2D U-Net: (N, in, H, W) -> per-class logits (N, out, H, W)."""
    return _unet(2, in_channels, out_channels, channels, strides, num_res_units, norm, dropout)


def divisor(card_or_kwargs) -> int:
    """The factor every input size must be a multiple of (product of the strides)."""
    kw = getattr(card_or_kwargs, "arch_kwargs", card_or_kwargs) or {}
    n = len(kw.get("channels", (0, 0, 0, 0))) - 1
    strides = kw.get("strides") or (2,) * n
    out = 1
    for s in strides:
        out *= int(s)
    return out
