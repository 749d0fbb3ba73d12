"""Pre- and post-processing between images as loaded and model grids (one module per modality).

`sample_bilinear` is shared by every map that goes back onto an image grid.
"""
from __future__ import annotations

import numpy as np


def _axis_weights(coord: np.ndarray, n: int):
    """Linear interpolation indices/weights along one axis, clamped to the sampled range."""
    c = np.clip(np.asarray(coord, dtype=np.float64), 0.0, n - 1.0)
    i0 = np.floor(c).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, (c - i0).astype(np.float32)


def sample_bilinear(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """values[..., r, c] at fractional index coordinates rows x cols (an axis-aligned grid).

    Separable, so a 3328x2560 output costs two gathers; held constant beyond the edges.
    """
    v = np.asarray(values, dtype=np.float32)
    y0, y1, wy = _axis_weights(rows, v.shape[-2])
    x0, x1, wx = _axis_weights(cols, v.shape[-1])
    r = v[..., y0, :] * (1 - wy)[:, None] + v[..., y1, :] * wy[:, None]
    return r[..., x0] * (1 - wx) + r[..., x1] * wx
