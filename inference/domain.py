"""Out of its depth: how unlike a model's training inputs an analysed image is.

A model card's ``domain`` describes what the model was trained on; ``check`` scores an image
against it, and a score above the card's threshold means the model's output is not meaningful
("unlike this model's training data"). Two kinds of description:

- ``"embedding"`` (the demo models and any Lightbox-format model): statistics of the network's
  OWN features at one layer (``embedding_layer``: the U-Net bottleneck, the mammography trunk).
  Every forward pass gives one sample per batch item: the layer's output pooled over space
  (channel means and standard deviations). The description is a probabilistic PCA of the training
  samples (mean, per-feature scale, 16 principal axes with their variances, one variance for the
  rest), so a sample's score is a Mahalanobis distance per feature that also counts what lies off
  the principal axes (where unseen inputs usually land). An image's score is the mean over its
  samples (the sliding-window tiles of a volume, the one whole-image pass of a classifier),
  divided by the median training image's (cross-validated: scored by a fit that did not see
  it), so 1 = a typical training image. The threshold is a margin (3) times the largest
  cross-validated training score. Features are collected by a forward hook
  DURING the real inference (``watch``): the check costs a pooling per tile, not a second pass.
- ``"intensity"`` (imported nnU-Net models, from their dataset fingerprint): the training
  foreground's intensity statistics per channel and the training spacing; ``check_intensity``
  compares the image's foreground (the model's own predicted labels when given) with them.

No Qt, no viewer imports: numpy and torch in, a DomainResult out.
"""
from __future__ import annotations

import base64
import math
import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

NO_DESCRIPTION = "model card has no description of its training data"
UNLIKE = "unlike this model's training data - results not meaningful"


class DomainError(ValueError):
    """A domain description cannot be made or used (unknown layer, no samples, bad card data)."""


@dataclass
class DomainResult:
    """in_domain None: the card cannot say (no description, or nothing was measured); `reason` says why."""

    in_domain: bool | None
    score: float | None
    threshold: float | None
    reason: str = ""

    def as_dict(self) -> dict:
        return {"in_domain": self.in_domain, "score": _json_float(self.score),
                "threshold": _json_float(self.threshold), "reason": self.reason}


def _json_float(v, digits: int = 4):
    """Rounded to `digits` significant digits; None for None/NaN (JSON has no NaN), a big number for inf."""
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return 1e30 if v > 0 else -1e30
    return float(f"{v:.{digits}g}")


def _verdict(score: float, threshold: float, what: str) -> DomainResult:
    inside = bool(score <= threshold)
    reason = (f"in domain: {what} score {score:.3g} <= threshold {threshold:.3g}" if inside
              else f"{UNLIKE}: {what} score {score:.3g} > threshold {threshold:.3g}")
    return DomainResult(inside, float(score), float(threshold), reason)


# --------------------------------------------------------------------------
# compact arrays inside a JSON card
# --------------------------------------------------------------------------
def pack(array, dtype: str = "float32") -> dict:
    """An array as {"dtype", "shape", "base64"}: a card written with indent=2 stays a few KB
    instead of one line per number."""
    a = np.ascontiguousarray(np.asarray(array, dtype=np.dtype(dtype).newbyteorder("<")))
    return {"dtype": str(np.dtype(dtype)), "shape": list(a.shape), "base64": base64.b64encode(a.tobytes()).decode()}


