"""The Volume: voxels plus the patient geometry that gives them meaning.

Everything is kept in *array order* (z, y, x) = (slice, row, column) so that
``spacing[a]`` and ``direction[:, a]`` always describe ``array`` axis ``a``.
World coordinates are DICOM patient coordinates (LPS, millimetres):

    world = origin + direction @ (spacing * index_zyx)

SimpleITK lists spacing and direction in (x, y, z) order; ``itk_spacing`` and
``itk_direction`` give that view for interop.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass
class SourceInfo:
    """Who and what the voxels came from; carried by every derived object."""

    patient_id: str = ""
    patient_name: str = ""
    study_uid: str = ""
    study_date: str = ""
    study_description: str = ""
    series_uid: str = ""
    series_number: int | None = None
    series_description: str = ""
    modality: str = ""
    frame_of_reference_uid: str = ""
    photometric: str = "MONOCHROME2"  # MONOCHROME1 is inverted for display only
    window: tuple[float, float] | None = None  # (center, width) suggested by the source
    view_position: str = ""  # mammography: CC, MLO, ...
    laterality: str = ""  # mammography: R or L
    patient_orientation: tuple[str, str] | None = None  # row, column direction letters
    # mammography, beyond ViewPosition (mammo_views.identify reads them when the file has them):
    orientation_text: str = ""  # PatientOrientation as written, e.g. CBIS-DDSM's 'MLO'
    view_code: str = ""  # ViewCodeSequence CodeValue (SNOMED, DICOM CID 4014)
    view_meaning: str = ""  # ViewCodeSequence CodeMeaning
    view_modifiers: tuple[str, ...] = ()  # ViewModifierCodeSequence CodeValues (spot, magnification, ...)
    presentation_intent: str = ""  # PresentationIntentType: FOR PRESENTATION / FOR PROCESSING
    image_type: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


@dataclass
class Volume:
    array: np.ndarray
    spacing: np.ndarray = field(default_factory=lambda: np.ones(3))
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))
    direction: np.ndarray = field(default_factory=lambda: np.eye(3)[:, ::-1].copy())
    info: SourceInfo = field(default_factory=SourceInfo)
    problems: list[str] = field(default_factory=list)
    blank_slices: tuple[int, ...] = ()  # axis-0 slices with no image (gaps kept blank): never the first shown
    oriented: bool = False  # direction read from the source's orientation tag, even for a single image

    def __post_init__(self) -> None:
        if self.array.ndim == 2:
            self.array = self.array[np.newaxis]
        if self.array.ndim != 3:
            raise ValueError(f"Volume needs a 2D or 3D array, got shape {self.array.shape}")
        self.spacing = np.asarray(self.spacing, dtype=float).reshape(3)
        self.origin = np.asarray(self.origin, dtype=float).reshape(3)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if np.any(self.spacing <= 0):
            raise ValueError(f"spacing must be positive, got {self.spacing.tolist()}")

    # -- shape -----------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    # -- geometry --------------------------------------------------------
    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix taking homogeneous (z, y, x, 1) indices to (L, P, S, 1) mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction * self.spacing[np.newaxis, :]
        a[:3, 3] = self.origin
        return a

    def index_to_world(self, index_zyx) -> np.ndarray:
        """Continuous (z, y, x) index, shape (..., 3), to LPS millimetres."""
        idx = np.asarray(index_zyx, dtype=float)
        return idx * self.spacing @ self.direction.T + self.origin

    def world_to_index(self, world_lps) -> np.ndarray:
        """LPS millimetres, shape (..., 3), to continuous (z, y, x) index."""
        w = np.asarray(world_lps, dtype=float) - self.origin
        return w @ np.linalg.inv(self.direction).T / self.spacing

    @property
    def itk_spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.spacing[::-1])  # type: ignore[return-value]

    @property
    def itk_direction(self) -> tuple[float, ...]:
        """Row-major 3x3 with columns for the x, y, z index axes, as SimpleITK wants."""
        return tuple(float(v) for v in self.direction[:, ::-1].ravel())

    def with_array(self, array: np.ndarray) -> "Volume":
        """Same geometry and source, other voxels (e.g. a label map or heatmap)."""
        if array.shape[-3:] != self.array.shape and array.shape != self.array.shape[1:]:
            raise ValueError(f"array shape {array.shape} does not match volume {self.array.shape}")
        return replace(self, array=array, problems=list(self.problems))

    def same_grid(self, other: "Volume", tol: float = 1e-4) -> bool:
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol)
            and np.allclose(self.direction, other.direction, atol=tol)
        )
