"""Run a network whose card the user filled in: ONNX, TorchScript and torch.export files.

Such files hold a graph and its tensors but not how the images were prepared, so the card says
it (the import dialog asks; the file prefills what it can, see ``extra.graph`` and
``extra.suggested``):

    task           "segmentation-3d" | "segmentation-2d" | "image-classifier"
    classes        one name per output channel, background first for a segmentation
    input          spacing_mm   mm per axis the network was trained at: [z, y, x] (3D) or [row, col] (2D);
                                a classifier without it sees the whole image resized to patch_size
                   patch_size   the window the network sees ([z, y, x] or [rows, cols])
                   channels     input channels (a one-channel normalisation is repeated to fill them)
                   output       "logits" (default: softmax, or sigmoid for one channel) | "probabilities"
                   overlap      sliding-window overlap (0.25)
    normalization  see inference.preprocess.ct.normalize ("hu_window", "hu_windows", "zscore",
                   "minmax", "linear", "none")

Every step is the demo models' own (inference.preprocess.ct resampling, inference.segment's
Gaussian sliding window, argmax of the probabilities resampled to the source grid), so an
exported demo model gives the demo model's output. A 2D network runs slice by slice (a
mammogram is a one-slice volume).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from inference.device import in_precision, pick_device
from inference.formats.base import Prediction, VolumeImage
from inference.preprocess import ct as ctp
from inference.segment import Cancelled, sliding_window

TASKS = ("segmentation-3d", "segmentation-2d", "image-classifier")
OUTPUTS = ("logits", "probabilities")

FIELD_HELP = {
    "task": "what the network does: segmentation-3d, segmentation-2d or image-classifier",
    "modality": "the kind of images it was trained on (CT, MR, MG): Analyze offers it for those",
    "classes": "one name per output channel, in order; a segmentation's first is the background",
    "input": "spacing_mm (mm per axis, z y x; row col for 2D), patch_size (the window), channels, "
             "output (logits or probabilities)",
    "normalization": "how intensities were scaled in training: hu_window {window, range}, zscore "
                     "{nonzero, mean, std, clip}, minmax {range, percentiles}, linear {offset, scale}, none",
}


@dataclass(frozen=True)
class ModelInput:
    """The card's input, checked against what the file itself says (``extra.graph``)."""

    dims: int  # spatial dimensions the network takes (2 or 3)
    spacing: tuple[float, ...] | None
    patch: tuple[int, ...]
    channels: int | None
    output: str
    overlap: float
    batch: int  # windows per network call


def _graph(card) -> dict:
    return dict((card.extra or {}).get("graph") or {})


def _ints(value, what: str, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in np.atleast_1d(value))
    except (TypeError, ValueError):
        raise ValueError(f"model {name!r}: card input {what} must be whole numbers, got {value!r}") from None
    if not out or min(out) < 1:
        raise ValueError(f"model {name!r}: card input {what} must be positive, got {value!r}")
    return out


