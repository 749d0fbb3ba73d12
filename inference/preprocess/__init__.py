"""Pre- and post-processing between images as loaded and model grids (one module per modality).

`sample_bilinear` is shared by every map that goes back onto an image grid.
"""
from __future__ import annotations

import numpy as np

_MATMUL_MAX = 128  # small maps (heatmaps) upsample fastest as two matrix products


def _axis_weights(coord: np.ndarray, n: int):
    """Linear interpolation indices/weights along one axis, clamped to the sampled range."""
    c = np.clip(np.asarray(coord, dtype=np.float64), 0.0, n - 1.0)
    i0 = np.floor(c).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, (c - i0).astype(np.float32)


def _weight_matrix(coord: np.ndarray, n: int, valid: np.ndarray | None) -> np.ndarray:
    i0, i1, w = _axis_weights(coord, n)
    m = np.zeros((len(i0), n), np.float32)
    r = np.arange(len(i0))
    np.add.at(m, (r, i0), 1 - w)
    np.add.at(m, (r, i1), w)
    if valid is not None:
        m[~valid] = 0
    return m


def sample_bilinear(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, row_valid=None, col_valid=None,
                    fill: float = 0.0) -> np.ndarray:
    """values[..., r, c] at fractional index coordinates rows x cols (an axis-aligned grid).

    Held constant beyond the edges. Output rows/cols whose *_valid is False get `fill`.
    Separable: a small map becomes Wy @ values @ Wx.T (BLAS, one full-size output), a
    large one two gathers, so a 3328x2560 overlay costs tens of milliseconds.
    """
    v = np.asarray(values, dtype=np.float32)
    h, w = v.shape[-2:]
    if max(h, w) <= _MATMUL_MAX:
        out = _weight_matrix(rows, h, row_valid) @ v @ _weight_matrix(cols, w, col_valid).T
    else:
        y0, y1, wy = _axis_weights(rows, h)
        x0, x1, wx = _axis_weights(cols, w)
        r = v[..., y0, :] * (1 - wy)[:, None] + v[..., y1, :] * wy[:, None]
        out = r[..., x0] * (1 - wx) + r[..., x1] * wx
        if row_valid is not None:
            out[..., ~np.asarray(row_valid, bool), :] = 0
        if col_valid is not None:
            out[..., ~np.asarray(col_valid, bool)] = 0
    if fill:
        if row_valid is not None:
            out[..., ~np.asarray(row_valid, bool), :] = np.float32(fill)
        if col_valid is not None:
            out[..., ~np.asarray(col_valid, bool)] = np.float32(fill)
    return out
