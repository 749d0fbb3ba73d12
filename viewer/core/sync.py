"""Linked scrolling geometry (no Qt): which slice of another series lies at the
patient position of the slice shown here.

Matching works in patient (LPS) millimetres, never in slice indices, so series
of one frame of reference with different spacing, slice count, origin or a
reversed stack order still line up. Planes that are not parallel (an oblique
stack against an axial one) do not link: "the same slice" means nothing there,
and neither does a position beyond the other series' extent; in both cases the
answer is None and the other viewport stays where it is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import slice_normal

# |cos| between plane normals at or above this counts as parallel (about 8 degrees),
# enough for small acquisition differences between the series of one exam.
PARALLEL_COS = 0.99


@dataclass(frozen=True)
class SlicePlane:
    """One shown slice as a plane in patient space."""

    point: np.ndarray  # LPS mm: the centre of the slice
    normal: np.ndarray  # unit vector; its sign does not matter


def plane_normal(volume, axis: int) -> np.ndarray:
    """Unit normal of the planes of constant index along array ``axis``.

    The cross product of the two in-plane directions, not ``direction[:, axis]``,
    which a gantry tilt shears away from the normal.
    """
    a, b = (i for i in range(3) if i != axis)
    return slice_normal(np.concatenate([volume.direction[:, a], volume.direction[:, b]]))


def slice_plane(volume, axis: int, index: int) -> SlicePlane:
    """The plane of slice ``index`` along array ``axis``, anchored at the slice centre."""
    centre = (np.asarray(volume.shape, dtype=float) - 1.0) / 2.0
    centre[axis] = index
    return SlicePlane(point=volume.index_to_world(centre), normal=plane_normal(volume, axis))


def is_parallel(normal_a, normal_b, min_cos: float = PARALLEL_COS) -> bool:
    return abs(float(np.dot(normal_a, normal_b))) >= min_cos


def matching_slice(plane: SlicePlane, volume, axis: int, min_cos: float = PARALLEL_COS) -> int | None:
    """Slice of ``volume`` along array ``axis`` nearest to ``plane``'s position.

    None when the planes are not parallel, or when the position lies more than
    half a slice beyond the first or last slice (outside the series).
    """
    if not is_parallel(plane.normal, plane_normal(volume, axis), min_cos):
        return None
    k = float(volume.world_to_index(plane.point)[axis])  # continuous index: in mm, via the geometry
    n = volume.shape[axis]
    if not -0.5 - 1e-6 <= k <= n - 0.5 + 1e-6:
        return None
    return int(np.clip(np.rint(k), 0, n - 1))


def same_frame_of_reference(info_a, info_b) -> bool:
    """Two series share patient coordinates: the same, non-empty FrameOfReferenceUID."""
    uid = info_a.frame_of_reference_uid
    return bool(uid) and uid == info_b.frame_of_reference_uid
