"""A picture of what an augmentation makes: real positive patches above synthetic ones, as RGB or PNG.

The Train dialog shows it and fine-tuning saves it beside the new version, so a user can judge the
synthetic lesions before trusting a model trained on them. Qt-free (inference may not import Qt):
the two row labels are drawn with a tiny built-in bitmap font, the PNG is written by SimpleITK.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# 5 x 7 bitmap glyphs, one string of five bits per row
_GLYPHS = {
    "a": ["00000", "00000", "01110", "00001", "01111", "10001", "01111"],
    "c": ["00000", "00000", "01110", "10000", "10000", "10001", "01110"],
    "e": ["00000", "00000", "01110", "10001", "11111", "10000", "01110"],
    "h": ["10000", "10000", "10110", "11001", "10001", "10001", "10001"],
    "i": ["00100", "00000", "01100", "00100", "00100", "00100", "01110"],
    "l": ["01100", "00100", "00100", "00100", "00100", "00100", "01110"],
    "n": ["00000", "00000", "10110", "11001", "10001", "10001", "10001"],
    "r": ["00000", "00000", "10110", "11001", "10000", "10000", "10000"],
    "s": ["00000", "00000", "01111", "10000", "01110", "00001", "11110"],
    "t": ["01000", "01000", "11100", "01000", "01000", "01001", "00110"],
    "y": ["00000", "00000", "10001", "10001", "01111", "00001", "01110"],
    " ": ["00000"] * 7,
}
_PAD = 6
_BG = np.array([32, 32, 36], np.uint8)
_INK = np.array([235, 235, 235], np.uint8)


def text_bitmap(text: str, scale: int = 2) -> np.ndarray:
    """Bool (7*scale, 6*scale*len) bitmap of ``text`` (lowercase letters of "real"/"synthetic" only)."""
    cols = []
    for ch in text.lower():
        glyph = np.array([[c == "1" for c in row] for row in _GLYPHS.get(ch, _GLYPHS[" "])])
        cols += [glyph, np.zeros((7, 1), bool)]
    bitmap = np.concatenate(cols, 1) if cols else np.zeros((7, 1), bool)
    return np.kron(bitmap, np.ones((scale, scale), bool)).astype(bool)


def lesion_centre(mask: np.ndarray | None, shape) -> tuple[int, int]:
    """Centre (bounding box) of the mask's mass pixels, else of its calcifications, else of the image."""
    if mask is not None and np.any(mask):
        mask = np.asarray(mask)
        rows, cols = np.nonzero(mask == 1) if (mask == 1).any() else np.nonzero(mask)
        return (int(rows.min() + rows.max()) // 2, int(cols.min() + cols.max()) // 2)
    return (shape[0] // 2, shape[1] // 2)


def crop_around(image: np.ndarray, centre, size: int) -> np.ndarray:
    """``size`` x ``size`` window centred on ``centre`` (edge values where it leaves the image)."""
    half = size // 2
    r0, c0 = centre[0] - half, centre[1] - half
    padded = np.pad(np.asarray(image, np.float32), half + 1, mode="edge")
    return padded[r0 + half + 1:r0 + half + 1 + size, c0 + half + 1:c0 + half + 1 + size]


def _crops(items, size: int, n: int) -> list[np.ndarray]:
    crops = []
    for item in list(items)[:n]:
        image, mask = item if isinstance(item, tuple) else (item, None)
        image = np.asarray(image, np.float32)
        crops.append(crop_around(image, lesion_centre(mask, image.shape), size))
    return crops


def grid_image(real, synthetic, n: int = 8, crop: int = 64) -> np.ndarray:
    """(H, W, 3) uint8: a row of up to ``n`` real positive patches ("real"; items are images or
    (image, mask) pairs, cropped around the lesion) above up to ``n`` synthetic ones ("synthetic",
    cropped around their label), all in one shared window so brightness compares across rows."""
    rows = [("real", _crops(real or [], crop, n)),
            ("synthetic", _crops(list(zip(synthetic.images, synthetic.masks)), crop, n))]
    values = np.concatenate([c.ravel() for _, crops in rows for c in crops] or [np.zeros(1, np.float32)])
    lo, hi = np.percentile(values, [1.0, 99.5])
    hi = hi if hi > lo else lo + 1.0
    zoom = max(1, 128 // crop)
    tile = crop * zoom
    label_w = text_bitmap("synthetic").shape[1] + 2 * _PAD
    width = label_w + max(1, n) * (tile + _PAD) + _PAD
    out = np.empty((len(rows) * (tile + _PAD) + _PAD, width, 3), np.uint8)
    out[:] = _BG
    for r, (name, crops) in enumerate(rows):
        y = _PAD + r * (tile + _PAD)
        bitmap = text_bitmap(name)
        ty = y + (tile - bitmap.shape[0]) // 2
        out[ty:ty + bitmap.shape[0], _PAD:_PAD + bitmap.shape[1]][bitmap] = _INK
        for k, c in enumerate(crops):
            grey = (np.clip((c - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
            grey = np.kron(grey, np.ones((zoom, zoom), np.uint8))
            x = label_w + k * (tile + _PAD)
            out[y:y + tile, x:x + tile] = grey[..., None]
    return out


def save_grid(real, synthetic, path, n: int = 8) -> Path:
    """:func:`grid_image` as a PNG at ``path``, written to a temporary file and renamed (never half-written)."""
    import os
    import tempfile

    import SimpleITK as sitk

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(grid_image(real, synthetic, n), isVector=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
