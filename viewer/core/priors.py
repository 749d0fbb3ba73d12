"""A patient's prior exams, and the prior series to read beside the current one (no Qt).

A prior is a study of the same patient (PatientID, and IssuerOfPatientID where the file has one:
two hospitals' '12345' are two people), of the same modality family, acquired strictly earlier
(StudyDate, then StudyTime). The name is never used: two patients called SMITH^ANN are not one.
A study without a date, or on the same day without times to order them, cannot be called earlier
and is not offered as a prior. Newest prior first: the reader compares with the last exam.

Mammograms are grouped into exams by the archive rules of ``mammo_exams`` (one patient ID per view,
several studies on one date, CBIS-DDSM conversion dates), so a prior there is an older ``Exam``.

For CT/MR the prior series is the one of the prior study that looks most like the current series
(same modality, parallel slices, similar description and slice thickness); the two stacks usually
have different frames of reference, so ``stack_offset_mm`` lines them up from their intensity
profiles along the slice normal before they scroll together.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .geometry import slice_normal
from .mammo_exams import Exam, group_exams
from .study import ScanResult, Series, Study
from .sync import matching_slice, plane_normal, slice_plane

FAMILIES = {"CR": "XR", "DX": "XR", "MG": "MG", "CT": "CT", "MR": "MR", "PT": "PT", "NM": "NM", "US": "US"}
_NON_IMAGE = {"SEG", "RTSTRUCT", "SR", "PR", "KO", "REG"}


@dataclass(frozen=True)
class StudyFacts:
    """Who and when, read from a study's first image header (the scan keeps no issuer or time)."""

    patient_id: str
    issuer: str
    date: str
    time: str

    @property
    def patient(self) -> tuple[str, str]:
        return self.patient_id, self.issuer

    @property
    def when(self) -> tuple[str, str] | None:
        """(date, time) when the date is known; None when it is not (then it orders against nothing)."""
        return (self.date, self.time) if self.date else None


@dataclass
class Prior:
    study: Study
    facts: StudyFacts


def modality_family(modality: str) -> str:
    """'DX' and 'CR' compare with each other (both radiographs); others with their own kind."""
    m = (modality or "").upper()
    return FAMILIES.get(m, m)


def _image_series(study: Study) -> list[Series]:
    return [s for s in study.series if s.kind == "dicom" and s.modality.upper() not in _NON_IMAGE
            and not s.is_result]


def study_family(study: Study) -> str:
    return next((modality_family(s.modality) for s in _image_series(study)), "")


@lru_cache(maxsize=4096)
def _header_extras(path: str) -> tuple[str, str]:
    """(IssuerOfPatientID, StudyTime) of one file; ('', '') when it cannot be read (the scan read it once)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["IssuerOfPatientID", "StudyTime"])
    except Exception:  # noqa: BLE001 - a file the scan accepted but cannot be re-read: no issuer, no time
        return "", ""
    time = str(ds.get("StudyTime", "") or "").strip()
    return str(ds.get("IssuerOfPatientID", "") or "").strip(), re.sub(r"[^0-9.]", "", time)


def study_facts(study: Study) -> StudyFacts:
    series = next(iter(_image_series(study)), None) or (study.series[0] if study.series else None)
    if series is None:
        return StudyFacts("", "", study.date or "", "")
    path = str(series.instances[0].path) if series.instances else ""
    issuer, time = _header_extras(path) if path else ("", "")
    return StudyFacts((series.info.patient_id or "").strip(), issuer, (study.date or "").strip(), time)


def is_earlier(a: StudyFacts, b: StudyFacts) -> bool:
    """``a`` was certainly acquired before ``b``: an earlier date, or the same date and an earlier time."""
    if a.when is None or b.when is None:
        return False
    if a.date != b.date:
        return a.date < b.date
    return bool(a.time and b.time) and a.time < b.time


def find_priors(result: ScanResult, current: Study) -> list[Prior]:
    """The studies of ``current``'s patient that are certainly earlier and of its modality family, newest first."""
    facts = study_facts(current)
    family = study_family(current)
    if not facts.patient_id or not family:
        return []  # no patient ID: nothing ties another study to this patient
    found = []
    for study in result.studies:
        if study is current or study.uid == current.uid or study_family(study) != family:
            continue
        if not any((s.info.patient_id or "").strip() == facts.patient_id for s in study.series):
            continue  # another patient: no header to read
        other = study_facts(study)
        if other.patient == facts.patient and is_earlier(other, facts):
            found.append(Prior(study, other))
    return sorted(found, key=lambda p: p.facts.when, reverse=True)


