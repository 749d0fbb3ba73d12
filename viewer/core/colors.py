"""Default label colours, shared by the viewer's overlays and the DICOM SEG / NIfTI writers."""
from __future__ import annotations

# ITK-SNAP / Slicer-like, cycled for labels without a given colour.
DEFAULT_LABEL_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
    (255, 239, 213), (0, 0, 205), (205, 133, 63), (210, 180, 140), (102, 205, 170), (0, 0, 128),
)


def label_color(label: int) -> tuple[int, int, int]:
    """Colour of label ``label`` (>= 1)."""
    return DEFAULT_LABEL_COLORS[(int(label) - 1) % len(DEFAULT_LABEL_COLORS)]
