"""Mammograms grouped into exams the way a reader hangs them, with the reason for each grouping.

Datasets split one exam in different ways: CBIS-DDSM (TCIA) makes every view its own patient and
study (PatientID 'Calc-Training_P_00042_LEFT_MLO': the patient is the stem 'P_00042', and its study
dates are conversion dates, not exam dates); other archives give one patient ID per view with a
common stem ('PAT7_LCC'), or several studies on one date for one exam; INbreast leaves the patient
only in the file name ('<file>_<patient>_MG_R_CC_ANON.dcm'). Within a patient, each date is one
exam: the newest complete exam is the current one, older ones are priors. Within an exam the four
slots take standard screening views (For Presentation before For Processing, then the highest
series number); extra views (ML, XCCL, spot, magnification), duplicates and derived images are
kept beside the exam, each with why it was not hung.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .mammo_views import ViewId, identify_series
from .study import ScanResult, Series, Study

SLOTS = ("RCC", "LCC", "RMLO", "LMLO")
_CBIS = re.compile(r"^(Calc|Mass)-(Training|Test)_(P_\d+)_(LEFT|RIGHT)_(CC|MLO)(_\d+)?$", re.I)
_CMMD = re.compile(r"^D[12]-\d{4}$")  # TCIA CMMD case numbers: D1-0001, D2-0001 (with molecular subtype)
_INBREAST = re.compile(r"^\d+_([0-9a-f]+)_MG_[LR]_(CC|MLO?)_ANON", re.I)
_VIEW_PART = re.compile(r"[ _\-.]*(?<![A-Z0-9])(LEFT|RIGHT|L|R)[ _\-.]*(XCCL|XCCM|MLO|CC|ML|LM)(?![A-Z])", re.I)


@dataclass
class ExamView:
    series: Series
    view: ViewId
    why: str = ""  # for a view not hung: why (extra view, duplicate, for processing, ...)


@dataclass
class Exam:
    """One mammography exam: the hung views, the ones kept beside them, and why they belong together.

    ``id`` never holds a clinical patient ID (analysis output and its terminal lines carry it): it is
    'exam N', or a public dataset's own case number (CBIS-DDSM 'P_00042', CMMD 'D1-0001', an INbreast
    patient hash).
    ``patient`` and ``reason`` name the patient and are shown only by `lightbox info`.
    """

    id: str
    patient: str
    date: str = ""
    reason: str = ""  # the grouping, naming the patient key (info only)
    basis: str = ""  # the same rule without identifiers
    role: str = "current"  # 'current' or 'prior'
    hung: dict[str, ExamView] = field(default_factory=dict)  # slot -> view
    extra: list[ExamView] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)
    priors: list[str] = field(default_factory=list)  # ids of older exams of this patient

    @property
    def label(self) -> str:
        """'exam 1', 'exam 1 prior 1', 'exam P_00042'."""
        return self.id if self.id.startswith("exam ") else f"exam {self.id}"

    def as_study(self) -> Study:
        """The hung views as one Study, so an exam spread over several studies or patient IDs
        (CBIS-DDSM: one study per view) hangs together in the 4-view layout."""
        return Study(uid=f"exam:{self.id}:{','.join(ev.series.key for ev in self.hung.values())}",
                     date=self.date, description=self.label, series=[ev.series for ev in self.hung.values()])

    @property
    def complete(self) -> bool:
        return all(s in self.hung for s in SLOTS)

    @property
    def members(self) -> list[ExamView]:
        return list(self.hung.values()) + self.extra

    def summary(self, identifying: bool = True) -> dict:
        """JSON-ready: slots -> series key, with where each view was read from. ``identifying=False``
        (results.json) leaves out the patient key and the date."""
        out = {
            "id": self.id, "role": self.role, "reason": self.reason if identifying else self.basis,
            "complete": self.complete, "studies": list(self.studies),
            "views": {s: (self.hung[s].series.key if s in self.hung else None) for s in SLOTS},
            "view_sources": {s: ev.view.why() for s, ev in self.hung.items()},
            "extra": [{"series": ev.series.key, "view": ev.view.label, "why": ev.why} for ev in self.extra],
            "priors": list(self.priors),
        }
        if identifying:
            out.update(patient=self.patient, date=self.date)
        return out


def _patient_key(series: Series, vid: ViewId) -> tuple[str, str, bool, bool]:
    """(patient key, the rule that found it, dates are exam dates, the key is a public dataset case number)."""
    pid = (series.info.patient_id or "").strip()
    m = _CBIS.match(pid)
    if m:
        return (m.group(3).upper(), "CBIS-DDSM naming: one patient ID per view with the common stem {} "
                "(study dates are conversion dates)", False, True)
    if _CMMD.match(pid):
        return pid, "CMMD naming: patient {} (one study per patient)", True, True
    stripped = _VIEW_PART.sub("", pid).strip(" _-.") if pid else ""
    if pid and stripped and stripped != pid:
        return stripped, "one patient ID per view with the common stem {}", True, False
    if pid:
        return pid, "patient ID {}", True, False
    path = series.instances[0].path if series.instances else series.path
    m = _INBREAST.match(Path(path).name) if path else None
    if m:
        return m.group(1), "no patient ID: file names share the patient part {} (INbreast naming)", True, True
    name = (series.info.patient_name or "").strip()
    if name:
        return name, "no patient ID: patient name {}", True, False
    return series.info.study_uid or series.key, "no patient ID or name: one study", True, False


def _rank(ev: ExamView) -> tuple:
    return (not ev.view.for_processing, ev.series.info.series_number or 0)


def _hang(exam: Exam, views: list[ExamView]) -> None:
    by_slot: dict[str, list[ExamView]] = {}
    for ev in views:
        slot = ev.view.hanging
        if slot is None:
            if ev.view.not_a_view:
                ev.why = f"{ev.view.not_a_view}: not a view"
            elif not ev.view.laterality or not ev.view.view:
                ev.why = "breast or view unknown (" + (ev.view.why() or "no tag or text names it") + ")"
            else:
                ev.why = f"extra view {ev.view.label}"
            exam.extra.append(ev)
        else:
            by_slot.setdefault(slot, []).append(ev)
    for slot in SLOTS:
        found = sorted(by_slot.get(slot, []), key=_rank, reverse=True)
        if not found:
            continue
        exam.hung[slot] = found[0]
        for ev in found[1:]:
            ev.why = ("for processing: the for-presentation image is hung" if ev.view.for_processing
                      and not found[0].view.for_processing else f"{slot} again: series "
                      f"{found[0].series.info.series_number or found[0].series.key} is hung")
            exam.extra.append(ev)


def group_exams(result: ScanResult) -> list[Exam]:
    """Every mammography exam in a scan, current exams first, each with its priors."""
    patients: dict[str, dict] = {}
    for series in result.series:
        if series.kind != "dicom" or (series.modality or "").upper() != "MG":
            continue
        vid = identify_series(series)
        stem, basis, dated, public = _patient_key(series, vid)
        p = patients.setdefault(stem, {"bases": [], "dated": dated, "public": public, "dates": {}})
        p["bases"].append(basis)
        date = (series.info.study_date or "") if dated else ""
        p["dates"].setdefault(date, []).append(ExamView(series, vid))
    exams: list[Exam] = []
    for number, (stem, p) in enumerate(patients.items(), start=1):
        bases = list(dict.fromkeys(p["bases"]))
        basis = "; ".join([b for b in bases if b != "patient ID {}"] or bases)  # a stem explains the plain ID too
        base_id = stem if p["public"] else f"exam {number}"
        dated: list[Exam] = []
        for date, views in sorted(p["dates"].items(), key=lambda kv: kv[0], reverse=True):
            studies = list(dict.fromkeys(ev.series.info.study_uid for ev in views))
            more = f"; {len(studies)} studies" + (" on one date" if date else "") + " form one exam" \
                if len(studies) > 1 else ""
            reason = basis.replace("{}", stem) + more
            public = basis.replace("{}", stem if p["public"] else "").replace("  ", " ").replace(" (", " (") + more
            exam = Exam(base_id, stem, date, reason, public.replace(" ;", ";").strip(), studies=studies)
            _hang(exam, views)
            dated.append(exam)
        current = next((e for e in dated if e.complete), dated[0])
        older = [e for e in dated if e is not current]
        for k, e in enumerate(older, start=1):
            e.id, e.role = f"{base_id} prior {k}", "prior"
            e.reason += f"; prior of {current.date or current.id}"
            e.basis += f"; prior of {current.id}"
            current.priors.append(e.id)
        exams += [current, *older]
    return exams


def exams_summary(result: ScanResult) -> list[dict]:
    """For `lightbox info --json` (identifying: it lists patients anyway)."""
    return [e.summary() for e in group_exams(result)]