# -- mammography: exams, not studies ------------------------------------------------------------------
def exam_of(exams: list[Exam], study: Study) -> Exam | None:
    """The exam that hangs (or keeps beside it) a series of ``study``."""
    keys = {s.key for s in study.series}
    return next((e for e in exams if any(ev.series.key in keys for ev in e.members)), None)


def _exam_issuer(exam: Exam) -> str:
    ev = next(iter(exam.members), None)
    if ev is None or not ev.series.instances:
        return ""
    return _header_extras(str(ev.series.instances[0].path))[0]


def mammo_priors(result: ScanResult, current: Study) -> tuple[Exam | None, list[Exam]]:
    """(the exam ``current`` belongs to, its older exams newest first). Exams follow the archive grouping
    rules; exams of one date are already one exam, and an undated exam (CBIS-DDSM) has no priors."""
    exams = group_exams(result)
    exam = exam_of(exams, current)
    if exam is None or not exam.date:
        return exam, []
    issuer = _exam_issuer(exam)
    older = [e for e in exams if e is not exam and e.patient == exam.patient and e.date and e.date < exam.date
             and _exam_issuer(e) == issuer]
    return exam, sorted(older, key=lambda e: e.date, reverse=True)


# -- CT / MR: the matching prior series -----------------------------------------------------------------
def _normal(series: Series) -> np.ndarray | None:
    fr = series.frames
    if not fr or fr[0].orientation is None:
        return None
    return slice_normal(fr[0].orientation)


def _words(text: str) -> str:
    """Description without numbers and punctuation case: 'Axial 2.5mm' and 'AXIAL 3 mm' read alike."""
    return " ".join(re.sub(r"[^a-z]+", " ", (text or "").lower()).split())


def _thickness(series: Series) -> float | None:
    inst = series.instances[0] if series.instances else None
    return inst.slice_thickness if inst is not None else None


def series_likeness(current: Series, candidate: Series) -> float | None:
    """How much ``candidate`` looks like ``current`` (higher is closer), or None when it cannot be compared:
    another modality, a single image against a stack, or slices that are not parallel."""
    if candidate.modality.upper() != current.modality.upper() or candidate.kind != "dicom" or candidate.is_result:
        return None
    if (len(candidate.frames) > 1) != (len(current.frames) > 1):
        return None
    n_cur, n_cand = _normal(current), _normal(candidate)
    parallel = 0.0
    if n_cur is not None and n_cand is not None:
        cos = abs(float(np.dot(n_cur, n_cand)))
        if cos < 0.9:
            return None
        parallel = 1.0
    text = difflib.SequenceMatcher(None, _words(current.info.series_description),
                                   _words(candidate.info.series_description)).ratio()
    t_cur, t_cand = _thickness(current), _thickness(candidate)
    thick = 1.0 - min(abs(t_cur - t_cand) / max(t_cur, t_cand, 1e-6), 1.0) if t_cur and t_cand else 0.5
    return 2.0 * parallel + 2.0 * text + thick


def pick_prior_series(current: Series, prior: Study) -> Series | None:
    """The series of ``prior`` to read beside ``current``; None when the prior has nothing comparable."""
    scored = [(series_likeness(current, s), i, s) for i, s in enumerate(prior.series)]
    scored = [(score, -i, s) for score, i, s in scored if score is not None]
    return max(scored, key=lambda t: t[:2])[2] if scored else None


