"""Loaders: discovery (scan), DICOM series, NIfTI/NRRD/MHA, and DICOM writing."""
from __future__ import annotations

from pathlib import Path

import pydicom.config

# Real-world files often break VR rules in harmless ways ('1A' in an IS). Reading is lenient
# and quiet; what matters to the user (geometry, pixels) is checked and reported by us.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

from ..errors import LoadError
from ..volume import Volume
from .dicom import load_series, plan_series
from .scan import scan

__all__ = ["scan", "load_series", "plan_series", "open_volume"]


def open_volume(path, series_uid: str | None = None) -> Volume:
    """One volume from a path: an image file, or the (chosen / only / largest) series of a folder."""
    result = scan(Path(path))
    candidates = [s for s in result.series if s.kind in ("dicom", "file")]
    if series_uid is not None:
        candidates = [s for s in candidates if series_uid in (s.uid, s.key)]
    if not candidates:
        why = "; ".join(str(p) for p in result.problems[:3]) or "no images found"
        raise LoadError(path, why)
    best = max(candidates, key=lambda s: len(s.frames))
    return load_series(best)
