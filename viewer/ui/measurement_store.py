"""Measurements and annotations outlive the view: saved as a TID 1500 SR per study, put back when the
study reopens (rulers, ROIs, angles, Cobb angles, arrows and texts alike).

The views only draw measurements; this store keeps them per study as plain records
(``core.measure_records``) and listens to every SliceView of the window:

- ``measurements_changed`` (the user drew, edited, deleted or cleared): that view's records replace
  the ones it showed before, and the study is saved ``DEBOUNCE_MS`` later, off the UI thread, as
  ``<cache>/measurements/<study>.dcm`` (``$LIGHTBOX_CACHE_DIR``, else the XDG cache), written
  atomically by ``core.export.measurement_sr`` (a study left without measurements loses its file);
- ``volume_changed`` (a series shown): the records of that study that lie on one slice of the
  view's plane are drawn back, with their tracking UIDs. The first time a study is seen its
  records are read from the autosave and from the SRs of the opened folder (e.g. retrieved from
  the PACS along with the images) it has not taken in yet; a UID in both is one measurement, the
  autosave's version wins, and one the user deleted stays deleted.

Measurements on an MPR reformat that is no acquired image are kept in patient coordinates
(SCOORD3D) and come back on that reformat; a view with no DICOM source (a NIfTI file) cannot be
referenced by an SR: its measurements are not saved and the status bar says so once.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal, Slot
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog

from ..core.atomic import write_bytes
from ..core.errors import describe
from ..core.export.measurement_sr import (SR_SOP_CLASSES, MeasurementSRError, read_measurements_sr,
                                          write_measurements_sr)
from ..core.measure_records import MeasurementRecord, from_display_points, to_display_points
from ..core.study import study_file_stem
from .measure_tools import restore_measurement

log = logging.getLogger(__name__)
DEBOUNCE_MS = 1000


def measurements_dir() -> Path:
    """``$LIGHTBOX_CACHE_DIR/measurements``, else ``$XDG_CACHE_HOME/lightbox/measurements``, else ~/.cache/..."""
    if os.environ.get("LIGHTBOX_CACHE_DIR"):
        return Path(os.environ["LIGHTBOX_CACHE_DIR"]).expanduser() / "measurements"
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "lightbox" / "measurements"


def autosave_path(study_uid: str, folder=None) -> Path:
    """One SR per study; a UID that is no safe file name is hashed."""
    return Path(folder or measurements_dir()) / f"{study_file_stem(study_uid)}.dcm"


def _merged_path(autosave: Path) -> Path:
    return autosave.with_name(autosave.stem + ".merged.json")


def _read_merged(autosave: Path) -> set[str]:
    """SOP UIDs of the folder SRs already taken into this autosave (empty when unreadable)."""
    try:
        return {str(u) for u in json.loads(_merged_path(autosave).read_text())}
    except (OSError, ValueError, TypeError):
        return set()


def _parse_study(autosave: Path, folder_srs: list[tuple[str, Path]]):
    """(merged SOP UIDs, [(folder SR SOP UID or None for the autosave, records or a one-line error)]):
    the autosave first, then the folder SRs it has not taken in. Any thread; touches no Qt."""
    merged = _read_merged(autosave)
    todo = ([(None, autosave)] if autosave.exists() else []) + [(u, p) for u, p in folder_srs if u not in merged]
    out = []
    for sop, path in todo:
        try:
            out.append((sop, read_measurements_sr(path)))
        except MeasurementSRError as exc:
            out.append((sop, str(exc)))
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback
            out.append((sop, f"{path}: {describe(exc)}"))
    return merged, out


def _finite(value) -> bool:
    return value is not None and math.isfinite(float(value))


def _sr_series_uid(study_uid: str) -> str:
    """The same SR series for a study's autosaves, session after session."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["lightbox measurements", str(study_uid)])


