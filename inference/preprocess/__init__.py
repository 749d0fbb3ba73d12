"""Pre- and post-processing between images as loaded and model grids (one module per modality).

`sample_bilinear` is shared by every map that goes back onto an image grid; given a torch tensor
it samples on the tensor's device (the GPU keeps a full-field map there until the labels are made).
"""
from __future__ import annotations

import numpy as np
import torch

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
    if isinstance(values, torch.Tensor):
        if values.device.type != "cpu":
            return _sample_bilinear_torch(values, rows, cols, row_valid, col_valid, fill)
        # on a CPU numpy's gathers are about twice as fast as torch's; from_numpy shares the memory
        return torch.from_numpy(sample_bilinear(values.detach().numpy(), rows, cols, row_valid, col_valid, fill))
    v = np.asarray(values, dtype=np.float32)
    h, w = v.shape[-2:]
    if max(h, w) <= _MATMUL_MAX:
        out = _weight_matrix(rows, h, row_valid) @ v @ _weight_matrix(cols, w, col_valid).T
    else:
        y0, y1, wy = _axis_weights(rows, h)
        x0, x1, wx = _axis_weights(cols, w)
        # columns first on the small map, then whole rows (contiguous copies), in place: two full-size
        # arrays instead of five (each fresh full-field array is page-faulted in, every call)
        c = v[..., x0] * (1 - wx)
        c += v[..., x1] * wx
        out = c[..., y0, :]
        out *= (1 - wy)[:, None]
        upper = c[..., y1, :]
        upper *= wy[:, None]
        out += upper
        del upper
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


def _sample_bilinear_torch(values: torch.Tensor, rows, cols, row_valid, col_valid, fill: float) -> torch.Tensor:
    """sample_bilinear on the tensor's device: two gathers and two lerps, float32, no host round trip."""
    v = values.to(torch.float32)
    h, w = v.shape[-2:]
    dev = v.device

    def axis(coord, n):
        i0, i1, wt = _axis_weights(coord, n)
        return (torch.from_numpy(i0).to(dev), torch.from_numpy(i1).to(dev), torch.from_numpy(wt).to(dev))

    y0, y1, wy = axis(rows, h)
    x0, x1, wx = axis(cols, w)
    # columns first, on the small map; the full-size output is then made of whole-row gathers
    c = torch.lerp(v.index_select(-1, x0), v.index_select(-1, x1), wx)
    out = torch.lerp(c.index_select(-2, y0), c.index_select(-2, y1), wy[:, None])
    for valid, dim in ((row_valid, -2), (col_valid, -1)):
        if valid is not None:
            bad = torch.from_numpy(~np.asarray(valid, bool)).to(dev)
            out.masked_fill_(bad[:, None] if dim == -2 else bad, float(fill))
    return out