def unpack(packed) -> np.ndarray:
    if isinstance(packed, list):  # a plain JSON list is accepted too (hand-written descriptions)
        return np.asarray(packed, dtype=np.float64)
    try:
        dtype = np.dtype(packed["dtype"])
        if dtype.kind != "f":
            raise DomainError(f"domain description arrays must be floats, got {dtype}")
        a = np.frombuffer(base64.b64decode(packed["base64"], validate=True), dtype=dtype.newbyteorder("<"))
        return a.reshape([int(n) for n in packed["shape"]]).astype(np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise DomainError(f"domain description: unreadable array ({exc})") from exc


# --------------------------------------------------------------------------
# the embedding layer of each architecture
# --------------------------------------------------------------------------
def _monai_unet_bottleneck(module: nn.Module) -> str:
    """MONAI's UNet nests each level as model.1.submodule(.1.submodule...): the deepest
    `submodule` that is not a Sequential is the bottleneck (lowest resolution, widest features)."""
    names = [n for n, m in module.named_modules()
             if n.endswith("submodule") and not isinstance(m, nn.Sequential)]
    if not names:
        raise DomainError("no MONAI UNet bottleneck (a '...submodule' layer) found in the network")
    return max(names, key=lambda n: n.count("submodule"))


# architecture -> the layer whose output is the embedding (why: see the module docstring)
_LAYER_RULES = {
    "unet3d": _monai_unet_bottleneck,  # bottleneck ResidualUnit, stride 8
    "unet2d": _monai_unet_bottleneck,
    "mammo-patch-net": lambda m: "trunk",  # patch trunk (shared by the exam net): stride 8 features
    "mammo-exam-net": lambda m: "trunk",
}


def embedding_layer_name(card, module: nn.Module) -> str:
    """The card's own choice (domain["layer"]) or the architecture's rule."""
    name = (card.domain or {}).get("layer")
    if name:
        return str(name)
    rule = _LAYER_RULES.get(card.architecture)
    if rule is None:
        raise DomainError(f"model {card.name!r}: no embedding layer known for architecture "
                          f"{card.architecture!r}; give one as domain['layer']")
    return rule(module)


def embedding_layer(card, module: nn.Module) -> nn.Module:
    name = embedding_layer_name(card, module)
    try:
        return module.get_submodule(name)
    except AttributeError as exc:
        raise DomainError(f"model {card.name!r}: its network has no layer {name!r}") from exc


def pool(output: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B, 2C): per-channel mean and standard deviation over space.

    The mean says which features fire, the spread how unevenly: together they separate a real CT
    from the phantoms several times better than the mean alone (benchmarks/bench_domain.py)."""
    o = output.detach().float().flatten(2)
    if o.shape[-1] < 2:
        return torch.cat([o[..., 0], torch.zeros_like(o[..., 0])], dim=1)
    std, mean = torch.std_mean(o, dim=2)  # one pass
    return torch.cat([mean, std], dim=1)


class FeatureWatch:
    """Context manager: pooled embedding samples of every forward pass run inside it.

    Only passes made by the thread that entered count (a cached model may serve another analysis
    at the same time). `result()` scores what was collected against the card's description.
    """

    def __init__(self, card, module: nn.Module, layer: nn.Module | None = None):
        self.card = card
        self.module = module
        self.layer = layer
        self._chunks: list[np.ndarray] = []
        self._handle = None
        self._thread = None
        self.problem = ""

    def __enter__(self) -> FeatureWatch:
        self._thread = threading.get_ident()
        try:
            layer = self.layer if self.layer is not None else embedding_layer(self.card, self.module)
            self._handle = layer.register_forward_hook(self._hook)
        except (DomainError, RuntimeError, AttributeError) as exc:  # e.g. TorchScript: no hooks
            self.problem = f"domain features not available: {exc}"
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, _module, _inputs, output) -> None:
        if threading.get_ident() == self._thread and isinstance(output, torch.Tensor) and output.ndim >= 3:
            self._chunks.append(pool(output).cpu().numpy())

    def clear(self) -> None:
        """Forget what was collected (e.g. before redoing a pass on another device)."""
        self._chunks.clear()

    @property
    def samples(self) -> np.ndarray:
        if not self._chunks:
            return np.zeros((0, 0), np.float32)
        return np.concatenate(self._chunks)

    def result(self) -> DomainResult:
        desc = self.card.domain or {}
        if not desc:
            return DomainResult(None, None, None, NO_DESCRIPTION)
        if self.problem:
            return DomainResult(None, None, _json_float(desc.get("threshold")), self.problem)
        return check(self.card, features=self.samples)


def watch(card, module: nn.Module) -> FeatureWatch:
    """`with watch(card, model) as w: <inference>` then `w.result()`."""
    return FeatureWatch(card, module)


# --------------------------------------------------------------------------
# embedding description: probabilistic PCA of pooled features
# --------------------------------------------------------------------------
def _sample_scores(desc: dict, x: np.ndarray) -> np.ndarray:
    """Per-sample PPCA Mahalanobis distance per feature (about 1 for a training sample)."""
    mean, scale = unpack(desc["mean"]), unpack(desc["scale"])
    axes, variances = unpack(desc["axes"]), unpack(desc["variances"])
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != mean.shape[0]:
        raise DomainError(f"features of width {x.shape[-1] if x.ndim else 0} do not fit the description's "
                          f"{mean.shape[0]} (was the description made with another layer or network?)")
    z = (x - mean) / scale
    proj = z @ axes.T
    rest = np.maximum((z ** 2).sum(1) - (proj ** 2).sum(1), 0.0)
    return ((proj ** 2 / variances).sum(1) + rest / float(desc["rest_variance"])) / z.shape[1]


def image_score(desc: dict, features: np.ndarray) -> float:
    """One image's score: mean over its samples, in units of the median training image's."""
    return float(_sample_scores(desc, features).mean() / float(desc.get("unit", 1.0)))


def _ppca(images: list[np.ndarray], axes: int) -> dict:
    x = np.concatenate(images)
    mean = x.mean(0)
    sd = x.std(0)
    scale = np.maximum(sd, 0.05 * float(np.median(sd)) + 1e-8)
    z = (x - mean) / scale
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    eig = s ** 2 / max(len(x) - 1, 1)
    # at most one axis per 5 samples: with few training cases the trailing axes only fit noise
    k = int(max(1, min(axes, len(x) // 5, len(eig) - 1)))
    rest = eig[k:]
    rest_var = max(float(rest.mean()) if len(rest) else 0.0, 1e-3 * float(eig[0]), 1e-12)
    return {"mean": pack(mean), "scale": pack(scale), "axes": pack(vt[:k], "float16"),
            "variances": pack(np.maximum(eig[:k], 1e-12)), "rest_variance": float(f"{rest_var:.6g}"), "unit": 1.0}


def fit_embedding(images: list[np.ndarray], *, layer: str = "", axes: int = 16, margin: float = 3.0,
                  folds: int = 5, note: str = "") -> dict:
    """An "embedding" description from the training images' samples (one (n_i, D) array per image).

    Features are standardised (scale floored at 5 % of the median, so a channel that never moved
    in training cannot divide by zero), the first `axes` principal axes keep their own variances,
    the rest share one (floored at 1e-3 of the largest). The score unit and the threshold come from
    images the fit did not see (`folds`-fold cross-validation over the training images, then the
    final fit on all of them), so a new image of the training kind scores about 1 and the
    threshold is `margin` x the largest cross-validated score, not an over-fitted one.
    """
    images = [np.asarray(f, dtype=np.float64) for f in images if len(f)]
    if len(images) < 3:
        raise DomainError(f"need samples of at least 3 training images, got {len(images)}")
    widths = {f.shape[1] for f in images}
    if len(widths) != 1:
        raise DomainError(f"training images gave features of different widths {sorted(widths)}")
    folds = max(2, min(folds, len(images)))
    held = np.empty(len(images))
    for k in range(folds):
        part = _ppca([f for i, f in enumerate(images) if i % folds != k], axes)
        for i in range(k, len(images), folds):
            held[i] = image_score(part, images[i])
    desc = {"kind": "embedding", "layer": layer, "pool": "channel mean and std over space",
            "aggregate": "mean over the image's samples", **_ppca(images, axes)}
    desc["unit"] = float(f"{max(float(np.median(held)), 1e-12):.6g}")
    scores = held / desc["unit"]
    desc["threshold"] = float(f"{margin * float(scores.max()):.4g}")
    samples = sum(len(f) for f in images)
    desc["fit"] = {"images": len(images), "samples": int(samples), "features": int(images[0].shape[1]),
                   "axes": int(unpack(desc["axes"]).shape[0]), "margin": margin, "folds": folds,
                   "held_out_score_max": _json_float(scores.max()),
                   "held_out_score_median": _json_float(np.median(scores))}
    if note:
        desc["fit"]["note"] = note
    return desc


def check_embedding(card, features) -> DomainResult:
    desc = card.domain
    f = np.asarray(features if features is not None else np.zeros((0, 0)))
    if f.ndim != 2 or not len(f):
        return DomainResult(None, None, _json_float(desc.get("threshold")),
                            "no features were recorded for this image (run the model inside domain.watch)")
    try:
        score = image_score(desc, f)
        threshold = float(desc["threshold"])
    except (KeyError, TypeError) as exc:
        raise DomainError(f"model {card.name!r}: incomplete embedding description (missing {exc})") from exc
    return _verdict(score, threshold, "embedding")


# --------------------------------------------------------------------------
# intensity description (nnU-Net dataset fingerprint)
# --------------------------------------------------------------------------
# Each term is 1 at its limit; the score is the largest term and the threshold 1.
INTENSITY_LIMITS = {
    "outside": 0.2,  # fraction of foreground voxels outside the training [p0.5, p99.5] (training: 1 %)
    "shift": 2.0,  # |median - training median| in training standard deviations
    "spread": math.log(3.0),  # |log(std / training std)|: three times narrower or wider
    "spacing": math.log(4.0),  # |log(spacing / training spacing)| on the worst axis: 4x finer or coarser
}


def _foreground(channel: np.ndarray, labels) -> tuple[np.ndarray, str]:
    """The voxels to compare: the model's predicted foreground when given (what nnU-Net's
    fingerprint measured on the training labels), else everything above the image's background
    (an Otsu split of a subsample; coarser: a body holds more than the labelled organs)."""
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape == channel.shape and (lab > 0).sum() >= 100:
            return channel[lab > 0], "predicted foreground"
    sub = channel.ravel()[:: max(1, channel.size // 200_000)].astype(np.float64)
    if sub.size < 2 or sub.min() == sub.max():
        return sub, "whole image"
    hist, edges = np.histogram(sub, bins=256)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    m = np.cumsum(hist * centers)
    between = w0 * w1 * (m / np.maximum(w0, 1) - (m[-1] - m) / np.maximum(w1, 1)) ** 2
    t = centers[int(np.argmax(between))]
    return channel[channel > t], "voxels above the background"


def check_intensity(card, image, labels=None) -> DomainResult:
    """Compare an image (inference.formats.base.VolumeImage) with an "intensity" description.

    labels: the model's predicted label map on the image's grid, when there is one (recommended:
    then the foreground's tails, median and spread are compared; without it only the median of
    the voxels above the background, which tells an MR from a CT but not a subtler shift).
    Score = the largest term over its limit (INTENSITY_LIMITS), threshold 1. A modality that
    differs from the card's (image.modality set) is out of domain whatever the score.
    """
    desc = card.domain
    arr = np.asarray(image.array)
    chans = arr[None] if arr.ndim == 3 else arr
    stats = desc.get("channels") or []
    if len(stats) != chans.shape[0]:
        return DomainResult(False, None, 1.0, f"{UNLIKE}: image has {chans.shape[0]} channel(s), "
                                              f"the model was trained on {len(stats)}")
    terms: dict[str, float] = {}
    where = ""
    for c, st in enumerate(stats):
        fg, where = _foreground(chans[c], labels)
        labelled = where == "predicted foreground"
        fg = fg.astype(np.float64)
        if not fg.size:
            terms["outside"] = 1e3
            continue
        lo, hi = float(st["percentile_00_5"]), float(st["percentile_99_5"])
        std = max(float(st["std"]), 1e-6)
        med = float(st.get("median", st["mean"]))
        outside = float(((fg < lo) | (fg > hi)).mean())
        shift = abs(float(np.median(fg)) - med) / std
        spread = abs(math.log(max(float(fg.std()), 1e-6) / std))
        # a body holds more than the labelled organs (fat, bone, air in the lungs): without the
        # model's labels only the median is compared, the tails and the spread would differ anyway
        judged = (("outside", outside), ("shift", shift), ("spread", spread)) if labelled else (("shift", shift),)
        for name, v in judged:
            terms[name] = max(terms.get(name, 0.0), v)
    train_sp = desc.get("spacing_mm")
    if train_sp and len(train_sp) == len(image.spacing):
        terms["spacing"] = max(abs(math.log(float(a) / float(b))) for a, b in zip(image.spacing, train_sp)
                               if float(a) > 0 and float(b) > 0)
    scaled = {k: v / INTENSITY_LIMITS[k] for k, v in terms.items()}
    worst = max(scaled, key=scaled.get)
    score = scaled[worst]
    result = _verdict(score, 1.0, f"intensity ({worst}, {where})")
    modality = str(getattr(image, "modality", "") or "").upper()
    if modality and card.modality and modality != str(card.modality).upper():
        result.in_domain = False
        result.reason = f"{UNLIKE}: a {modality} image, the model was trained on {card.modality}"
    return result


# --------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------
def check(card, image=None, features=None, labels=None) -> DomainResult:
    """The card's kind decides: "embedding" scores `features` (FeatureWatch.samples), "intensity"
    scores `image` (a VolumeImage; `labels` its predicted label map, optional). No description:
    in_domain None."""
    desc = card.domain or {}
    kind = desc.get("kind")
    if not desc or not kind:
        return DomainResult(None, None, None, NO_DESCRIPTION)
    if kind == "embedding":
        return check_embedding(card, features)
    if kind == "intensity":
        if image is None:
            return DomainResult(None, None, 1.0, "no image given for the intensity check")
        return check_intensity(card, image, labels)
    return DomainResult(None, None, None, f"unknown domain description kind {kind!r} (a newer Lightbox?)")


def _judged(results: dict[str, DomainResult]) -> dict[str, DomainResult]:
    return {name: r for name, r in results.items() if r.in_domain is not None and r.score is not None
            and r.threshold}


def furthest(results: dict[str, DomainResult]) -> str | None:
    """The name of the model furthest out (largest score / threshold); None when no model could say."""
    judged = _judged(results)
    return max(judged, key=lambda n: judged[n].score / judged[n].threshold) if judged else None


def combine(results: dict[str, DomainResult]) -> DomainResult:
    """One verdict for a series several models looked at: the model furthest out (:func:`furthest`)
    speaks, its name prefixed to the reason; None only when no model could say."""
    name = furthest(results)
    if name is None:
        reasons = "; ".join(f"{n}: {r.reason}" for n, r in results.items() if r.reason)
        return DomainResult(None, None, None, reasons or NO_DESCRIPTION)
    worst = results[name]
    return DomainResult(all(r.in_domain for r in _judged(results).values()), worst.score, worst.threshold,
                        f"{name}: {worst.reason}")
