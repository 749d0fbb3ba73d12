"""Key images in the window: mark the shown slice (K), list the study's marks, jump, remove, export PNGs.

The panel knows the window only through a few callables (the active SliceView, all views, a
status message, optionally the SOP instance behind a slice), so it does not import the main
window. The list follows the active view's study and is kept by ``core.key_images`` beside the
measurement autosaves, written off the UI thread.

Export renders each key image from a view that shows its series, exactly as on screen (image,
segmentation, heatmap and its colour bar, measurements), with the corner text hidden (it names
the patient) and a de-identified caption strip drawn below; the PNGs are then written by a
worker with progress and Cancel, each atomically, only inside the chosen folder.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from PySide6.QtCore import QRect, Qt, Signal
from PySide6.QtGui import QAction, QColor, QFont, QImage, QKeySequence, QPainter
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QInputDialog, QListWidget, QListWidgetItem,
                               QProgressDialog, QPushButton, QVBoxLayout, QWidget)

from ..core.atomic import replacing
from ..core.errors import Cancelled, describe
from ..core.export.key_object import write_key_object
from ..core.key_images import (KeyImage, KeyImageError, KeyImageStore, caption, inside, png_name,
                               slice_source, study_key, write_study)
from .measurement_store import measurements_dir
from .workers import Committed, TaskRunner

log = logging.getLogger(__name__)
CAPTION_PX = 28
SHORTCUT = "K"

SopLookup = Callable[[object], object]  # SliceView -> io.dicom.SlicePlan of its series, or None


def study_of(view) -> str:
    """The study key of what ``view`` shows ('' without a volume)."""
    vol = view.volume if view is not None else None
    if vol is None:
        return ""
    files = vol.info.files
    return study_key(vol.info.study_uid, files[0] if files else None)


def view_kind(view) -> str:
    """'axial' / 'coronal' / 'sagittal' for an MPR pane, the cell (``RCC``) for a mammogram, else 'native'."""
    if view.plane:
        return view.plane
    info = view.volume.info
    cell = f"{info.laterality}{info.view_position}".strip()
    return cell if info.modality.upper() == "MG" and cell else "native"


def key_from_view(view, plan=None) -> KeyImage:
    """The KeyImage of the slice ``view`` shows now (``plan``: its series' SlicePlan, for the SOP UID)."""
    vol, g, k = view.volume, view.plane_geometry, view.slice_index
    sop, frame = slice_source(plan, g.axis, k)
    position = k * float(vol.spacing[g.axis]) if g.n_slices > 1 else None  # from the first slice, not absolute
    info = vol.info
    return KeyImage(series_uid=info.series_uid, slice_index=k, slice_count=g.n_slices, view=view_kind(view),
                    window=view.window, sop_uid=sop, frame=frame, modality=info.modality,
                    laterality=info.laterality, view_position=info.view_position, position_mm=position)


def _grab_as_shown(view) -> QImage:
    """The view's canvas as drawn (image and overlays), without the corner text that names the patient."""
    text_was = view.corner_text_visible
    readout = getattr(view, "_readout", None)
    readout_was = readout is not None and readout.isVisible()
    view.set_corner_text_visible(False)
    if readout is not None:
        readout.hide()
    try:
        return view.canvas.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    finally:
        view.set_corner_text_visible(text_was)
        if readout_was:
            readout.show()


def with_caption(image: QImage, text: str) -> QImage:
    """``image`` with a black strip below it carrying ``text`` in white."""
    out = QImage(image.width(), image.height() + CAPTION_PX, QImage.Format.Format_RGB32)
    out.fill(QColor("black"))
    p = QPainter(out)
    try:
        p.drawImage(0, 0, image)
        font = QFont()
        font.setPixelSize(CAPTION_PX // 2)
        p.setFont(font)
        p.setPen(QColor("white"))
        box = QRect(6, image.height(), image.width() - 12, CAPTION_PX)
        p.drawText(box, int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft), text)
    finally:
        p.end()
    out.setText("Description", text)  # the caption is the only text the PNG carries
    return out


def render_key_image(view, key: KeyImage) -> QImage:
    """``key`` drawn by ``view`` (which shows its series) with its caption; the view is put back after."""
    before_k, before_w = view.slice_index, view.window
    try:
        view.set_slice(key.slice_index)
        view.set_window(*key.window)
        return with_caption(_grab_as_shown(view), caption(key))
    finally:
        view.set_slice(before_k)
        view.set_window(*before_w)


def write_pngs(jobs: list[tuple[Path, QImage]], progress, should_stop) -> Committed:
    """Write each (path, image) atomically (worker thread); stops between files on Cancel. All
    written: ``Committed``, so a Cancel that came too late does not call written files cancelled."""
    written = []
    for i, (path, image) in enumerate(jobs):
        if should_stop():
            raise Cancelled()
        with replacing(path) as tmp:
            if not image.save(str(tmp), "PNG"):
                raise OSError(f"{path}: PNG not written")
        written.append(path)
        progress(i + 1, len(jobs))
    return Committed(written)


class KeyImagesPanel(QWidget):
    """The active study's key images: Mark (K), double-click to jump, Remove, Note…, Export key images…"""

    changed = Signal()  # the list shown changed (marked, removed, another study)
    exported = Signal(list)  # paths written by an export

    def __init__(self, active_view: Callable[[], object], views: Callable[[], list],
                 message: Callable[[str, str], None] | None = None, plan_of: SopLookup | None = None,
                 folder=None, runner: TaskRunner | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.active_view, self.views = active_view, views
        self.plan_of = plan_of
        self._message = message
        self.store = KeyImageStore(folder if folder is not None else measurements_dir())
        self.runner = runner or TaskRunner(self)
        self.study = ""
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lightbox-key-images")
        self._pending: list[Future] = []
        self._watched: set[int] = set()
        self.last_export: list[Path] = []
        self.last_activated = None  # the view last pressed on (an MPR pane or mammography cell)

        self.list = QListWidget(self)
        self.list.setToolTip("Double-click: show this key image")
        self.list.itemDoubleClicked.connect(lambda item: self.jump(item.data(Qt.ItemDataRole.UserRole)))
        self.mark_action = QAction("Mark &key image", self)
        self.mark_action.setShortcut(QKeySequence(SHORTCUT))
        self.mark_action.setToolTip(f"Mark the slice shown in the active view as a key image ({SHORTCUT})")
        self.mark_action.triggered.connect(self.mark)
        self.export_action = QAction("Export key &images…", self)
        self.export_action.setToolTip("Write the study's key images as PNG with overlays and a de-identified caption")
        self.export_action.triggered.connect(self.choose_and_export)
        self.kos_action = QAction("Save key images as DICOM &KOS…", self)
        self.kos_action.setToolTip("Write a DICOM Key Object Selection document that a PACS shows as the "
                                   "study's key images")
        self.kos_action.triggered.connect(self.choose_and_save_kos)
        buttons = QHBoxLayout()
        for text, slot in (("Mark", self.mark), ("Remove", self.remove_selected), ("Note…", self.edit_note),
                           ("Export…", self.choose_and_export)):
            b = QPushButton(text, self)
            b.clicked.connect(slot)
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        self.watch_views()

    # -- wiring ----------------------------------------------------------------------------------
    def watch_views(self) -> None:
        """Follow every view's volume (call again when the window adds views)."""
        for view in self.views():
            if id(view) not in self._watched:
                self._watched.add(id(view))
                view.volume_changed.connect(self.follow_active)
                view.activated.connect(lambda v=view: self._activated(v))
        self.follow_active()

    def _activated(self, view) -> None:
        self.last_activated = view
        self.follow_active()

    def message(self, text: str, level: str = "info") -> None:
        if self._message is not None:
            self._message(text, level)
        else:
            log.info("%s", text)

    def follow_active(self) -> None:
        """Show the key images of the active view's study (read from disk the first time)."""
        view = self.active_view()
        study = study_of(view)
        if study and study != self.study:
            self.study = study
            self.refresh()

    # -- the list ----------------------------------------------------------------------------------
    def keys(self) -> list[KeyImage]:
        if not self.study:
            return []
        try:
            return self.store.images(self.study)
        except KeyImageError as exc:
            self.message(str(exc), "warning")
            self.store.start_over(self.study)
            return []

    def refresh(self) -> None:
        self.list.clear()
        for i, key in enumerate(self.keys(), 1):
            item = QListWidgetItem(f"{i}. {caption(key)}")
            item.setToolTip(caption(key))
            item.setData(Qt.ItemDataRole.UserRole, key.uid)
            self.list.addItem(item)
        self.changed.emit()

    def _selected_uid(self) -> str:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else ""

    # -- actions -----------------------------------------------------------------------------------------
    def mark(self) -> KeyImage | None:
        view = self.active_view()
        if view is None or view.volume is None:
            self.message("No image to mark: show a series first", "warning")
            return None
        self.follow_active()
        plan = None
        if self.plan_of is not None:
            try:
                plan = self.plan_of(view)
            except Exception as exc:  # noqa: BLE001 - the mark still works without a SOP UID
                log.warning("no slice plan for the key image: %s", describe(exc))
        key = key_from_view(view, plan)
        self.keys()  # a bad file is reported before the mark replaces it
        if not self.store.add(self.study, key):
            self.message(f"Image {key.slice_index + 1} is already a key image", "info")
            return None
        self._save()
        self.refresh()
        self.list.setCurrentRow(self.list.count() - 1)
        self.message(f"Key image marked: {caption(key)}", "info")
        return key

    def remove_selected(self) -> bool:
        uid = self._selected_uid()
        if not uid or not self.store.remove(self.study, uid):
            return False
        self._save()
        self.refresh()
        return True

    def edit_note(self) -> None:
        uid = self._selected_uid()
        key = next((k for k in self.keys() if k.uid == uid), None)
        if key is None:
            return
        text, ok = QInputDialog.getText(self, "Key image note", "Note (printed in the caption; no names):",
                                        text=key.note)
        if ok:
            self.set_note(uid, text)

    def set_note(self, uid: str, text: str) -> None:
        if self.store.set_note(self.study, uid, text):
            self._save()
            self.refresh()

    def view_for(self, key: KeyImage):
        """A view showing ``key``'s series in its view kind, the active one first; None if none does."""
        active = self.active_view()
        for view in [active, *[v for v in self.views() if v is not active]]:
            if view is not None and view.volume is not None and view.volume.info.series_uid == key.series_uid \
                    and view_kind(view) == key.view and view.slice_count == key.slice_count:
                return view
        return None

    def jump(self, uid: str) -> bool:
        key = next((k for k in self.keys() if k.uid == uid), None)
        view = self.view_for(key) if key is not None else None
        if view is None:
            self.message("That key image's series is not shown in that view: open the series first", "warning")
            return False
        view.set_slice(key.slice_index)
        view.set_window(*key.window)
        return True

    # -- persistence -------------------------------------------------------------------------------------
    def _save(self) -> None:
        path, images = self.store.snapshot(self.study)
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._pool.submit(self._write, path, self.study, images))

    def _write(self, path, study, images) -> None:
        try:
            write_study(path, study, images)
        except Exception as exc:  # noqa: BLE001 - reported, never raised into the UI
            log.warning("key images not saved: %s: %s", path, describe(exc))

    def flush(self, timeout: float | None = 30.0) -> None:
        """Wait for pending saves (tests, quitting)."""
        for fut in list(self._pending):
            fut.result(timeout)

    def shutdown(self) -> None:
        """Finish the saves and any export or KOS still being written (quitting)."""
        self.runner.shutdown()
        self.flush()
        self._pool.shutdown(wait=True)

    # -- export ------------------------------------------------------------------------------------------
    def render_all(self, folder) -> tuple[list[tuple[Path, QImage]], list[KeyImage]]:
        """(path, image) for each key image whose series is shown, and the key images skipped (UI thread)."""
        jobs, skipped = [], []
        for i, key in enumerate(self.keys(), 1):
            view = self.view_for(key)
            if view is None:
                skipped.append(key)
                continue
            jobs.append((inside(Path(folder), png_name(i, key)), render_key_image(view, key)))
        return jobs, skipped

    def export_to(self, folder, on_done: Callable[[list], None] | None = None, progress_dialog=None):
        """Render here, write the PNGs on a worker; returns the Worker (None when nothing to write)."""
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            jobs, skipped = self.render_all(folder)
        except (OSError, ValueError) as exc:
            self.message(f"Key images not exported: {describe(exc)}", "error")
            return None
        if skipped:
            self.message(f"{len(skipped)} key image(s) skipped: their series is not shown in a view", "warning")
        if not jobs:
            self.message("No key images to export for the shown study", "warning")
            return None

        def close_dialog():
            if progress_dialog is not None:
                progress_dialog.close()

        def failed(why):
            close_dialog()
            self.message(f"Key images not exported: {why}", "error")

        def cancelled():
            close_dialog()
            self.message("Key image export cancelled (files already written are complete)", "warning")

        def finished(paths):
            close_dialog()
            self.last_export = list(paths)
            self.message(f"{len(paths)} key image(s) exported to {folder}", "info")
            self.exported.emit(list(paths))
            if on_done is not None:
                on_done(list(paths))

        def progress(done, total):
            if progress_dialog is not None:
                progress_dialog.setMaximum(total)
                progress_dialog.setValue(done)

        def stop():
            return progress_dialog is not None and progress_dialog.wasCanceled()

        return self.runner.start(lambda prog, should_stop: write_pngs(jobs, prog, should_stop), "key-images",
                                 should_stop=stop, on_finished=finished, on_progress=progress,
                                 on_failed=failed, on_cancelled=cancelled)

    def choose_and_export(self) -> None:
        if not self.keys():
            self.message("No key images in this study: press K on a slice to mark one", "warning")
            return
        folder = QFileDialog.getExistingDirectory(self, "Export key images to folder")
        if not folder:
            return
        dialog = QProgressDialog("Writing key images…", "Cancel", 0, len(self.keys()), self)
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        dialog.setMinimumDuration(300)
        self.export_to(folder, progress_dialog=dialog)


    # -- DICOM Key Object Selection ------------------------------------------------------------------------
    def source_files(self) -> dict[str, Path]:
        """SOP Instance UID -> file, for the series the views show (their slice plans)."""
        files: dict[str, Path] = {}
        for view in self.views() if self.plan_of is not None else []:
            try:
                plan = self.plan_of(view) if view.volume is not None else None
            except Exception:  # noqa: BLE001 - a view without a plan adds no files
                plan = None
            for frame in (plan.slots if plan is not None else []):
                if frame is not None:
                    files[frame.instance.sop_uid] = Path(frame.instance.path)
        return files

    def save_kos(self, path, on_done: Callable[[Path], None] | None = None):
        """Write the study's key images as a KOS on a worker; returns the Worker (None if refused here)."""
        keys, files = self.keys(), self.source_files()
        if not any(k.sop_uid for k in keys):
            self.message("No key image of this study is an acquired DICOM image: no KOS to write", "warning")
            return None

        def finished(written):
            self.message(f"Key images saved as DICOM KOS: {written}", "info")
            if on_done is not None:
                on_done(written)

        def failed(why):
            self.message(f"Key object document not written: {why}", "error")

        return self.runner.start(lambda _p, _s: write_key_object(keys, files, path), "key-object",
                                 on_finished=finished, on_failed=failed)

    def choose_and_save_kos(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save key images as DICOM KOS", "key-images.dcm",
                                              "DICOM files (*.dcm);;All files (*)")
        if path:
            self.save_kos(path)


# -- the main window's side ------------------------------------------------------------------------------
def active_view_of(window, panel: KeyImagesPanel):
    """The view the reader works in: the one last pressed on if it is on screen (an MPR pane, a
    mammography cell), else the window's active viewport if shown, else the first shown image."""
    shown = [v for v in window.shown_views() if v.volume is not None]
    last = panel.last_activated
    if last is not None and any(last is v for v in shown):
        return last
    if any(window.slice_view is v for v in shown):
        return window.slice_view
    return shown[0] if shown else None


def install(window) -> KeyImagesPanel:
    """Build the panel for a main window (``host.WindowHost`` plus ``measurement_store``): a dock on
    the right, hidden until shown; K works everywhere in the window. Menu entries are the caller's."""
    from PySide6.QtWidgets import QDockWidget

    store = getattr(window, "measurement_store", None)

    def plan_of(view):
        return store.plan_of(store.series_of(view)) if store is not None else None

    panel = KeyImagesPanel(lambda: None, window.all_views, message=window.show_message, plan_of=plan_of,
                           parent=window)
    panel.active_view = lambda: active_view_of(window, panel)
    dock = QDockWidget("Key images", window)
    dock.setObjectName("key-images-dock")
    dock.setWidget(panel)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    dock.hide()
    panel.dock = dock
    panel.mark_action.triggered.connect(lambda _checked=False: dock.show())
    window.addAction(panel.mark_action)  # K while the dock is hidden
    if hasattr(window, "image_shown"):
        window.image_shown.connect(panel.watch_views)  # new cells (a prior exam's) and the study shown
    panel.watch_views()
    return panel
