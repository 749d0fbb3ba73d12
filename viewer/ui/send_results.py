"""AI ▸ Send results to PACS…: the analysis on screen, with the user's segmentation edits, as DICOM
objects (SEG, Parametric Maps, SR) stored on a configured server.

``edited_results`` swaps each analysed image's AI label map for the segment editor's map of that
image (``EditorSession.maps``, taken as a committed copy: never half a stroke), so what is sent is
what the user sees. ``viewer.analysis.outputs.write_outputs`` writes the objects into a temporary
folder and every ``.dcm`` there is stored with the server's client (STOW-RS or C-STORE) on a
worker, with progress and Cancel; the dialog shows how many were stored and each failure's reason.
"""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..analysis.results import AnalysisResult, Overlay
from ..core.errors import LightboxError
from ..remote import servers as store_mod
from .server_dialog import fill_server_combo
from .workers import TaskRunner, Worker

if TYPE_CHECKING:
    from .host import WindowHost

EDITED_MODEL = "Lightbox editor"  # the "model" of a segmentation drawn by hand where the AI made none
KINDS = ((".seg.dcm", "SEG"), (".pm.dcm", "Parametric Map"), (".sr.dcm", "SR"))


def kind_of(path: Path) -> str:
    name = path.name.lower()
    return next((text for suffix, text in KINDS if name.endswith(suffix)), "DICOM")


def _classes(labels: dict, top: int) -> list[str]:
    return ["background"] + [labels[v].name if v in labels else f"label {v}" for v in range(1, top + 1)]


def edited_scores(scores: dict, array, classes: list[str], volume) -> dict:
    """The AI's scores with the ones measured on its label map (volumes in mL per class, a
    mammogram's lesion area) measured again on the edited map, so the report agrees with the SEG."""
    import numpy as np

    out = {k: v for k, v in scores.items() if not k.endswith(" mL")}
    if any(k.endswith(" mL") for k in scores):
        voxel_ml = float(np.prod(volume.spacing)) / 1000.0
        counts = np.bincount(np.asarray(array).ravel().astype(np.int64), minlength=len(classes))
        out.update({f"{name} mL": float(counts[i] * voxel_ml) for i, name in enumerate(classes) if i})
    if "lesion area mm2" in scores:
        out["lesion area mm2"] = float(np.count_nonzero(array) * volume.spacing[1] * volume.spacing[2])
    return out


def edited_results(window: WindowHost) -> tuple[AnalysisResult | None, dict, int, str]:
    """(the analysis on screen with edited label maps in place, {series key: Series}, how many maps
    were edited, why nothing can be sent or ""). The cached AnalysisResult itself is not changed."""
    result = window.analysis.current
    if result is None:
        return None, {}, 0, "no AI results on screen: run Analyze (A) first"
    from .editor_controller import map_key

    session = window.editor.session
    series_out, edited = {}, 0
    for key, sr in result.series.items():
        lm = session.maps.get(map_key(sr.volume))
        if lm is None:
            series_out[key] = sr
            continue
        state = lm.committed_state()  # a private copy, between two edits
        array = state.array
        labels = {lb.value: lb for lb in state.labels}
        top = int(array.max(initial=0))
        overlays, replaced = [], False
        for ov in sr.overlays:
            if ov.kind == "labels" and not replaced:
                overlays.append(replace(ov, array=array, classes=_classes(labels, max(top, len(ov.classes) - 1)),
                                        original=ov.array if ov.original is None else ov.original))
                replaced = True
            else:
                overlays.append(ov)
        if not replaced and array.any():
            overlays.append(Overlay("segmentation", "labels", array, EDITED_MODEL, _classes(labels, top),
                                    original=np.zeros_like(array)))  # nothing of it is the model's
            replaced = True
        edited += int(replaced)
        series_out[key] = replace(sr, overlays=overlays, notes=dict(sr.notes),
                                  scores=edited_scores(sr.scores, array, _classes(labels, top), sr.volume))
    scan = window.scan_result
    by_key = {s.key: s for s in scan.series} if scan is not None else {}
    for sr in series_out.values():  # a series shown but not in the open scan (e.g. reopened elsewhere)
        if sr.series_key not in by_key:
            shown = next((window.viewport_series(v) for v in window.all_views()
                          if v.volume is sr.volume and window.viewport_series(v) is not None), None)
            if shown is not None:
                by_key[sr.series_key] = shown
    return replace(result, series=series_out), by_key, edited, ""


