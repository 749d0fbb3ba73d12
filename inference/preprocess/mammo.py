"""Mammogram -> model input (resample, breast crop, chest wall to the left, normalize) and back.

Models see every view the same way: a fixed pixel spacing, the chest wall on the
left, the breast cropped with a margin, intensities scaled as in training. Every
step is recorded in a `MammoGeometry` so that any map computed on the model grid
(heatmap, Grad-CAM) can be placed back on the source pixels (`to_source`); the
viewer overlays it on the image exactly as loaded and never resamples the image.

Order of operations (and of the recorded geometry): area-resample the whole image
to the model spacing, crop the breast's bounding box plus a margin (padding with
background where the box leaves the image), then mirror columns if needed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from inference.density import largest_component  # one breast region for the models and density
from inference.density import otsu as otsu_threshold  # one Otsu for breast masks and density
from inference.preprocess import sample_bilinear

MODEL_SPACING_MM = 0.42  # 6x the 0.07 mm full-field detector pixel, 2x the 0.21 mm training phantoms
DEFAULT_NORMALIZATION = {"kind": "linear", "offset": 2000.0, "scale": 1000.0}  # 12-bit MG -> about [-2, 2]


@dataclass(frozen=True)
class MammoGeometry:
    """How the prepared (model-grid) image sits on the source image."""

    source_shape: tuple[int, int]
    source_spacing: tuple[float, float]  # mm (row, col)
    resampled_shape: tuple[int, int]  # whole image at model spacing, before the crop
    crop: tuple[int, int, int, int]  # r0, r1, c0, c1 in the resampled grid (may leave it: padded)
    flipped: bool  # columns mirrored so the chest wall is on the left

    @property
    def scale(self) -> tuple[float, float]:
        """Source pixels per model pixel along rows and columns."""
        return (self.source_shape[0] / self.resampled_shape[0], self.source_shape[1] / self.resampled_shape[1])

    @property
    def spacing(self) -> tuple[float, float]:
        """Pixel spacing of the prepared image in mm."""
        return (self.source_spacing[0] * self.scale[0], self.source_spacing[1] * self.scale[1])

    @property
    def shape(self) -> tuple[int, int]:
        r0, r1, c0, c1 = self.crop
        return (r1 - r0, c1 - c0)


@dataclass
class PreparedMammo:
    image: np.ndarray  # float32 (h, w), normalized, chest wall left
    breast: np.ndarray  # bool (h, w) breast mask in the same grid
    geometry: MammoGeometry
    laterality: str | None = None
    view: str | None = None
    normalization: dict | None = None  # as applied (the default filled in)
    margin: int | None = None

    def fits(self, image_shape, spacing, target_spacing: float, margin: int, normalization: dict | None,
             chest_wall: str | None = None) -> bool:
        """Whether prepare() with these arguments would make this same input: a second model of an
        exam (the lesion U-Net after the classifiers) then reuses it instead of preparing the view again."""
        g = self.geometry
        spacing = (float(spacing[-2]), float(spacing[-1]))
        return (tuple(image_shape) == g.source_shape and spacing == g.source_spacing
                and resampled_shape(image_shape, spacing, target_spacing) == g.resampled_shape
                and margin == self.margin and _scaling(normalization) == _scaling(self.normalization)
                and (chest_wall is None or (chest_wall == "right") == g.flipped))


# --------------------------------------------------------------------------
# single steps
# --------------------------------------------------------------------------
def resampled_shape(shape, spacing, target_spacing: float = MODEL_SPACING_MM) -> tuple[int, int]:
    return tuple(max(1, round(n * s / target_spacing)) for n, s in zip(shape, spacing))


_UPLOADED_AS_IS = (np.float32, np.float16, np.float64, np.uint8, np.int8, np.int16, np.int32)


def resample(array: np.ndarray, out_shape, device: torch.device | str | None = None) -> np.ndarray:
    """Area (box) average to `out_shape`: the right low-pass for shrinking, keeps mask fractions.

    On a GPU ``device`` the full-field image goes over in its own dtype and is averaged there; only
    the small result comes back (uint16, which torch's GPU kernels barely support, goes as int32)."""
    if device is not None and torch.device(device).type != "cpu":
        return _resample_uploaded(array, out_shape, device)
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    if tuple(out_shape) == array.shape:
        return t[0, 0].numpy().copy()
    return F.interpolate(t, size=tuple(out_shape), mode="area")[0, 0].numpy()


def _resample_uploaded(array: np.ndarray, out_shape, device) -> np.ndarray:
    a = np.asarray(array)
    a = np.ascontiguousarray(a if a.dtype.type in _UPLOADED_AS_IS else a.astype(
        np.int32 if np.issubdtype(a.dtype, np.integer) else np.float32))
    t = torch.from_numpy(a).to(device).float()[None, None]
    if tuple(out_shape) != a.shape:
        t = F.interpolate(t, size=tuple(out_shape), mode="area")
    return t[0, 0].cpu().numpy()


def breast_mask(image: np.ndarray) -> np.ndarray:
    """Breast = largest region clearly above the air level.

    Otsu separates air from tissue, but its threshold sits between the two class
    means and so cuts the thin, faint periphery; a quarter of the way up from the air
    level keeps the skin line while noise in the air stays far below it.
    """
    img = np.asarray(image, dtype=np.float32)
    sub = img[:: max(1, img.shape[0] // 256), :: max(1, img.shape[1] // 256)]
    t = otsu_threshold(sub)
    air = float(np.median(sub[sub <= t])) if (sub <= t).any() else float(sub.min())
    return largest_component(img > air + 0.25 * (t - air))


def chest_wall_side(mask: np.ndarray, band: int = 3) -> str:
    """'left' or 'right': the image edge the breast touches more (the chest wall is cut by the detector)."""
    b = max(1, min(band, mask.shape[1] // 4))
    return "left" if mask[:, :b].sum() >= mask[:, -b:].sum() else "right"


def chest_wall_from_orientation(patient_orientation) -> str | None:
    """From DICOM PatientOrientation (row direction first): columns running anterior -> chest wall left."""
    if not patient_orientation:
        return None
    first = str(patient_orientation[0]).upper()[:1]
    return {"A": "left", "P": "right"}.get(first)


def _scaling(normalization: dict | None) -> tuple:
    """What of a normalization changes the pixels (cards also carry notes)."""
    n = normalization or DEFAULT_NORMALIZATION
    return n.get("kind", "linear"), float(n.get("offset", 0.0)), float(n.get("scale", 1.0))


def normalize(image: np.ndarray, normalization: dict | None = None) -> np.ndarray:
    n = normalization or DEFAULT_NORMALIZATION
    if n.get("kind", "linear") != "linear":
        raise ValueError(f"unsupported normalization {n.get('kind')!r}")
    return ((np.asarray(image, dtype=np.float32) - np.float32(n["offset"])) / np.float32(n["scale"]))


# --------------------------------------------------------------------------
# forward: source grid -> model grid
# --------------------------------------------------------------------------
def to_model(array: np.ndarray, geometry: MammoGeometry, fill: float = 0.0) -> np.ndarray:
    """Any source-grid array (image, mask) through the same resample/crop/flip as the image."""
    g = geometry
    if array.shape != g.source_shape:
        raise ValueError(f"array {array.shape} is not on the source grid {g.source_shape}")
    return _crop_flip(resample(array, g.resampled_shape), g, fill)


def prepare(image: np.ndarray, spacing, laterality: str | None = None, view: str | None = None,
            chest_wall: str | None = None, target_spacing: float = MODEL_SPACING_MM, margin: int = 26,
            normalization: dict | None = None, device: torch.device | str | None = None) -> PreparedMammo:
    """Source mammogram (rows, cols; modality values) -> PreparedMammo on the model grid.

    chest_wall: "left"/"right" when known (e.g. chest_wall_from_orientation), else found
    from the pixels. margin: model pixels kept around the breast (half a patch, so the
    heatmap reaches the skin line). device: where the full-field image is resampled (the model's;
    the small steps after it run on the host).
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise ValueError(f"a mammogram is one 2D image, got shape {np.shape(image)}")
    if spacing is None:  # the caller estimates a missing spacing and says so; never a silent 1 mm
        raise ValueError("a mammogram needs its pixel spacing (from the file or an estimate), got None")
    spacing = (float(spacing[-2]), float(spacing[-1]))
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise ValueError(f"pixel spacing must be positive millimetres, got {spacing}")
    rshape = resampled_shape(img.shape, spacing, target_spacing)
    small = resample(img, rshape, device)
    mask = breast_mask(small)
    if chest_wall is None:
        chest_wall = chest_wall_side(mask)
    if chest_wall not in ("left", "right"):
        raise ValueError(f"chest_wall must be 'left' or 'right', got {chest_wall!r}")
    rows, cols = np.nonzero(mask)
    if rows.size:
        crop = (int(rows.min()) - margin, int(rows.max()) + 1 + margin,
                int(cols.min()) - margin, int(cols.max()) + 1 + margin)
    else:  # nothing brighter than air: keep the whole image
        crop = (0, rshape[0], 0, rshape[1])
    geometry = MammoGeometry(tuple(img.shape), spacing, rshape, crop, chest_wall == "right")
    n = normalization or DEFAULT_NORMALIZATION
    background = float(np.percentile(small[~mask], 50)) if (~mask).any() else float(small.min())
    # Crop/flip through the same code path the maps use, so they cannot drift apart.
    out = _crop_flip(normalize(small, n), geometry, fill=float(normalize(np.float32(background), n)))
    breast = _crop_flip(mask.astype(np.float32), geometry, fill=0.0) > 0.5
    return PreparedMammo(out, breast, geometry, laterality, view, dict(n), int(margin))


def _crop_flip(small: np.ndarray, g: MammoGeometry, fill: float) -> np.ndarray:
    r0, r1, c0, c1 = g.crop
    h, w = small.shape
    out = np.full((r1 - r0, c1 - c0), np.float32(fill), dtype=np.float32)
    sr0, sr1, sc0, sc1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
    if sr0 < sr1 and sc0 < sc1:
        out[sr0 - r0:sr1 - r0, sc0 - c0:sc1 - c0] = small[sr0:sr1, sc0:sc1]
    return out[:, ::-1].copy() if g.flipped else out


# --------------------------------------------------------------------------
# inverse: model grid -> source grid
# --------------------------------------------------------------------------
def to_source(values: np.ndarray, geometry: MammoGeometry, origin=0.0, step=1.0, fill: float = 0.0) -> np.ndarray:
    """A map on the prepared grid -> float32 map on the source image grid.

    values[..., i, j] sits at prepared-image pixel coordinate (origin + step*i, origin + step*j)
    (origin/step may be per axis): origin 0, step 1 for a map the size of the prepared
    image; a heatmap puts each value at its patch centre ((patch-1)/2, stride). Values
    are interpolated bilinearly (held constant beyond the first/last sample), and
    source pixels outside the crop get `fill`. Leading axes (classes) are kept. A torch tensor
    is mapped on its own device and comes back as a tensor there.
    """
    g = geometry
    v = values if isinstance(values, torch.Tensor) else np.asarray(values, dtype=np.float32)
    oy, ox = np.broadcast_to(np.asarray(origin, dtype=float), (2,))
    sy, sx = np.broadcast_to(np.asarray(step, dtype=float), (2,))
    fy, fx = g.scale
    r0, r1, c0, c1 = g.crop
    H, W = g.source_shape
    # source pixel centre -> resampled-grid coordinate -> crop coordinate (-> mirrored)
    qy = (np.arange(H) + 0.5) / fy - 0.5 - r0
    qx = (np.arange(W) + 0.5) / fx - 0.5 - c0
    inside_y = (qy >= -0.5) & (qy < (r1 - r0) - 0.5)
    inside_x = (qx >= -0.5) & (qx < (c1 - c0) - 0.5)
    if g.flipped:
        qx = (c1 - c0 - 1) - qx
    return sample_bilinear(v, (qy - oy) / sy, (qx - ox) / sx, inside_y, inside_x, fill)
