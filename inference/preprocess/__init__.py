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


def _weight_matrix(coord: np.ndarray, n: int, valid) -> np.ndarray:
    """Rows of interpolation weights; an invalid output's row is zero (its value 0 for free)."""
    i0, i1, w = _axis_weights(coord, n)
    m = np.zeros((len(i0), n), np.float32)
    r = np.arange(len(i0))
    np.add.at(m, (r, i0), 1 - w)
    np.add.at(m, (r, i1), w)
    if valid is not None:
        m[~np.asarray(valid, bool)] = 0
    return m


def _span(valid, n: int) -> slice | None:
    """The valid outputs along one axis as a slice when they are one run (a crop's are), else None."""
    if valid is None:
        return slice(0, n)
    idx = np.flatnonzero(np.asarray(valid, bool))
    if idx.size == 0:
        return slice(0, 0)
    return slice(int(idx[0]), int(idx[-1]) + 1) if idx[-1] - idx[0] + 1 == idx.size else None


def _fill_outside(out, rs: slice, cs: slice, fill: float) -> None:
    out[..., :rs.start, :] = fill
    out[..., rs.stop:, :] = fill
    out[..., rs, :cs.start] = fill
    out[..., rs, cs.stop:] = fill


def sample_bilinear(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, row_valid=None, col_valid=None,
                    fill: float = 0.0) -> np.ndarray:
    """values[..., r, c] at fractional index coordinates rows x cols (an axis-aligned grid).

    Held constant beyond the edges. Output rows/cols whose *_valid is False get `fill`; when the
    valid ones are one run per axis (a crop), only that rectangle is interpolated (a mammogram's crop
    is about two thirds of the image). Separable: a small map becomes Wy @ values @ Wx.T (BLAS), a
    large one two gathers, so a 3328x2560 overlay costs tens of milliseconds.
    """
    if isinstance(values, torch.Tensor):
        if values.device.type != "cpu":
            return _sample_bilinear_torch(values, rows, cols, row_valid, col_valid, fill)
        # on a CPU numpy's gathers are about twice as fast as torch's; from_numpy shares the memory
        return torch.from_numpy(sample_bilinear(values.detach().numpy(), rows, cols, row_valid, col_valid, fill))
    v = np.asarray(values, dtype=np.float32)
    rows, cols = np.asarray(rows), np.asarray(cols)
    h, w = v.shape[-2:]
    if max(h, w) <= _MATMUL_MAX:  # BLAS writes the whole output at once, invalid ones 0
        out = _weight_matrix(rows, h, row_valid) @ v @ _weight_matrix(cols, w, col_valid).T
        if fill:
            _fill_invalid(out, row_valid, col_valid, fill)
        return out
    out = np.empty(v.shape[:-2] + (len(rows), len(cols)), np.float32)
    rs, cs = _span(row_valid, len(rows)), _span(col_valid, len(cols))
    if rs is None or cs is None:  # scattered valid rows or columns: interpolate all, then fill
        _gather_into(out, v, rows, cols)
        _fill_invalid(out, row_valid, col_valid, fill)
        return out
    _fill_outside(out, rs, cs, np.float32(fill))
    if rs.stop > rs.start and cs.stop > cs.start:
        _gather_into(out[..., rs, cs], v, rows[rs], cols[cs])
    return out


def _fill_invalid(out: np.ndarray, row_valid, col_valid, fill: float) -> None:
    if row_valid is not None:
        out[..., ~np.asarray(row_valid, bool), :] = np.float32(fill)
    if col_valid is not None:
        out[..., ~np.asarray(col_valid, bool)] = np.float32(fill)


def _gather_into(dst: np.ndarray, v: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
    """dst[...] = v bilinearly at rows x cols by two gathers (dst may be a view into a larger array)."""
    h, w = v.shape[-2:]
    y0, y1, wy = _axis_weights(rows, h)
    x0, x1, wx = _axis_weights(cols, w)
    # columns first on the small map, then whole rows, written in place: one full-size temporary
    # (each fresh full-field array is page-faulted in, every call)
    c = v[..., x0] * (1 - wx)
    c += v[..., x1] * wx
    np.take(c, y0, axis=-2, out=dst, mode="clip")
    dst *= (1 - wy)[:, None]
    upper = np.take(c, y1, axis=-2, mode="clip")
    upper *= wy[:, None]
    dst += upper


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
