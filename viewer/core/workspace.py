"""What the reader has open, with no Qt: the source, its scan, which series each viewport shows.

The window's controllers share this model instead of reaching into the window for its private
fields (napari keeps a viewer's model apart from its Qt widgets in the same way). Viewports are
opaque keys here: the model never draws and never imports the UI.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .study import Patient, ScanResult, Series, Study

LAYOUTS = ("1x1", "1x2", "2x2", "mpr")


@dataclass
class Workspace:
    source: Path | None = None  # the folder or file opened last
    scan_result: ScanResult | None = None  # what its scan found
    cell_series: dict[Any, Series] = field(default_factory=dict)  # viewport -> the series it shows
    shown_mammo: Study | None = None  # the study on the 4-view hanging, when that is shown
    layout_mode: str = "1x1"  # chosen in the Layout menu; kept across loads
    last_dir: str = field(default_factory=lambda: str(Path.home()))  # where file dialogs start
    beside: dict[str, list[Path]] = field(default_factory=dict)  # series key -> SEG/RTSTRUCT files citing it
    scans: dict[str, ScanResult] = field(default_factory=dict)  # every source opened (resolved) -> its scan

    def set_scan(self, source, result: ScanResult) -> None:
        """Only this scan is open (a fresh start): what was found beside each series is read again for it."""
        self.scans = {}
        self.add_scan(source, result)

    def add_scan(self, source, result: ScanResult) -> ScanResult:
        """Add a scan to what is open; the same source scanned again replaces its earlier scan. Returns the
        merged listing (also ``scan_result``)."""
        self.source, self.beside = Path(source), {}
        self.scans.pop(_place(source), None)  # the newest scan of a source lists last
        self.scans[_place(source)] = result
        self.scan_result = merge_scans(list(self.scans.values()))
        return self.scan_result

    def close_all(self) -> None:
        """Nothing open any more (File ▸ Close all studies)."""
        self.source, self.scan_result, self.scans, self.beside, self.shown_mammo = None, None, {}, {}, None
        self.cell_series.clear()

    def set_layout(self, mode: str) -> None:
        if mode not in LAYOUTS:
            raise ValueError(f"unknown layout {mode!r}")
        self.layout_mode = mode

    def series_of(self, viewport) -> Series | None:
        return self.cell_series.get(viewport)

    def on_screen(self, keys, shown_views) -> bool:
        """True when one of ``shown_views`` shows a series whose key is in ``keys`` (or, on the
        mammography hanging, when its study holds one of them)."""
        keys = set(keys)
        if self.shown_mammo is not None:
            return any(s.key in keys for s in self.shown_mammo.series)
        return any(s.key in keys for v, s in self.cell_series.items() if v in shown_views)

    def study_of(self, series: Series) -> Study | None:
        """The study of the open scan that holds ``series``."""
        if self.scan_result is None:
            return None
        return next((st for st in self.scan_result.studies if any(s.key == series.key for s in st.series)), None)

    def study_with_key(self, key: str) -> Study | None:
        if self.scan_result is None or not key:
            return None
        return next((st for st in self.scan_result.studies if any(s.key == key for s in st.series)), None)

    def unshown(self, candidates: list[Series], exclude: Series | None = None) -> list[Series]:
        """Image series of ``candidates`` that no viewport shows yet (nor ``exclude``), projections and
        results left out: what an empty viewport is filled with."""
        on_screen = {s.key for s in self.cell_series.values()} | ({exclude.key} if exclude else set())
        return [s for s in candidates if s.key not in on_screen and not s.is_projection and not s.is_result]


def _place(source) -> str:
    """One key per folder or file, however it was reached (a link, a relative path)."""
    try:
        return str(Path(source).expanduser().resolve())
    except (OSError, RuntimeError, ValueError):
        return str(source)


def merge_scans(results: list[ScanResult]) -> ScanResult:
    """Several scans as one listing: a patient (ID and name) and a study (UID) found in two scans are listed
    once, and a series found twice (the same key: a folder and a file inside it) only where first found, so
    series keys stay unique. The scans themselves are left untouched."""
    if len(results) == 1:
        return results[0]
    merged = ScanResult()
    patients: dict[tuple[str, str], Patient] = {}
    studies: dict[tuple[tuple[str, str], str], Study] = {}
    keys: set[str] = set()
    for result in results:
        for patient in result.patients:
            who = (patient.id, patient.name)
            if who not in patients:
                patients[who] = Patient(patient.id, patient.name)
                merged.patients.append(patients[who])
            for study in patient.studies:
                new = [s for s in study.series if s.key not in keys]
                keys.update(s.key for s in new)
                if (who, study.uid) not in studies:
                    if not new:
                        continue
                    studies[(who, study.uid)] = Study(study.uid, study.date, study.description, study.accession)
                    patients[who].studies.append(studies[(who, study.uid)])
                studies[(who, study.uid)].series.extend(new)
        merged.problems.extend(result.problems)
        merged.ignored += result.ignored
    merged.patients = [p for p in merged.patients if p.studies]
    return merged
