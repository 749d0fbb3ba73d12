"""Synthetic CT, MR and mammography studies written as real DICOM, with known ground truth.

The demo and the tests need studies whose anatomy, lesions and geometry are known
exactly, without shipping patient data. The phantoms themselves come from
inference.phantoms; this module gives them patients, UIDs and geometry and writes them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

# The pixel/mask generators live in inference.phantoms (the demo models train on them);
# this module writes them as DICOM studies. Names are re-exported for callers of the demo.
from inference.phantoms import (  # noqa: F401
    CT_MASKS,
    MG_FULL_SIZE,
    MG_FULL_SPACING,
    MG_MASKS,
    MG_VIEWS,
    MR_MASKS,
    CTPhantom,
    MRPhantom,
    ct_phantom,
    mammo_image,
    mammo_spacing,
    mr_phantom,
)

from .io.dicom_write import write_projection, write_series
from .volume import SourceInfo, Volume

STUDY_DATE = "20260115"
STUDY_TIME = "093000"  # fixed, so every file of a study (and every re-generation) agrees
MG_ORIENTATION = {"LCC": ("A", "R"), "RCC": ("A", "L"), "LMLO": ("A", "F"), "RMLO": ("A", "F")}


@dataclass
class PhantomSeries:
    volume: Volume  # ground truth: modality values (HU for CT) + geometry exactly as written
    masks: dict[str, np.ndarray]  # uint8 0/1, same shape as volume.array
    files: list[Path]


def _uid(*parts) -> str:
    """Deterministic UID so re-generating a demo study gives the same identity."""
    return generate_uid(entropy_srcs=["lightbox-synthetic", *(str(p) for p in parts)])


def _study_level(**extra) -> dict:
    """Header values every file of one study shares (dcentvfy checks they agree)."""
    return {"StudyTime": STUDY_TIME, **extra}


def _patient(modality: str) -> dict:
    """A distinct made-up patient per modality so the demo browser shows three patients."""
    return {"patient_id": f"LBX-{modality}-001", "patient_name": f"PHANTOM^{modality}",
            "study_date": STUDY_DATE}


def write_ct_study(out_dir, shape=(120, 256, 256), spacing=(2.5, 1.4, 1.4), seed=0, file_order="index",
                   transfer_syntax: UID = ExplicitVRLittleEndian) -> PhantomSeries:
    """Chest/abdomen CT as one axial series: uint16 stored, intercept -1024, 12 bits, W 400 / L 40."""
    model = CTPhantom(shape, spacing, seed)
    hu, masks = model.render()
    key = ("CT", seed, tuple(model.shape), tuple(model.spacing))
    info = SourceInfo(**_patient("CT"), study_uid=_uid(*key, "study"),
                      study_description="CT CHEST ABDOMEN PHANTOM", series_uid=_uid(*key, "series"),
                      series_number=1, series_description=f"Axial {model.spacing[0]:g}mm", modality="CT",
                      frame_of_reference_uid=_uid(*key, "frame"), window=(40.0, 400.0))
    volume = Volume(hu, model.spacing, model.origin, info=info)
    files = write_series(volume, out_dir, slope=1.0, intercept=-1024.0, stored_dtype=np.uint16,
                                  bits_stored=12, transfer_syntax=transfer_syntax, file_order=file_order,
                                  seed=seed, extra=_study_level(BodyPartExamined="CHESTABDOMEN"))
    volume.info = replace(info, files=tuple(str(p) for p in files))
    return PhantomSeries(volume, masks, files)


def write_mr_study(out_dir, shape=(100, 192, 192), spacing=(1.5, 1.2, 1.2), seed=0, file_order="index",
                   transfer_syntax: UID = ExplicitVRLittleEndian) -> PhantomSeries:
    """T1-like brain MR as one axial series: uint16 stored, 12 bits, window from the brain's range."""
    model = MRPhantom(shape, spacing, seed)
    values, masks = model.render()
    brain = values[masks["brain"] > 0]
    lo, hi = np.percentile(brain, [1, 99.5]) if brain.size else (0.0, 1000.0)
    window = (float(round((lo + hi) / 2)), float(round(max(hi - lo, 1.0) * 1.1)))
    key = ("MR", seed, tuple(model.shape), tuple(model.spacing))
    info = SourceInfo(**_patient("MR"), study_uid=_uid(*key, "study"), study_description="MR BRAIN PHANTOM",
                      series_uid=_uid(*key, "series"), series_number=1,
                      series_description=f"Ax T1 {model.spacing[0]:g}mm", modality="MR",
                      frame_of_reference_uid=_uid(*key, "frame"), window=window)
    volume = Volume(values, model.spacing, model.origin, info=info)
    files = write_series(volume, out_dir, slope=1.0, intercept=0.0, stored_dtype=np.uint16,
                                  bits_stored=12, transfer_syntax=transfer_syntax, file_order=file_order,
                                  seed=seed, extra=_study_level(BodyPartExamined="HEAD"))
    volume.info = replace(info, files=tuple(str(p) for p in files))
    return PhantomSeries(volume, masks, files)


