"""CT preprocessing for segmentation: HU windows, resampling to the model's spacing and back.

Resampling is extent-preserving (voxel edges of the field of view stay put, as
`F.interpolate(align_corners=False)` does), so a grid and its resampled copy cover
the same millimetres and going there and back is a pure change of sampling.
Large volumes are processed in slabs of slices: a 512x512x300 CT is never held as
float32 whole, and probabilities come back to the source grid only slab by slab
(labels = argmax of the resampled probabilities, never nearest-neighbour labels).
Downsampling is antialiased (triangle filter as wide as the scale factor), which
also averages noise down the way a thicker reconstruction would.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from inference.device import free_bytes

DEFAULT_WINDOWS = ((-1000.0, 1000.0), (-160.0, 240.0))  # wide (air..bone) + soft tissue


def grid_shape(shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]) -> tuple[int, ...]:
    """Shape covering the same extent at (about) target_spacing; at least 1 voxel per axis."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing))


def axis_weights(n_in: int, n_out: int, antialias: bool = True) -> np.ndarray:
    """(n_out, n_in) interpolation matrix of one axis, rows summing to 1.

    Triangle kernel centred on each output voxel in input-voxel units; when
    downsampling with antialias its support widens by the scale factor (as PIL and
    torch's antialiased bilinear do), otherwise it is plain linear interpolation
    identical to align_corners=False with border clamping.
    """
    scale = n_in / n_out
    support = max(scale, 1.0) if antialias else 1.0
    centres = (np.arange(n_out) + 0.5) * scale
    j = np.arange(n_in) + 0.5
    w = np.maximum(0.0, 1.0 - np.abs(j[None, :] - centres[:, None]) / support)
    empty = w.sum(axis=1) == 0  # cannot happen with support >= 1, kept for safety
    if empty.any():
        w[empty, np.clip(np.floor(centres[empty]).astype(int), 0, n_in - 1)] = 1.0
    w /= w.sum(axis=1, keepdims=True)
    return w.astype(np.float32)


def _as_tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))


