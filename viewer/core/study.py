"""Patients -> studies -> series, as found on disk before any pixel is decoded.

The scan (io/scan.py) fills these from headers only; io/dicom.py turns a Series
into a Volume on demand. Keeping headers apart from pixels is what makes
browsing a big folder fast.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .volume import SourceInfo


def study_file_stem(study_key: str) -> str:
    """A study's UID as a file name stem for what is kept per study (measurement SR, key images);
    anything that is not a plain UID (a folder standing for a study, a hostile value) is hashed."""
    key = str(study_key or "")
    if key and len(key) <= 64 and re.fullmatch(r"[0-9.]+", key):
        return key
    return "study-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


@dataclass
class FileProblem:
    """A file that could not be used, and why, in words a user can act on."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Frame:
    """One 2D image in a series: a single-frame file or one frame of a multi-frame file."""

    instance: "Instance"
    index: int = 0  # frame number inside the file, 0-based
    position: np.ndarray | None = None  # ImagePositionPatient (LPS mm)
    orientation: np.ndarray | None = None  # ImageOrientationPatient (6 cosines)
    rescale: tuple[float, float] | None = None  # per-frame (slope, intercept), enhanced IODs


@dataclass
class Instance:
    """Header facts of one DICOM file, enough to sort, group and read its pixels."""

    path: Path
    sop_uid: str = ""
    sop_class: str = ""
    instance_number: int | None = None
    rows: int = 0
    columns: int = 0
    frames: int = 1
    samples_per_pixel: int = 1
    bits_allocated: int = 16
    bits_stored: int = 16
    pixel_representation: int = 0
    photometric: str = "MONOCHROME2"
    transfer_syntax: str = ""
    pixel_spacing: tuple[float, float] | None = None  # (row spacing, column spacing) mm
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    rescale: tuple[float, float] = (1.0, 0.0)  # (slope, intercept)
    pixel_offset: int | None = None  # byte offset of native (uncompressed) pixel data
    pixel_length: int | None = None  # bytes of pixel data; None when encapsulated
    has_pixels: bool = False
    float_pixels: bool = False  # Float / Double Float Pixel Data instead of integer Pixel Data
    frame_list: list[Frame] = field(default_factory=list)
    pixel_problem: str = ""  # found from lengths at scan time (e.g. pixel data cut short)
    notes: list[str] = field(default_factory=list)  # header values dropped because they did not parse


RESULT_IMAGE_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.30": "parametric map"}


@dataclass
class Series:
    """Images that belong in one Volume (a series split by orientation or size if mixed)."""

    uid: str
    info: SourceInfo
    instances: list[Instance] = field(default_factory=list)
    kind: str = "dicom"  # 'dicom' image stack/projection, 'file' (NIfTI/NRRD/MHA), 'non-image'
    part: str = ""  # why this series was split from others with the same UID, e.g. 'orientation 2/3'
    problems: list[str] = field(default_factory=list)
    path: Path | None = None  # for kind 'file'

    @property
    def key(self) -> str:
        return f"{self.uid}#{self.part}" if self.part else self.uid

    @property
    def modality(self) -> str:
        return self.info.modality

    @property
    def frames(self) -> list[Frame]:
        return [f for inst in self.instances for f in inst.frame_list]

    @property
    def is_result(self) -> bool:
        """An analysis result stored as an image (a Parametric Map): viewable on its own, but drawn over its
        source series and never the series a study opens on."""
        return bool(self.instances) and self.instances[0].sop_class in RESULT_IMAGE_SOP_CLASSES

    @property
    def is_projection(self) -> bool:
        """A 2D image without patient position (mammogram, radiograph)."""
        fr = self.frames
        return self.kind == "dicom" and len(fr) == 1 and fr[0].position is None

    def label(self) -> str:
        bits = [self.info.modality, self.info.series_description or "(no description)"]
        view = f"{self.info.laterality}{self.info.view_position}".strip()
        if view and view not in bits[1].replace(" ", ""):
            bits.append(view)
        if self.part:
            bits.append(f"[{self.part}]")
        return " ".join(b for b in bits if b)


@dataclass
class Study:
    uid: str
    date: str = ""
    description: str = ""
    accession: str = ""
    series: list[Series] = field(default_factory=list)

    @property
    def modalities(self) -> list[str]:
        return sorted({s.modality for s in self.series if s.modality})


@dataclass
class Patient:
    id: str
    name: str = ""
    studies: list[Study] = field(default_factory=list)


@dataclass
class ScanResult:
    """Everything a scan found: the good series and the files it could not use."""

    patients: list[Patient] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    ignored: int = 0  # files that are plainly not DICOM or images (e.g. README.txt)

    @property
    def studies(self) -> list[Study]:
        return [st for p in self.patients for st in p.studies]

    @property
    def series(self) -> list[Series]:
        return [se for st in self.studies for se in st.series]