def write_mammo_exam(out_dir, size=(1664, 1280), seed=0, lesion_side: str | None = "L",
                     views=MG_VIEWS) -> dict[str, PhantomSeries]:
    """Screening exam: one study, one series per view, files named after the view (LCC.dcm).

    The breast on `lesion_side` gets a mass and a calcification cluster in both
    its CC and MLO; None gives a normal exam.
    """
    out = Path(out_dir)
    rows, cols = (int(n) for n in size)
    spacing = mammo_spacing((rows, cols))
    key = ("MG", seed, rows, cols)
    study_uid = _uid(*key, "study")
    side_hit = (lesion_side or "").upper()
    result = {}
    for number, name in enumerate(views, start=1):
        name = name.upper()
        side, view = name[0], name[1:]
        hit = side == side_hit
        image, masks = mammo_image(side, view, (rows, cols), seed, mass=hit, calcifications=hit)
        breast = image[masks["breast"] > 0]
        lo, hi = np.percentile(breast[::7], [0.5, 99.8]) if breast.size else (0.0, 4095.0)
        info = SourceInfo(**_patient("MG"), study_uid=study_uid, study_description="MG SCREENING PHANTOM",
                          series_uid=_uid(*key, name, "series"), series_number=number,
                          series_description=f"{side} {view}", modality="MG",
                          frame_of_reference_uid=_uid(*key, name, "frame"),
                          window=(float(round((lo + hi) / 2)), float(round(max(hi - lo, 1.0)))),
                          view_position=view, laterality=side, patient_orientation=MG_ORIENTATION[name])
        path = write_projection(image, out / f"{name}.dcm", pixel_spacing=spacing, info=info,
                                stored_dtype=np.uint16, bits_stored=12, extra=_study_level(BodyPartExamined="BREAST"))
        info = replace(info, files=(str(path),))
        volume = Volume(image[np.newaxis], (1.0, *spacing), info=info)
        result[name] = PhantomSeries(volume, {k: m[np.newaxis] for k, m in masks.items()}, [path])
    return result


def write_demo_studies(out_dir, seed=0, scale: float = 1.0) -> dict[str, object]:
    """The three demo patients in out_dir/CT, out_dir/MR and out_dir/MG.

    scale < 1 shrinks every matrix but keeps each field of view, so tests get
    the same anatomy, only coarser.
    """
    out = Path(out_dir)

    def grid(shape, spacing):
        new = tuple(max(8, int(round(n * scale))) for n in shape)
        return new, tuple(s * n / m for s, n, m in zip(spacing, shape, new))

    ct_shape, ct_spacing = grid((120, 256, 256), (2.5, 1.4, 1.4))
    mr_shape, mr_spacing = grid((100, 192, 192), (1.5, 1.2, 1.2))
    mg_size = tuple(max(64, int(round(n * scale))) for n in (1664, 1280))
    return {
        "CT": write_ct_study(out / "CT", ct_shape, ct_spacing, seed),
        "MR": write_mr_study(out / "MR", mr_shape, mr_spacing, seed),
        "MG": write_mammo_exam(out / "MG", mg_size, seed),
    }
