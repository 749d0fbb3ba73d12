"""Analyse everything recognisable in a scanned folder (the headless `lightbox analyze`).

One bad series or exam never costs the others: whatever goes wrong with it (unreadable pixels,
no model, a model or reader error) becomes one 'not analysed' line naming it, and the loop goes
on. Only a Cancel or Ctrl+C stops the whole run.
"""
from __future__ import annotations

from collections.abc import Callable

from viewer.core.errors import Cancelled, LightboxError, describe
from viewer.core.io import load_series
from viewer.core.mammo import four_view, is_mammo_study
from viewer.core.study import ScanResult, Series

from .results import AnalysisResult
from .run import NoModel, analyze_ct, analyze_mammo_exam

Report = Callable[[str], None]


def reason(exc: Exception) -> str:
    """One line for why a series failed: the app's own message, else the exception's type and text."""
    if isinstance(exc, (LightboxError, NoModel, ValueError)) and str(exc).strip():
        return str(exc).strip().splitlines()[0]
    return describe(exc)


def analyze_scan(result: ScanResult, device: str = "auto", report: Report | None = None,
                 should_stop=None, failures: list[str] | None = None) -> tuple[list[AnalysisResult], list[str]]:
    """(analyses, skipped) for every 4-view mammography exam and every CT volume in a scan.

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

    for study in result.studies:
        handled: set[str] = set()
        exam_label = f"mammography exam {study.description or study.uid}"

        def exam(study=study, label=exam_label) -> AnalysisResult | None:
            if not is_mammo_study(study):
                return None
            chosen = {name: s for name, s in four_view(study).items() if s is not None}
            handled.update(s.key for s in chosen.values())
            views = {}
            for name, series in chosen.items():
                say(f"loading {name} ({series.label()})")
                views[name] = (series, load_series(series, should_stop=should_stop))
            return analyze_mammo_exam(views, study.uid, device,
                                      progress=lambda f, what: say(f"{label}: {what} ({f:.0%})"),
                                      should_stop=should_stop)

        attempt(exam_label, exam)
        for series in study.series:
            if series.key in handled or series.kind not in ("dicom", "file"):
                continue
            attempt(_label(series), lambda series=series: _analyze_one(series, device, say, should_stop))
    return analyses, skipped


def _analyze_one(series: Series, device: str, say: Report, should_stop) -> AnalysisResult:
    why = _not_analysable(series)
    if why:
        raise NoModel(why)
    say(f"loading {series.label()}")
    volume = load_series(series, should_stop=should_stop)
    return analyze_ct(series, volume, device, progress=lambda f, what: say(f"{series.label()}: {what} ({f:.0%})"),
                      should_stop=should_stop)


def _label(series: Series) -> str:
    try:
        return series.label()
    except Exception:  # noqa: BLE001 - a label must never be the reason a report fails
        return series.uid or series.key


def _not_analysable(series: Series) -> str | None:
    modality = (series.modality or "").upper()
    if modality == "CT" and not series.is_projection:
        return None
    if modality == "MG":
        return "mammogram outside a 4-view exam: analysed only as part of an exam (RCC/LCC/RMLO/LMLO)"
    return f"no model for {modality or 'unknown modality'} images"
