"""Multi-planar reformat geometry: which array axis each view slices, and how
to orient it on screen (no Qt).

Display conventions (as Slicer, OHIF and ITK-SNAP show them), screen columns
growing rightward and rows downward:

    axial     seen from the feet:       patient Right on the left, Anterior on top
    coronal   seen from the front:      patient Right on the left, Superior on top
    sagittal  seen from patient's left: Anterior on the left,      Superior on top

Views are native array planes, never resampled: each patient axis is matched
to the array axis whose direction cosine is closest to it, so volumes acquired
coronally or sagittally still show the right anatomy in every view. For an
oblique volume the views are the native planes nearest to the true ones and the
edge letters name the dominant direction only.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np

from viewer.core.geometry import axis_letter, opposite_letter

PLANES = ("axial", "coronal", "sagittal")

# plane -> (normal, (row world axis, +1 if rows grow along +axis), (col axis, sign)).
# LPS world axes: 0 = L, 1 = P, 2 = S.
_LAYOUT = {
    "axial": (2, (1, +1), (0, +1)),     # down = P, right = L
    "coronal": (1, (2, -1), (0, +1)),   # down = I, right = L
    "sagittal": (0, (2, -1), (1, +1)),  # down = I, right = P
}


@dataclass(frozen=True)
class PlaneGeometry:
    plane: str
    axis: int  # array axis (0=z, 1=y, 2=x) the slider moves along; slice k is array index k
    n_slices: int
    row_axis: int  # array axis shown along screen rows (downward)
    col_axis: int  # array axis shown along screen columns (rightward)
    flip_rows: bool  # array axis runs upward on screen
    flip_cols: bool  # array axis runs leftward on screen
    n_rows: int
    n_cols: int
    pixel_size: tuple[float, float]  # (row mm, col mm) for the display aspect
    edge_letters: dict[str, str]  # "left", "right", "top", "bottom" -> R/L/A/P/S/I


def _edge_letters(down, right) -> dict[str, str]:
    """Patient-direction letters at the four screen edges, from the screen's down/right vectors."""
    r, b = axis_letter(right), axis_letter(down)
    return {"right": r, "left": opposite_letter(r), "bottom": b, "top": opposite_letter(b)}


def world_to_array_axes(direction) -> tuple[int, int, int]:
    """Array axis matched to each LPS axis, as one permutation.

    Greedy per-axis argmax could give two world axes the same array axis on
    oblique data; the best whole permutation cannot.
    """
    d = np.abs(np.asarray(direction, dtype=float))
    best = max(permutations(range(3)), key=lambda p: sum(d[w, p[w]] for w in range(3)))
    return tuple(int(a) for a in best)  # type: ignore[return-value]


def plane_geometry(volume, plane: str) -> PlaneGeometry:
    if plane not in _LAYOUT:
        raise ValueError(f"unknown plane {plane!r}; expected one of {PLANES}")
    d = volume.direction
    shape = volume.shape
    match = world_to_array_axes(d)
    normal, (row_w, row_sign), (col_w, col_sign) = _LAYOUT[plane]
    axis, row_axis, col_axis = match[normal], match[row_w], match[col_w]
    flip_rows = bool(np.sign(d[row_w, row_axis]) != row_sign)
    flip_cols = bool(np.sign(d[col_w, col_axis]) != col_sign)
    letters = _edge_letters(down=d[:, row_axis] * (-1 if flip_rows else 1),
                            right=d[:, col_axis] * (-1 if flip_cols else 1))
    return PlaneGeometry(
        plane=plane,
        axis=axis,
        n_slices=int(shape[axis]),
        row_axis=row_axis,
        col_axis=col_axis,
        flip_rows=flip_rows,
        flip_cols=flip_cols,
        n_rows=int(shape[row_axis]),
        n_cols=int(shape[col_axis]),
        pixel_size=(float(volume.spacing[row_axis]), float(volume.spacing[col_axis])),
        edge_letters=letters,
    )


