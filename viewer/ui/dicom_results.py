"""Lightbox opens its own DICOM results: Parametric Maps as heatmaps, analysis reports as they were written.

When the opened folder (a PACS retrieve, or ``lightbox analyze --out``'s folder opened beside the
images) holds a Parametric Map that references a shown series, the map is read off the UI
thread (``core.export.dicom_pm.read_parametric_map``: frames placed by their source SOP UIDs)
and drawn like the Analyze heatmap, as a ``ProbabilityLayer`` with its colour bar (the H key
toggles it with the others). A TID 1500 analysis report (``core.export.dicom_sr``) of the shown
study is offered in the status bar and shown by AI > Show DICOM report: models, per-breast and
per-view scores, lesion areas and organ volumes, the values exactly as written. A measurement SR
(the user's rulers) is no report: it names no algorithm, and ``measurement_store`` restores it.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTreeWidget, QTreeWidgetItem, QVBoxLayout

from ..core.errors import describe

log = logging.getLogger(__name__)
PM_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.30"
SR_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34"}
LAYER_PREFIX = "dicom-pm"


def _fmt(v) -> str:
    return f"{float(v):.6g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


class DicomResults(QObject):
    """Shows the Parametric Maps and analysis reports of the opened folder."""

    map_read = Signal(object, object, str, object)  # view, volume it was read for, layer name, (array, name, model)
    failed = Signal(str)

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self._refs: dict[str, list[str]] = {}  # PM path -> series UIDs it references (header read once)
        self._maps: dict[tuple[str, str], tuple] = {}  # (PM path, series key) -> (array, name, model)
        self._asked: set[tuple[int, str]] = set()
        self._reports: dict[str, dict | None] = {}  # SR path -> read_analysis_report(...) or None
        self._offered: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lightbox-pm-read")
        self.map_read.connect(self._show_map)
        self.failed.connect(self._report_failure)
        self.report_action = QAction("Show &DICOM report…", window)
        self.report_action.setToolTip("The AI analysis report (DICOM SR) found with the shown study, as written")
        self.report_action.setEnabled(False)
        self.report_action.triggered.connect(self.show_report)
        self.dialog: QDialog | None = None
        window.image_shown.connect(self.refresh)

    # -- finding ------------------------------------------------------------------------------
    def _objects(self, sop_classes) -> list[tuple[object, Path]]:
        result = getattr(self.window, "scan_result", None)
        return [(s, Path(i.path)) for s in (result.series if result is not None else [])
                for i in s.instances if i.sop_class in sop_classes]

    def maps_for(self, series) -> list[Path]:
        """Parametric Maps of the opened folder that reference ``series`` (by Series UID)."""
        out = []
        for _, path in self._objects({PM_SOP_CLASS}):
            key = str(path)
            if key not in self._refs:
                try:
                    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                    self._refs[key] = [str(s.get("SeriesInstanceUID", "")) for s in
                                       ds.get("ReferencedSeriesSequence") or []]
                except Exception:  # noqa: BLE001 - the scan named a damaged file already
                    self._refs[key] = []
            if series.uid in self._refs[key]:
                out.append(path)
        return sorted(out)

    def reports_for(self, study_uid: str) -> list[tuple[Path, dict]]:
        """(path, read_analysis_report) of the analysis SRs of a study; measurement SRs are left out."""
        out = []
        for s, path in self._objects(SR_SOP_CLASSES):
            if s.info.study_uid != study_uid:
                continue
            key = str(path)
            if key not in self._reports:
                self._reports[key] = self._read_report(path)
            if self._reports[key] is not None:
                out.append((path, self._reports[key]))
        return out

    def _read_report(self, path: Path) -> dict | None:
        try:
            from ..core.export.dicom_sr import read_analysis_report

            report = read_analysis_report(path)
        except Exception as exc:  # noqa: BLE001 - not a report we can show: named once, never raised
            log.info("%s: not shown as an analysis report (%s)", path, describe(exc))
            return None
        return report if report.get("models") or report.get("exam_scores") else None

    # -- showing ----------------------------------------------------------------------------------
    def _series_of(self, view):
        store = getattr(self.window, "measurement_store", None)
        return store.series_of(view) if store is not None else self.window.viewport_series(view)

    @Slot()
    def refresh(self) -> None:
        """After each load: heatmap layers from Parametric Maps, and the report offered for the study."""
        studies = []
        for view in self.window.shown_views():
            vol = view.volume
            if vol is None:
                continue
            studies.append(vol.info.study_uid)
            series = self._series_of(view)
            if series is None:
                continue
            maps = self.maps_for(series)
            if not maps:
                continue
            path = maps[0]  # one heatmap per view, as Analyze shows one; the report names the others
            name = f"{LAYER_PREFIX}:{path.name}"
            if view.layer(name) is not None:
                continue
            cached = self._maps.get((str(path), series.key))
            if cached is not None:
                self._show_map(view, vol, name, cached)
            elif (id(vol), str(path)) not in self._asked:
                self._asked.add((id(vol), str(path)))
                self._pool.submit(self._read_map, view, vol, series, path, name)
        reports = [r for st in dict.fromkeys(studies) for r in self.reports_for(st)]
        self.report_action.setEnabled(bool(reports))
        for path, report in reports:
            if str(path) not in self._offered:
                self._offered.add(str(path))
                models = ", ".join(report.get("models") or []) or "a model"
                self.window.show_message(f"AI report by {models} found with this study ({path.name}): "
                                         "AI ▸ Show DICOM report…")

    def _read_map(self, view, volume, series, path: Path, name: str) -> None:
        try:
            from ..core.export.dicom_pm import read_parametric_map

            got = read_parametric_map(path, volume, series)
        except Exception as exc:  # noqa: BLE001 - one line naming the file, on the UI thread
            self.failed.emit(f"{path}: Parametric Map not shown ({describe(exc)})" if str(path) not in str(exc)
                             else f"Parametric Map not shown: {exc}")
            return
        self._maps[(str(path), series.key)] = got
        self.map_read.emit(view, volume, name, got)

    @Slot(object, object, str, object)
    def _show_map(self, view, volume, name: str, got) -> None:
        from .overlays import ProbabilityLayer

        if view.volume is not volume or view.layer(name) is not None:
            return  # another image came meanwhile
        array, title, model = got
        layer = ProbabilityLayer(array)
        layer.title = f"{title} (DICOM PM{', ' + model if model else ''})"
        view.add_layer(name, layer)
        self.window.apply_layer_visibility()

    @Slot(str)
    def _report_failure(self, message: str) -> None:
        self.window.show_message(message, "warning")

    # -- the report dialog ------------------------------------------------------------------------
    def report_tree(self, report: dict, path: Path) -> QTreeWidget:
        tree = QTreeWidget()
        tree.setColumnCount(2)
        tree.setHeaderLabels(["", "value"])
        top = QTreeWidgetItem(tree, [path.name, ", ".join(report.get("models") or [])])
        for side, p in sorted((report.get("exam_scores") or {}).items()):
            QTreeWidgetItem(top, [f"breast {side}: probability of cancer", _fmt(p)])
        for title, entry in (report.get("series") or {}).items():
            node = QTreeWidgetItem(top, [title, entry.get("model", "")])
            for group, unit in (("scores", ""), ("areas", " mm²"), ("volumes", " mL"), ("domain", "")):
                for k, v in (entry.get(group) or {}).items():
                    QTreeWidgetItem(node, [f"{group[:-1] if group != 'domain' else 'domain'} {k}".strip(),
                                           _fmt(v) + unit])
        tree.expandAll()
        tree.resizeColumnToContents(0)
        return tree

    def show_report(self) -> QDialog | None:
        """A small dialog with every analysis report of the shown studies, values as written."""
        studies = {v.volume.info.study_uid for v in self.window.shown_views() if v.volume is not None}
        reports = [r for st in studies for r in self.reports_for(st)]
        if not reports:
            self.window.show_message("No AI report (DICOM SR) was found with the shown study", "warning")
            return None
        dlg = QDialog(self.window)
        dlg.setWindowTitle("AI report (DICOM SR)")
        lay = QVBoxLayout(dlg)
        for path, report in reports:
            lay.addWidget(self.report_tree(report, path))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(dlg.reject)
        lay.addWidget(buttons)
        dlg.resize(560, 420)
        dlg.show()
        self.dialog = dlg
        return dlg

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
