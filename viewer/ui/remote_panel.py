"""The "Remote" dock: search a PACS, list its studies and series, retrieve into the local cache.

Searches, series listings and retrieves run on workers (``workers.TaskRunner``); the panel only
draws. A retrieve goes through ``viewer.remote.cache.RetrieveCache`` (plain DICOM files, resumed
without refetching) with a progress bar and Cancel, and what arrives opens in the viewer through the
window's normal ``open_path``. ``EarlyDisplay`` shows a CT's first slices while the rest is still
arriving and re-reads the folder as files land (each time the count doubles, then once at the end),
keeping the user's slice position and window. Every failure is one line in the panel's status.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..remote import servers as store_mod
from ..remote.base import Query, SeriesHit, Server, StudyHit, parse_dates
from .server_dialog import fill_server_combo
from .workers import TaskRunner, Worker

if TYPE_CHECKING:
    from .host import WindowHost

ROLE = Qt.ItemDataRole.UserRole  # ("study", study_uid) or ("series", study_uid, series_uid)
COLUMNS = ("Patient / description", "ID", "Date", "Modality", "Series", "Images")
MODALITIES = ("", "CT", "MR", "MG", "CR", "DX", "US", "PT", "NM", "XA", "SEG", "SR")
FIRST_FILES = 8  # the partial folder opens once this many files of the series are here
PLACEHOLDER = "…"
RETRY_MS = 300  # a re-read waits this long when the window is busy
GROWTH = 4  # re-read when the files here are this many times those on screen (and it would be worth it)


def _date(d: str) -> str:
    d = (d or "").strip()
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


def _count(n) -> str:
    return "" if n is None else str(n)


class EarlyDisplay(QObject):
    """Shows a retrieve's folder while it fills: opened (window.open_path) after ``first`` files,
    re-read on a worker when GROWTH times the files on screen are here and the re-read would be on
    screen before the retrieve ends (at the measured arrival rate and read time), and once at the end;
    each re-read replaces the shown volume through ``window.refresh_scan`` (same slice position and
    window, nothing cleared). It gives up quietly when the user opens something else or edits a
    segmentation on the partial image (their work is not replaced under them)."""

    first_shown = Signal(float)  # seconds from start() to the first image on screen
    refreshed = Signal(int)  # slices now on screen
    complete = Signal()  # the final re-read is on screen (or nothing more to do)

    def __init__(self, window: WindowHost, folder: Path, series_uid: str | None = None,
                 first: int = FIRST_FILES):
        super().__init__(window)
        self.window = window
        self.folder = Path(folder)
        self.series_uid = series_uid
        self.first = max(1, int(first))
        self.started = time.perf_counter()
        self.landed = 0  # files of the retrieve here now (reused ones included)
        self.first_landed_at: float | None = None
        self.read_s_per_file = 0.0  # measured by the last open or re-read
        self._read_started = 0.0
        self.total = 0
        self.opened = False
        self.shown_files = 0  # files the volume on screen was read from
        self.first_shown_s: float | None = None
        self.final = False
        self.done = False
        self.abandoned = False
        self._runner = TaskRunner(self)
        self._reading: Worker | None = None
        window.image_shown.connect(self._image_shown)

    # -- fed by the retrieve -----------------------------------------------------------------------
    def file_landed(self, done: int, total: int) -> None:
        self.landed, self.total = max(self.landed, done), total
        if self.first_landed_at is None:
            self.first_landed_at = time.perf_counter()
        if total and self.landed >= total:
            self.finish()  # the last file is here: no need to wait for the retrieve's own bookkeeping
            return
        if not self.opened:
            if self.landed >= min(self.first, max(total, 1)):
                self._open()
            return
        self._maybe_refresh()

    def finish(self) -> None:
        """The retrieve ended (complete, failed or cancelled): show everything that is here."""
        if self.final:
            return
        self.final = True
        if not self.opened and not self.abandoned:
            if self.landed or any(self.folder.rglob("*.dcm")):  # e.g. all reused: nothing "landed"
                self._open()
            else:
                self._end()  # nothing arrived (the server failed first): nothing to open
            return
        self._maybe_refresh()

    # -- internals ---------------------------------------------------------------------------------
    def _open(self) -> None:
        self.opened = True
        self._read_started = time.perf_counter()
        self.window.open_path(self.folder)

    def _ours(self) -> bool:
        """The window still shows our folder (the user did not open something else)."""
        try:
            return self.window.source is not None and Path(self.window.source).resolve() == self.folder.resolve()
        except OSError:
            return False

    def _image_shown(self) -> None:
        if self.done or not self.opened:
            return
        if not self._ours():
            if self.window.source is not None and not self.window.busy:
                self._give_up()
            return
        vol = self.window.slice_view.volume
        if self.first_shown_s is None and vol is not None:
            self.first_shown_s = time.perf_counter() - self.started
            self.shown_files = self._files_here_at_open()
            self.read_s_per_file = (time.perf_counter() - self._read_started) / max(self.shown_files, 1)
            self.first_shown.emit(self.first_shown_s)
        self._maybe_refresh()

    def _files_here_at_open(self) -> int:
        result = self.window.scan_result
        return sum(len(s.instances) for s in result.series) if result is not None else 0

    def _edited(self) -> bool:
        view = self.window.slice_view
        if view.volume is None:
            return False
        from .editor_controller import map_key

        lm = self.window.editor.session.maps.get(map_key(view.volume))
        return lm is not None and lm.dirty

    def _maybe_refresh(self) -> None:
        if self.done or self.abandoned or self.first_shown_s is None or self._reading is not None:
            return
        if not self._ours():
            self._give_up()
            return
        if self.window.busy:  # its own load (or an analysis) runs: come back when it is over
            QTimer.singleShot(RETRY_MS, self._maybe_refresh)
            return
        if self.final:
            if self.landed <= self.shown_files and self._scan_complete():
                self._end()
                return
        elif self.landed < GROWTH * max(self.shown_files, 1) or not self._worth_reading():
            return
        if self._edited():
            self.window.show_message(f"{self.folder}: more images arrived; reopen the series to see them "
                                     "(your segmentation edits were not replaced)", "warning")
            self._give_up()
            return
        self._start_read()

    def _worth_reading(self) -> bool:
        """A re-read now would be on screen before the retrieve ends (else the final one will do)."""
        if self.first_landed_at is None or self.total <= self.landed:
            return False
        elapsed = time.perf_counter() - self.first_landed_at
        rate = self.landed / elapsed if elapsed > 0 else float("inf")
        remaining = (self.total - self.landed) / rate if rate > 0 else float("inf")
        return remaining > 1.5 * self.read_s_per_file * self.landed

    def _scan_complete(self) -> bool:
        result = self.window.scan_result
        here = sum(1 for p in self.folder.rglob("*.dcm") if p.is_file())
        return result is not None and sum(len(s.instances) for s in result.series) >= here

    def _start_read(self) -> None:
        folder, keys = self.folder, {}
        for view in self.window.grid.cells:
            series = self.window.viewport_series(view)
            if series is not None and view.volume is not None:
                keys[series.key] = series
        final = self.final

        def job(progress, should_stop):
            from ..core.io import load_series, scan

            result = scan(folder, should_stop=should_stop)
            volumes = {}
            for series in result.series:
                if series.key in keys and len(series.instances) > len(keys[series.key].instances):
                    volumes[series.key] = (series, load_series(series, should_stop=should_stop))
            return result, volumes, final

        self._read_started = time.perf_counter()
        self._reading = self._runner.start(job, "re-reading the retrieve", on_finished=self._read,
                                           on_failed=self._read_failed, on_cancelled=self._read_cancelled)

    def _read(self, payload) -> None:
        self._reading = None
        result, volumes, final = payload
        if self.done or not self._ours() or self.window.busy:
            if self.final and not self.done:
                self._maybe_refresh()
            return
        self.shown_files = sum(len(s.instances) for s in result.series)
        self.read_s_per_file = (time.perf_counter() - self._read_started) / max(self.shown_files, 1)
        self.window.refresh_scan(self.folder, result, volumes)
        vol = self.window.slice_view.volume
        self.refreshed.emit(vol.shape[0] if vol is not None else 0)
        if final:
            self._end()
        else:
            self._maybe_refresh()

    def _read_failed(self, message: str) -> None:
        self._reading = None
        self.window.show_message(f"{self.folder}: could not re-read the arriving images ({message})", "warning")
        if self.final:
            self._end()

    def _read_cancelled(self) -> None:
        self._reading = None

    def _give_up(self) -> None:
        self.abandoned = True
        self._end()

    def _end(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.window.image_shown.disconnect(self._image_shown)
        except (RuntimeError, TypeError):
            pass
        self.complete.emit()

    def shutdown(self) -> None:
        """Stop following the folder and wait for a re-read in progress."""
        self._end()
        self._runner.shutdown()


class RemotePanel(QWidget):
    """Search, list and retrieve. Signals carry the outcome of each worker for the window and tests."""

    searched = Signal(list)  # StudyHit list now in the tree
    series_listed = Signal(str, list)  # study UID, SeriesHit list
    retrieved = Signal(object)  # RetrieveReport
    failed = Signal(str)  # one line (search, listing or retrieve)
    cancelled = Signal()
    _landed = Signal(int, int)  # from the retrieve's worker thread: (done, total) as each file lands

    def __init__(self, window: WindowHost | None = None, store: store_mod.ServerStore | None = None,
                 cache=None, parent: QWidget | None = None):
        super().__init__(parent if parent is not None else window)
        self.window = window
        self.store = store or store_mod.ServerStore()
        if cache is None:
            from ..remote.cache import RetrieveCache

            cache = RetrieveCache()
        self.cache = cache
        self.runner = TaskRunner(self)
        self._search_task: Worker | None = None
        self._retrieve_task: Worker | None = None
        self._listing: dict[str, Worker] = {}
        self.early: EarlyDisplay | None = None
        self.early_first = FIRST_FILES
        self.dialog = None
        self.last_report = None
        self._landed.connect(self._file_landed)

        self.server_combo = QComboBox()
        self.server_combo.setMinimumContentsLength(12)
        self.server_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.servers_button = QPushButton("Servers…")
        self.servers_button.setToolTip("Add, edit, remove and test PACS servers")
        self.servers_button.clicked.connect(self.show_servers)
        top = QHBoxLayout()
        top.addWidget(QLabel("Server"))
        top.addWidget(self.server_combo, 1)
        top.addWidget(self.servers_button)

        self.patient_name = QLineEdit()
        self.patient_name.setPlaceholderText("DOE^JOHN, DOE*")
        self.patient_id = QLineEdit()
        self.dates = QLineEdit()
        self.dates.setPlaceholderText("YYYYMMDD, FROM-TO, FROM- or -TO")
        self.modality = QComboBox()
        self.modality.setEditable(True)
        self.modality.addItems(MODALITIES)
        self.accession = QLineEdit()
        for edit in (self.patient_name, self.patient_id, self.dates, self.accession):
            edit.returnPressed.connect(self.search)
        form = QFormLayout()
        form.addRow("Patient name", self.patient_name)
        form.addRow("Patient ID", self.patient_id)
        form.addRow("Dates", self.dates)
        form.addRow("Modality", self.modality)
        form.addRow("Accession", self.accession)
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(self.search)

        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setRootIsDecorated(True)
        self.tree.setUniformRowHeights(True)
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(0, 170)  # names and descriptions first (their full text in the tooltip); the narrow columns fit
        for col in range(1, len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemExpanded.connect(self._expanded)
        self.tree.itemDoubleClicked.connect(lambda item, _c: self.retrieve_selected())
        self.tree.currentItemChanged.connect(lambda *_a: self._update_buttons())

        self.retrieve_series_button = QPushButton("Retrieve series")
        self.retrieve_series_button.clicked.connect(lambda: self.retrieve_selected(whole_study=False))
        self.retrieve_study_button = QPushButton("Retrieve study")
        self.retrieve_study_button.clicked.connect(lambda: self.retrieve_selected(whole_study=True))
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.retrieve_series_button)
        buttons.addWidget(self.retrieve_study_button)
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.status = QLabel(" ")
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(form)
        layout.addWidget(self.search_button)
        layout.addWidget(self.tree, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.reload_servers()
        self._update_buttons()

    # -- servers -----------------------------------------------------------------------------------
    def reload_servers(self, select: str | None = None) -> None:
        names = fill_server_combo(self.server_combo, self.store, select,
                                  lambda message: self.show_status(message, error=True))
        if not names:
            self.show_status("No PACS server yet: add one with Servers…")

    def server(self) -> Server | None:
        name = self.server_combo.currentText()
        return self.store.get(name) if name else None

    def show_servers(self):
        from .server_dialog import ServerDialog

        if self.dialog is None:
            self.dialog = ServerDialog(self, self.store)
            self.dialog.servers_changed.connect(lambda: self.reload_servers(self.dialog.name.text().strip()))
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog

    def _client_job(self, fn):
        """A worker job that connects to the chosen server (secret from the keyring) and calls fn(client, ...)."""
        server = self.server()
        if server is None:
            self.show_status("Choose a PACS server first (Servers… adds one)", error=True)
            return None
        secret = store_mod.get_secret(server)

        def job(progress, should_stop):
            from ..remote import connect

            return fn(connect(server, secret), progress, should_stop)
        return job

    # -- messages ----------------------------------------------------------------------------------
    def show_status(self, text: str, error: bool = False) -> None:
        line = text.splitlines()[0] if text else " "
        self.status.setStyleSheet("color: #c0392b;" if error else "")
        self.status.setText(line)
        self.status.setToolTip(text)
        if self.window is not None and text.strip():
            self.window.show_message(f"Remote: {line}", "error" if error else "info")

    def _failed(self, what: str, message: str) -> None:
        self.show_status(f"{what}: {message}", error=True)
        self.failed.emit(message)

    # -- search ------------------------------------------------------------------------------------
    def query(self) -> Query:
        """The form as a Query; ValueError (one line) for dates that are not YYYYMMDD."""
        date_from, date_to = parse_dates(self.dates.text()) if self.dates.text().strip() else ("", "")
        return Query(patient_name=self.patient_name.text().strip(), patient_id=self.patient_id.text().strip(),
                     date_from=date_from, date_to=date_to, modality=self.modality.currentText().strip().upper(),
                     accession=self.accession.text().strip())

    def search(self) -> Worker | None:
        try:
            query = self.query()
        except ValueError as exc:
            self._failed("Search", str(exc))
            return None
        job = self._client_job(lambda client, _p, _s: client.find_studies(query))
        if job is None:
            return None
        if self._search_task is not None:
            self._search_task.cancel()
        self.show_status(f"Searching {self.server_combo.currentText()}…")
        self.search_button.setEnabled(False)
        task = None

        def over():
            if self._search_task is task:
                self._search_task = None
                self.search_button.setEnabled(True)

        def done(hits):
            if self._search_task is not task:
                return
            over()
            self.show_results(hits)

        def failed(message):
            if self._search_task is task:
                over()
                self._failed("Search", message)

        task = self._search_task = self.runner.start(job, "search", on_finished=done, on_failed=failed,
                                                     on_cancelled=over)
        return task

    def show_results(self, hits: list[StudyHit]) -> None:
        self.tree.clear()
        for hit in hits:
            who = hit.patient_name.replace("^", " ").strip() or "(no name)"
            text = f"{who} — {hit.description}" if hit.description else who
            item = QTreeWidgetItem([text, hit.patient_id, _date(hit.study_date), " ".join(hit.modalities),
                                    _count(hit.n_series), _count(hit.n_instances)])
            item.setData(0, ROLE, ("study", hit.study_uid))
            item.setToolTip(0, f"{text}\nStudy {hit.study_uid}" + (f"\nAccession {hit.accession}" if hit.accession else ""))
            item.addChild(QTreeWidgetItem([PLACEHOLDER]))  # expandable; series listed on expand
            self.tree.addTopLevelItem(item)
        n = len(hits)
        found = f"{n} stud{'y' if n == 1 else 'ies'} found"
        self.show_status(found + (" (expand one to list its series)" if n else ""))
        if n:
            self.tree.setCurrentItem(self.tree.topLevelItem(0))
        self._update_buttons()
        self.searched.emit(hits)

    # -- series ------------------------------------------------------------------------------------
    def study_item(self, study_uid: str) -> QTreeWidgetItem | None:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item.data(0, ROLE)[1] == study_uid:
                return item
        return None

    def _expanded(self, item: QTreeWidgetItem) -> None:
        data = item.data(0, ROLE)
        if data and data[0] == "study" and item.childCount() == 1 and item.child(0).data(0, ROLE) is None:
            self.list_series(data[1])

    def list_series(self, study_uid: str) -> Worker | None:
        if study_uid in self._listing:
            return self._listing[study_uid]
        job = self._client_job(lambda client, _p, _s: client.find_series(study_uid))
        if job is None:
            return None

        def over():
            self._listing.pop(study_uid, None)

        def done(hits):
            over()
            self.show_series(study_uid, hits)

        def failed(message):
            over()
            item = self.study_item(study_uid)
            if item is not None and item.childCount() == 1 and item.child(0).data(0, ROLE) is None:
                item.child(0).setText(0, "(could not list the series)")
            self._failed("Series", message)

        task = self.runner.start(job, "series", on_finished=done, on_failed=failed, on_cancelled=over)
        self._listing[study_uid] = task
        return task

    def show_series(self, study_uid: str, hits: list[SeriesHit]) -> None:
        item = self.study_item(study_uid)
        if item is None:
            return
        item.takeChildren()
        for hit in sorted(hits, key=lambda h: (h.number is None, h.number or 0, h.series_uid)):
            number = f"#{hit.number} " if hit.number is not None else ""
            child = QTreeWidgetItem([f"{number}{hit.description or '(series)'}", "", "", hit.modality, "",
                                     _count(hit.n_instances)])
            child.setData(0, ROLE, ("series", study_uid, hit.series_uid))
            child.setToolTip(0, f"{hit.description or '(series)'}\nSeries {hit.series_uid}")
            item.addChild(child)
        if not hits:
            item.addChild(QTreeWidgetItem(["(no series)"]))
        if item.text(4) == "":
            item.setText(4, str(len(hits)))
        item.setExpanded(True)
        self._update_buttons()
        self.series_listed.emit(study_uid, hits)

    def series_item(self, series_uid: str) -> QTreeWidgetItem | None:
        for i in range(self.tree.topLevelItemCount()):
            study = self.tree.topLevelItem(i)
            for j in range(study.childCount()):
                data = study.child(j).data(0, ROLE)
                if data and data[0] == "series" and data[2] == series_uid:
                    return study.child(j)
        return None

    # -- retrieve ----------------------------------------------------------------------------------
    @property
    def retrieving(self) -> bool:
        return self._retrieve_task is not None

    def _update_buttons(self) -> None:
        data = self.tree.currentItem().data(0, ROLE) if self.tree.currentItem() is not None else None
        busy = self.retrieving
        self.retrieve_series_button.setEnabled(not busy and bool(data) and data[0] == "series")
        self.retrieve_study_button.setEnabled(not busy and bool(data))
        self.cancel_button.setEnabled(busy)

    def retrieve_selected(self, whole_study: bool | None = None) -> Worker | None:
        item = self.tree.currentItem()
        data = item.data(0, ROLE) if item is not None else None
        if not data:
            self.show_status("Choose a study or a series to retrieve", error=True)
            return None
        if data[0] == "series" and not whole_study:
            return self.retrieve(data[1], data[2])
        return self.retrieve(data[1])

    def retrieve(self, study_uid: str, series_uid: str | None = None, open_when_done: bool = True) -> Worker | None:
        """Bring a series (or a whole study) into the cache on a worker, showing it as it arrives."""
        if self.retrieving:
            self.show_status("A retrieve is running: wait for it or Cancel it", error=True)
            return None
        cache = self.cache
        emit = self._landed.emit

        def fetch(client, progress, should_stop):
            def prog(done, total, _message):
                progress(done, total)

            return cache.retrieve(client, study_uid, series_uid, progress=prog, should_stop=should_stop,
                                  on_file=lambda _path, done, total: emit(done, total))

        job = self._client_job(fetch)
        if job is None:
            return None
        folder = cache.series_dir(study_uid, series_uid) if series_uid else cache.study_dir(study_uid)
        if self.early is not None:
            self.early.shutdown()  # an older retrieve's display stops following its folder
        self.early = None
        if open_when_done and self.window is not None:
            self.early = EarlyDisplay(self.window, folder, series_uid, first=self.early_first)
        what = "series" if series_uid else "study"
        self.show_status(f"Retrieving the {what} from {self.server_combo.currentText()}…")
        self.progress.setRange(0, 0)
        self.progress.show()
        task = self._retrieve_task = self.runner.start(
            job, "retrieve", on_finished=self._retrieved, on_failed=lambda m: self._retrieve_over(m),
            on_cancelled=lambda: self._retrieve_over(None), on_progress=self._progress)
        self._update_buttons()
        return task

    def _progress(self, done: int, total: int) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self.progress.setFormat(f"{done}/{total} instances")

    def _file_landed(self, done: int, total: int) -> None:
        if self.early is not None:
            self.early.file_landed(done, total)

    def _retrieved(self, report) -> None:
        self._retrieve_task = None
        self.last_report = report
        self.progress.hide()
        self._update_buttons()
        missing = sum(report.missing.values())
        text = (f"Retrieved {len(report.files)} instance{'s' if len(report.files) != 1 else ''} "
                f"({report.fetched} fetched, {report.reused} already here) in {report.seconds:.1f} s")
        if missing:
            text += f"; the server did not send {missing} it listed"
        self.show_status(text, error=bool(missing))
        if self.early is not None:
            self.early.finish()
        try:  # the cache keeps the most recently used studies under its limit (LIGHTBOX_REMOTE_CACHE_MB)
            if self.cache.root in report.folder.parents:
                self.cache.prune(keep=report.folder.name)
        except OSError:
            pass  # a full or read-only cache is no reason to hide what just arrived
        self.retrieved.emit(report)

    def _retrieve_over(self, message: str | None) -> None:
        self._retrieve_task = None
        self.progress.hide()
        self._update_buttons()
        if self.early is not None:
            self.early.finish()  # what arrived is whole and shown; the next retrieve resumes from it
        if message is None:
            self.show_status("Retrieve cancelled (what arrived stays in the cache; retrieving again resumes)")
            self.cancelled.emit()
        else:
            self._failed("Retrieve", message)

    def cancel(self) -> None:
        if self._retrieve_task is not None:
            self._retrieve_task.cancel()
            self.cancel_button.setEnabled(False)
            self.show_status("Cancelling the retrieve…")
        if self._search_task is not None:
            self._search_task.cancel()

    def shutdown(self) -> None:
        self.runner.shutdown()
        if self.early is not None:
            self.early.shutdown()
        if self.dialog is not None:
            self.dialog.shutdown()
