"""Exports of derived objects (label maps, heatmaps) that stay aligned to their source image.

Submodules load lazily so that writing a NIfTI never pays for importing highdicom:
``from viewer.core.export import write_label_map`` imports only ``nifti``.
"""
from __future__ import annotations

import importlib

_WHERE = {
    "write_label_map": "nifti",
    "write_heatmap": "nifti",
    "read_label_map": "nifti",
    "GridMismatch": "nifti",
    "Segment": "dicom_seg",
    "write_dicom_seg": "dicom_seg",
    "read_dicom_seg": "dicom_seg",
    "MissingSliceWarning": "dicom_seg",
}

__all__ = ["GridMismatch", "MissingSliceWarning", "Segment", "read_dicom_seg", "read_label_map",
           "write_dicom_seg", "write_heatmap", "write_label_map"]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
