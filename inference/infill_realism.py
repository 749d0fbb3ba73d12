"""A quick realism number for synthetic lesions: what the shipped patch classifier makes of them.

The ``mammo-patch`` classifier (trained on phantom patches, never on synthetic ones) scores real lesion
patches, synthetic (infilled) ones and normal tissue patches. Synthetic masses that it calls "mass" as
often as real ones look like masses to a model, which is what an augmentation needs; a generator that
paints noise scores like normal tissue.
"""
from __future__ import annotations

import numpy as np
import torch

from inference import registry
from inference.augment_grid import crop_around, lesion_centre
from inference.lesion_shapes import lesion_objects

CLASSIFIER = "mammo-patch"


def _scores(net, card, crops: list[np.ndarray]) -> np.ndarray:
    """(N, classes) softmax of the classifier on (patch, patch) crops."""
    if not crops:
        return np.zeros((0, len(card.classes)), np.float32)
    with torch.no_grad():
        logits = net(torch.from_numpy(np.stack(crops)[:, None].astype(np.float32)))
    return torch.softmax(logits.reshape(len(crops), -1), 1).numpy()


def _summary(probs: np.ndarray, classes: list[str]) -> dict:
    if not len(probs):
        return {"n": 0}
    out = {"n": int(len(probs))}
    for name in ("mass", "calcification"):
        k = classes.index(name)
        out[f"p_{name}"] = round(float(probs[:, k].mean()), 4)
        out[f"called_{name}"] = round(float((probs.argmax(1) == k).mean()), 4)
    return out


def realism(real_views, normal_views, synthetic, n_normal: int = 48, seed: int = 0) -> dict:
    """Mean classifier probabilities and call rates per group: real lesions (from ``real_views``' labels),
    synthetic ones (``synthetic``: an augment.Synthetic) and ``n_normal`` tissue patches of ``normal_views``."""
    from scipy.ndimage import distance_transform_edt

    net, card = registry.load_model(registry.find_model(CLASSIFIER))
    size = int(card.input["patch_size"])
    classes = [str(c) for c in card.classes]
    real = {"mass": [], "calcification": []}
    for image, label in real_views:
        for kind, obj in lesion_objects(label):
            real[kind].append(crop_around(image, lesion_centre(obj, obj.shape), size))
    made = {"mass": [], "calcification": []}
    for image, mask, kind in zip(synthetic.images, synthetic.masks, synthetic.kinds):
        made[kind].append(crop_around(image, lesion_centre(mask, mask.shape), size))
    rng = np.random.default_rng(seed)
    normal = []
    for i in range(n_normal):
        image, _label = normal_views[i % len(normal_views)]
        rows, cols = np.nonzero(distance_transform_edt(image > -1.6) > size)
        if rows.size:
            j = int(rng.integers(rows.size))
            normal.append(crop_around(image, (rows[j], cols[j]), size))
    return {"classifier": f"{card.name} {card.version}",
            "real": {k: _summary(_scores(net, card, v), classes) for k, v in real.items()},
            "synthetic": {k: _summary(_scores(net, card, v), classes) for k, v in made.items()},
            "normal": _summary(_scores(net, card, normal), classes)}