def resolve_input(card) -> ModelInput:
    """The card's input with the file's facts filled in; ValueError naming the field otherwise."""
    name = card.name
    if card.task not in TASKS:
        raise ValueError(f"model {name!r}: task {card.task!r} cannot be run from a described card "
                         f"(choose {', '.join(TASKS)})")
    graph = _graph(card)
    shape = list(graph.get("input_shape") or [])
    inp = dict(card.input or {})
    static = [d if isinstance(d, int) else None for d in shape[2:]]
    patch = inp.get("patch_size")
    if patch is None and static and all(static):
        patch = static
    if patch is None:
        raise ValueError(f"model {name!r}: the card needs input patch_size (the window the network sees)")
    patch = _ints(patch, "patch_size", name)
    if card.task == "segmentation-3d" and len(patch) != 3 or card.task == "segmentation-2d" and len(patch) != 2:
        raise ValueError(f"model {name!r}: a {card.task} model needs a {3 if '3d' in card.task else 2}-number "
                         f"patch_size, got {list(patch)}")
    if len(patch) not in (2, 3):
        raise ValueError(f"model {name!r}: patch_size must have 2 or 3 numbers, got {list(patch)}")
    if static and len(static) != len(patch):
        raise ValueError(f"model {name!r}: the file takes {len(static)}D images, the card's patch_size is "
                         f"{len(patch)}D")
    for axis, (s, p) in enumerate(zip(static, patch)):
        if s is not None and s != p:
            raise ValueError(f"model {name!r}: the file fixes spatial size {static}, the card's patch_size "
                             f"{list(patch)} differs on axis {axis}")
    spacing = inp.get("spacing_mm")
    if spacing is not None:
        try:
            spacing = tuple(float(v) for v in np.atleast_1d(spacing))
        except (TypeError, ValueError):
            raise ValueError(f"model {name!r}: card input spacing_mm must be numbers, got {spacing!r}") from None
        if len(spacing) == 1:
            spacing = spacing * len(patch)
        if len(spacing) != len(patch) or min(spacing) <= 0:
            raise ValueError(f"model {name!r}: spacing_mm must give {len(patch)} positive millimetre values, "
                             f"got {list(spacing)}")
    elif card.task != "image-classifier":
        raise ValueError(f"model {name!r}: the card needs input spacing_mm (the voxel size the network was "
                         "trained at)")
    file_channels = shape[1] if len(shape) > 1 and isinstance(shape[1], int) else None
    channels = inp.get("channels", file_channels)
    channels = int(channels) if channels is not None else None
    if file_channels is not None and channels != file_channels:
        raise ValueError(f"model {name!r}: the file takes {file_channels} input channel(s), the card says {channels}")
    output = str(inp.get("output") or "logits")
    if output not in OUTPUTS:
        raise ValueError(f"model {name!r}: input output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    fixed = shape[0] if shape and isinstance(shape[0], int) else None
    if fixed is not None and fixed != 1:
        raise ValueError(f"model {name!r}: the file takes batches of exactly {fixed} images; export it with a "
                         "batch of 1 or a free batch size")
    batch = 1 if fixed == 1 else int(inp.get("batch") or 4)
    overlap = float(inp.get("overlap", 0.25))
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"model {name!r}: overlap must be in [0, 1), got {overlap}")
    return ModelInput(len(patch), spacing, patch, channels, output, overlap, batch)


def check_card(card) -> ModelInput:
    """Everything a run needs, checked before any image is touched."""
    spec = resolve_input(card)
    ctp.normalization_kind(card.normalization)
    if not card.classes:
        raise ValueError(f"model {card.name!r}: the card needs classes (one name per output channel)")
    return spec


def _check(cancel) -> None:
    if cancel is not None and cancel():
        raise Cancelled("analysis cancelled")


def _to_probabilities(y: torch.Tensor, output: str) -> torch.Tensor:
    """(N, K, ...) network output -> class probabilities; one channel means a sigmoid foreground."""
    y = y.float()
    if y.shape[1] == 1:
        p = torch.sigmoid(y) if output == "logits" else y
        return torch.cat([1.0 - p, p], dim=1)
    return torch.softmax(y, dim=1) if output == "logits" else y