class MeasurementStore(QObject):
    """Per-study measurement records of a MainWindow, autosaved as DICOM SR and restored."""

    saved = Signal(str)  # path written (or removed) by an autosave
    failed = Signal(str)  # one-line reason an autosave or restore failed

    def __init__(self, window, folder=None):
        super().__init__(window)
        self.window = window
        self.folder = Path(folder) if folder is not None else None
        self.records: dict[str, dict[str, MeasurementRecord]] = {}  # study UID -> uid -> record
        self._loaded: set[str] = set()
        self._merged: dict[str, set[str]] = {}  # study UID -> folder SRs (SOP UIDs) taken into its autosave
        self._preloads: dict[str, Future] = {}  # study UID -> its SRs being parsed (preload)
        self._view_uids: dict[object, set[str]] = {}
        self._plans: dict[str, object] = {}
        self._known: dict[str, object] = {}  # series UID -> Series measured on (its files are the SR's sources)
        self._dirty: set[str] = set()
        self._unsaved_noted = False
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lightbox-measure-save")
        self._pending: list[Future] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.save_dirty)
        self.failed.connect(self._report)  # a queued call: _write runs on the saver thread
        self.save_action = QAction("Save &measurements as DICOM SR…", window)
        self.save_action.setToolTip("Write the rulers and ROIs of the shown study as a DICOM Structured Report "
                                    "(TID 1500) that other viewers read")
        self.save_action.triggered.connect(self.choose_and_save)
        for view in window.all_views():
            self.watch(view)
        if hasattr(window, "scan_finished"):
            window.scan_finished.connect(self.preload)

    @Slot(str)
    def _report(self, message: str) -> None:
        self.window.show_message(message, "warning")

    # -- wiring ------------------------------------------------------------------------------
    def watch(self, view) -> None:
        view.measurements_changed.connect(lambda v=view: self.view_changed(v))
        view.volume_changed.connect(lambda v=view: self.view_loaded(v))

    def folder_path(self, study_uid: str) -> Path:
        return autosave_path(study_uid, self.folder)

    # -- which series a view shows --------------------------------------------------------------
    def series_of(self, view):
        vol = view.volume
        if vol is None:
            return None
        shown = self.window.viewport_series(view) if hasattr(self.window, "viewport_series") else None
        if shown is not None and shown.uid == vol.info.series_uid and self._fits(shown, vol):
            return shown
        result = getattr(self.window, "scan_result", None)
        for s in (result.series if result is not None else []):
            if s.uid == vol.info.series_uid and s.kind == "dicom" and self._fits(s, vol):
                return s
        return None

    def plan_of(self, series):
        if series is None or series.kind != "dicom":
            return None
        if series.key not in self._plans:
            from ..core.io.dicom import plan_series

            try:
                self._plans[series.key] = plan_series(series)
            except Exception:  # noqa: BLE001 - no plan: measurements cannot reference its images
                self._plans[series.key] = None
        return self._plans[series.key]

    def _fits(self, series, volume) -> bool:
        plan = self.plan_of(series)
        return plan is not None and tuple(plan.shape) == tuple(volume.shape)

    # -- restore ---------------------------------------------------------------------------------
    def ensure_study(self, study_uid: str) -> dict[str, MeasurementRecord]:
        """The study's records, read once: the autosave, then the folder's SRs not merged into it yet.

        The autosave lists (beside it, ``.merged.json``) the folder SRs whose measurements it has
        taken in, so a measurement the user deleted does not come back from the PACS copy; an SR
        new to the folder (retrieved later) is merged, the autosave's version of a UID winning.
        The files were usually parsed on the saver thread while the series loaded (``preload``)."""
        recs = self.records.setdefault(study_uid, {})
        if study_uid in self._loaded:
            return recs
        self._loaded.add(study_uid)
        job = self._preloads.pop(study_uid, None)
        merged, parsed = job.result() if job is not None else _parse_study(*self._study_files(study_uid))
        self._merged[study_uid] = merged
        for sop, got in parsed:
            if isinstance(got, str):
                self.failed.emit(f"Measurements not restored: {got}")
                continue
            for rec in got:
                if (not rec.study_uid or rec.study_uid == study_uid) and (sop is None or rec.uid not in recs):
                    recs[rec.uid] = rec
            if sop is not None:
                merged.add(sop)
        return recs

    def _study_files(self, study_uid: str) -> tuple[Path, list[tuple[str, Path]]]:
        return self.folder_path(study_uid), self._folder_srs(study_uid)

    def preload(self, result) -> None:
        """A scan finished: parse its studies' measurement SRs off the UI thread (highdicom takes
        ~25 ms per measurement), queued behind any save still due so it reads the newest file."""
        for study in getattr(result, "studies", []):
            if study.uid in self._loaded or study.uid in self._preloads:
                continue
            self._preloads[study.uid] = self._pool.submit(_parse_study, *self._study_files(study.uid))

    def _folder_srs(self, study_uid: str) -> list[tuple[str, Path]]:
        """(SOP Instance UID, path) of the SR files of the opened folder in this study."""
        result = getattr(self.window, "scan_result", None)
        out = []
        for s in (result.series if result is not None else []):
            if s.kind == "dicom" or s.info.study_uid != study_uid:
                continue
            out.extend((i.sop_uid or str(i.path), Path(i.path)) for i in s.instances if i.sop_class in SR_SOP_CLASSES)
        return out

    def view_loaded(self, view) -> None:
        """A view shows a new volume (or none): draw back the study's records that lie on its plane."""
        self._view_uids[view] = set()
        vol = view.volume
        if vol is None or not vol.info.study_uid:
            return
        series = self.series_of(view)
        plan = self.plan_of(series)
        recs = self.ensure_study(vol.info.study_uid)
        shown = set()
        for rec in list(recs.values()):
            if rec.series_uid and rec.series_uid != vol.info.series_uid:
                continue
            try:
                placed = to_display_points(rec, view.plane_geometry, vol, plan)
                if placed is None:
                    continue
                k, points = placed
                restore_measurement(view, rec.kind, k, points, rec.uid, rec.text)
                shown.add(rec.uid)
            except Exception as exc:  # noqa: BLE001 - one odd record never loses the others
                log.warning("measurement %s not restored: %s", rec.uid, exc)
        self._view_uids[view] = shown

    # -- changes -------------------------------------------------------------------------------------
    def view_changed(self, view) -> None:
        """The user changed the view's measurements: its records replace the ones it showed."""
        vol = view.volume
        if vol is None or not vol.info.study_uid:
            return
        study = vol.info.study_uid
        recs = self.ensure_study(study)
        series = self.series_of(view)
        if series is not None:
            self._known[series.uid] = series
        plan = self.plan_of(series)
        now: dict[str, MeasurementRecord] = {}
        lost = 0
        for m in view.measurements:
            if m.value is None or not m.is_complete() or not _finite(m.stats()["value"]):
                continue  # an angle still being placed, or one with a zero-length arm: nothing to save
            rec = from_display_points(m.kind, view.plane_geometry, m.slice_index, list(m.pixel_points()), vol, plan,
                                      uid=m.uid, **m.record_values())
            if rec is None:
                lost += 1
                continue
            now[rec.uid] = rec
        with self._lock:
            for uid in self._view_uids.get(view, set()) - now.keys():
                recs.pop(uid, None)
            recs.update(now)
        self._view_uids[view] = set(now)
        if lost and not self._unsaved_noted:
            self._unsaved_noted = True
            self.window.show_message(f"{lost} measurement(s) not saved: this image has no DICOM reference "
                                     "(only DICOM images can be measured in a DICOM SR)", "warning")
        self._dirty.add(study)
        self._timer.start()

    # -- saving ----------------------------------------------------------------------------------------
    def _sources(self, records) -> list:
        """The source series of ``records``: those measured on (kept even after another folder was
        opened, so a save still due then finds its images), else the open scan's."""
        wanted = {r.series_uid for r in records}
        found = [s for uid, s in self._known.items() if uid in wanted]
        result = getattr(self.window, "scan_result", None)
        have = {s.uid for s in found}
        found += [s for s in (result.series if result is not None else [])
                  if s.kind == "dicom" and s.uid in wanted - have]
        return found

    def save_dirty(self) -> None:
        """Write every study changed since the last save (on the saver thread)."""
        self._timer.stop()
        dirty, self._dirty = self._dirty, set()
        for study in dirty:
            with self._lock:
                records = list(self.records.get(study, {}).values())
            sources = self._sources(records) if records else []
            merged = sorted(self._merged.get(study, ()))
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(self._pool.submit(self._write, study, records, sources, merged))

    def _write(self, study: str, records, sources, merged: list[str]) -> None:
        path = self.folder_path(study)
        try:
            if merged:
                write_bytes(_merged_path(path), json.dumps(merged).encode())
            if not records:
                path.unlink(missing_ok=True)
            else:
                write_measurements_sr(records, sources, path, series_uid=_sr_series_uid(study))
            self.saved.emit(str(path))
        except Exception as exc:  # noqa: BLE001 - reported, never raised into the UI
            why = exc if isinstance(exc, MeasurementSRError) else f"{path}: {describe(exc)}"
            self.failed.emit(f"Measurements not autosaved: {why}")

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Save what is pending now and wait for it (tests, quitting)."""
        self.save_dirty()
        done = True
        for fut in list(self._pending):
            try:
                fut.result(timeout)
            except Exception:  # noqa: BLE001 - timeouts; errors were reported by _write
                done = False
        return done

    def shutdown(self) -> None:
        self.flush()
        self._pool.shutdown(wait=True)

    # -- File ▸ Save measurements as DICOM SR… ----------------------------------------------------------
    def current_study(self) -> str:
        vol = self.window.slice_view.volume
        if vol is None:
            vol = next((v.volume for v in self.window.shown_views() if v.volume is not None), None)
        return vol.info.study_uid if vol is not None else ""

    def save_as(self, path, study_uid: str | None = None) -> Path:
        """Write the study's measurements (default: the shown one) to ``path``; MeasurementSRError if none."""
        study = study_uid or self.current_study()
        for view in self.window.all_views():  # what is on screen, even if the debounce has not fired
            if view.volume is not None and view.volume.info.study_uid == study and view.measurements:
                self.view_changed(view)
        records = list(self.ensure_study(study).values()) if study else []
        return write_measurements_sr(records, self._sources(records), path)

    def choose_and_save(self) -> None:
        start = str(Path(getattr(self.window, "_last_dir", str(Path.home()))) / "measurements.sr.dcm")
        path, _ = QFileDialog.getSaveFileName(self.window, "Save measurements as DICOM SR", start,
                                              "DICOM files (*.dcm);;All files (*)")
        if not path:
            return
        try:
            written = self.save_as(path)
        except MeasurementSRError as exc:
            self.window.show_message(str(exc), "error")
            return
        except Exception as exc:  # noqa: BLE001 - never into Qt's event loop
            self.window.show_message(f"{path}: measurements not saved ({describe(exc)})", "error")
            return
        self.window.show_message(f"Measurements saved as DICOM SR: {written}")