def native_geometry(volume) -> PlaneGeometry:
    """The array as stored: slice k = array[k], rows down, columns right (the 1x1 view)."""
    nz, ny, nx = volume.shape
    return PlaneGeometry(plane="native", axis=0, n_slices=nz, row_axis=1, col_axis=2,
                         flip_rows=False, flip_cols=False, n_rows=ny, n_cols=nx,
                         pixel_size=(float(volume.spacing[1]), float(volume.spacing[2])),
                         edge_letters=_edge_letters(down=volume.direction[:, 1], right=volume.direction[:, 2]))


def normal_world_axis(plane: str) -> int:
    """LPS axis (0 = L, 1 = P, 2 = S) a plane's slider moves along."""
    return _LAYOUT[plane][0]


def extract_slice(volume_or_array, geometry: PlaneGeometry, index: int) -> np.ndarray:
    """Slice `index` as shown on screen; a strided view, so label maps and
    heatmaps on the same grid cost nothing extra."""
    arr = getattr(volume_or_array, "array", volume_or_array)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3D (z, y, x) array, got shape {arr.shape}")
    if not 0 <= index < arr.shape[geometry.axis]:
        raise IndexError(f"slice {index} outside 0..{arr.shape[geometry.axis] - 1}")
    plane = _index(arr, geometry.axis, index)
    if geometry.row_axis > geometry.col_axis:  # remaining axes keep array order
        plane = plane.T
    return plane[:: -1 if geometry.flip_rows else 1, :: -1 if geometry.flip_cols else 1]


def _index(arr: np.ndarray, axis: int, index: int) -> np.ndarray:
    # Basic indexing returns a view; np.take would copy.
    sl = [slice(None)] * 3
    sl[axis] = int(index)
    return arr[tuple(sl)]


def display_to_index(geometry: PlaneGeometry, k: float, row: float, col: float) -> np.ndarray:
    """Continuous (z, y, x) array index of display (row, col) on slice ``k`` (pixel centres at integers)."""
    idx = np.zeros(3)
    idx[geometry.axis] = k
    idx[geometry.row_axis] = (geometry.n_rows - 1 - row) if geometry.flip_rows else row
    idx[geometry.col_axis] = (geometry.n_cols - 1 - col) if geometry.flip_cols else col
    return idx


def pixel_to_world(volume, geometry: PlaneGeometry, index, row, col) -> np.ndarray:
    """Screen pixel (fractions allowed) on slice `index` to LPS millimetres."""
    return volume.index_to_world(display_to_index(geometry, index, row, col))


def world_to_pixel(volume, geometry: PlaneGeometry, world_lps) -> tuple[int, float, float]:
    """(slice, row, col) showing a world point: the slice is the nearest one,
    clamped to the volume; row and col stay continuous and unclamped."""
    idx = volume.world_to_index(world_lps)
    k = int(np.clip(np.rint(idx[geometry.axis]), 0, geometry.n_slices - 1))
    r = float(idx[geometry.row_axis])
    c = float(idx[geometry.col_axis])
    if geometry.flip_rows:
        r = geometry.n_rows - 1 - r
    if geometry.flip_cols:
        c = geometry.n_cols - 1 - c
    return k, r, c


def slice_for_world(volume, geometry: PlaneGeometry, world_lps) -> int:
    """Nearest slice containing the point, clamped (keeps crosshairs in range)."""
    return world_to_pixel(volume, geometry, world_lps)[0]


def nearest_image_slice(volume, k: int) -> int:
    """The axis-0 slice nearest ``k`` that holds an image, not a blank gap slot.

    A sparse series (4 images over 200 mm) is mostly blank slots kept so positions stay
    true; opening on one of them shows a black slice, so views start on a real image.
    """
    n = volume.shape[0]
    blank = set(getattr(volume, "blank_slices", ()) or ())
    k = int(np.clip(k, 0, n - 1))
    if k not in blank or len(blank) >= n:
        return k
    real = np.array([i for i in range(n) if i not in blank])
    return int(real[np.argmin(np.abs(real - k))])


def initial_slice(volume, geometry: PlaneGeometry) -> int:
    """The slice a view opens on: the middle one, moved to the nearest image along axis 0."""
    k = geometry.n_slices // 2
    return nearest_image_slice(volume, k) if geometry.axis == 0 else k
