"""Mammography view and exam classification: per-view probability, per-breast exam score.

A breast is imaged twice (CC and MLO). Its exam score is the mean of the two
views' probabilities by default: a finding seen in both projections is more
credible than one seen in a single view, and one noisy view cannot alone push the
breast to the top. combine="max" is the more sensitive alternative (a lesion hidden
by overlapping tissue in one view still counts). A missing view leaves the other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from inference import heatmap as hm
from inference.device import in_precision, model_device, pick_device, run_with_cpu_fallback
from inference.explain import cam_centers, grad_cam
from inference.preprocess.mammo import PreparedMammo, prepare, to_source

COMBINE = ("mean", "max")


def split_view_name(name: str) -> tuple[str, str]:
    """'RCC' -> ('R', 'CC'); 'LMLO' -> ('L', 'MLO')."""
    name = name.upper()
    if len(name) < 3 or name[0] not in "RL" or name[1:] not in ("CC", "MLO"):
        raise ValueError(f"view names are RCC, LCC, RMLO, LMLO; got {name!r}")
    return name[0], name[1:]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@torch.no_grad()
def view_probability(exam_model, image, device=None) -> float:
    """Probability that a prepared view contains a suspicious finding."""
    dev = model_device(exam_model, device)
    x = torch.as_tensor(np.asarray(image, dtype=np.float32), device=dev)[None, None]
    return sigmoid(float(in_precision(lambda: exam_model(x).float(), dev)[0]))


def exam_scores(view_probs: dict[str, float], combine: str = "mean") -> dict[str, float]:
    """{"R": score, "L": score} from per-view probabilities keyed RCC/LCC/RMLO/LMLO."""
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {COMBINE}, got {combine!r}")
    per_side: dict[str, list[float]] = {}
    for name, p in view_probs.items():
        side, _ = split_view_name(name)
        per_side.setdefault(side, []).append(float(p))
    f = np.mean if combine == "mean" else np.max
    return {side: float(f(ps)) for side, ps in sorted(per_side.items())}


@dataclass
class ViewAnalysis:
    """One view's results on the prepared grid, with mappings back to the source image."""

    name: str
    prepared: PreparedMammo
    probability: float
    heatmap: np.ndarray  # (C, h', w') class probabilities at patch centres
    classes: list
    heatmap_grid: tuple[float, float]  # (origin, step) in prepared pixels
    cam: np.ndarray | None = None  # (h'', w'') Grad-CAM in [0, 1]
    cam_grid: tuple[float, float] | None = None
    device: str = "cpu"  # where the maps were made: a GPU also spreads them onto the full-field grid

    def heatmap_on_source(self, cls: str) -> np.ndarray:
        """float32 probability of class `cls` on the source image grid (0 outside the crop)."""
        c = self.classes.index(cls)
        return self._on_source(self.heatmap[c], self.heatmap_grid)

    def cam_on_source(self) -> np.ndarray:
        if self.cam is None:
            raise ValueError("no Grad-CAM was computed for this view (explain=False)")
        return self._on_source(self.cam, self.cam_grid)

    def _on_source(self, values: np.ndarray, grid) -> np.ndarray:
        if torch.device(self.device).type == "cpu":
            return to_source(values, self.prepared.geometry, *grid)
        small = torch.as_tensor(np.asarray(values, dtype=np.float32), device=self.device)
        return to_source(small, self.prepared.geometry, *grid).cpu().numpy()


@dataclass
class ExamAnalysis:
    views: dict[str, ViewAnalysis]
    breast_scores: dict[str, float]  # "R"/"L" -> combined probability
    combine: str = "mean"
    models: dict = field(default_factory=dict)  # role -> "name version"


def analyze_view(name: str, image: np.ndarray, spacing, patch_model, patch_card, exam_model,
                 chest_wall: str | None = None, device="cpu", explain: bool = True) -> ViewAnalysis:
    """Preprocess one view, then heatmap + probability (+ Grad-CAM)."""
    side, view = split_view_name(name)
    inp = patch_card.input
    dev = model_device(patch_model, device)
    prepared = prepare(image, spacing, side, view, chest_wall=chest_wall,
                       target_spacing=float(inp.get("spacing_mm", 0.42)),
                       margin=int(inp.get("crop_margin_px", 26)), normalization=patch_card.normalization or None,
                       device=dev)
    probs = hm.dense_heatmap(patch_model, prepared.image, device=device)
    grid = hm.centers(patch_model.patch_size, patch_model.stride)
    cam = cam_grid = None
    if explain:
        cam, logit = grad_cam(exam_model, prepared.image, device=device)
        probability, cam_grid = sigmoid(logit), cam_centers(exam_model)
    else:
        probability = view_probability(exam_model, prepared.image, device=device)
    return ViewAnalysis(name.upper(), prepared, probability, probs, list(patch_card.classes), grid, cam, cam_grid,
                        str(dev))


def analyze_exam(images: dict, patch_model, patch_card, exam_model, exam_card, device="cpu",
                 explain: bool = True, combine: str | None = None, chest_walls: dict | None = None,
                 notify=None) -> ExamAnalysis:
    """images: {"RCC": (pixels, (row_mm, col_mm)), ...} -> per-view results and per-breast scores.

    A view that runs the GPU out of memory is redone on the CPU (`notify` gets the message).
    """
    combine = combine or exam_card.extra.get("exam_combine", "mean")
    dev = pick_device(device)
    views = {}
    for name, (pixels, spacing) in images.items():
        def run(d, name=name, pixels=pixels, spacing=spacing):
            return analyze_view(name, pixels, spacing, patch_model.to(d), patch_card, exam_model.to(d),
                                (chest_walls or {}).get(name), d, explain)

        views[name.upper()] = run_with_cpu_fallback(run, dev, notify)
    scores = exam_scores({n: v.probability for n, v in views.items()}, combine)
    return ExamAnalysis(views, scores, combine, {"patch": f"{patch_card.name} {patch_card.version}",
                                                 "exam": f"{exam_card.name} {exam_card.version}"})
