"""Analyse everything recognisable in a scanned folder (the headless `lightbox analyze`)."""
from __future__ import annotations

from collections.abc import Callable

from viewer.core.io import load_series
from viewer.core.mammo import four_view, is_mammo_study
from viewer.core.study import ScanResult, Series

from .results import AnalysisResult
from .run import NoModel, analyze_ct, analyze_mammo_exam

Report = Callable[[str], None]


def analyze_scan(result: ScanResult, device: str = "auto", report: Report | None = None,
                 should_stop=None) -> tuple[list[AnalysisResult], list[str]]:
    """(analyses, skipped) for every 4-view mammography exam and every CT volume in a scan.

    ``skipped`` says in one line per series why it was not analysed (no model for the
    modality, a 2D CT image, unreadable pixels); nothing here raises for one bad series.
    """
    say = report or (lambda _msg: None)
    analyses: list[AnalysisResult] = []
    skipped: list[str] = []
    for study in result.studies:
        handled: set[str] = set()
        if is_mammo_study(study):
            chosen = {name: s for name, s in four_view(study).items() if s is not None}
            try:
                views = {}
                for name, series in chosen.items():
                    say(f"loading {name} ({series.label()})")
                    views[name] = (series, load_series(series, should_stop=should_stop))
                analyses.append(analyze_mammo_exam(
                    views, study.uid, device,
                    progress=lambda f, what, st=study: say(f"mammography exam {st.description or st.uid}: "
                                                           f"{what} ({f:.0%})"),
                    should_stop=should_stop))
            except NoModel as exc:
                skipped.append(f"mammography exam {study.uid}: {exc}")
            handled |= {s.key for s in chosen.values()}
        for series in study.series:
            if series.key in handled or series.kind not in ("dicom", "file"):
                continue
            why = _not_analysable(series)
            if why:
                skipped.append(f"{series.label()}: {why}")
                continue
            try:
                say(f"loading {series.label()}")
                volume = load_series(series, should_stop=should_stop)
                analyses.append(analyze_ct(series, volume, device,
                                           progress=lambda f, what, s=series: say(f"{s.label()}: {what} ({f:.0%})"),
                                           should_stop=should_stop))
            except NoModel as exc:
                skipped.append(f"{series.label()}: {exc}")
            except ValueError as exc:
                skipped.append(f"{series.label()}: {exc}")
    return analyses, skipped


def _not_analysable(series: Series) -> str | None:
    modality = (series.modality or "").upper()
    if modality == "CT" and not series.is_projection:
        return None
    if modality == "MG":
        return "mammogram outside a 4-view exam: analysed only as part of an exam (RCC/LCC/RMLO/LMLO)"
    return f"no model for {modality or 'unknown modality'} images"
