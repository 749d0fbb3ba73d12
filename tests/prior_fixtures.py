"""Studies of one patient on different dates, written with the phantom writers and then given their own
patient, date and UIDs (the writers give every phantom the same patient and date)."""
from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from viewer.core.synthetic import write_ct_study, write_mammo_exam

MG_SIZE = (104, 80)


def retag(folder: Path, patient_id: str, name: str, date: str, time: str = "", issuer: str = "",
          description: str = "", drop: tuple[str, ...] = (), shift_mm: float = 0.0, study_uid: str = "") -> Path:
    """Give every file in ``folder`` one new study (and new series/instance UIDs, frame of reference),
    patient and date. ``drop``: file stems to delete (views missing from the exam); ``shift_mm``: move the
    slices along z, as another table position does."""
    study_uid = study_uid or generate_uid()
    frame = generate_uid()
    series_uids: dict[str, str] = {}
    for path in sorted(folder.glob("*.dcm")):
        if path.stem in drop:
            path.unlink()
            continue
        ds = pydicom.dcmread(path)
        ds.PatientID, ds.PatientName, ds.StudyDate = patient_id, name, date
        if time:
            ds.StudyTime = time
        if issuer:
            ds.IssuerOfPatientID = issuer
        if description:
            ds.SeriesDescription = description
        ds.StudyInstanceUID = study_uid
        if "FrameOfReferenceUID" in ds:
            ds.FrameOfReferenceUID = frame
        if shift_mm and "ImagePositionPatient" in ds:
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, z + shift_mm]
        ds.SeriesInstanceUID = series_uids.setdefault(ds.SeriesInstanceUID, generate_uid())
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(path)
    return folder


def mg_exam(folder: Path, patient_id: str, date: str, name: str = "DOE^JANE", seed: int = 0,
            lesion_side: str | None = "L", **kw) -> Path:
    write_mammo_exam(folder, size=MG_SIZE, seed=seed, lesion_side=lesion_side)
    return retag(folder, patient_id, name, date, **kw)


def ct_study(folder: Path, patient_id: str, date: str, name: str = "DOE^JOHN", seed: int = 0,
             shape=(24, 40, 40), spacing=(5.0, 8.0, 8.0), **kw) -> Path:
    write_ct_study(folder, shape=shape, spacing=spacing, seed=seed)
    return retag(folder, patient_id, name, date, **kw)


def two_mg_exams_and_a_stranger(root: Path) -> Path:
    """Patient P1: 2024-03-01 (current) and 2022-02-14 (prior, LMLO missing); patient P2 with the same
    name, 2023-05-05, who must never be offered as P1's prior."""
    mg_exam(root / "current", "P1", "20240301", seed=0)
    mg_exam(root / "prior", "P1", "20220214", seed=1, lesion_side=None, drop=("LMLO",))
    mg_exam(root / "stranger", "P2", "20230505", seed=2)
    return root
