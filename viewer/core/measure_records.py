"""One user measurement or annotation (ruler, ROI, angle, Cobb angle, arrow, text) as DICOM SR stores it,
and back (no Qt).

A view draws in scene millimetres on one slice of its plane; DICOM SR (TID 1500) wants the
shape on the acquired image it was drawn on: that image's SOP Instance UID and frame number,
and (column, row) image coordinates where (0, 0) is the top left corner of the top left pixel
(PS3.3 C.18.6.1.1), so pixel (row i, col j) has its centre at (j + 0.5, i + 0.5).

A record therefore keeps exactly what SR holds, independent of any view:

- ``points``: SCOORD (column, row) on ``sop_uid`` / ``frame`` when the measurement lies on an
  acquired image (the native stack, or an MPR view cut along the acquisition axis);
- ``world``: SCOORD3D LPS millimetres in ``frame_of_reference_uid`` when it was drawn on an MPR
  reformat that is no acquired image (coronal/sagittal of an axial CT).

Shapes: ruler = its 2 end points (POLYLINE); rect = 5 corners, closed (2D: POLYLINE, 3D: POLYGON); ellipse = the
end points of its two axes, the longer first (ELLIPSE); angle = arm end, vertex, arm end; Cobb = the
two lines' end points (4); arrow = tail, head; text = its anchor point (1) and ``text``.
``to_display`` / ``from_display`` (``..._points`` for any kind) map a view's slice-plane pixel
coordinates (``PlaneGeometry``; fractional, pixel centre = integer) to records and back, through
the volume's (z, y, x) grid and the series' slice plan (which image fills each slice, and the
in-plane shift of a gantry-tilt stack).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .mpr import display_to_index

KINDS = ("ruler", "rect", "ellipse", "angle", "cobb", "arrow", "text")
POINT_COUNTS = {"ruler": 2, "rect": 2, "ellipse": 2, "angle": 3, "cobb": 4, "arrow": 2, "text": 1}
TWO_POINT_KINDS = ("ruler", "rect", "ellipse")  # kept as two points, saved as an outline
SLICE_TOL = 0.05  # voxel fraction: a 3D shape must lie this close to one slice of a view to be shown on it


@dataclass(frozen=True)
class MeasurementRecord:
    """A measurement as saved: shape, where it lies, and the values shown when it was saved."""

    kind: str  # one of KINDS
    uid: str  # tracking UID: one measurement keeps it across saves and files
    value: float  # length (mm) for a ruler, area (mm2) for an ROI, degrees for an angle; 0 for arrow / text
    mean: float | None = None  # ROI only, in ``unit``
    std: float | None = None  # population SD, ROI only
    unit: str = ""  # 'HU' for CT, '' for unitless values
    series_uid: str = ""
    study_uid: str = ""
    sop_class_uid: str = ""
    sop_uid: str = ""  # 2D: the image it was drawn on
    frame: int = 1  # 1-based frame number in that image
    points: tuple[tuple[float, float], ...] = ()  # 2D: SCOORD (column, row)
    frame_of_reference_uid: str = ""  # 3D: for ``world``
    world: tuple[tuple[float, float, float], ...] = ()  # 3D: SCOORD3D LPS mm
    label: str = ""  # tracking identifier text
    text: str = ""  # a text annotation's words (an arrow's optional caption)
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown measurement kind {self.kind!r}; expected one of {KINDS}")
        if not self.points and not self.world:
            raise ValueError("a measurement record needs image points or world points")

    @property
    def is_3d(self) -> bool:
        return not self.points


# -- geometry: a view's slice plane <-> the volume's (z, y, x) grid -----------------------------
def index_to_display(geometry, idx) -> tuple[float, float, float]:
    """(slice, row, col) of a (z, y, x) index in a view's plane, all continuous."""
    idx = np.asarray(idx, dtype=float)
    r, c = float(idx[geometry.row_axis]), float(idx[geometry.col_axis])
    if geometry.flip_rows:
        r = geometry.n_rows - 1 - r
    if geometry.flip_cols:
        c = geometry.n_cols - 1 - c
    return float(idx[geometry.axis]), r, c


def _outline(kind: str, points) -> list[tuple[float, float]]:
    """The SR points of a shape given by the display (row, col) points its tool keeps."""
    if kind not in TWO_POINT_KINDS:
        return [(float(r), float(c)) for r, c in points]
    (r0, c0), (r1, c1) = points
    if kind == "ruler":
        return [(r0, c0), (r1, c1)]
    if kind == "rect":
        return [(r0, c0), (r0, c1), (r1, c1), (r1, c0), (r0, c0)]
    cr, cc, hr, hc = (r0 + r1) / 2, (c0 + c1) / 2, abs(r1 - r0) / 2, abs(c1 - c0) / 2
    across = [(cr, cc - hc), (cr, cc + hc)]
    down = [(cr - hr, cc), (cr + hr, cc)]
    return across + down if hc >= hr else down + across


