"""Opening and loading: scan a folder or file, list it, put its series on the viewports.

Everything here runs on the window's TaskBar (one foreground task, progress, Cancel) and writes
what is open into the Qt-free ``Workspace``; the window only wires it to the browser and menus.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog

from ..core.errors import describe
from ..core.mammo import is_mammo_study
from ..core.study import ScanResult, Series, Study
from . import settings as app_settings
from .mammo_layout import load_four_view
from .series_browser import EXAM_ROLE, KEY_ROLE
from .slice_view import SliceView, default_window
from .viewport_grid import MODES as GRID_MODES
from .workers import TaskRunner, Worker

if TYPE_CHECKING:
    from .host import WindowHost

OPEN_FILE_FILTER = ("DICOM and image files (*.dcm *.dicom *.dic *.ima *.nii *.nii.gz *.nrrd *.nhdr "
                    "*.mha *.mhd DICOMDIR);;All files (*)")


def _thumbnail_job(series_list: list[Series]):
    """Previews for the browser, one per series; a series that cannot be read just gets none."""
    def job(progress, should_stop) -> dict[str, Any]:
        from ..core.thumbnail import series_thumbnail

        out = {}
        for i, series in enumerate(series_list):
            if should_stop():
                break
            try:
                out[series.key] = series_thumbnail(series)
            except Exception as exc:  # noqa: BLE001 - loading the series reports it in full
                out[series.key] = f"no preview: {describe(exc)}"
            progress(i + 1, len(series_list))
        return out
    return job


def _demo_job(progress, should_stop) -> Path:
    from ..core.demo import ensure_demo_studies

    return ensure_demo_studies()


def volume_text(series: Series, volume) -> str:
    nz, ny, nx = volume.shape
    return f"{series.label()}: {nx}×{ny}×{nz}, spacing " + "×".join(f"{v:.3g}" for v in volume.spacing[::-1]) + " mm"


class StudyController(QObject):
    """Open (folder, file, recent, demo), scan, list, and load series or the 4-view hanging."""

    def __init__(self, window: WindowHost):
        super().__init__(window)
        self.window = window
        self.workspace = window.workspace
        self.thumbnail_runner = TaskRunner(self)  # previews load beside the main task, never cancel it
        self._thumbnail_task: Worker | None = None
        self.pending_fill: list[tuple[Series, SliceView]] = []  # series queued for empty viewports
        self.close_all_action = QAction("Close all studies", self)
        self.close_all_action.setToolTip("Empty the series list and the views (File ▸ Open adds to the list)")
        self.close_all_action.triggered.connect(lambda _checked=False: self.close_all())

    # -- opening ---------------------------------------------------------------------------
    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.window, "Open folder", self.workspace.last_dir)
        if folder:
            self.open_path(folder)

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Open file", self.workspace.last_dir, OPEN_FILE_FILTER)
        if path:
            self.open_path(path)

    def open_demo(self) -> None:
        """Generate (first run) and open the built-in demo studies."""
        self.window.tasks.start("Preparing the demo studies (the first run writes them, this takes a while)",
                                _demo_job, self.open_path)

    def open_path(self, path, should_stop=None) -> None:
        """Scan a folder or file in the background, list it, and show its first image series."""
        w = self.window
        try:
            p = Path(path).expanduser()
            exists = p.exists()
        except (OSError, TypeError, ValueError) as exc:
            w.show_message(f"{path}: cannot open ({describe(exc)})", "error")
            w.task_failed.emit(str(exc))
            return
        if not exists:
            msg = f"{p}: no such file or folder"
            w.show_message(msg, "error")
            w.task_failed.emit(msg)
            return
        self.workspace.last_dir = str(p if p.is_dir() else p.parent)
        w.stop_cine()
        self.add_recent(p)

        def job(progress, stop):
            from ..core.io import scan

            return p, scan(p, progress=progress, should_stop=stop)

        w.tasks.start(f"Scanning {p.name or p}", job, self._scan_done, should_stop)

    def _scan_done(self, payload) -> None:
        """List the scan beside what is open (File ▸ Open adds; the same folder again replaces its own
        listing) and show the newly opened study's first image series."""
        w = self.window
        path, result = payload
        merged = self.workspace.add_scan(path, result)
        w.browser.set_result(merged)
        new_keys = {s.key for s in result.series}
        images = [s for s in w.browser.image_series() if s.key in new_keys]
        studies = len(result.studies)
        summary = f"{path}: {len(images)} image series in {studies} stud{'y' if studies == 1 else 'ies'}"
        others = len(merged.studies) - studies
        if others > 0:
            summary += f" (added to the {others} stud{'y' if others == 1 else 'ies'} already listed)"
        level = "info"
        if result.problems:
            level = "warning"
            summary += f"; {len(result.problems)} file(s) skipped (see Problems) — {result.problems[0]}"
        self.show_scan_problems(result)
        w.scan_finished.emit(result)
        if not images:
            why = str(result.problems[0]) if result.problems else "no DICOM or image files found"
            msg = f"{path}: nothing to show — {why}"
            if not w.browser.image_series():  # nothing else is open either
                self.clear_shown()
            w.show_message(msg, "error")
            w.task_failed.emit(msg)
            return
        w.show_message(summary, level)
        self.clear_viewports()
        self.workspace.shown_mammo = None
        self.start_thumbnails(w.browser.image_series())
        first = w.browser.select_first_image_series(images)  # -> load_series
        if first is not None and self.workspace.layout_mode in GRID_MODES and self.workspace.layout_mode != "1x1":
            self.pending_fill = self.fill_plan(exclude=first)

    def clear_shown(self) -> None:
        """Empty every view and the presets: nothing is shown."""
        w = self.window
        self.clear_viewports()
        w.mpr_layout.clear()
        w.views.setCurrentWidget(w.grid)
        w.layout_mpr_action.setEnabled(False)
        self.workspace.shown_mammo = None
        w.presets.rebuild()

    def close_all(self) -> bool:
        """File ▸ Close all studies: empty the browser and the views, a fresh start. Unsaved segmentation
        edits are asked about first, as on closing the window; False when the user cancelled."""
        w = self.window
        if w.busy or not w.editor.confirm_close():
            if w.busy:
                w.show_message("Wait for the current task to finish (or Cancel it) before closing the studies",
                               "warning")
            return False
        w.stop_cine()
        self.pending_fill = []
        if self._thumbnail_task is not None:
            self._thumbnail_task.cancel()
        self.clear_shown()
        self.workspace.close_all()
        w.browser.set_result(ScanResult())
        self.show_scan_problems(ScanResult())
        self.set_title()
        w.show_message("All studies closed")
        return True

    def show_scan_problems(self, result: ScanResult) -> None:
        label = self.window.problems_label
        if not result.problems:
            label.hide()
            label.clear()
            return
        n = len(result.problems)
        label.setText(f"⚠ {n} file{'s' if n != 1 else ''} skipped")
        shown = [str(p) for p in result.problems[:30]]
        if n > 30:
            shown.append(f"… and {n - 30} more (see Problems in the series list)")
        label.setToolTip("\n".join(shown))
        label.show()

    def refresh_scan(self, path, result: ScanResult, volumes: dict) -> None:
        """A newer scan of the open folder while a retrieve still lands files in it: list ``result`` and
        put each re-read volume ({series key: (Series, Volume)}) on the viewports showing that series, at
        the same slice position and window, without clearing the views first (remote_panel.EarlyDisplay)."""
        w, cells = self.window, self.workspace.cell_series
        w.browser.set_result(self.workspace.add_scan(path, result))
        self.show_scan_problems(result)
        for view, shown in list(cells.items()):
            new = volumes.get(shown.key)
            if new is None or view.volume is None:
                cells[view] = next((s for s in result.series if s.key == shown.key), shown)
                continue
            series, volume = new
            old, k, window = view.volume, view.slice_index, view.window
            at = old.index_to_world((k, 0, 0)) if view.plane is None else None
            view.set_volume(volume, window)
            if at is not None:
                view.set_slice(int(min(max(round(float(volume.world_to_index(at)[0])), 0), volume.shape[0] - 1)))
            cells[view] = series
        w.browser.mark_current(w.shown_series)
        shown = w.shown_series
        if shown is not None and w.slice_view.volume is not None:  # the size line follows the growing stack
            w.show_message(volume_text(shown, w.slice_view.volume))
        if self.workspace.layout_mode == "mpr":
            w.show_volume_layout()
        self.start_thumbnails(w.browser.image_series())
        w.apply_overlay_visibility()
        w.image_shown.emit()

    # -- loading -----------------------------------------------------------------------------
    def study_item_chosen(self, item) -> None:
        """A study row of the tree was chosen: a mammography study opens on the 4-view hanging."""
        if item is None or item.data(0, KEY_ROLE) or item.childCount() == 0 or item.data(0, EXAM_ROLE) is not None:
            return  # a series row (handled by series_selected), a grouped exam (exam_selected) or nothing
        study = self.workspace.study_with_key(item.child(0).data(0, KEY_ROLE))
        if study is not None and is_mammo_study(study):
            self.load_mammo(study)

    def load_mammo(self, study: Study, should_stop=None) -> None:
        """Decode the four standard views of a study in the background and hang them."""
        w, shown = self.window, self.workspace.shown_mammo
        if shown is not None and shown.uid == study.uid and not w.busy:
            w.views.setCurrentWidget(w.mammo_layout)
            w.presets.rebuild()
            return

        def job(progress, stop):
            return study, load_four_view(study, progress=progress, should_stop=stop)

        w.tasks.start(f"Loading 4-view mammography {study.description or study.uid}".strip(), job,
                      self._mammo_loaded, should_stop)

    def _mammo_loaded(self, payload) -> None:
        w = self.window
        study, views = payload
        w.stop_cine()
        w.mammo_layout.set_views(views, study)
        w.views.setCurrentWidget(w.mammo_layout)
        self.workspace.shown_mammo = study
        w.layout_mpr_action.setEnabled(False)
        shown = [name for name, v in views.items() if v is not None]
        info = next(v[1].info for v in views.values() if v is not None)
        self.set_title(info.patient_name.replace("^", " ").strip(), "4-view mammography")
        missing = [name for name, v in views.items() if v is None]
        text = f"4-view mammography: {' '.join(shown)}"
        w.show_message(text + (f" — not in this study: {' '.join(missing)}" if missing else ""),
                       "warning" if missing else "info")
        w.presets.rebuild()
        w.apply_overlay_visibility()
        w.image_shown.emit()

    def load_series(self, series: Series, should_stop=None, viewport: SliceView | None = None) -> None:
        """Decode a series in the background and show it in ``viewport`` (default: the active one).

        An MG series of a 4-view study opens the mammography hanging instead.
        """
        w = self.window
        study = self.workspace.study_of(series)
        if series.modality == "MG" and study is not None and is_mammo_study(study):
            self.pending_fill = []
            self.load_mammo(study, should_stop)
            return
        target = viewport or w.grid.active
        shown = self.workspace.series_of(target)
        if (shown is not None and series.key == shown.key and not w.busy
                and w.views.currentWidget() is not w.mammo_layout):
            return
        w.stop_cine()

        def job(progress, stop):
            from ..core.io import load_series

            volume = load_series(series, progress=progress, should_stop=stop)
            return series, volume, default_window(volume), target

        w.tasks.start(f"Loading {series.label()}", job, self._series_loaded, should_stop)

    def _series_loaded(self, payload) -> None:
        w = self.window
        series, volume, window, target = payload
        w.stop_cine()
        w.grid.set_active(target)
        target.set_volume(volume, window)
        self.workspace.cell_series[target] = series
        self.workspace.shown_mammo = None
        w.show_volume_layout()
        self.set_title(volume.info.patient_name.replace("^", " ").strip(), series.label())
        text = volume_text(series, volume)
        if volume.problems:
            w.show_message(f"{text} — {len(volume.problems)} problem(s): {volume.problems[0]}"
                           + ("\n" + "\n".join(volume.problems[1:]) if len(volume.problems) > 1 else ""), "warning")
        else:
            found = self.label_files_beside(series)
            w.show_message(text + (f" — {len(found)} segmentation file(s) beside it: open one from the Segment "
                                   "editor or File ▸ Open labels…" if found else ""))
        w.editor.offer_label_files(series, self.label_files_beside(series))
        w.presets.rebuild()
        w.apply_overlay_visibility()
        w.image_shown.emit()
        self.load_next_pending()

    def label_files_beside(self, series: Series) -> list[Path]:
        """SEG / RTSTRUCT files of the open scan that reference ``series`` (headers read once per scan)."""
        beside, scan = self.workspace.beside, self.workspace.scan_result
        if series.key not in beside:
            found: list[Path] = []
            if scan is not None and series.kind == "dicom":
                from ..core.io.label_files import label_files_for

                try:
                    found = label_files_for(series, scan.series)
                except Exception:  # noqa: BLE001 - an offer, never a reason to fail showing the image
                    found = []
            beside[series.key] = found
        return beside[series.key]

    def set_title(self, *parts: str) -> None:
        """What is shown; Qt adds the application's display name ("Lightbox") on X11 and Windows."""
        self.window.setWindowTitle(" — ".join(p for p in parts if p) or "Lightbox")

    # -- viewports ---------------------------------------------------------------------------
    def clear_viewports(self) -> None:
        grid = self.window.grid
        self.pending_fill = []
        self.workspace.cell_series.clear()
        for view in grid.cells:
            view.clear()
        grid.set_active(grid.cells[0])

    def fill_plan(self, exclude: Series | None = None) -> list[tuple[Series, SliceView]]:
        """Next series of the open scan, not on screen yet, for each empty visible viewport."""
        w = self.window
        candidates = self.workspace.unshown(w.browser.image_series(), exclude)
        empty = [v for v in w.grid.visible_cells() if v.volume is None
                 and (exclude is None or v is not w.grid.active)]
        return list(zip(candidates, empty))

    def fill_empty_viewports(self) -> None:
        if self.workspace.scan_result is None or self.window.busy:
            return
        self.pending_fill = self.fill_plan()
        self.load_next_pending()

    def load_next_pending(self) -> None:
        while self.pending_fill:
            series, view = self.pending_fill.pop(0)
            if view.volume is None and view in self.window.grid.visible_cells():
                self.window.load_series(series, viewport=view)
                return

    def series_dropped(self, view: SliceView, key: str) -> None:
        series = self.window.browser.series_for_key(key)
        if series is None:
            self.window.show_message(f"That series is no longer in the list ({key})", "warning")
            return
        self.pending_fill = []
        self.window.load_series(series, viewport=view)

    def active_viewport_changed(self, view: SliceView) -> None:
        """Presets, the window title and the MPR action follow the active viewport."""
        w = self.window
        if w.views.currentWidget() is not w.grid:
            return
        w.stop_cine()
        w.layout_mpr_action.setEnabled(w.mpr_possible())
        w.presets.rebuild()
        series = self.workspace.series_of(view)
        w.browser.mark_current(series)
        if series is not None and view.volume is not None:
            self.set_title(view.volume.info.patient_name.replace("^", " ").strip(), series.label())

    # -- thumbnails ---------------------------------------------------------------------------
    def start_thumbnails(self, series_list: list[Series]) -> None:
        if self._thumbnail_task is not None:
            self._thumbnail_task.cancel()  # an older scan's previews
        task: Worker | None = None

        def over(*_args) -> None:
            if self._thumbnail_task is task:
                self._thumbnail_task = None

        def done(thumbs: dict) -> None:
            over()
            if self.window.tasks.closing:
                return
            for key, gray in thumbs.items():  # keys of an older scan are simply not found
                if isinstance(gray, str):
                    self.window.browser.set_thumbnail_problem(key, gray)
                else:
                    self.window.browser.set_thumbnail(key, gray)
            self.window.thumbnails_ready.emit()

        task = self.thumbnail_runner.start(_thumbnail_job(list(series_list)), "thumbnails",
                                           on_finished=done, on_failed=over, on_cancelled=over)
        self._thumbnail_task = task

    # -- recent studies ----------------------------------------------------------------------------
    def add_recent(self, path) -> None:
        app_settings.remember_recent(path)
        self.rebuild_recent_menu()

    def clear_recent(self) -> None:
        app_settings.save_recent([])
        self.rebuild_recent_menu()

    def open_recent(self, path: str) -> None:
        if not Path(path).exists():
            app_settings.save_recent([q for q in app_settings.recent_paths() if q != path])
            self.rebuild_recent_menu()
            msg = f"{path}: no longer there — removed from Open Recent"
            self.window.show_message(msg, "error")
            self.window.task_failed.emit(msg)
            return
        self.window.open_path(path)

    def rebuild_recent_menu(self) -> None:
        menu = self.window.recent_menu
        menu.clear()
        paths = app_settings.recent_paths()
        for i, path in enumerate(paths):
            missing = not Path(path).exists()
            act = menu.addAction(f"&{i + 1}  {path}" + ("   (missing)" if missing else ""))
            act.setData(path)
            act.setEnabled(not missing)
            if missing:
                act.setToolTip("This folder or file is no longer there")
            act.triggered.connect(lambda _checked=False, p=path: self.open_recent(p))
        if not paths:
            menu.addAction("(none)").setEnabled(False)
        menu.addSeparator()
        clear = menu.addAction("Clear list")
        clear.setEnabled(bool(paths))
        clear.triggered.connect(self.clear_recent)

    def shutdown(self) -> None:
        self.thumbnail_runner.shutdown()