def slab_chunk(device: torch.device | str, slice_bytes: int, default: int = 16) -> int:
    """Slices per slab. On a CPU `default`: float32 temporaries stay tens of MB. On a GPU as many as a
    quarter of its free memory holds, usually the whole volume: one large kernel per stage instead of
    a Python loop of small ones with host work between them."""
    free = free_bytes(device)
    if free is None:
        return default
    return max(default, int(free // 4 // max(int(slice_bytes), 1)))


def on_device(volume, device: torch.device | str):
    """The volume as a tensor on `device` in its own dtype (int16 CT: half the bytes of float32) when a
    quarter of the GPU's free memory holds it, so resampling reads it there; otherwise (CPU, too big)
    unchanged and slabs are copied over one by one."""
    free = free_bytes(device)
    if free is None:
        return volume
    t = _as_tensor(volume)
    if t.element_size() * t.numel() > free // 4:
        return volume
    return t.to(device)


def iter_resampled(volume, out_shape: Sequence[int], *, chunk: int = 16, antialias: bool = True,
                   device: torch.device | str = "cpu") -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (z0, z1, float32 tensor (C, z1-z0, Y', X')) covering the resampled volume.

    `volume` is (Z, Y, X) or (C, Z, Y, X), numpy or torch, any real dtype; only the
    input slices a slab needs are converted to float32. z is interpolated with an
    explicit banded matrix, y/x with torch's (antialiased when shrinking) bilinear.
    """
    src = _as_tensor(volume)
    if src.ndim == 3:
        src = src[None]
    if src.ndim != 4:
        raise ValueError(f"expected (Z,Y,X) or (C,Z,Y,X), got shape {tuple(src.shape)}")
    zo, yo, xo = (int(v) for v in out_shape)
    zi, yi, xi = src.shape[1:]
    wz = torch.from_numpy(axis_weights(zi, zo, antialias)).to(device)
    shrink = antialias and (yo < yi or xo < xi)
    for z0 in range(0, zo, chunk):
        z1 = min(zo, z0 + chunk)
        rows = wz[z0:z1]
        used = torch.nonzero(rows.sum(dim=0) > 0).flatten()
        lo, hi = int(used[0]), int(used[-1]) + 1
        slab = src[:, lo:hi].to(device=device, dtype=torch.float32)  # (C, n, Y, X)
        out = torch.einsum("kn,cnyx->kcyx", rows[:, lo:hi], slab)  # (k, C, Y, X)
        if (yo, xo) != (yi, xi):
            out = F.interpolate(out, size=(yo, xo), mode="bilinear", align_corners=False, antialias=shrink)
        yield z0, z1, out.permute(1, 0, 2, 3)


def resample(volume, out_shape: Sequence[int], *, chunk: int = 16, antialias: bool = True,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """Whole resampled volume, float32, (C, Z', Y', X') (or (Z', Y', X') for a 3D input)."""
    src = _as_tensor(volume)
    channels = src.shape[0] if src.ndim == 4 else 1
    out = torch.empty((channels, *out_shape), dtype=torch.float32, device=device)
    for z0, z1, slab in iter_resampled(src, out_shape, chunk=chunk, antialias=antialias, device=device):
        out[:, z0:z1] = slab
    return out if src.ndim == 4 else out[0]


def resample_image(image, out_shape: Sequence[int], *, antialias: bool = True) -> torch.Tensor:
    """2D counterpart: (H, W) or (C, H, W) -> float32 (C, H', W') or (H', W')."""
    src = _as_tensor(image).to(torch.float32)
    squeeze = src.ndim == 2
    src = src[None] if squeeze else src
    shrink = antialias and (out_shape[0] < src.shape[1] or out_shape[1] < src.shape[2])
    out = F.interpolate(src[None], size=tuple(int(v) for v in out_shape), mode="bilinear",
                        align_corners=False, antialias=shrink)[0]
    return out[0] if squeeze else out


def hu_windows(normalization: dict | None) -> tuple[tuple[float, float], ...]:
    windows = (normalization or {}).get("windows", DEFAULT_WINDOWS)
    return tuple((float(lo), float(hi)) for lo, hi in windows)


def normalize_hu(hu: torch.Tensor, normalization: dict | None = None) -> torch.Tensor:
    """(Z,Y,X) HU -> (len(windows), Z, Y, X): each window clipped and mapped to [-1, 1].

    Several windows as channels let a small network see both lung/air contrast and
    the few tens of HU that separate a liver lesion from liver.
    """
    hu = _as_tensor(hu).to(torch.float32)
    chans = []
    for lo, hi in hu_windows(normalization):
        c, h = (hi + lo) / 2.0, (hi - lo) / 2.0
        chans.append(((hu.clamp(lo, hi) - c) / h))
    return torch.stack(chans)


def air_value(normalization: dict | None = None) -> float:
    """What padding outside the scan should look like after normalization (air = -1000 HU).

    Every window maps -1000 HU (or less) to its low end, -1."""
    return -1.0


def to_model_grid(volume_zyx, spacing_zyx: Sequence[float], model_spacing: Sequence[float],
                  normalization: dict | None = None, *, chunk: int = 16,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """HU volume on its own grid -> normalized (C, Z', Y', X') network input at model spacing.

    Resampled first (in HU, slab by slab), normalized on the small grid.
    """
    shape = grid_shape(np.shape(volume_zyx), spacing_zyx, model_spacing)
    hu = resample(volume_zyx, shape, chunk=chunk, device=device)
    return normalize_hu(hu, normalization)


def argmax_channels(t: torch.Tensor, dtype=torch.uint8) -> torch.Tensor:
    """argmax over the first axis of (C, ...) by running comparisons (first maximum wins, as argmax).

    torch.argmax over a non-innermost axis is about ten times slower on CPU than
    these elementwise passes, and it is the last step of every label map.
    """
    best = t[0].clone()
    out = torch.zeros(t.shape[1:], dtype=dtype, device=t.device)
    for c in range(1, t.shape[0]):
        better = t[c] > best
        out.masked_fill_(better, c)
        torch.maximum(best, t[c], out=best)
    return out


def labels_to_grid(probabilities: torch.Tensor, out_shape: Sequence[int], *, chunk: int = 16,
                   dtype=np.uint8) -> np.ndarray:
    """Label map on the source grid: resample (C, z, y, x) probabilities slab by slab, argmax."""
    out = np.empty(tuple(int(v) for v in out_shape), dtype=dtype)
    tdtype = {np.dtype(np.uint8): torch.uint8, np.dtype(np.int16): torch.int16}.get(np.dtype(dtype), torch.int32)
    for z0, z1, slab in iter_resampled(probabilities, out_shape, chunk=chunk, antialias=False,
                                       device=probabilities.device):
        out[z0:z1] = argmax_channels(slab, tdtype).cpu().numpy()
    return out


class GridProbabilities:
    """Per-class probabilities on the source grid, computed on demand from the model grid.

    A (C, 300, 512, 512) float32 array would take 1.2 GB for four classes; this keeps
    the model-grid probabilities (a few MB) and resamples a class or a slab of slices
    when asked. `np.asarray(p)` materialises everything.
    """

    def __init__(self, coarse: torch.Tensor, shape: Sequence[int], classes: Sequence[str], chunk: int = 16):
        self.coarse = coarse.detach().to("cpu", torch.float32)
        self.grid_shape = tuple(int(v) for v in shape)
        self.classes = list(classes)
        self.chunk = chunk

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.classes), *self.grid_shape)

    dtype = np.dtype(np.float32)

    def _index(self, c) -> int:
        return self.classes.index(c) if isinstance(c, str) else int(c)

    def channel(self, c) -> np.ndarray:
        """Probability of one class (index or name) on the whole source grid, (Z, Y, X) float32."""
        return resample(self.coarse[self._index(c)], self.grid_shape, chunk=self.chunk, antialias=False).numpy()

    def slab(self, z0: int, z1: int) -> np.ndarray:
        """All classes for source slices z0..z1-1, (C, z1-z0, Y, X) float32."""
        out = np.empty((len(self.classes), z1 - z0, *self.grid_shape[1:]), np.float32)
        zo = self.grid_shape[0]
        wz = axis_weights(self.coarse.shape[1], zo, antialias=False)[z0:z1]
        used = np.nonzero(wz.sum(axis=0) > 0)[0]
        lo, hi = int(used[0]), int(used[-1]) + 1
        part = torch.einsum("kn,cnyx->kcyx", torch.from_numpy(wz[:, lo:hi]), self.coarse[:, lo:hi])
        part = F.interpolate(part, size=self.grid_shape[1:], mode="bilinear", align_corners=False)
        out[:] = part.permute(1, 0, 2, 3).numpy()
        return out

    def labels(self, dtype=np.uint8) -> np.ndarray:
        return labels_to_grid(self.coarse, self.grid_shape, chunk=self.chunk, dtype=dtype)

    def __array__(self, dtype=None, copy=None):
        out = resample(self.coarse, self.grid_shape, chunk=self.chunk, antialias=False).numpy()
        return out if dtype is None else out.astype(dtype)


# --------------------------------------------------------------------------
# normalisations a user describes for an imported model (ONNX, TorchScript, torch.export)
# --------------------------------------------------------------------------
NORMALIZATION_KINDS = ("hu_windows", "hu_window", "zscore", "minmax", "linear", "none")
_STATS_SAMPLE = 1 << 24  # voxels; statistics of bigger volumes come from an even subsample


def normalization_kind(normalization: dict | None) -> str:
    """The card's kind; a card without one is the demo models' "hu_windows"."""
    kind = str((normalization or {}).get("kind") or "hu_windows")
    if kind not in NORMALIZATION_KINDS:
        raise ValueError(f"unknown normalization kind {kind!r} (known: {', '.join(NORMALIZATION_KINDS)})")
    return kind


def normalization_channels(normalization: dict | None) -> int:
    """Network input channels one image channel becomes (one per window for "hu_windows")."""
    return len(hu_windows(normalization)) if normalization_kind(normalization) == "hu_windows" else 1


def _pair(normalization: dict, key: str, default=None) -> tuple[float, float] | None:
    value = normalization.get(key, default)
    if value is None:
        return None
    lo, hi = (float(v) for v in value)
    if not lo < hi:
        raise ValueError(f"normalization {key} must be [low, high] with low < high, got {list(value)}")
    return lo, hi


def normalization_stats(volume, normalization: dict | None) -> dict:
    """Intensity statistics the normalisation needs from the image itself, on the source grid.

    "zscore" without a fixed mean/std: mean and std over all voxels, or over the nonzero ones
    ({"nonzero": true}, as nnU-Net does for MR), after the optional clip; "minmax" without fixed
    bounds: min and max, or the given percentiles. Empty for every other kind. Computed before
    resampling so the statistics are the image's, not those of its interpolated copy.
    """
    n = normalization or {}
    kind = normalization_kind(n)
    need = (kind == "zscore" and ("mean" not in n or "std" not in n)) or \
           (kind == "minmax" and ("min" not in n or "max" not in n))
    if not need:
        return {}
    v = np.asarray(volume).ravel()
    if v.size > _STATS_SAMPLE:
        v = v[::int(np.ceil(v.size / _STATS_SAMPLE))]
    v = v.astype(np.float64)
    if kind == "zscore":
        if n.get("nonzero"):
            v = v[v != 0]
        clip = _pair(n, "clip")
        if clip is not None:
            v = np.clip(v, *clip)
        if v.size == 0:
            return {"mean": 0.0, "std": 1.0}
        return {"mean": float(v.mean()), "std": float(v.std())}
    if v.size == 0:
        return {"min": 0.0, "max": 1.0}
    pct = _pair(n, "percentiles")
    if pct is not None:
        lo, hi = np.percentile(v, pct)
        return {"min": float(lo), "max": float(hi)}
    return {"min": float(v.min()), "max": float(v.max())}


def normalize(values, normalization: dict | None = None, stats: dict | None = None) -> torch.Tensor:
    """One image channel (Z, Y, X) -> (C, Z, Y, X) network input by the card's normalisation.

    "hu_windows": as normalize_hu. "hu_window" {window: [lo, hi], range: [0, 1] or [-1, 1]}:
    clipped to the window, mapped linearly to the range. "zscore" {mean, std (else from
    ``stats``), clip, nonzero}: (v - mean) / std, zeros kept at 0 when nonzero. "minmax" {min, max
    (else from ``stats``), range, clip}: [min, max] mapped to the range (default [0, 1]),
    clipped to it only with clip: true. "linear" {offset, scale}: (v - offset) / scale, the mammo
    demo models' form. "none": unchanged.
    """
    n = normalization or {}
    kind = normalization_kind(n)
    if kind == "hu_windows":
        return normalize_hu(values, n)
    v = _as_tensor(values).to(torch.float32)
    stats = {**(stats or {}), **{k: n[k] for k in ("mean", "std", "min", "max") if k in n}}
    if kind == "hu_window":
        lo, hi = _pair(n, "window")
        a, b = _pair(n, "range", (0.0, 1.0))
        out = (v.clamp(lo, hi) - lo) * ((b - a) / (hi - lo)) + a
    elif kind == "zscore":
        if "mean" not in stats or "std" not in stats:
            raise ValueError("zscore normalization needs mean and std (in the card or from normalization_stats)")
        clip = _pair(n, "clip")
        x = v.clamp(*clip) if clip is not None else v
        out = (x - float(stats["mean"])) / max(float(stats["std"]), 1e-8)
        if n.get("nonzero"):
            out = torch.where(v == 0, torch.zeros((), dtype=out.dtype), out)
    elif kind == "minmax":
        if "min" not in stats or "max" not in stats:
            raise ValueError("minmax normalization needs min and max (in the card or from normalization_stats)")
        lo, hi = float(stats["min"]), float(stats["max"])
        a, b = _pair(n, "range", (0.0, 1.0))
        out = (v - lo) * ((b - a) / max(hi - lo, 1e-8)) + a
        if n.get("clip"):
            out = out.clamp(a, b)
    elif kind == "linear":
        out = (v - float(n.get("offset", 0.0))) / float(n.get("scale", 1.0))
    else:
        out = v
    return out[None]


def padding_value(normalization: dict | None = None) -> float:
    """What the network should see outside the image after normalisation: the low end of a
    window or range (air, background), 0 where the normalisation centres the data."""
    n = normalization or {}
    kind = normalization_kind(n)
    if kind == "hu_windows":
        return air_value(n)
    if kind in ("hu_window", "minmax"):
        return _pair(n, "range", (0.0, 1.0))[0]
    return 0.0