def send_job(result: AnalysisResult, series_by_key: dict, server, secret: str):
    """A worker job: write the DICOM outputs into a temporary folder, store each .dcm on ``server``.
    Returns (StoreReport, {path name: kind}, notes)."""
    def job(progress, should_stop):
        from ..analysis.outputs import write_outputs
        from ..remote import connect

        with tempfile.TemporaryDirectory(prefix="lightbox-send-") as tmp:
            failed: list[dict] = []
            write_outputs([result], series_by_key, tmp, failed=failed)
            files = sorted(p for p in Path(tmp).rglob("*.dcm") if p.is_file())
            notes = [f"{f['series']}: {f['reason']}" for f in failed]
            for sr in result.series.values():
                notes += [str(n) for n in sr.notes.get("not_written", [])]
            if not files:
                why = f" ({notes[0]})" if notes else " (no segmentation, map or report could be written as DICOM)"
                raise LightboxError(f"nothing to send{why}")
            kinds = {p.name: kind_of(p) for p in files}
            if should_stop():
                from ..core.errors import Cancelled

                raise Cancelled("send cancelled")
            report = connect(server, secret).store(files, progress=lambda d, t, _m: progress(d, t),
                                                   should_stop=should_stop)
            return report, kinds, notes
    return job


class SendResultsDialog(QDialog):
    """Choose a server, send, see what was stored. ``sent`` carries the StoreReport."""

    sent = Signal(object)
    send_failed = Signal(str)

    def __init__(self, window: WindowHost, store: store_mod.ServerStore | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent or window)
        self.setWindowTitle("Send results to PACS")
        self.window = window
        self.store = store or store_mod.ServerStore()
        self.runner = TaskRunner(self)
        self._task: Worker | None = None
        self.last = None

        self.server_combo = QComboBox()
        self.what = QLabel()
        self.what.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.hide()
        self.status = QLabel(" ")
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setWordWrap(True)
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(lambda: self.send())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        row = QHBoxLayout()
        row.addWidget(QLabel("Server"))
        row.addWidget(self.server_combo, 1)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.what)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)
        layout.addLayout(buttons)
        self.resize(520, 220)
        self.reload()

    def reload(self, select: str | None = None) -> None:
        names = fill_server_combo(self.server_combo, self.store, select,
                                  lambda message: self.show_status(message, error=True))
        result, _by_key, edited, why = edited_results(self.window)
        if why:
            self.what.setText(why)
        else:
            n = len(result.series)
            self.what.setText(f"{result.kind} analysis of {n} image{'s' if n != 1 else ''}"
                              + (f", with your edits of {edited} segmentation{'s' if edited != 1 else ''}"
                                 if edited else "") + ": DICOM SEG, Parametric Maps and a TID 1500 SR")
        self.send_button.setEnabled(not why and bool(names) and self._task is None)
        if not names:
            self.show_status("No PACS server yet: add one in the Remote panel (Servers…)", error=True)

    def show_status(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet("color: #c0392b;" if error else "")
        self.status.setText(text.splitlines()[0] if text else " ")
        self.status.setToolTip(text)

    def send(self, server_name: str | None = None) -> Worker | None:
        if self._task is not None:
            return None
        if server_name:
            self.server_combo.setCurrentText(server_name)
        server = self.store.get(self.server_combo.currentText())
        if server is None:
            self.show_status("Choose a server", error=True)
            return None
        result, by_key, _edited, why = edited_results(self.window)
        if why:
            self.show_status(why, error=True)
            return None
        self.show_status(f"Writing and sending to {server.name}…")
        self.progress.setRange(0, 0)
        self.progress.show()
        self.send_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._task = self.runner.start(send_job(result, by_key, server, store_mod.get_secret(server)), "send results",
                                       on_finished=self._done, on_failed=self._failed, on_cancelled=self._cancelled,
                                       on_progress=self._progress)
        return self._task

    def _progress(self, done: int, total: int) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self.progress.setFormat(f"{done}/{total} objects")

    def _over(self) -> None:
        self._task = None
        self.progress.hide()
        self.cancel_button.setEnabled(False)
        self.send_button.setEnabled(True)

    def _done(self, payload) -> None:
        self._over()
        report, kinds, notes = payload
        self.last = payload
        stored = {}
        for name, kind in kinds.items():
            if name not in report.failed:
                stored[kind] = stored.get(kind, 0) + 1
        n_ok = len(report.stored)
        parts = ", ".join(f"{n} {k}" for k, n in stored.items()) if not report.failed else ""
        text = f"Stored {n_ok} object{'s' if n_ok != 1 else ''}" + (f" ({parts})" if parts else "")
        if report.failed:
            first = next(iter(report.failed.items()))
            text += f"; {len(report.failed)} refused — {first[0]}: {first[1]}"
        if notes:
            text += f"; not written: {notes[0]}"
        self.show_status(text, error=bool(report.failed))
        self.window.show_message(f"Send results: {text}", "warning" if report.failed or notes else "info")
        self.sent.emit(report)

    def _failed(self, message: str) -> None:
        self._over()
        self.show_status(f"Not sent: {message}", error=True)
        self.window.show_message(f"Send results failed: {message}", "error")
        self.send_failed.emit(message)

    def _cancelled(self) -> None:
        self._over()
        self.show_status("Cancelled (objects already stored stay on the server)")

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.cancel_button.setEnabled(False)

    def shutdown(self) -> None:
        self.runner.shutdown()
