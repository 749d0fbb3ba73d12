"""Grad-CAM for the whole-image classifier: where in the image its score comes from.

The target layer is the trunk output (the patch features, stride 8): the gradient
of the view's logit reaches it through the top convolutions, so channel weights
reflect what the classifier looked for, and the map keeps the trunk's resolution.
(At the top layer itself Grad-CAM would only restate the score map, because the
score is a 1x1 convolution followed by a max.)
"""
from __future__ import annotations

import numpy as np
import torch

from inference.device import model_device


def cam_centers(model) -> tuple[float, float]:
    """(origin, step) of Grad-CAM samples in prepared-image pixels: trunk receptive-field centres."""
    return (model.trunk.receptive_field - 1) / 2.0, float(model.trunk.stride)


def grad_cam(model, image, device=None) -> tuple[np.ndarray, float]:
    """(cam float32 (h', w') scaled to [0, 1], view logit) for a prepared (h, w) image."""
    dev = model_device(model, device)
    x = torch.as_tensor(np.asarray(image, dtype=np.float32), device=dev)[None, None]
    model.eval()
    with torch.no_grad():
        features = model.trunk(x)
    features.requires_grad_(True)
    with torch.enable_grad():
        logit = model.score_map(x, features=features).flatten(1).amax(dim=1)[0]
        (grad,) = torch.autograd.grad(logit, features)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * features.detach()).sum(dim=1))[0]
    peak = float(cam.max())
    if peak > 0:
        cam = cam / peak
    return cam.cpu().numpy().astype(np.float32), float(logit.detach())