def _two_points(kind: str, pts) -> tuple[tuple[float, float], tuple[float, float]]:
    """Back from SR points (display row, col) to the two points a view's tool keeps."""
    pts = np.asarray(pts, dtype=float)
    if kind == "ruler":
        return (pts[0, 0], pts[0, 1]), (pts[1, 0], pts[1, 1])
    if kind == "rect":  # corners 0 and 2 are opposite (see _outline)
        return (pts[0, 0], pts[0, 1]), (pts[2, 0], pts[2, 1])
    center = pts.mean(axis=0)
    half = np.abs(pts - center).max(axis=0)
    return (center[0] - half[0], center[1] - half[1]), (center[0] + half[0], center[1] + half[1])


def _slot_frame(plan, k: int):
    if plan is None or not 0 <= k < len(plan.slots):
        return None
    return plan.slots[k]


def _shear(plan, k: int) -> tuple[float, float]:
    if plan is None or getattr(plan, "shear", None) is None:
        return 0.0, 0.0
    dy, dx = plan.shear[k]
    return float(dy), float(dx)


def from_display(kind: str, geometry, k: int, p0, p1, volume, plan, **values) -> MeasurementRecord | None:
    """The record of a two-point shape (ruler, rect, ellipse, arrow) drawn on slice ``k`` of a view."""
    return from_display_points(kind, geometry, k, (p0, p1), volume, plan, **values)


def from_display_points(kind: str, geometry, k: int, points, volume, plan, *, uid: str, value: float,
                        mean=None, std=None, unit: str = "", series_uid: str = "", label: str = "",
                        text: str = "") -> MeasurementRecord | None:
    """The record of a shape drawn on slice ``k`` of a view, from the display (row, col) points its
    tool keeps (``POINT_COUNTS[kind]`` of them).

    2D on the acquired image when the view cuts along the acquisition axis and slice ``k`` is a
    real image of ``plan``; else 3D in patient coordinates when the volume has a frame of
    reference; else None (it cannot be placed in DICOM).
    """
    if kind not in POINT_COUNTS:
        raise ValueError(f"unknown measurement kind {kind!r}; expected one of {KINDS}")
    if len(points) != POINT_COUNTS[kind]:
        raise ValueError(f"a {kind} has {POINT_COUNTS[kind]} points, got {len(points)}")
    outline = _outline(kind, points)
    idx = [display_to_index(geometry, k, r, c) for r, c in outline]
    info = volume.info
    common = dict(kind=kind, uid=uid, value=float(value), mean=None if mean is None else float(mean),
                  std=None if std is None else float(std), unit=unit, series_uid=series_uid or info.series_uid,
                  study_uid=info.study_uid, label=label, text=str(text or ""))
    frame = _slot_frame(plan, int(k)) if geometry.axis == 0 else None
    if frame is not None and frame.instance.sop_uid:
        dy, dx = _shear(plan, int(k))
        pts = tuple((float(i[2] - dx + 0.5), float(i[1] - dy + 0.5)) for i in idx)
        return MeasurementRecord(**common, sop_class_uid=frame.instance.sop_class, sop_uid=frame.instance.sop_uid,
                                 frame=int(frame.index) + 1, points=pts)
    if info.frame_of_reference_uid:
        world = tuple(tuple(float(v) for v in volume.index_to_world(i)) for i in idx)
        return MeasurementRecord(**common, frame_of_reference_uid=info.frame_of_reference_uid, world=world)
    return None


def to_display(record: MeasurementRecord, geometry, volume, plan):
    """(slice k, p0, p1) of a two-point record in a view's plane (display (row, col) points), or None
    when the record is not on this volume or not on one slice of this view's plane."""
    placed = to_display_points(record, geometry, volume, plan)
    if placed is None:
        return None
    k, points = placed
    if len(points) != 2:
        raise ValueError(f"a {record.kind} has {len(points)} points; use to_display_points")
    return k, points[0], points[1]


def to_display_points(record: MeasurementRecord, geometry, volume, plan):
    """(slice k, [display (row, col) points its tool keeps]) of a record in a view's plane, or None
    when the record is not on this volume or not on one slice of this view's plane."""
    if record.points:
        if plan is None or geometry.axis != 0:
            return None
        k = next((k for k, f in enumerate(plan.slots) if f is not None and f.instance.sop_uid == record.sop_uid
                  and int(f.index) + 1 == int(record.frame or 1)), None)
        if k is None:
            return None
        dy, dx = _shear(plan, k)
        idx = [np.array([k, row - 0.5 + dy, col - 0.5 + dx]) for col, row in record.points]
    else:
        fref = volume.info.frame_of_reference_uid
        if not fref or fref != record.frame_of_reference_uid:
            return None
        idx = list(volume.world_to_index(np.asarray(record.world, dtype=float)))
    shown = np.array([index_to_display(geometry, i) for i in idx])
    ks = shown[:, 0]
    k = int(np.rint(ks.mean()))
    if np.abs(ks - k).max() > SLICE_TOL or not 0 <= k < geometry.n_slices:
        return None
    if record.kind in TWO_POINT_KINDS:
        return k, list(_two_points(record.kind, shown[:, 1:]))
    if len(shown) != POINT_COUNTS[record.kind]:
        return None
    return k, [(float(r), float(c)) for r, c in shown[:, 1:]]
