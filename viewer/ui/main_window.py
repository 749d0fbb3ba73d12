"""The main window: series browser on the left, slice view in the middle.

All reading happens on worker threads (workers.py); this module only reacts
to their results. Errors end up as a message in the status bar, never as a
crash or a blocking dialog.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFileDialog,
    QMainWindow,
    QMenu,
    QMessageBox,
    QSpinBox,
    QStackedWidget,
    QToolBar,
    QWidget,
)

from ..core.errors import describe
from ..core.mammo import is_mammo_study
from ..core.study import ScanResult, Series, Study
from ..core.windowing import CT_PRESET_KEYS, Preset, presets_for
from .analysis_controller import AnalysisController
from .editor_controller import EditorController
from .mammo_layout import MammoLayout, load_four_view
from .mpr_layout import MprLayout
from .overlays import LabelLayer, ProbabilityLayer
from .settings import LINK_SCROLL_KEY, MAX_RECENT, RECENT_KEY, settings  # noqa: F401 - re-exported
from .series_browser import EXAM_ROLE, KEY_ROLE, SeriesBrowser
from .slice_view import SliceView, default_window
from .viewport_grid import MODES as GRID_MODES
from .viewport_grid import ViewportGrid
from .tasks import TaskBar
from .workers import TaskRunner, Worker

DISCLAIMER = "Lightbox — research software, not a medical device. Not for diagnostic use."
OPEN_FILE_FILTER = ("DICOM and image files (*.dcm *.dicom *.dic *.ima *.nii *.nii.gz *.nrrd *.nhdr "
                    "*.mha *.mhd DICOMDIR);;All files (*)")


def preset_label(p: Preset) -> str:
    def f(v: float) -> str:
        return f"{v:.0f}" if abs(v - round(v)) < 1e-6 else f"{v:.4g}"

    return f"{p.name}  (W {f(p.width)} / L {f(p.center)})"


def app_version() -> str:
    try:
        from importlib.metadata import version

        return version("lightbox")
    except Exception:  # noqa: BLE001 - not installed as a package (e.g. run from a source tree)
        return "unknown"


def about_text() -> str:
    return f"Lightbox {app_version()}\n\n{DISCLAIMER}"


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


class MainWindow(QMainWindow):
    image_shown = Signal()  # a volume is on screen (after each successful load)
    scan_finished = Signal(object)  # ScanResult
    task_failed = Signal(str)  # also: nothing to show after a scan
    task_cancelled = Signal()
    thumbnails_ready = Signal()  # the browser shows previews for the last scan

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Lightbox")
        self.setAcceptDrops(True)
        self.thumbnail_runner = TaskRunner(self)  # previews load beside the main task, never cancel it
        self._thumbnail_task: Worker | None = None
        self._closing = False
        self._last_dir = str(Path.home())
        self.source: Path | None = None
        self.scan_result: ScanResult | None = None
        self._beside: dict[str, list[Path]] = {}  # series key -> SEG/RTSTRUCT files of the scan referencing it
        self._cell_series: dict[SliceView, Series] = {}  # what each grid viewport shows
        self._pending_fill: list[tuple[Series, SliceView]] = []  # series queued for empty viewports
        self.shown_mammo: Study | None = None  # the study on the 4-view hanging, when it is shown
        self.about_box: QMessageBox | None = None

        self.grid = ViewportGrid(self)  # 1x1 / 1x2 / 2x2 viewports; the active one is `slice_view`
        self.grid.active_changed.connect(self._active_viewport_changed)
        self.grid.series_dropped.connect(self._series_dropped)
        self.mammo_layout = MammoLayout(self)
        self.mpr_layout = MprLayout(self)
        self.layout_mode = "1x1"  # chosen in the Layout menu: '1x1', '1x2', '2x2' or 'mpr' (kept across loads)
        self.views = QStackedWidget(self)  # the viewport grid, the MPR layout or the mammography hanging
        self.views.addWidget(self.grid)
        self.views.addWidget(self.mammo_layout)
        self.views.addWidget(self.mpr_layout)
        self.setCentralWidget(self.views)

        self.browser = SeriesBrowser(self)
        self.browser.series_selected.connect(self.load_series)
        self.browser.exam_selected.connect(self.load_mammo)
        self.browser.currentItemChanged.connect(lambda item, _prev: self._study_item_chosen(item))
        self.browser.itemClicked.connect(lambda item, _col: self._study_item_chosen(item))
        self.browser_dock = QDockWidget("Series", self)
        self.browser_dock.setObjectName("series-dock")
        self.browser_dock.setWidget(self.browser)
        self.browser_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                      | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.browser_dock)
        self.resizeDocks([self.browser_dock], [340], Qt.Orientation.Horizontal)

        self.tasks = TaskBar(self, self.statusBar())  # the one foreground task: message, progress, Cancel
        self.tasks.failed.connect(self.task_failed)
        self.tasks.cancelled.connect(self.task_cancelled)
        self.runner, self._start = self.tasks.runner, self.tasks.start
        self.message, self.progress = self.tasks.message, self.tasks.progress
        self.cancel_button, self.problems_label = self.tasks.cancel_button, self.tasks.problems_label
        self.show_message, self.cancel_task = self.tasks.show_message, self.tasks.cancel

        self.preset_actions: list[QAction] = []  # the Window menu's entries for what is shown now
        self.cine_timer = QTimer(self)
        self.cine_timer.timeout.connect(self._cine_step)
        self._build_menus()
        self.analysis = AnalysisController(self)  # Analyze (A), AI results dock, AI overlays
        ai_menu = QMenu("&AI", self)
        self.menuBar().insertMenu(self.help_menu.menuAction(), ai_menu)
        ai_menu.addAction(self.analysis.action)
        ai_menu.addAction(self.analysis.dock.toggleViewAction())
        ai_menu.addAction(self.analysis.models_action)
        ai_menu.addAction(self.analysis.import_action)
        ai_menu.addAction(self.analysis.train_action)
        ai_menu.addAction(self.analysis.clear_cache_action)
        from .dicom_results import DicomResults

        self.dicom_results = DicomResults(self)  # Parametric Maps / AI report SRs of the opened folder, shown
        ai_menu.addAction(self.dicom_results.report_action)
        self.ai_toolbar = QToolBar("AI", self)
        self.ai_toolbar.setObjectName("ai-toolbar")
        self.ai_toolbar.addAction(self.analysis.action)
        self.addToolBar(self.ai_toolbar)
        self.image_shown.connect(self.analysis.refresh_overlays)
        self.editor = EditorController(self)  # segment editor: tools B/E/F/L, [ ], 1-9, ctrl+Z/Y, autosave
        self.segment_toolbar = QToolBar("Segment", self)
        self.segment_toolbar.setObjectName("segment-toolbar")
        edit_menu = QMenu("&Segment", self)
        self.menuBar().insertMenu(ai_menu.menuAction(), edit_menu)
        for act in self.editor.tool_actions.values():
            self.segment_toolbar.addAction(act)
            edit_menu.addAction(act)
        edit_menu.addSeparator()
        # File ▸ Open labels…: segmentations other tools made (SEG, RTSTRUCT, NIfTI/NRRD), to edit
        self.file_menu.insertAction(self.recent_menu.menuAction(), self.editor.open_labels_action)
        for act in (self.editor.undo_action, self.editor.redo_action, self.editor.save_action,
                    self.editor.open_labels_action, self.editor.load_action, self.editor.export_action,
                    self.editor.dock.toggleViewAction()):
            edit_menu.addAction(act)
        self.addToolBar(self.segment_toolbar)
        self.tabifyDockWidget(self.analysis.dock, self.editor.dock)  # one column on the right, two tabs
        self._build_remote(ai_menu)
        self._rebuild_presets()
        self._rebuild_recent_menu()

    # -- PACS (viewer.ui.remote_panel, send_results) ------------------------------------
    def _build_remote(self, ai_menu: QMenu) -> None:
        """The Remote dock (search/retrieve, left, beside Series), File ▸ Remote… and AI ▸ Send results to PACS…."""
        from .remote_panel import RemotePanel

        self.remote = RemotePanel(self)
        self.remote_dock = QDockWidget("Remote", self)
        self.remote_dock.setObjectName("remote-dock")
        self.remote_dock.setWidget(self.remote)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.remote_dock)
        self.tabifyDockWidget(self.browser_dock, self.remote_dock)
        self.remote_dock.hide()
        self.browser_dock.raise_()
        self.remote_action = QAction("&Remote (PACS)…", self)
        self.remote_action.setShortcut(QKeySequence("Ctrl+Shift+R"))
        self.remote_action.setToolTip("Search a PACS and retrieve studies (Remote panel)")
        self.remote_action.triggered.connect(self.show_remote)
        self.file_menu.insertAction(self.recent_menu.menuAction(), self.remote_action)
        self.send_results_action = QAction("Send results to &PACS…", self)
        self.send_results_action.setToolTip("Store the shown AI results, with your segmentation edits, on a "
                                            "PACS as DICOM SEG, Parametric Maps and SR")
        self.send_results_action.triggered.connect(self.show_send_results)
        ai_menu.addAction(self.send_results_action)
        self.send_dialog = None

    def show_remote(self) -> None:
        self.remote_dock.show()
        self.remote_dock.raise_()
        if self.remote_dock.width() < 420:  # room for the date, modality and count columns
            self.resizeDocks([self.remote_dock], [min(480, max(420, self.width() // 3))], Qt.Orientation.Horizontal)

    def show_send_results(self):
        from .send_results import SendResultsDialog

        if self.send_dialog is None:
            self.send_dialog = SendResultsDialog(self, self.remote.store)
        self.send_dialog.reload()
        self.send_dialog.show()
        self.send_dialog.raise_()
        return self.send_dialog

    @staticmethod
    def _volume_text(series: Series, volume) -> str:
        nz, ny, nx = volume.shape
        return f"{series.label()}: {nx}×{ny}×{nz}, spacing " + "×".join(f"{v:.3g}" for v in volume.spacing[::-1]) + " mm"

    def refresh_scan(self, path, result: ScanResult, volumes: dict) -> None:
        """A newer scan of the open folder while a retrieve still lands files in it: list ``result`` and
        put each re-read volume ({series key: (Series, Volume)}) on the viewports showing that series, at
        the same slice position and window, without clearing the views first (remote_panel.EarlyDisplay)."""
        self.source, self.scan_result, self._beside = Path(path), result, {}
        self.browser.set_result(result)
        self._show_scan_problems(result)
        for view, shown in list(self._cell_series.items()):
            new = volumes.get(shown.key)
            if new is None or view.volume is None:
                self._cell_series[view] = next((s for s in result.series if s.key == shown.key), shown)
                continue
            series, volume = new
            old, k, window = view.volume, view.slice_index, view.window
            at = old.index_to_world((k, 0, 0)) if view.plane is None else None
            view.set_volume(volume, window)
            if at is not None:
                view.set_slice(int(min(max(round(float(volume.world_to_index(at)[0])), 0), volume.shape[0] - 1)))
            self._cell_series[view] = series
        self.browser.mark_current(self.shown_series)
        shown = self.shown_series
        if shown is not None and self.slice_view.volume is not None:  # the size line follows the growing stack
            self.show_message(self._volume_text(shown, self.slice_view.volume))
        if self.layout_mode == "mpr":
            self._show_volume_layout()
        self._start_thumbnails(self.browser.image_series())
        self._apply_overlay_visibility()
        self.image_shown.emit()

    # -- menus ------------------------------------------------------------------------
    def _build_menus(self) -> None:
        file_menu = self.file_menu = self.menuBar().addMenu("&File")
        self.open_folder_action = QAction("Open &Folder…", self)
        self.open_folder_action.setShortcut(QKeySequence("Ctrl+O"))
        self.open_folder_action.triggered.connect(self.choose_folder)
        self.open_file_action = QAction("Open F&ile…", self)
        self.open_file_action.setShortcut(QKeySequence("Ctrl+Shift+O"))
        self.open_file_action.triggered.connect(self.choose_file)
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        self.quit_action.triggered.connect(self.close)
        file_menu.addAction(self.open_folder_action)
        file_menu.addAction(self.open_file_action)
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._rebuild_recent_menu)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)

        layout_menu = self.menuBar().addMenu("&Layout")
        group = QActionGroup(self)
        self.layout_1x1_action = QAction("1×1", self)
        self.layout_1x1_action.setShortcut(QKeySequence("Ctrl+1"))  # digits alone choose the active label
        self.layout_1x1_action.setToolTip("One view of the series as acquired (Ctrl+1)")
        self.layout_1x2_action = QAction("1×2", self)
        self.layout_1x2_action.setShortcut(QKeySequence("Ctrl+2"))
        self.layout_1x2_action.setToolTip("Two viewports side by side, each with its own series (Ctrl+2)")
        self.layout_2x2_action = QAction("2×2", self)
        self.layout_2x2_action.setShortcut(QKeySequence("Ctrl+3"))
        self.layout_2x2_action.setToolTip("Four viewports, each with its own series (Ctrl+3)")
        self.layout_mpr_action = QAction("MPR", self)
        self.layout_mpr_action.setShortcut(QKeySequence("M"))
        self.layout_mpr_action.setToolTip("Axial, coronal and sagittal views with a shared crosshair (M)")
        self.layout_toolbar = QToolBar("Layout", self)
        self.layout_toolbar.setObjectName("layout-toolbar")
        self.layout_actions = {"1x1": self.layout_1x1_action, "1x2": self.layout_1x2_action,
                               "2x2": self.layout_2x2_action, "mpr": self.layout_mpr_action}
        for mode, act in self.layout_actions.items():
            act.setCheckable(True)
            act.triggered.connect(lambda _checked=False, m=mode: self.set_layout(m))
            group.addAction(act)
            layout_menu.addAction(act)
            self.layout_toolbar.addAction(act)
        self.layout_1x1_action.setChecked(True)
        self.layout_mpr_action.setEnabled(False)
        self.addToolBar(self.layout_toolbar)

        # Window/level presets: rebuilt for each volume shown (presets_for), F1..F7 for CT.
        self.window_menu = self.menuBar().addMenu("&Window")
        self.preset_toolbar = QToolBar("Window", self)
        self.preset_toolbar.setObjectName("window-toolbar")
        self.preset_combo = QComboBox(self)
        self.preset_combo.setToolTip("Window/level preset (F1…F7)")
        self.preset_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.preset_combo.activated.connect(self._preset_combo_chosen)
        self.preset_toolbar.addWidget(self.preset_combo)
        self.addToolBar(self.preset_toolbar)

        # Cine
        self.cine_toolbar = QToolBar("Cine", self)
        self.cine_toolbar.setObjectName("cine-toolbar")
        self.play_action = QAction("▶ Play", self)
        self.play_action.setCheckable(True)
        self.play_action.setShortcuts([QKeySequence("P"), QKeySequence("Space")])
        self.play_action.setToolTip("Cine: step through the slices in a loop (P or Space)")
        self.play_action.toggled.connect(self.set_playing)
        self.fps_spin = QSpinBox(self)
        self.fps_spin.setRange(1, 60)
        self.fps_spin.setValue(10)
        self.fps_spin.setSuffix(" fps")
        self.fps_spin.setToolTip("Cine speed, frames per second")
        self.fps_spin.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.fps_spin.valueChanged.connect(self._fps_changed)
        self.cine_toolbar.addAction(self.play_action)
        self.cine_toolbar.addWidget(self.fps_spin)
        self.addToolBar(self.cine_toolbar)
        self.addAction(self.play_action)

        # Measurement tools (viewer.ui.measure_tools): one exclusive choice for every view.
        tools_menu = self.menuBar().addMenu("&Tools")
        self.tools_toolbar = QToolBar("Tools", self)
        self.tools_toolbar.setObjectName("tools-toolbar")
        self.tool_group = QActionGroup(self)
        self.tool_group.setExclusive(True)
        self.tool_actions: dict[str, QAction] = {}
        from .measure_tools import TOOLS

        for name, text, tip in [("navigate", "Navigate", "Left-drag pans (Esc)")] + [
                (n, t.title, t.tip) for n, t in TOOLS.items()]:
            act = QAction(text, self)
            act.setCheckable(True)
            act.setToolTip(tip)
            act.triggered.connect(lambda _checked=False, n=name: self.set_tool(n))
            self.tool_group.addAction(act)
            tools_menu.addAction(act)
            self.tools_toolbar.addAction(act)
            self.tool_actions[name] = act
        self.tool_actions["navigate"].setChecked(True)
        tools_menu.addSeparator()
        self.clear_measurements_action = QAction("&Clear measurements", self)
        self.clear_measurements_action.triggered.connect(self.clear_measurements)
        tools_menu.addAction(self.clear_measurements_action)
        self.tools_toolbar.addAction(self.clear_measurements_action)
        from .measurement_store import MeasurementStore

        self.measurement_store = MeasurementStore(self)  # rulers/ROIs autosaved as a DICOM SR per study, restored
        tools_menu.addAction(self.measurement_store.save_action)
        file_menu.insertAction(self.recent_menu.menuAction(), self.measurement_store.save_action)
        self.addToolBar(self.tools_toolbar)
        for view in self.all_views():
            view.tool_changed.connect(self._view_tool_changed)

        view_menu = self.menuBar().addMenu("&View")
        self.overlay_action = QAction("Show &overlay text", self)
        self.overlay_action.setCheckable(True)
        self.overlay_action.setChecked(True)
        self.overlay_action.setShortcut(QKeySequence("T"))
        self.overlay_action.toggled.connect(self.set_overlay_text_visible)
        view_menu.addAction(self.overlay_action)
        self.heatmap_action = QAction("Show &heatmaps", self)
        self.heatmap_action.setShortcut(QKeySequence("H"))
        self.heatmap_action.setToolTip("Show or hide the probability heatmaps on every view (H)")
        self.segmentation_action = QAction("Show &segmentation", self)
        self.segmentation_action.setShortcut(QKeySequence("S"))
        self.segmentation_action.setToolTip("Show or hide the segmentation label maps on every view (S)")
        for act in (self.heatmap_action, self.segmentation_action):
            act.setCheckable(True)
            act.setChecked(True)
            act.toggled.connect(lambda _on: self.apply_layer_visibility())
            view_menu.addAction(act)
        view_menu.addSeparator()
        view_menu.addAction(self.play_action)
        view_menu.addSeparator()
        self.link_scroll_action = QAction("&Link scroll", self)
        self.link_scroll_action.setCheckable(True)
        self.link_scroll_action.setToolTip("Scroll the 1×2 / 2×2 viewports of one frame of reference together, "
                                           "slice by slice at the same patient position")
        self.link_scroll_action.setChecked(settings().value(LINK_SCROLL_KEY, True, type=bool))
        self.grid.set_link_scroll(self.link_scroll_action.isChecked())
        self.link_scroll_action.toggled.connect(self.set_link_scroll)
        view_menu.addAction(self.link_scroll_action)
        self.layout_toolbar.addSeparator()
        self.layout_toolbar.addAction(self.link_scroll_action)

        help_menu = self.help_menu = self.menuBar().addMenu("&Help")
        self.about_action = QAction("&About Lightbox", self)
        self.about_action.triggered.connect(self.show_about)
        help_menu.addAction(self.about_action)

    # -- measurement tools ----------------------------------------------------------------
    @property
    def tool_name(self) -> str:
        actions = {**self.tool_actions, **(self.editor.tool_actions if hasattr(self, "editor") else {})}
        return next((n for n, a in actions.items() if a.isChecked()), "navigate")

    def set_tool(self, name: str) -> None:
        """'navigate', a measurement tool ('ruler', 'rect', 'ellipse') or a segment-editor tool
        ('brush', 'erase', 'threshold', 'fill', 'lasso') on every view."""
        from .edit_tools import EDIT_TOOLS

        (self.editor.tool_actions if name in EDIT_TOOLS else self.tool_actions)[name].setChecked(True)
        for view in self.all_views():
            if view.tool_name != name:
                view.set_tool(EDIT_TOOLS[name](self.editor.session) if name in EDIT_TOOLS else name)
        self.editor.tool_changed(name)

    def _view_tool_changed(self, name: str) -> None:
        if name == "navigate" and self.tool_name != "navigate":  # Escape in one view: back to pan everywhere
            self.set_tool("navigate")

    def clear_measurements(self) -> None:
        for view in self.all_views():
            view.clear_measurements()

    # -- layouts --------------------------------------------------------------------------
    def set_layout(self, mode: str) -> None:
        """'1x1', '1x2', '2x2' or 'mpr'; the choice stays for the next series loaded (MPR needs a 3D volume).

        Switching to 1x2 / 2x2 fills empty viewports with the next series of the open study.
        """
        if mode not in self.layout_actions:
            raise ValueError(f"unknown layout {mode!r}")
        self.layout_mode = mode
        self.layout_actions[mode].setChecked(True)
        if mode in GRID_MODES:
            self.grid.set_mode(mode)
        if self.shown_mammo is None:
            self._show_volume_layout()
            if mode in GRID_MODES:
                self._fill_empty_viewports()
        self._apply_overlay_visibility()
        self.analysis.refresh_overlays()  # the MPR planes show the AI maps of their volume too
        self.editor.session.show_layers()  # ... and the segmentation being edited

    def _mpr_possible(self) -> bool:
        vol = self.slice_view.volume
        return vol is not None and self.shown_mammo is None and min(vol.shape) > 1

    def _show_volume_layout(self) -> None:
        """Show the loaded volume in the chosen layout."""
        vol = self.slice_view.volume
        self.layout_mpr_action.setEnabled(self._mpr_possible())
        if self.layout_mode == "mpr" and self._mpr_possible():
            if self.mpr_layout.volume is not vol:
                self.mpr_layout.set_volume(vol, self.slice_view.window)
            self.views.setCurrentWidget(self.mpr_layout)
        else:
            if self.mpr_layout.volume is not None and self.mpr_layout.volume is not vol:
                self.mpr_layout.clear()  # do not keep a second volume alive
            self.views.setCurrentWidget(self.grid)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open folder", self._last_dir)
        if folder:
            self.open_path(folder)

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open file", self._last_dir, OPEN_FILE_FILTER)
        if path:
            self.open_path(path)

    def show_about(self) -> QMessageBox:
        """Non-blocking About box (kept in ``about_box``)."""
        box = QMessageBox(QMessageBox.Icon.Information, "About Lightbox", about_text(),
                          QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _=0: setattr(self, "about_box", None))
        self.about_box = box
        box.open()
        return box

    @property
    def busy(self) -> bool:
        return self.tasks.busy

    # -- opening ---------------------------------------------------------------------------
    def open_demo(self) -> None:
        """Generate (first run) and open the built-in demo studies."""
        self._start("Preparing the demo studies (the first run writes them, this takes a while)",
                    _demo_job, self.open_path)

    def open_path(self, path, should_stop=None) -> None:
        """Scan a folder or file in the background, list it, and show its first image series."""
        try:
            p = Path(path).expanduser()
            exists = p.exists()
        except (OSError, TypeError, ValueError) as exc:
            self.show_message(f"{path}: cannot open ({describe(exc)})", "error")
            self.task_failed.emit(str(exc))
            return
        if not exists:
            msg = f"{p}: no such file or folder"
            self.show_message(msg, "error")
            self.task_failed.emit(msg)
            return
        self._last_dir = str(p if p.is_dir() else p.parent)
        self.stop_cine()
        self.add_recent(p)

        def job(progress, stop):
            from ..core.io import scan

            return p, scan(p, progress=progress, should_stop=stop)

        self._start(f"Scanning {p.name or p}", job, self._scan_done, should_stop)

    def _scan_done(self, payload) -> None:
        path, result = payload
        self.source = path
        self.scan_result = result
        self._beside = {}
        self.browser.set_result(result)
        images = self.browser.image_series()
        studies = len(result.studies)
        summary = f"{path}: {len(images)} image series in {studies} stud{'y' if studies == 1 else 'ies'}"
        level = "info"
        if result.problems:
            level = "warning"
            summary += f"; {len(result.problems)} file(s) skipped (see Problems) — {result.problems[0]}"
        self._show_scan_problems(result)
        self.scan_finished.emit(result)
        if not images:
            why = str(result.problems[0]) if result.problems else "no DICOM or image files found"
            msg = f"{path}: nothing to show — {why}"
            self._clear_viewports()
            self.mpr_layout.clear()
            self.views.setCurrentWidget(self.grid)
            self.layout_mpr_action.setEnabled(False)
            self.shown_mammo = None
            self._rebuild_presets()
            self.show_message(msg, "error")
            self.task_failed.emit(msg)
            return
        self.show_message(summary, level)
        self._clear_viewports()
        self.shown_mammo = None
        self._start_thumbnails(images)
        first = self.browser.select_first_image_series()  # -> load_series
        if first is not None and self.layout_mode in GRID_MODES and self.layout_mode != "1x1":
            self._pending_fill = self._fill_plan(exclude=first)

    def _show_scan_problems(self, result: ScanResult) -> None:
        if not result.problems:
            self.problems_label.hide()
            self.problems_label.clear()
            return
        n = len(result.problems)
        self.problems_label.setText(f"⚠ {n} file{'s' if n != 1 else ''} skipped")
        shown = [str(p) for p in result.problems[:30]]
        if n > 30:
            shown.append(f"… and {n - 30} more (see Problems in the series list)")
        self.problems_label.setToolTip("\n".join(shown))
        self.problems_label.show()

    def study_of(self, series: Series) -> Study | None:
        if self.scan_result is None:
            return None
        return next((st for st in self.scan_result.studies if any(s.key == series.key for s in st.series)), None)

    def _study_item_chosen(self, item) -> None:
        """A study row of the tree was chosen: a mammography study opens on the 4-view hanging."""
        if item is None or item.data(0, KEY_ROLE) or item.childCount() == 0 or item.data(0, EXAM_ROLE) is not None:
            return  # a series row (handled by series_selected), a grouped exam (exam_selected) or nothing
        key = item.child(0).data(0, KEY_ROLE)
        study = next((st for st in (self.scan_result.studies if self.scan_result else [])
                      if any(s.key == key for s in st.series)), None) if key else None
        if study is not None and is_mammo_study(study):
            self.load_mammo(study)

    def load_mammo(self, study: Study, should_stop=None) -> None:
        """Decode the four standard views of a study in the background and hang them."""
        if self.shown_mammo is not None and self.shown_mammo.uid == study.uid and not self.busy:
            self.views.setCurrentWidget(self.mammo_layout)
            self._rebuild_presets()
            return

        def job(progress, stop):
            return study, load_four_view(study, progress=progress, should_stop=stop)

        self._start(f"Loading 4-view mammography {study.description or study.uid}".strip(), job,
                    self._mammo_loaded, should_stop)

    def _mammo_loaded(self, payload) -> None:
        study, views = payload
        self.stop_cine()
        self.mammo_layout.set_views(views, study)
        self.views.setCurrentWidget(self.mammo_layout)
        self.shown_mammo = study
        self.layout_mpr_action.setEnabled(False)
        shown = [name for name, v in views.items() if v is not None]
        info = next(v[1].info for v in views.values() if v is not None)
        who = info.patient_name.replace("^", " ").strip()
        self._set_title(who, "4-view mammography")
        missing = [name for name, v in views.items() if v is None]
        text = f"4-view mammography: {' '.join(shown)}"
        self.show_message(text + (f" — not in this study: {' '.join(missing)}" if missing else ""),
                          "warning" if missing else "info")
        self._rebuild_presets()
        self._apply_overlay_visibility()
        self.image_shown.emit()

    def load_series(self, series: Series, should_stop=None, viewport: SliceView | None = None) -> None:
        """Decode a series in the background and show it in ``viewport`` (default: the active one).

        An MG series of a 4-view study opens the mammography hanging instead.
        """
        study = self.study_of(series)
        if series.modality == "MG" and study is not None and is_mammo_study(study):
            self._pending_fill = []
            self.load_mammo(study, should_stop)
            return
        target = viewport or self.grid.active
        shown = self._cell_series.get(target)
        if (shown is not None and series.key == shown.key and not self.busy
                and self.views.currentWidget() is not self.mammo_layout):
            return
        self.stop_cine()

        def job(progress, stop):
            from ..core.io import load_series

            volume = load_series(series, progress=progress, should_stop=stop)
            return series, volume, default_window(volume), target

        self._start(f"Loading {series.label()}", job, self._series_loaded, should_stop)

    def _series_loaded(self, payload) -> None:
        series, volume, window, target = payload
        self.stop_cine()
        self.grid.set_active(target)
        target.set_volume(volume, window)
        self._cell_series[target] = series
        self.shown_mammo = None
        self._show_volume_layout()
        info = volume.info
        who = info.patient_name.replace("^", " ").strip()
        self._set_title(who, series.label())
        text = self._volume_text(series, volume)
        if volume.problems:
            self.show_message(f"{text} — {len(volume.problems)} problem(s): {volume.problems[0]}"
                              + ("\n" + "\n".join(volume.problems[1:]) if len(volume.problems) > 1 else ""),
                              "warning")
        else:
            found = self.label_files_beside(series)
            self.show_message(text + (f" — {len(found)} segmentation file(s) beside it: open one from the Segment "
                                      "editor or File ▸ Open labels…" if found else ""))
        self.editor.offer_label_files(series, self.label_files_beside(series))
        self._rebuild_presets()
        self._apply_overlay_visibility()
        self.image_shown.emit()
        self._load_next_pending()

    def label_files_beside(self, series: Series) -> list[Path]:
        """SEG / RTSTRUCT files of the open scan that reference ``series`` (headers read once per scan)."""
        if series.key not in self._beside:
            found: list[Path] = []
            if self.scan_result is not None and series.kind == "dicom":
                from ..core.io.label_files import label_files_for

                try:
                    found = label_files_for(series, self.scan_result.series)
                except Exception:  # noqa: BLE001 - an offer, never a reason to fail showing the image
                    found = []
            self._beside[series.key] = found
        return self._beside[series.key]

    def _set_title(self, *parts: str) -> None:
        """What is shown; Qt adds the application's display name ("Lightbox") on X11 and Windows."""
        self.setWindowTitle(" — ".join(p for p in parts if p) or "Lightbox")

    # -- viewports ------------------------------------------------------------------------------
    @property
    def slice_view(self) -> SliceView:
        """The active viewport: browser selections load here; presets, cine and MPR act on it."""
        return self.grid.active

    @property
    def shown_series(self) -> Series | None:
        """The series in the active viewport (None for the mammography hanging or an empty viewport)."""
        if self.views.currentWidget() is self.mammo_layout:
            return None
        return self._cell_series.get(self.grid.active)

    def viewport_series(self, view: SliceView) -> Series | None:
        return self._cell_series.get(view)

    def _clear_viewports(self) -> None:
        self._pending_fill = []
        self._cell_series.clear()
        for view in self.grid.cells:
            view.clear()
        self.grid.set_active(self.grid.cells[0])

    def _fill_plan(self, exclude: Series | None = None) -> list[tuple[Series, SliceView]]:
        """Next series of the open scan, not on screen yet, for each empty visible viewport."""
        on_screen = {s.key for s in self._cell_series.values()} | ({exclude.key} if exclude else set())
        candidates = [s for s in self.browser.image_series() if s.key not in on_screen and not s.is_projection
                      and not s.is_result]
        empty = [v for v in self.grid.visible_cells() if v.volume is None
                 and (exclude is None or v is not self.grid.active)]
        return list(zip(candidates, empty))

    def _fill_empty_viewports(self) -> None:
        if self.scan_result is None or self.busy:
            return
        self._pending_fill = self._fill_plan()
        self._load_next_pending()

    def _load_next_pending(self) -> None:
        while self._pending_fill:
            series, view = self._pending_fill.pop(0)
            if view.volume is None and view in self.grid.visible_cells():
                self.load_series(series, viewport=view)
                return

    def _series_dropped(self, view: SliceView, key: str) -> None:
        series = self.browser.series_for_key(key)
        if series is None:
            self.show_message(f"That series is no longer in the list ({key})", "warning")
            return
        self._pending_fill = []
        self.load_series(series, viewport=view)

    def _active_viewport_changed(self, view: SliceView) -> None:
        """Presets, the window title and the MPR action follow the active viewport."""
        if self.views.currentWidget() is not self.grid:
            return
        self.stop_cine()
        self.layout_mpr_action.setEnabled(self._mpr_possible())
        self._rebuild_presets()
        series = self._cell_series.get(view)
        self.browser.mark_current(series)
        if series is not None and view.volume is not None:
            who = view.volume.info.patient_name.replace("^", " ").strip()
            self._set_title(who, series.label())

    # -- thumbnails ---------------------------------------------------------------------------
    def _start_thumbnails(self, series_list: list[Series]) -> None:
        if self._thumbnail_task is not None:
            self._thumbnail_task.cancel()  # an older scan's previews
        task: Worker | None = None

        def over(*_args) -> None:
            if self._thumbnail_task is task:
                self._thumbnail_task = None

        def done(thumbs: dict) -> None:
            over()
            if self._closing:
                return
            for key, gray in thumbs.items():  # keys of an older scan are simply not found
                if isinstance(gray, str):
                    self.browser.set_thumbnail_problem(key, gray)
                else:
                    self.browser.set_thumbnail(key, gray)
            self.thumbnails_ready.emit()

        task = self.thumbnail_runner.start(_thumbnail_job(list(series_list)), "thumbnails",
                                           on_finished=done, on_failed=over, on_cancelled=over)
        self._thumbnail_task = task

    # -- window/level presets -------------------------------------------------------------------
    def shown_views(self) -> list[SliceView]:
        """The SliceViews on screen now (the 1x1 view, the three MPR views or the mammography cells)."""
        current = self.views.currentWidget()
        if current is self.mpr_layout:
            return list(self.mpr_layout.views.values())
        if current is self.mammo_layout:
            return list(self.mammo_layout.cells.values())
        return self.grid.visible_cells()

    def all_views(self) -> list[SliceView]:
        return [*self.grid.cells, *self.mpr_layout.views.values(), *self.mammo_layout.cells.values()]

    def current_presets(self) -> list[Preset]:
        vol = self.slice_view.volume
        if self.views.currentWidget() is self.mammo_layout or vol is None:
            return []
        return presets_for(vol)

    def _rebuild_presets(self) -> None:
        """Fill the Window menu and the toolbar combo for what is shown now."""
        for act in self.preset_actions:
            self.removeAction(act)
            act.deleteLater()
        self.preset_actions = []
        self.window_menu.clear()
        self.preset_combo.clear()
        self.preset_combo.addItem("W/L preset")
        entries: list[tuple[str, Callable[[], None], str | None]] = []
        if self.views.currentWidget() is self.mammo_layout:
            for i, (name, act) in enumerate(self.mammo_layout.preset_actions.items()):
                entries.append((name, lambda a=act: a.trigger(), f"F{i + 1}" if i < 12 else None))
        else:
            presets = self.current_presets()
            is_ct = self.slice_view.volume is not None and \
                (self.slice_view.volume.info.modality or "").upper() == "CT"
            ct_keys = {name: f"F{digit}" for digit, name in CT_PRESET_KEYS.items()}
            ordered = sorted(presets, key=lambda p: int(ct_keys.get(p.name, "F99")[1:])) if is_ct else presets
            for i, p in enumerate(ordered):
                key = ct_keys.get(p.name) if is_ct else (f"F{i + 1}" if i < 12 else None)
                entries.append((preset_label(p), lambda p=p: self.apply_window(p.center, p.width), key))
        for text, fn, key in entries:
            act = QAction(text, self)
            if key:
                act.setShortcut(QKeySequence(key))
                act.setToolTip(f"{text} ({key})")
            act.triggered.connect(lambda _checked=False, fn=fn: fn())
            self.window_menu.addAction(act)
            self.addAction(act)  # shortcuts work while the menu is closed
            self.preset_actions.append(act)
            self.preset_combo.addItem(f"{text}   {key}" if key else text)
        if not entries:
            placeholder = self.window_menu.addAction("(no image)")
            placeholder.setEnabled(False)
        self.preset_combo.setEnabled(bool(entries))
        self.preset_combo.setCurrentIndex(0)

    def preset_action(self, name: str) -> QAction | None:
        """The Window menu entry of the preset called ``name`` (None if not offered now)."""
        return next((a for a in self.preset_actions if a.text().split("  (")[0] == name), None)

    def _preset_combo_chosen(self, index: int) -> None:
        if 1 <= index <= len(self.preset_actions):
            self.preset_actions[index - 1].trigger()
        self.preset_combo.setCurrentIndex(0)

    def apply_window(self, center: float, width: float) -> None:
        """Set (center, width) on the views showing the active image (all MPR planes, all mammo views;
        in a 1x2/2x2 grid only the active viewport, which may hold another modality than its neighbours)."""
        views = [self.grid.active] if self.views.currentWidget() is self.grid else self.shown_views()
        for view in views:
            if view.volume is not None:
                view.set_window(center, width)

    # -- cine --------------------------------------------------------------------------------------
    @property
    def playing(self) -> bool:
        return self.cine_timer.isActive()

    def cine_view(self) -> SliceView | None:
        """The view cine steps through: the 1x1 view (the axial view in MPR); None for mammography."""
        current = self.views.currentWidget()
        if current is self.grid:
            return self.grid.active
        if current is self.mpr_layout:
            return self.mpr_layout.views.get("axial")
        return None

    def set_playing(self, on: bool) -> None:
        view = self.cine_view()
        if on and (view is None or view.volume is None or view.slice_count < 2):
            on = False
            self.show_message("Cine: nothing to play (needs a series of several slices)", "warning")
        if on:
            self.cine_timer.start(max(1, round(1000 / self.fps_spin.value())))
        else:
            self.cine_timer.stop()
        if self.play_action.isChecked() != on:
            self.play_action.blockSignals(True)
            self.play_action.setChecked(on)
            self.play_action.blockSignals(False)
        self.play_action.setText("Pause" if on else "▶ Play")

    def stop_cine(self) -> None:
        if self.playing or self.play_action.isChecked():
            self.set_playing(False)

    def _fps_changed(self, fps: int) -> None:
        if self.cine_timer.isActive():
            self.cine_timer.setInterval(max(1, round(1000 / fps)))

    def _cine_step(self) -> None:
        view = self.cine_view()
        if view is None or view.volume is None or view.slice_count < 2:
            self.stop_cine()
            return
        k = view.slice_index + 1
        view.set_slice(0 if k >= view.slice_count else k)

    # -- linked scrolling --------------------------------------------------------------------------
    def set_link_scroll(self, on: bool) -> None:
        """Linked scrolling of the grid's viewports on or off; remembered for the next session."""
        if self.link_scroll_action.isChecked() != bool(on):
            self.link_scroll_action.setChecked(bool(on))  # -> toggled -> here again
            return
        self.grid.set_link_scroll(bool(on))
        s = settings()
        s.setValue(LINK_SCROLL_KEY, bool(on))
        s.sync()

    # -- overlay text ------------------------------------------------------------------------------
    @property
    def overlay_text_visible(self) -> bool:
        return self.overlay_action.isChecked()

    def set_overlay_text_visible(self, on: bool) -> None:
        if self.overlay_action.isChecked() != bool(on):
            self.overlay_action.setChecked(bool(on))  # -> toggled -> here again
            return
        self._apply_overlay_visibility()

    def _apply_overlay_visibility(self) -> None:
        visible = self.overlay_action.isChecked()
        for view in self.all_views():
            view.set_corner_text_visible(visible)

    # -- overlay layers (H / S) ------------------------------------------------------------------
    def set_heatmaps_visible(self, on: bool) -> None:
        self.heatmap_action.setChecked(bool(on))  # -> toggled -> apply_layer_visibility

    def set_segmentation_visible(self, on: bool) -> None:
        self.segmentation_action.setChecked(bool(on))

    def apply_layer_visibility(self) -> None:
        """Every view's heatmaps and label maps follow the H and S toggles (also for layers added later)."""
        heat, seg = self.heatmap_action.isChecked(), self.segmentation_action.isChecked()
        for view in self.all_views():
            view.set_layers_visible(ProbabilityLayer, heat)
            view.set_layers_visible(LabelLayer, seg)

    # -- recent studies ----------------------------------------------------------------------------
    def recent_paths(self) -> list[str]:
        value = settings().value(RECENT_KEY, [])
        if isinstance(value, str):
            value = [value] if value else []
        return [str(v) for v in (value or []) if v]

    def _save_recent(self, paths: list[str]) -> None:
        s = settings()
        s.setValue(RECENT_KEY, paths[:MAX_RECENT])
        s.sync()
        self._rebuild_recent_menu()

    def add_recent(self, path) -> None:
        try:
            p = str(Path(path).expanduser().resolve())
        except (OSError, RuntimeError, ValueError):
            p = str(path)
        self._save_recent([p, *(q for q in self.recent_paths() if q != p)])

    def clear_recent(self) -> None:
        self._save_recent([])

    def open_recent(self, path: str) -> None:
        if not Path(path).exists():
            self._save_recent([q for q in self.recent_paths() if q != path])
            msg = f"{path}: no longer there — removed from Open Recent"
            self.show_message(msg, "error")
            self.task_failed.emit(msg)
            return
        self.open_path(path)

    def _rebuild_recent_menu(self) -> None:
        menu = self.recent_menu
        menu.clear()
        paths = self.recent_paths()
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

    # -- drag and drop -------------------------------------------------------------------------
    @staticmethod
    def _dropped_paths(mime) -> list[str]:
        if mime is None or not mime.hasUrls():
            return []
        return [u.toLocalFile() for u in mime.urls() if u.isLocalFile() and u.toLocalFile()]

    def dragEnterEvent(self, ev):
        if self._dropped_paths(ev.mimeData()):
            ev.acceptProposedAction()
        else:
            ev.ignore()

    def dragMoveEvent(self, ev):
        if self._dropped_paths(ev.mimeData()):
            ev.acceptProposedAction()
        else:
            ev.ignore()

    def dropEvent(self, ev):
        paths = self._dropped_paths(ev.mimeData())
        if not paths:
            ev.ignore()
            return
        ev.acceptProposedAction()
        self.open_path(paths[0])
        if len(paths) > 1:
            self.show_message(f"{len(paths)} items dropped: opening {paths[0]} (drop a folder to open "
                              "several files at once)", "warning")

    # -- shutdown ----------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Cancel background work and wait for it (no thread may outlive the window)."""
        self._closing = True
        self.cine_timer.stop()
        self.measurement_store.shutdown()  # the last measurement edits reach their SR
        self.dicom_results.shutdown()
        self.tasks.shutdown()
        self.thumbnail_runner.shutdown()
        self.editor.shutdown()
        self.analysis.shutdown()  # its dialogs' workers (training, model import)
        self.remote.shutdown()  # searches, retrieves, server tests
        if self.send_dialog is not None:
            self.send_dialog.shutdown()

    def closeEvent(self, ev):
        if not self._closing and not self.editor.confirm_close():
            ev.ignore()  # the user chose Cancel: keep working
            return
        self.shutdown()
        super().closeEvent(ev)
