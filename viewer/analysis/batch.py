"""Analyse everything recognisable in a scanned folder (the headless `lightbox analyze`).

One bad series or exam never costs the others: whatever goes wrong with it (unreadable pixels,
no model, a model or reader error) becomes one 'not analysed' line naming it, and the loop goes
on. Only a Cancel or Ctrl+C stops the whole run.
"""
from __future__ import annotations

from collections.abc import Callable

from viewer.core.errors import Cancelled, LightboxError, describe
from viewer.core.io import load_series
from viewer.core.mammo_exams import Exam, group_exams
from viewer.core.study import ScanResult, Series

from .results import AnalysisResult
from .run import VOLUME_MODALITIES, NoModel, analyze_mammo_exam, analyze_volume, density_only

Report = Callable[[str], None]


def reason(exc: Exception) -> str:
    """One line for why a series failed: the app's own message, else the exception's type and text."""
    if isinstance(exc, (LightboxError, NoModel, ValueError)) and str(exc).strip():
        return str(exc).strip().splitlines()[0]
    return describe(exc)


def analyze_scan(result: ScanResult, device: str = "auto", report: Report | None = None,
                 should_stop=None, failures: list[str] | None = None,
                 models: list | None = None) -> tuple[list[AnalysisResult], list[str]]:
    """(analyses, skipped) for every mammography exam (1-4 hung views and extra views, grouped by
    mammo_exams, priors included) and every CT or MR volume in a scan; ``models`` (cards --model
    chose) replace the automatic choice for their task and modality.

    ``skipped`` says in one line per series or exam ('<label>: <reason>') why it was not analysed
    (no model for the modality, a 2D CT image, unreadable pixels, an error in a model); nothing
    here raises for one bad series. Cancelled and KeyboardInterrupt still stop the run.
    ``failures`` (when given) also gets the lines of those that were tried and failed, as opposed
    to those no model takes: the caller keeps a record (results.json) only when something was tried.
    """
    say = report or (lambda _msg: None)
    analyses: list[AnalysisResult] = []
    skipped: list[str] = []

    def attempt(label: str, work: Callable[[], AnalysisResult | None]) -> None:
        try:
            found = work()
        except (Cancelled, KeyboardInterrupt):
            raise
        except NoModel as exc:
            skipped.append(f"{label}: {reason(exc)}")
        except Exception as exc:  # noqa: BLE001 - one series' failure is reported, never fatal
            skipped.append(f"{label}: {reason(exc)}")
            if failures is not None:
                failures.append(skipped[-1])
        else:
            if found is not None:
                analyses.append(found)

    exams = group_exams(result)
    handled: set[str] = {ev.series.key for exam in exams for ev in exam.members}
    for exam in exams:
        attempt(f"mammography {exam.label}",
                lambda exam=exam: _analyze_exam(exam, len(exams) > 1, device, say, should_stop, skipped, models))
    for study in result.studies:
        for series in study.series:
            if series.key in handled or series.kind not in ("dicom", "file"):
                continue
            attempt(_label(series), lambda series=series: _analyze_one(series, device, say, should_stop, models))
    return analyses, skipped


def _exam_views(exam: Exam, skipped: list[str]) -> dict[str, Series]:
    """Name -> series of what the exam's analysis takes: the hung views and the extra views whose
    breast and view are known (ML, XCCL, spot, ...); a line in ``skipped`` for each one left out."""
    chosen: dict[str, Series] = dict((slot, ev.series) for slot, ev in exam.hung.items())
    left_out = []
    for ev in exam.extra:
        usable = (ev.view.model_name and not ev.view.not_a_view and not ev.view.for_processing
                  and ev.view.hanging is None)
        if not usable:
            left_out.append(f"mammography {exam.label}: {_label(ev.series)} not analysed: {ev.why}")
            continue
        name, n = ev.view.label, 2
        while name in chosen:
            name, n = f"{ev.view.label} {n}", n + 1
        chosen[name] = ev.series
    if chosen:  # else the exam's own line says why, once
        skipped += left_out
    return chosen


def _analyze_exam(exam: Exam, prefix: bool, device: str, say: Report, should_stop,
                  skipped: list[str], models: list | None = None) -> AnalysisResult:
    label = f"mammography {exam.label}"
    chosen = _exam_views(exam, skipped)
    if not chosen:
        raise NoModel("no view with a known breast and view (" + "; ".join(ev.why for ev in exam.extra) + ")")
    views = {}
    for name, series in chosen.items():
        say(f"loading {label} {name} ({_label(series)})")
        views[name] = (series, load_series(series, should_stop=should_stop))
    study_uid = exam.studies[0] if len(exam.studies) == 1 else ""
    try:
        found = analyze_mammo_exam(views, study_uid, device,
                                   progress=lambda f, what: say(f"{label}: {what} ({f:.0%})"),
                                   should_stop=should_stop, exam=exam.summary(identifying=False), models=models)
    except NoModel as exc:  # no classifier installed: the density needs none
        say(f"{label}: {reason(exc)}: breast density only")
        found = density_only(views, study_uid, reason(exc), exam=exam.summary(identifying=False))
    if prefix:  # several exams in one run: their output folders say whose view they are
        for sr in found.series.values():
            sr.title = f"{exam.id} {sr.title}"
    return found


def _analyze_one(series: Series, device: str, say: Report, should_stop, models: list | None = None) -> AnalysisResult:
    why = _not_analysable(series)
    if why:
        raise NoModel(why)
    say(f"loading {series.label()}")
    volume = load_series(series, should_stop=should_stop)
    return analyze_volume(series, volume, device, progress=lambda f, what: say(f"{series.label()}: {what} ({f:.0%})"),
                          should_stop=should_stop, models=models)


def _label(series: Series) -> str:
    try:
        return series.label()
    except Exception:  # noqa: BLE001 - a label must never be the reason a report fails
        return series.uid or series.key


def _not_analysable(series: Series) -> str | None:
    modality = (series.modality or "").upper()
    if modality in VOLUME_MODALITIES and not series.is_projection:
        return None
    if modality == "MG":
        return "mammogram not grouped into an exam (not a DICOM image)"
    return f"no model for {modality or 'unknown modality'} images"
