"""The main window: series browser on the left, viewports in the middle, docks on the right.

This module only wires things together. Opening and loading live in study_controller.py, the
foreground task in tasks.py, menus and actions in menus.py, presets and cine in presets.py and
cine.py, what is open in core/workspace.py. Reading happens on worker threads; errors end up as
a message in the status bar, never as a crash or a blocking dialog.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMessageBox, QStackedWidget, QWidget

from ..core.study import Series
from ..core.workspace import Workspace
from . import menus
from .analysis_controller import AnalysisController
from .cine import Cine
from .editor_controller import EditorController
from .mammo_layout import MammoLayout
from .mpr_layout import MprLayout
from .overlays import LabelLayer, ProbabilityLayer
from .presets import PresetMenu, preset_label  # noqa: F401 - preset_label re-exported
from .priors import compare_with_prior, offer_prior
from .series_browser import SeriesBrowser
from .settings import LINK_SCROLL_KEY, remember_link_scroll, settings  # noqa: F401 - re-exported
from .slice_view import SliceView
from .study_controller import OPEN_FILE_FILTER, StudyController  # noqa: F401 - re-exported
from .tasks import TaskBar
from .viewport_grid import MODES as GRID_MODES
from .viewport_grid import ViewportGrid

DISCLAIMER = "Lightbox — research software, not a medical device. Not for diagnostic use."


def app_version() -> str:
    try:
        from importlib.metadata import version

        return version("lightbox")
    except Exception:  # noqa: BLE001 - not installed as a package (e.g. run from a source tree)
        return "unknown"


def about_text() -> str:
    return f"Lightbox {app_version()}\n\n{DISCLAIMER}"


def _delegate(owner: str, name: str, doc: str = "") -> property:
    """A window attribute kept by one of its parts (``self.<owner>.<name>``), read and written there."""
    return property(lambda self: getattr(getattr(self, owner), name),
                    lambda self, value: setattr(getattr(self, owner), name, value), doc=doc)


class MainWindow(QMainWindow):
    image_shown = Signal()  # a volume is on screen (after each successful load)
    scan_finished = Signal(object)  # ScanResult
    task_failed = Signal(str)  # also: nothing to show after a scan
    task_cancelled = Signal()
    thumbnails_ready = Signal()  # the browser shows previews for the last scan

    # what is open lives in the Qt-free workspace; these names are the window's public face for it
    source = _delegate("workspace", "source")
    scan_result = _delegate("workspace", "scan_result")
    shown_mammo = _delegate("workspace", "shown_mammo", "the study on the 4-view hanging, when it is shown")
    layout_mode = _delegate("workspace", "layout_mode", "'1x1', '1x2', '2x2' or 'mpr' (kept across loads)")
    _last_dir = _delegate("workspace", "last_dir")
    _cell_series = _delegate("workspace", "cell_series")
    _beside = _delegate("workspace", "beside")
    _pending_fill = _delegate("study", "pending_fill")
    preset_actions = _delegate("presets", "actions")

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Lightbox")
        self.setAcceptDrops(True)
        self._closing = False
        self.about_box: QMessageBox | None = None
        self.workspace = Workspace()
        self.tasks = TaskBar(self, self.statusBar())  # the one foreground task: message, progress, Cancel
        self.tasks.failed.connect(self.task_failed)
        self.tasks.cancelled.connect(self.task_cancelled)
        self.runner, self._start = self.tasks.runner, self.tasks.start
        self.message, self.progress = self.tasks.message, self.tasks.progress
        self.cancel_button, self.problems_label = self.tasks.cancel_button, self.tasks.problems_label
        self.show_message, self.cancel_task = self.tasks.show_message, self.tasks.cancel
        self.study = StudyController(self)  # open, scan, load series / the 4-view hanging, recent files
        for name in ("open_path", "open_demo", "load_series", "load_mammo", "refresh_scan", "label_files_beside",
                     "add_recent", "clear_recent", "open_recent", "choose_folder", "choose_file"):
            setattr(self, name, getattr(self.study, name))
        self.thumbnail_runner = self.study.thumbnail_runner

        self.grid = ViewportGrid(self)  # 1x1 / 1x2 / 2x2 viewports; the active one is `slice_view`
        self.grid.active_changed.connect(self.study.active_viewport_changed)
        self.grid.series_dropped.connect(self.study.series_dropped)
        self.mammo_layout = MammoLayout(self)
        self.mpr_layout = MprLayout(self)
        self.views = QStackedWidget(self)  # the viewport grid, the MPR layout or the mammography hanging
        for widget in (self.grid, self.mammo_layout, self.mpr_layout):
            self.views.addWidget(widget)
        self.setCentralWidget(self.views)

        self.browser = SeriesBrowser(self)
        self.browser.series_selected.connect(self.load_series)
        self.browser.exam_selected.connect(self.load_mammo)
        self.browser.currentItemChanged.connect(lambda item, _prev: self.study.study_item_chosen(item))
        self.browser.itemClicked.connect(lambda item, _col: self.study.study_item_chosen(item))
        self.browser_dock = QDockWidget("Series", self)
        self.browser_dock.setObjectName("series-dock")
        self.browser_dock.setWidget(self.browser)
        self.browser_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                      | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.browser_dock)
        self.resizeDocks([self.browser_dock], [340], Qt.Orientation.Horizontal)

        menus.build_file_menu(self)
        menus.build_layout_menu(self)
        self.presets = PresetMenu(self)  # Window menu, preset combo, F-keys: rebuilt per image shown
        self.window_menu, self.preset_combo, self.preset_toolbar = self.presets.menu, self.presets.combo, \
            self.presets.toolbar
        self.preset_action, self.apply_window = self.presets.action, self.presets.apply_window
        self._rebuild_presets, self.current_presets = self.presets.rebuild, self.presets.current
        self.cine = Cine(self)  # P / Space, fps
        self.play_action, self.fps_spin, self.cine_timer = self.cine.play_action, self.cine.fps_spin, self.cine.timer
        self.cine_toolbar, self.set_playing, self.stop_cine = self.cine.toolbar, self.cine.set_playing, self.cine.stop
        self._cine_step, self.cine_view = self.cine.step, self.cine.view
        menus.build_tools_menu(self)
        menus.build_view_menu(self)
        menus.build_help_menu(self)
        self.analysis = AnalysisController(self)  # Analyze (A), AI results dock, AI overlays
        ai_menu = menus.build_ai_menu(self)
        self.image_shown.connect(self.analysis.refresh_overlays)
        self.editor = EditorController(self)  # segment editor: tools B/E/F/L, [ ], 1-9, ctrl+Z/Y, autosave
        menus.build_segment_menu(self, ai_menu)
        menus.build_remote(self, ai_menu)
        from .key_images import install as install_key_images

        self.key_images = install_key_images(self)  # K marks the shown slice; "Key images" dock; kept per study
        menus.add_key_image_actions(self)
        self.mammo_layout.prior_requested.connect(self.compare_with_prior)
        self.image_shown.connect(lambda: offer_prior(self) if self.hanging_shown() else None)
        self.presets.rebuild()
        self.study.rebuild_recent_menu()

    @property
    def busy(self) -> bool:
        return self.tasks.busy

    @property
    def playing(self) -> bool:
        return self.cine.playing

    # -- PACS (viewer.ui.remote_panel, send_results) ------------------------------------
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

    def compare_with_prior(self) -> str:
        """The patient's newest prior beside the current exam (8-cell hanging, or CT/MR 1x2 scrolling together)."""
        return compare_with_prior(self, self.tasks.start)

    # -- tools ------------------------------------------------------------------------------
    @property
    def tool_name(self) -> str:
        actions = {**self.tool_actions, **(self.editor.tool_actions if hasattr(self, "editor") else {})}
        return next((n for n, a in actions.items() if a.isChecked()), "navigate")

    def set_tool(self, name: str) -> None:
        """'navigate', a measurement tool (measure_tools.TOOLS) or a segment-editor tool
        ('brush', 'erase', 'threshold', 'fill', 'lasso') on every view."""
        from .edit_tools import EDIT_TOOLS

        (self.editor.tool_actions if name in EDIT_TOOLS else self.tool_actions)[name].setChecked(True)
        for view in self.all_views():
            if view.tool_name != name:
                view.set_tool(EDIT_TOOLS[name](self.editor.session) if name in EDIT_TOOLS else name)
        self.editor.tool_changed(name)

    def view_tool_changed(self, name: str) -> None:
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
        if (mode == "mpr" and self.layout_mode != "mpr" and self.slice_view.volume is not None
                and self.mpr_layout.volume is self.slice_view.volume):  # back to MPR: where the reader is now
            self.mpr_layout.set_crosshair_world(self.slice_view.reading_point())
        self.workspace.set_layout(mode)
        self.layout_actions[mode].setChecked(True)
        if mode in GRID_MODES:
            self.grid.set_mode(mode)
        if self.shown_mammo is None:
            self.show_volume_layout()
            if mode in GRID_MODES:
                self.study.fill_empty_viewports()
        self.apply_overlay_visibility()
        self.analysis.refresh_overlays()  # the MPR planes show the AI maps of their volume too
        self.editor.session.show_layers()  # ... and the segmentation being edited

    def mpr_possible(self) -> bool:
        vol = self.slice_view.volume
        return vol is not None and self.shown_mammo is None and min(vol.shape) > 1

    def show_volume_layout(self) -> None:
        """Show the loaded volume in the chosen layout."""
        vol = self.slice_view.volume
        self.layout_mpr_action.setEnabled(self.mpr_possible())
        if self.layout_mode == "mpr" and self.mpr_possible():
            if self.mpr_layout.volume is not vol:  # opens where the reader was, not at the centre
                self.mpr_layout.set_volume(vol, self.slice_view.window, at=self.slice_view.reading_point())
            self.views.setCurrentWidget(self.mpr_layout)
        else:
            if self.mpr_layout.volume is not None and self.mpr_layout.volume is not vol:
                self.mpr_layout.clear()  # do not keep a second volume alive
            self.views.setCurrentWidget(self.grid)

    def show_about(self) -> QMessageBox:
        """Non-blocking About box (kept in ``about_box``)."""
        box = QMessageBox(QMessageBox.Icon.Information, "About Lightbox", about_text(),
                          QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _=0: setattr(self, "about_box", None))
        self.about_box = box
        box.open()
        return box

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
        return self.workspace.series_of(self.grid.active)

    def hanging_shown(self) -> bool:
        """True while the 4-view mammography hanging of ``shown_mammo`` is on screen."""
        return self.views.currentWidget() is self.mammo_layout and self.shown_mammo is not None

    def viewport_series(self, view: SliceView) -> Series | None:
        return self.workspace.series_of(view)

    def study_of(self, series: Series):
        return self.workspace.study_of(series)

    def recent_paths(self) -> list[str]:
        from .settings import recent_paths

        return recent_paths()

    def shown_views(self) -> list[SliceView]:
        """The SliceViews on screen now (the 1x1 view, the three MPR views or the mammography cells)."""
        current = self.views.currentWidget()
        if current is self.mpr_layout:
            return list(self.mpr_layout.views.values())
        if current is self.mammo_layout:
            return list(self.mammo_layout.cells.values())
        return self.grid.visible_cells()

    def all_views(self) -> list[SliceView]:
        return [*self.grid.cells, *self.mpr_layout.views.values(), *self.mammo_layout.cells.values(),
                *self.mammo_layout.prior_cells.values()]

    # -- view toggles: linked scrolling, overlay text, heatmaps (H), segmentation (S) ------------------
    def set_link_scroll(self, on: bool) -> None:
        """Linked scrolling of the grid's viewports on or off; remembered for the next session."""
        if self.link_scroll_action.isChecked() != bool(on):
            self.link_scroll_action.setChecked(bool(on))  # -> toggled -> here again
            return
        self.grid.set_link_scroll(bool(on))
        remember_link_scroll(on)

    @property
    def overlay_text_visible(self) -> bool:
        return self.overlay_action.isChecked()

    def set_overlay_text_visible(self, on: bool) -> None:
        if self.overlay_action.isChecked() != bool(on):
            self.overlay_action.setChecked(bool(on))  # -> toggled -> here again
            return
        self.apply_overlay_visibility()

    def apply_overlay_visibility(self) -> None:
        visible = self.overlay_action.isChecked()
        for view in self.all_views():
            view.set_corner_text_visible(visible)

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

    # -- drag and drop -------------------------------------------------------------------------
    @staticmethod
    def _dropped_paths(mime) -> list[str]:
        if mime is None or not mime.hasUrls():
            return []
        return [u.toLocalFile() for u in mime.urls() if u.isLocalFile() and u.toLocalFile()]

    def dragEnterEvent(self, ev):
        ev.acceptProposedAction() if self._dropped_paths(ev.mimeData()) else ev.ignore()

    def dragMoveEvent(self, ev):
        ev.acceptProposedAction() if self._dropped_paths(ev.mimeData()) else ev.ignore()

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
        self._closing = self.tasks.closing = True  # no task's late result is shown any more
        self.cine.timer.stop()
        self.measurement_store.shutdown()  # the last measurement edits reach their SR
        self.key_images.shutdown()
        self.dicom_results.shutdown()
        self.tasks.shutdown()
        self.study.shutdown()
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
