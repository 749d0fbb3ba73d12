"""Patient-geometry helpers shared by loaders, the CLI and the viewer (no Qt)."""
from __future__ import annotations

import numpy as np

# LPS axis letters: +x is patient Left, +y Posterior, +z Superior.
_POSITIVE = "LPS"
_NEGATIVE = "RAI"


def slice_normal(iop) -> np.ndarray:
    """Unit normal of a DICOM ImageOrientationPatient (row x column cosines)."""
    iop = np.asarray(iop, dtype=float).reshape(6)
    n = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(n)
    if norm < 1e-6:
        raise ValueError("ImageOrientationPatient row and column cosines are parallel")
    return n / norm


def direction_from_iop(iop, normal=None) -> np.ndarray:
    """3x3 direction in array order (columns: slice, row, column axes) from IOP."""
    iop = np.asarray(iop, dtype=float).reshape(6)
    row_cos = iop[:3] / np.linalg.norm(iop[:3])  # along increasing column index (x)
    col_cos = iop[3:] / np.linalg.norm(iop[3:])  # along increasing row index (y)
    n = slice_normal(iop) if normal is None else np.asarray(normal, dtype=float)
    return np.column_stack([n, col_cos, row_cos])


def axis_letter(vector) -> str:
    """Letter of the patient direction a vector points to most (L/R, P/A, S/I)."""
    v = np.asarray(vector, dtype=float)
    a = int(np.argmax(np.abs(v)))
    return _POSITIVE[a] if v[a] >= 0 else _NEGATIVE[a]


def opposite_letter(letter: str) -> str:
    pairs = dict(zip(_POSITIVE + _NEGATIVE, _NEGATIVE + _POSITIVE))
    return pairs[letter]


def orientation_code(direction) -> str:
    """ITK-style code of where the x, y, z index axes point, e.g. 'LPS' for axial DICOM."""
    d = np.asarray(direction, dtype=float)
    return "".join(axis_letter(d[:, a]) for a in (2, 1, 0))


def plane_name(direction, tol_deg: float = 10.0) -> str:
    """'axial', 'coronal' or 'sagittal' from the slice normal, else 'oblique'."""
    n = np.asarray(direction, dtype=float)[:, 0]
    n = n / np.linalg.norm(n)
    names = ("sagittal", "coronal", "axial")  # normal along x (L), y (P), z (S)
    a = int(np.argmax(np.abs(n)))
    angle = np.degrees(np.arccos(min(1.0, abs(n[a]))))
    return names[a] if angle <= tol_deg else "oblique"

