"""Network architectures; importing this package registers every builder with inference.registry.

One module per architecture, plain nn.Modules configured by constructor arguments
(as in MONAI); running, tiling and pre/post-processing live elsewhere.
"""
from inference.models import (
    exam_net,  # noqa: F401  (mammography whole-image classifier)
    infill_gan,  # noqa: F401  (mammography lesion-infill cGAN)
    patch_net,  # noqa: F401  (mammography patch classifier)
    unet,  # noqa: F401  (2D/3D U-Net segmentation)
)