def prior_for_series(result: ScanResult, current_series: Series, current_study: Study
                       ) -> tuple[Prior, Series] | str:
    """(the newest prior, its matching series), or a sentence saying why there is none."""
    priors = find_priors(result, current_study)
    if not priors:
        who = "this patient" if study_facts(current_study).patient_id else "a study without a patient ID"
        return f"No earlier {study_family(current_study) or 'image'} study of {who} in the open folder"
    for prior in priors:
        series = pick_prior_series(current_series, prior.study)
        if series is not None:
            return prior, series
    return f"The prior studies hold no {current_series.modality} series comparable with this one"


# -- lining up two stacks without a shared frame of reference ------------------------------------------
def _profile(volume, normal: np.ndarray, step_mm: float) -> tuple[np.ndarray, float]:
    """Per-slice mean along the slice axis, resampled to ``step_mm``; and the position (mm along the normal)
    of the first sample. Mean intensity per slice traces the anatomy (lungs, liver, pelvis) along the body."""
    means = volume.array[:, ::4, ::4].mean(axis=(1, 2), dtype=np.float64)  # every 16th pixel: no big copy
    pos = np.array([float(np.dot(volume.index_to_world((k, 0, 0)), normal)) for k in range(volume.shape[0])])
    order = np.argsort(pos)
    pos, means = pos[order], means[order]
    grid = np.arange(pos[0], pos[-1] + 1e-6, step_mm)
    values = np.interp(grid, pos, means)
    return (values - values.mean()) / (values.std() + 1e-9), float(grid[0])


def stack_offset_mm(current, prior, step_mm: float = 2.0, min_overlap: float = 0.5) -> float:
    """Shift (mm along the slice normal) to add to a position in ``current`` to reach the same anatomy
    in ``prior``: the shift that best correlates their per-slice intensity profiles, over shifts that keep
    at least ``min_overlap`` of the shorter stack overlapping. 0 when they share a frame of reference."""
    uid = current.info.frame_of_reference_uid
    if uid and uid == prior.info.frame_of_reference_uid:
        return 0.0
    normal = plane_normal(current, 0)  # both measured along the current's normal: a reversed stack still fits
    a, a0 = _profile(current, normal, step_mm)
    b, b0 = _profile(prior, normal, step_mm)
    if len(a) < 3 or len(b) < 3:
        return b0 + (len(b) - 1) * step_mm / 2 - (a0 + (len(a) - 1) * step_mm / 2)  # centres meet
    need = max(3, int(min_overlap * min(len(a), len(b))))
    best, best_shift = -np.inf, 0
    for shift in range(-(len(a) - need), len(b) - need + 1):  # a[i] sits at b[i + shift]
        lo, hi = max(0, -shift), min(len(a), len(b) - shift)
        x, y = a[lo:hi], b[lo + shift:hi + shift]
        score = float(np.corrcoef(x, y)[0, 1]) if x.std() > 1e-9 and y.std() > 1e-9 else -1.0
        if score > best:
            best, best_shift = score, shift
    return b0 + best_shift * step_mm - a0


def prior_slice(current, k: int, prior, offset_mm: float) -> int | None:
    """Slice of ``prior`` showing the anatomy of ``current``'s slice ``k``, given ``stack_offset_mm``;
    None when the planes are not parallel or the position lies outside the prior."""
    plane = slice_plane(current, 0, k)
    return matching_slice(type(plane)(plane.point + offset_mm * plane.normal, plane.normal), prior, 0)


def current_slice(prior, j: int, current, offset_mm: float) -> int | None:
    """The inverse of ``prior_slice``: the slice of ``current`` for the prior's slice ``j``."""
    plane = slice_plane(prior, 0, j)
    normal = plane_normal(current, 0)
    return matching_slice(type(plane)(plane.point - offset_mm * normal, normal), current, 0)