class DescribedRunner:
    """A network (any callable taking and returning torch tensors) run as its card describes."""

    def __init__(self, card, net, device="cpu", notes: list[str] | None = None):
        self.card = card
        self.spec = check_card(card)
        self.net = net
        self.device = pick_device(device)
        self.notes = list(notes or [])

    # ------------------------------------------------------------------ input
    def _channels(self, image: VolumeImage) -> np.ndarray:
        arr = np.asarray(image.array)
        if arr.ndim == 3:
            return arr[None]
        if arr.ndim == 4:
            return arr
        raise ValueError(f"model {self.card.name!r}: expected a (z, y, x) or (c, z, y, x) image, got shape {arr.shape}")

    def model_grid(self, image: VolumeImage) -> tuple[int, int, int]:
        """The (z, y, x) shape of the image at the network's spacing (2D: slices kept)."""
        shape = self._channels(image).shape[1:]
        spacing = tuple(float(s) for s in image.spacing)
        target = self.spec.spacing
        if target is None:
            return tuple(shape)
        if self.spec.dims == 2:
            target = (spacing[0], *target)
        return ctp.grid_shape(shape, spacing, target)

    def model_input(self, image: VolumeImage, grid) -> tuple[torch.Tensor, list[str]]:
        """Normalised (C, z, y, x) network input on ``grid``; statistics from the source grid."""
        chans = self._channels(image)
        norm = self.card.normalization or {}
        stats = [ctp.normalization_stats(c, norm) for c in chans]
        resampled = ctp.resample(chans, tuple(grid), device=self.device)
        x = torch.cat([ctp.normalize(resampled[i], norm, stats[i]) for i in range(len(chans))])
        notes = []
        want = self.spec.channels
        if want is not None and x.shape[0] != want:
            if x.shape[0] != 1:
                raise ValueError(f"model {self.card.name!r}: the image gives {x.shape[0]} input channel(s) after "
                                 f"normalisation, the network takes {want}")
            x = x.expand(want, *x.shape[1:]).contiguous()
            notes.append(f"the one image channel was repeated to fill the network's {want} input channels")
        return x, notes

    # ------------------------------------------------------------------ run
    def predict(self, image: VolumeImage, progress=None, cancel=None) -> Prediction:
        _check(cancel)
        if self.card.task == "image-classifier":
            return self._classify(image, progress, cancel)
        return self._segment(image, progress, cancel)

    def _segment(self, image: VolumeImage, progress, cancel) -> Prediction:
        spec, card = self.spec, self.card
        shape = self._channels(image).shape[1:]
        x, notes = self.model_input(image, self.model_grid(image))
        if progress:
            progress(0.1)
        _check(cancel)
        pad = ctp.padding_value(card.normalization)
        slabs = [x[None]] if spec.dims == 3 else [x[:, z][None] for z in range(x.shape[1])]
        probs = []
        for i, slab in enumerate(slabs):
            _check(cancel)
            lo, hi = 0.1 + 0.8 * i / len(slabs), 0.1 + 0.8 * (i + 1) / len(slabs)
            stage = (lambda f, lo=lo, hi=hi: progress(lo + (hi - lo) * float(f))) if progress else None
            out = sliding_window(self.net, slab, spec.patch, overlap=spec.overlap, sw_batch_size=spec.batch,
                                 pad_value=pad, progress=stage, cancel=cancel)
            probs.append(_to_probabilities(out, spec.output)[0])
        del x, slabs
        probs = probs[0] if spec.dims == 3 else torch.stack(probs, dim=1)  # (K, z, y, x)
        if probs.shape[0] != len(card.classes):
            raise ValueError(f"model {card.name!r}: the network gives {probs.shape[0]} classes, the card names "
                             f"{len(card.classes)} ({', '.join(map(str, card.classes))})")
        _check(cancel)
        dtype = np.uint8 if probs.shape[0] <= 256 else np.int32
        labels = ctp.labels_to_grid(probs, shape, dtype=dtype)
        full = ctp.resample(probs, shape, antialias=False, device=probs.device).cpu().numpy()
        if progress:
            progress(1.0)
        return Prediction(list(card.classes), labels=labels, probabilities=full.astype(np.float32, copy=False),
                          notes=self.notes + notes)

    def _classify(self, image: VolumeImage, progress, cancel) -> Prediction:
        spec, card = self.spec, self.card
        shape = self._channels(image).shape[1:]
        if spec.dims == 2 and shape[0] != 1:
            raise ValueError(f"model {card.name!r}: a 2D image classifier takes one image; this series has "
                             f"{shape[0]} slices")
        patch = spec.patch if spec.dims == 3 else (1, *spec.patch)
        grid = self.model_grid(image) if spec.spacing is not None else patch
        x, notes = self.model_input(image, grid)
        if spec.spacing is not None:  # at the trained spacing: centred crop or pad to the window
            x = _fit_centre(x, patch, ctp.padding_value(card.normalization))
        if spec.dims == 2:
            x = x[:, 0]
        if progress:
            progress(0.3)
        _check(cancel)
        with torch.inference_mode():
            y = in_precision(lambda: self.net(x[None].to(self.device)).float(), self.device)
        y = y.reshape(1, -1)
        if y.shape[1] == 1:
            p = torch.sigmoid(y) if spec.output == "logits" else y
        else:
            p = torch.softmax(y, dim=1) if spec.output == "logits" else y
        p = p[0].cpu().numpy()
        if len(p) != len(card.classes):
            raise ValueError(f"model {card.name!r}: the network gives {len(p)} score(s), the card names "
                             f"{len(card.classes)} class(es)")
        if progress:
            progress(1.0)
        return Prediction(list(card.classes), scores={str(c): float(v) for c, v in zip(card.classes, p)},
                          notes=self.notes + notes)


def _fit_centre(x: torch.Tensor, size, fill: float) -> torch.Tensor:
    """(C, *spatial) cropped or padded around its centre to ``size``."""
    out = torch.full((x.shape[0], *size), float(fill), dtype=x.dtype, device=x.device)
    src, dst = [slice(None)], [slice(None)]
    for n, s in zip(x.shape[1:], size):
        if n >= s:
            a = (n - s) // 2
            src.append(slice(a, a + s))
            dst.append(slice(0, s))
        else:
            a = (s - n) // 2
            src.append(slice(0, n))
            dst.append(slice(a, a + n))
    out[tuple(dst)] = x[tuple(src)]
    return out
