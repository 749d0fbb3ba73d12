"""What lies under the cursor: voxel index, patient position and value (no Qt).

A view shows slice ``k`` of a plane (``core.mpr.PlaneGeometry``) with display rows and columns that
may be transposed and flipped against the array. This module maps a display point back to the
array index and, through the volume's affine (``Volume.index_to_world``: origin + direction @
(spacing * index)), to DICOM patient coordinates, so oblique, coronal, sagittal and flipped
volumes read the same as SimpleITK's ``TransformContinuousIndexToPhysicalPoint``.

Positions are printed with patient-direction letters and unsigned millimetres ("R 12.3  A 4.5
S 6.7"): the letter says the side, so LPS and RAS readers read the same text.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .mpr import PlaneGeometry, display_to_index


@dataclass(frozen=True)
class Probe:
    """The voxel under the cursor."""

    index_zyx: tuple[int, int, int]  # array index of the voxel (z, y, x)
    world_lps: np.ndarray  # the cursor's point in LPS millimetres (in-plane continuous, on the slice)
    value: float  # modality value: HU for CT after RescaleSlope/Intercept, else the stored value
    unit: str  # "HU" for CT, "" otherwise
    oriented: bool  # the volume knows its patient orientation (else positions are image mm only)
    overlays: dict[str, float] = field(default_factory=dict)  # overlay name -> its value at this voxel
    image_mm: tuple[float, float] = (0.0, 0.0)  # (x, y) mm from the first pixel's centre along columns / rows


def inside(geometry: PlaneGeometry, row: float, col: float) -> bool:
    """Whether a continuous display point lies on the image (pixel i covers i - 0.5 .. i + 0.5)."""
    return -0.5 <= row < geometry.n_rows - 0.5 and -0.5 <= col < geometry.n_cols - 0.5


def value_unit(volume) -> str:
    return "HU" if (volume.info.modality or "").upper() == "CT" else ""


def probe(volume, geometry: PlaneGeometry, k: int, row: float, col: float,
          overlays: Mapping[str, np.ndarray] | None = None) -> Probe | None:
    """The voxel at display (row, col) of slice ``k``, or None outside the image.

    ``overlays``: arrays on the volume's grid (e.g. AI probability maps) to read at the same voxel.
    """
    if not inside(geometry, row, col):
        return None
    continuous = display_to_index(geometry, k, row, col)
    index = tuple(int(i) for i in np.clip(np.rint(continuous), 0, np.asarray(volume.shape) - 1))
    values = {name: float(np.asarray(arr)[index]) for name, arr in (overlays or {}).items()}
    # a stack, or an image whose orientation was read (IOP): patient mm. A projection image (mammogram, DX)
    # has no position in the patient, only row/column letters: its mm are the image's own.
    oriented = bool(volume.shape[0] > 1 or getattr(volume, "oriented", False))
    image_mm = (float(continuous[2] * volume.spacing[2]), float(continuous[1] * volume.spacing[1]))
    return Probe(index_zyx=index, world_lps=volume.index_to_world(continuous), value=float(volume.array[index]),
                 unit=value_unit(volume), oriented=oriented, overlays=values, image_mm=image_mm)


def format_position(lps) -> str:
    """'R 12.3  A 4.5  S 6.7': patient side letter and unsigned mm for each LPS axis."""
    x, y, z = (float(v) for v in np.asarray(lps, dtype=float).reshape(3))
    return "  ".join(f"{neg if v < 0 else pos} {abs(v):.1f}"
                     for v, pos, neg in ((x, "L", "R"), (y, "P", "A"), (z, "S", "I")))


def format_value(value: float, unit: str = "") -> str:
    """Integers as integers, others with 4 significant digits, then the unit."""
    if not np.isfinite(value):
        text = str(value)
    elif float(value).is_integer() or abs(value) >= 1000:
        text = f"{value:.0f}"
    else:
        text = f"{value:.4g}"
    return f"{text} {unit}".strip()


def readout_lines(p: Probe | None, labels: Mapping[str, str] | None = None) -> list[str]:
    """The corner text for a probe: value (+ overlays), position, voxel index; [] outside the image.

    ``labels``: overlay name -> what to call it (e.g. {"ai": "AI"}); probabilities print as 0.00.
    """
    if p is None:
        return []
    first = format_value(p.value, p.unit)
    for name, v in p.overlays.items():
        first += f"   {(labels or {}).get(name, name)} {v:.2f}"
    w = p.world_lps
    x_mm, y_mm = p.image_mm
    position = format_position(w) + " mm" if p.oriented else f"x {x_mm:.1f}  y {y_mm:.1f} mm (image)"
    z, y, x = p.index_zyx
    return [first, position, f"voxel ({x}, {y}, {z})"]
