"""The segment editor in the window: label maps per image, tools, keys, autosave and recovery.

``EditorSession`` owns one ``core.labels.LabelMap`` per shown image (created on the
first edit: from the AI segmentation of that image when there is one, else empty),
shows it as an ``edit:labels`` layer on every view of that image (the AI's own
label layer is hidden there: the map being edited replaces it), and redraws only
when the map says it changed. A map started empty because the AI's result was not
there yet (a reopened study's stored result still being read) is remade from that
result when it arrives if nothing was drawn on it, and never hides the AI's map. Edits autosave in the background
(``core.recovery.Autosaver``): every finished edit (mouse release of a stroke, a
fill, undo/redo, a label-table change) asks for a save that starts at once —
requests arriving while one is written coalesce into the next — plus every 30 s
and on every tool change. The copy is taken under the map's edit lock and leaves
out a drag still in progress, so a recovery file is always a state that was on
screen, at most one edit behind; a map left unsaved by a crash is offered back at
the next launch.
"""
from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QColorDialog, QDockWidget, QFileDialog, QMessageBox

from ..core import recovery
from ..core.errors import LightboxError
from ..core.editing import (
    plan_fill_between_slices,
    plan_flood_fill,
    plan_keep_largest_island,
    plan_remove_small_islands,
    plan_smooth,
)
from ..core.labels import Label, LabelMap
from ..core.undo import LabelLocked
from .overlays import EDIT_LAYER_NAME as EDIT_LAYER
from .overlays import LABEL_LAYER as AI_LABEL_LAYER
from .edit_tools import EDIT_TOOLS
from .effect_runner import EffectRunner
from .export_dialog import (
    EXAM_VIEW,
    ExportDialog,
    ExportRequest,
    ExportSubject,
    suggested_class,
)
from .overlays import LabelLayer
from .segment_panel import SegmentPanel
from .workers import Committed

if TYPE_CHECKING:
    from .host import WindowHost
    from .slice_view import SliceView

TOOL_KEYS = {"brush": "B", "erase": "E", "fill": "F", "lasso": "L", "threshold": ""}
TOOL_TEXT = {"brush": "Brush", "erase": "Erase", "fill": "Fill", "lasso": "Lasso", "threshold": "Threshold brush"}
AUTOSAVE_S = 30.0
AUTOSAVE_DEBOUNCE_S = 0.0  # save right after each edit: a kill must not lose more than one stroke


class EditLayer(LabelLayer):
    """The edited map drawn with its own label table (colour, opacity, visibility per label)."""

    def __init__(self, labelmap: LabelMap, opacity: float = 0.5, outline: bool = False):
        self.labelmap = labelmap
        super().__init__(labelmap.array, opacity=opacity, outline=outline)

    def _make_table(self) -> np.ndarray:
        lm = getattr(self, "labelmap", None)
        n = 256 if self.array.dtype == np.uint8 else 65536
        t = np.zeros((n, 4), np.uint8)
        if lm is not None:
            src = lm.rgba_table(self.opacity)
            t[:len(src)] = src[:n]
        return t


def map_key(volume) -> str:
    return f"{volume.info.series_uid}|{'x'.join(map(str, volume.shape))}"


class EditorSession(QObject):
    """Label maps and tool options; the tools (edit_tools.py) work through it."""

    maps_changed = Signal()  # a map was created, restored or its table changed
    edited_signal = Signal()

    def __init__(self, window: WindowHost):
        super().__init__(window)
        self.window = window
        self.maps: dict[str, LabelMap] = {}
        self.volumes: dict[str, object] = {}
        self.sources: dict[str, str] = {}  # map key -> folder/file the study was opened from
        self.origins: dict[str, tuple[object, str]] = {}  # map key -> (AI label array it started from, model)
        self.blank: set[str] = set()  # map keys started empty, with no AI segmentation to start from
        # map key -> (voxels as opened, {value: Segment}) of a label file another tool made: saving
        # keeps its segments' codes and algorithm (export.dicom_seg.edited_segments)
        self.opened: dict[str, tuple[np.ndarray, dict]] = {}
        self.radius_mm = 3.0
        self.sphere = False
        self.threshold = (-100.0, 300.0)
        self.threshold_always = False
        self.tolerance = 50.0
        self.fill_3d = False
        self.fill_unlabelled_only = True
        self._unsubscribe: dict[str, object] = {}
        self.effects = EffectRunner(window, self)  # heavy effects: computed on a worker, one undo step

    # -- maps -------------------------------------------------------------------------------------
    def labelmap_for(self, view: SliceView, create: bool = True):
        """(LabelMap, Volume) to edit in ``view``; a new map starts from the AI segmentation. None,
        with a message, while an effect computes on that map (its result must not go stale)."""
        if view.volume is not None and self.refuse_if_busy(map_key(view.volume)):
            return None
        return self.lookup(view, create)

    def refuse_if_busy(self, key: str, what: str = "editing") -> bool:
        """True (and say so) when an effect computes on map ``key``: edits wait for it."""
        running = self.effects.busy_with(key)
        if running is None:
            return False
        self.window.show_message(f"{what[:1].upper() + what[1:]} refused: {running} is still computing on this "
                                 "segmentation (wait for it, or Cancel it)", "warning")
        return True

    def lookup(self, view: SliceView, create: bool = True):
        """(LabelMap, Volume) of the image in ``view`` for reading (never refused)."""
        vol = view.volume
        if vol is None:
            return None
        key = map_key(vol)
        lm = self.maps.get(key)
        if lm is None:
            if not create:
                return None
            lm = self._new_map(view)
            self.adopt(lm, vol)
        return lm, self.volumes[key]

    def _new_map(self, view: SliceView) -> LabelMap:
        vol = view.volume
        sr = self.window.analysis.result_for(view)
        seg = sr.overlay("segmentation") if sr is not None else None
        self.blank.discard(map_key(vol))
        if seg is not None:
            lm = LabelMap.from_label_array(seg.array.copy(), vol, seg.classes, algorithm="AUTOMATIC",
                                           algorithm_name=seg.model)
            self.origins[map_key(vol)] = (seg.array, seg.model)  # for the export's edit summary
            if not lm.labels:
                lm.add_label("Segment 1")
        else:
            lm = LabelMap(vol)
            lm.add_label("Segment 1")
            self.blank.add(map_key(vol))
        lm.mark_saved()
        return lm

    def replaces_ai(self, view: SliceView) -> bool:
        """Whether the map edited in ``view`` takes the place of the AI's label layer there: yes when it
        started from the AI's map (or from a file, or a recovery); a map started empty does not hide it."""
        if view.volume is None or view.layer(EDIT_LAYER) is None:
            return False
        key = map_key(view.volume)
        return key in self.maps and key not in self.blank

    def start_from_ai(self, _result=None) -> list[str]:
        """An AI result is now shown: each map that started empty and was never drawn on starts again from
        the AI's segmentation of its image (as when the first edit comes after Analyze). Keys remade."""
        remade = []
        for key in sorted(self.blank):
            lm = self.maps.get(key)
            view = next(iter(self.views_of(key)), None)
            if lm is None or view is None or lm.dirty or lm.array.any() or self.effects.busy_with(key):
                continue
            sr = self.window.analysis.result_for(view)
            if sr is None or sr.overlay("segmentation") is None:
                continue
            self.adopt(self._new_map(view), view.volume, source=self.sources.get(key))
            remade.append(key)
        return remade

    def adopt(self, lm: LabelMap, volume, source: str | None = None) -> None:
        key = map_key(volume)
        old = self._unsubscribe.pop(key, None)
        if old is not None and self.maps.get(key) is not lm:
            old()  # the replaced map no longer redraws the views
        self.volumes[key] = volume  # before the map: the autosaver's thread looks both up
        self.sources[key] = source or str(self.window.source or "")
        self.maps[key] = lm
        self._unsubscribe[key] = lm.subscribe(lambda box, k=key: self._map_changed(k, box))
        self.show_layers()
        self.maps_changed.emit()

    def current(self) -> LabelMap | None:
        """The map of the active view's image (None before the first edit)."""
        view = self.active_view()
        got = self.lookup(view, create=False) if view is not None else None
        return got[0] if got else None

    def active_view(self):
        views = [v for v in self.window.shown_views() if v.volume is not None]
        focus = next((v for v in views if v.canvas.hasFocus()), None)
        return focus or (self.window.slice_view if self.window.slice_view in views else (views[0] if views else None))

    def views_of(self, key: str) -> list:
        return [v for v in self.window.all_views() if v.volume is not None and map_key(v.volume) == key]

    def show_layers(self) -> None:
        """An edit layer on every view showing an image that has a map. It replaces the AI's label
        layer there (the AI result itself is untouched; the analysis controller does not add it back)."""
        for view in self.window.all_views():
            if view.volume is None:
                continue
            lm = self.maps.get(map_key(view.volume))
            if lm is None:
                continue
            layer = view.layer(EDIT_LAYER)
            if layer is None or layer.labelmap is not lm:
                view.add_layer(EDIT_LAYER, EditLayer(lm))
            if view.layer(AI_LABEL_LAYER) is not None and self.replaces_ai(view):
                view.remove_layer(AI_LABEL_LAYER)
        self.window.apply_layer_visibility()

    def _map_changed(self, key: str, box) -> None:
        for view in self.views_of(key):
            layer = view.layer(EDIT_LAYER)
            if layer is None:
                continue
            if box is None:  # the table changed: colours, visibility, new labels (maybe a wider dtype)
                layer.array = layer.labelmap.array
                layer._rebuild()
            else:
                layer.refresh()
        if box is None:
            self.maps_changed.emit()

    # -- called by the tools ------------------------------------------------------------------------
    def edited(self) -> None:
        self.edited_signal.emit()

    def report(self, message: str) -> None:
        self.window.show_message(message, "warning")

    def fill_in_background(self, view: SliceView, labelmap: LabelMap, volume, row: float, col: float) -> bool:
        """The fill tool's 3D fill (seconds on a CT): computed on a worker, written as one undo step."""
        g, k, value = view.plane_geometry, view.slice_index, labelmap.active
        try:
            labelmap._check_value_writable(value)  # say it now, not after seconds of computing
        except (LabelLocked, KeyError) as exc:
            self.report(str(exc).strip("'\""))
            return False
        over = 0 if self.fill_unlabelled_only else None
        return self.effects.start("3D fill", map_key(volume), labelmap, partial(
            plan_flood_fill, labelmap, volume, g, k, row, col, value, self.tolerance, three_d=True, over=over))

    # -- recovery snapshots (called on the autosaver's thread) -------------------------------------
    def snapshots(self) -> list[recovery.RecoverySnapshot]:
        """Each unsaved map as it was after its last finished edit (``LabelMap.committed_state``:
        copied under the edit lock, a drag in progress left out), never half a stroke."""
        out = []
        for key, lm in list(self.maps.items()):
            if not lm.dirty:
                continue
            state = lm.committed_state()
            if not state.dirty:  # only a drag over the saved state is in progress
                continue
            vol = self.volumes[key]
            out.append(recovery.RecoverySnapshot.from_volume(
                vol, state.array, state.labels, state.version, source_path=self.sources.get(key, ""),
                description=f"{vol.info.patient_name} {vol.info.series_description}".strip(), copy=False))
        return out


class EditorController(QObject):
    """Actions, keys, the panel and the autosaver, wired to the window."""

    def __init__(self, window: WindowHost):
        super().__init__(window)
        self.window = window
        self.session = EditorSession(window)
        self.panel = SegmentPanel(window)
        self.dock = QDockWidget("Segment editor", window)
        self.dock.setObjectName("segment-dock")
        self.dock.setWidget(self.panel)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.hide()
        self.offered: list[recovery.RecoverySnapshotInfo] = []
        self.pending_restore: recovery.RecoverySnapshotInfo | None = None
        self.recovery_box: QMessageBox | None = None
        self._pending_labels: Path | None = None  # a label file waiting for its series to be shown

        self.tool_actions: dict[str, QAction] = {}
        for i, name in enumerate(EDIT_TOOLS):
            act = QAction(TOOL_TEXT[name], window)
            act.setCheckable(True)
            if TOOL_KEYS[name]:
                act.setShortcut(QKeySequence(TOOL_KEYS[name]))
            act.setToolTip(f"{EDIT_TOOLS[name].__doc__.splitlines()[0]}"
                           + (f" ({TOOL_KEYS[name]})" if TOOL_KEYS[name] else ""))
            act.triggered.connect(lambda _c=False, n=name: window.set_tool(n))
            window.tool_group.addAction(act)
            self.tool_actions[name] = act
            self.panel.tools_grid.addWidget(_tool_button(act), i // 3, i % 3)
        self.undo_action = QAction("Undo edit", window)
        self.undo_action.setShortcut(QKeySequence.StandardKey.Undo)
        self.undo_action.triggered.connect(self.undo)
        self.redo_action = QAction("Redo edit", window)
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Y"), QKeySequence("Ctrl+Shift+Z")])
        self.redo_action.triggered.connect(self.redo)
        self.bigger = QAction("Bigger brush", window)
        self.bigger.setShortcut(QKeySequence("]"))
        self.bigger.triggered.connect(lambda: self.panel.radius.setValue(self.panel.radius.value() * 1.25))
        self.smaller = QAction("Smaller brush", window)
        self.smaller.setShortcut(QKeySequence("["))
        self.smaller.triggered.connect(lambda: self.panel.radius.setValue(self.panel.radius.value() / 1.25))
        self.label_keys = []
        for digit in range(1, 10):
            act = QAction(f"Label {digit}", window)
            act.setShortcut(QKeySequence(str(digit)))
            act.triggered.connect(lambda _c=False, d=digit: self.choose_label(d))
            self.label_keys.append(act)
        self.open_labels_action = QAction("Open &labels…", window)
        self.open_labels_action.setToolTip("Open a segmentation made by another tool (DICOM SEG, RTSTRUCT, "
                                           "NIfTI/NRRD label map) over the shown image, to edit it")
        self.open_labels_action.triggered.connect(lambda: self.open_labels_dialog())
        self.found_labels: dict[str, list[Path]] = {}  # series key -> label files found beside it
        self.save_action = QAction("Save segmentation…", window)
        self.save_action.triggered.connect(lambda: self.save_dialog())
        self.load_action = QAction("Load segmentation…", window)
        self.load_action.triggered.connect(lambda: self.load_dialog())
        self.export_action = QAction("Export for training…", window)
        self.export_action.setToolTip("Append the shown image's corrected segmentation, or a mammography exam's "
                                      "classes, to a de-identified retraining dataset (nnU-Net v2 / MONAI, "
                                      "DICOM SEG, classification.csv)")
        self.export_action.triggered.connect(lambda: self.export_dialog())
        self.export_box: ExportDialog | None = None  # the open Export for training dialog
        self.last_export: dict | None = None
        for act in (self.undo_action, self.redo_action, self.bigger, self.smaller, *self.label_keys):
            window.addAction(act)

        p = self.panel
        p.undo_button.clicked.connect(self.undo)
        p.redo_button.clicked.connect(self.redo)
        p.save_button.clicked.connect(lambda: self.save_dialog())
        p.load_button.clicked.connect(lambda: self.load_dialog())
        p.open_found_clicked.connect(lambda path: self.open_labels(path))
        p.add_clicked.connect(self.add_label)
        p.delete_clicked.connect(self.delete_label)
        p.label_chosen.connect(self.choose_label)
        p.label_renamed.connect(lambda v, name: self._table_op(lambda lm: lm.rename(v, name)))
        p.label_shown.connect(lambda v, on: self._table_op(lambda lm: lm.set_visible(v, on)))
        p.label_locked.connect(lambda v, on: self._table_op(lambda lm: lm.set_locked(v, on)))
        p.label_color_clicked.connect(self.choose_color)
        p.label_opacity_changed.connect(lambda v, o: self._table_op(lambda lm: lm.set_opacity(v, o)))
        for w in (p.radius, p.threshold_lo, p.threshold_hi, p.tolerance):
            w.valueChanged.connect(self._options)
        for w in (p.sphere, p.threshold_always, p.fill_3d, p.fill_unlabelled):
            w.toggled.connect(self._options)
        # options are read on the UI thread when the button is pressed; the plans run on the worker
        p.remove_islands.clicked.connect(lambda: self.effect("remove small islands", lambda lm, v: partial(
            plan_remove_small_islands, lm, p.min_island.value(), lm.active)))
        p.keep_largest.clicked.connect(lambda: self.effect("keep largest island", lambda lm, v: partial(
            plan_keep_largest_island, lm, lm.active)))
        p.opening.clicked.connect(lambda: self.effect("smooth", lambda lm, v: partial(
            plan_smooth, lm, "open", p.smooth_radius.value(), lm.active)))
        p.closing.clicked.connect(lambda: self.effect("smooth", lambda lm, v: partial(
            plan_smooth, lm, "close", p.smooth_radius.value(), lm.active)))
        p.fill_between.clicked.connect(lambda: self.effect("fill between slices", lambda lm, v: partial(
            plan_fill_between_slices, lm, lm.active, v.plane_geometry.axis)))
        self.session.effects.busy_changed.connect(self._effects_busy)
        self.session.maps_changed.connect(self.refresh_panel)
        self.session.edited_signal.connect(self._after_edit)
        self._stats_timer = QTimer(self)
        self._stats_timer.setSingleShot(True)
        self._stats_timer.setInterval(250)
        self._stats_timer.timeout.connect(self.refresh_panel)
        window.image_shown.connect(self._image_shown)
        window.analysis.analysis_finished.connect(self.session.start_from_ai)
        self._options()

        self.autosaver = recovery.Autosaver(self.session.snapshots, interval_s=AUTOSAVE_S,
                                            debounce_s=AUTOSAVE_DEBOUNCE_S,
                                            on_error=lambda exc: self._autosave_error.emit(str(exc)))
        self._autosave_error.connect(lambda msg: window.show_message(f"Autosave failed: {msg}", "error"))
        self.autosaver.start()

    _autosave_error = Signal(str)
    exported = Signal(object)  # export_case's result
    labels_opened = Signal(object)  # the LabelMap made from an opened label file

    # -- tools and options ----------------------------------------------------------------------------
    def tool_changed(self, name: str) -> None:
        """Called by the window for every tool change: show the editor for edit tools; autosave now."""
        if name in EDIT_TOOLS:
            self.dock.show()
            self.dock.raise_()
        self.autosaver.request_save()

    def _options(self, *_args) -> None:
        p, s = self.panel, self.session
        s.radius_mm = p.radius.value()
        s.sphere = p.sphere.isChecked()
        s.threshold = (p.threshold_lo.value(), p.threshold_hi.value())
        s.threshold_always = p.threshold_always.isChecked()
        s.tolerance = p.tolerance.value()
        s.fill_3d = p.fill_3d.isChecked()
        s.fill_unlabelled_only = p.fill_unlabelled.isChecked()
        for view in self.window.all_views():
            hover = getattr(view.tool, "hover", None)
            cursor = getattr(view.tool, "cursor", None)
            if hover is not None and cursor is not None and cursor.isVisible():
                r = cursor.rect()
                hover(r.center().x(), r.center().y())

    def _after_edit(self) -> None:
        self._stats_timer.start()
        self.autosaver.request_save()

    # -- label table ------------------------------------------------------------------------------------
    def _map(self, create: bool = True) -> LabelMap | None:
        view = self.session.active_view()
        if view is None:
            self.window.show_message("Segment editor: open an image first", "warning")
            return None
        got = self.session.lookup(view, create=create)
        return got[0] if got else None

    def _table_op(self, fn) -> None:
        lm = self._map()
        if lm is None:
            return
        try:
            fn(lm)
        except (ValueError, KeyError) as exc:
            self.window.show_message(str(exc).strip("'\""), "warning")
            self.refresh_panel()
            return
        self.session.edited()

    def add_label(self) -> None:
        self._table_op(lambda lm: lm.add_label())  # the new label becomes the active one

    def delete_label(self, value: int) -> None:
        if self._refused("deleting a label"):  # it erases voxels: an edit
            return
        self._table_op(lambda lm: lm.delete_label(value))

    def choose_label(self, value: int) -> None:
        lm = self._map()
        if lm is None:
            return
        if value not in lm.labels:
            if value == lm.next_value():
                lm.add_label()
                self.session.edited()  # a table change: autosaved like any edit
            else:
                self.window.show_message(f"No label {value} (labels: {', '.join(map(str, lm.labels))})", "warning")
                return
        lm.set_active(value)
        self.refresh_panel()
        self.window.show_message(f"Active label {value}: {lm.labels[value].name}")

    def choose_color(self, value: int) -> None:
        lm = self._map()
        if lm is None:
            return
        from PySide6.QtGui import QColor

        color = QColorDialog.getColor(QColor(*lm.labels[value].color), self.window, "Label colour")
        if color.isValid():
            self._table_op(lambda m: m.set_color(value, (color.red(), color.green(), color.blue())))

    def refresh_panel(self) -> None:
        lm = self.session.current()
        view = self.session.active_view()
        vol = view.volume if view is not None else None
        self.panel.set_labels(lm, lm.stats(vol) if lm is not None and vol is not None else None)
        if lm is None:
            self.panel.title.setText("No segmentation for the shown image yet: pick a tool and draw "
                                     "(the AI segmentation, when there is one, is the starting point).")
            self.panel.status.setText("")
            return
        self.panel.title.setText(f"Editing {vol.info.series_description or vol.info.series_uid}"
                                 + (" — unsaved changes (autosaved)" if lm.dirty else ""))
        h = lm.history
        running = self.session.effects.busy_with(map_key(vol))
        self.panel.undo_button.setEnabled(h.can_undo and running is None)
        self.panel.redo_button.setEnabled(h.can_redo and running is None)
        self.panel.status.setText((f"Computing {running}… (edits wait; Cancel in the status bar)  ·  "
                                   if running else "")
                                  + f"Undo: {h.undo_name or '—'}  ·  Redo: {h.redo_name or '—'}  ·  "
                                  f"history {h.nbytes / 1e6:.1f} MB")

    # -- effects, undo ---------------------------------------------------------------------------------
    def effect(self, what: str, plan_for) -> bool:
        """Run a volume effect on the shown map in the background: ``plan_for(labelmap, view)`` reads
        the options now and returns ``plan(should_stop=...) -> Change`` for the worker; the change is
        written as one undo step when it ends (see effect_runner). False when it did not start."""
        view = self.session.active_view()
        lm = self._map()
        if lm is None or view is None:
            return False
        if self.session.refuse_if_busy(map_key(view.volume), what):
            return False
        if lm.active is None:
            self.window.show_message("Add a label first", "warning")
            return False
        try:
            lm._check_value_writable(lm.active)  # say it now, not after seconds of computing
        except (LabelLocked, KeyError) as exc:
            self.window.show_message(f"{what}: {str(exc).strip(chr(39))}", "warning")
            return False
        return self.session.effects.start(what, map_key(view.volume), lm, plan_for(lm, view))

    def _effects_busy(self) -> None:
        """An effect started or ended: undo/redo wait for it; the panel says so."""
        idle = not self.session.effects.running
        for widget in (self.undo_action, self.redo_action, *self.panel.effect_buttons):
            widget.setEnabled(idle)
        self.refresh_panel()

    def _refused(self, what: str) -> bool:
        view = self.session.active_view()
        return view is not None and view.volume is not None and self.session.refuse_if_busy(map_key(view.volume), what)

    def undo(self) -> None:
        if self._refused("undo"):
            return
        lm = self._map(create=False)
        if lm is not None and lm.history.can_undo and not lm.editing:
            step = lm.undo()
            self.window.show_message(f"Undone: {step.name}" if step else "Nothing to undo")
            self.session.edited()

    def redo(self) -> None:
        if self._refused("redo"):
            return
        lm = self._map(create=False)
        if lm is not None and lm.history.can_redo and not lm.editing:
            step = lm.redo()
            self.window.show_message(f"Redone: {step.name}" if step else "Nothing to redo")
            self.session.edited()

    # -- save / load ----------------------------------------------------------------------------------
    def save(self, path, view=None) -> Path:
        """NIfTI (.nii/.nii.gz) or DICOM SEG (.dcm) of the shown image's map, on the source grid."""
        view = view or self.session.active_view()
        got = self.session.lookup(view, create=False) if view is not None else None
        if got is None:
            raise ValueError("no segmentation to save for the shown image")
        lm, vol = got
        path = Path(path)
        if path.suffix.lower() == ".dcm":
            from ..core.export.dicom_seg import (
                compact_segments,
                edited_segments,
                write_dicom_seg,
            )

            series = self.window.viewport_series(view) or self._series_of(vol)
            if series is None or series.kind != "dicom":
                raise ValueError("DICOM SEG needs a DICOM source series; save as NIfTI instead")
            # the model's untouched labels: AUTOMATIC; edited: SEMIAUTOMATIC; drawn by hand: MANUAL
            original, model = self.session.origins.get(map_key(vol), (None, ""))
            segs = edited_segments(lm.array, {v: lb.name for v, lb in lm.labels.items()},
                                   {v: lb.color for v, lb in lm.labels.items()}, original, model,
                                   opened=self.session.opened.get(map_key(vol)))
            labels, segs = compact_segments(lm.array, segs)  # SEG segment numbers run 1..N
            write_dicom_seg(labels, vol, series, segs, path, series_description="Lightbox edited segmentation")
        else:
            from ..core.export.nifti import write_label_map

            write_label_map(lm.array, vol, path)
        lm.mark_saved()
        self.autosaver.mark_clean(vol.info.series_uid, lm.version)
        recovery.discard_series(vol.info.series_uid)
        self.refresh_panel()
        self.window.show_message(f"Segmentation saved to {path}")
        return path

    def _series_of(self, volume):
        return next((s for s in (self.window.scan_result.series if self.window.scan_result else [])
                     if s.uid == volume.info.series_uid), None)

    def load(self, path, view=None) -> LabelMap:
        """Open a label file over ``view``'s image now (on this thread); see ``open_labels``."""
        from ..core.io.label_files import read_label_file

        view = view or self.session.active_view()
        if view is None or view.volume is None:
            raise ValueError("open the image the segmentation belongs to first")
        return self.adopt_labels(read_label_file(path, view.volume, self._view_series(view)), view)

    # -- label files made by other tools -----------------------------------------------------------
    def open_labels(self, path, view=None) -> bool:
        """File ▸ Open labels…: read a SEG / RTSTRUCT / NIfTI-NRRD label file on the window's worker and
        make it the edited map of the image it belongs to. The view is the one showing a series the file
        references, else ``view`` or the active one; when it references a series of the open study that
        is not shown, that series is opened first. False (and a message saying why) when nothing starts."""
        from ..core.io.label_files import file_kind, read_label_file, referenced_series

        path = Path(path)
        refs: list[str] = []
        if file_kind(path) in ("seg", "rtstruct"):
            import pydicom

            try:
                refs = referenced_series(pydicom.dcmread(path, stop_before_pixels=True, force=True))
            except Exception:  # noqa: BLE001 - the reader below names the problem
                refs = []
        target = next((v for v in self.window.shown_views()
                       if v.volume is not None and getattr(self._view_series(v), "uid", None) in refs), None)
        if target is None and refs and self.window.scan_result is not None:
            series = next((s for s in self.window.scan_result.series if s.uid in refs and s.kind == "dicom"), None)
            if series is not None:
                self._pending_labels = path
                self.window.show_message(f"{path.name} belongs to {series.label()}: opening that series first")
                self.window.load_series(series)
                return True
        view = target or view or self.session.active_view()
        if view is None or view.volume is None:
            self.window.show_message(f"Cannot open {path.name}: open the image it belongs to first", "error")
            return False
        key = map_key(view.volume)
        if self.session.refuse_if_busy(key, "opening labels"):
            return False
        current = self.session.maps.get(key)
        if current is not None and current.dirty and QMessageBox.question(
                self.window, "Open labels", f"The segmentation of this image has unsaved edits. Replace it with "
                f"{path.name}?") != QMessageBox.StandardButton.Yes:
            return False
        vol = view.volume
        series = self._view_series(view)

        def job(progress, stop):
            progress(0, 1)
            return read_label_file(path, vol, series)

        self.window.tasks.start(f"Opening labels {path.name}", job, lambda opened: self._labels_read(opened, view, vol))
        return True

    def _view_series(self, view):
        return self.window.viewport_series(view) or self._series_of(view.volume)

    def _labels_read(self, opened, view, vol) -> None:
        if view.volume is not vol:  # another image was opened meanwhile
            self.window.show_message(f"{opened.path.name}: the image changed while it was read; open it again",
                                     "warning")
            return
        self.adopt_labels(opened, view)

    def adopt_labels(self, opened, view) -> LabelMap:
        """The opened file's map as the edited map of ``view``'s image, with the file's segment names
        and colours (codes and algorithm kept for saving); replaces a map already there."""
        vol = view.volume
        labels, used = [], set()
        for seg in opened.segments:
            name = (seg.label or f"Segment {seg.number}").strip() or f"Segment {seg.number}"
            base, k = name, 2
            while name.lower() in used:  # the label table needs unique names; a SEG may repeat them
                name, k = f"{base} ({k})", k + 1
            used.add(name.lower())
            labels.append(Label(int(seg.number), name, tuple(seg.color), algorithm=str(seg.algorithm_type).upper(),
                                algorithm_name=seg.algorithm_name))
        lm = LabelMap(vol, opened.array, labels)
        for v in (int(x) for x in np.unique(lm.array) if x and int(x) not in lm.labels):
            lm.add_label(f"Segment {v}", value=v)  # a value the file did not describe
        if not lm.labels:
            lm.add_label("Segment 1")
        lm.set_active(min(lm.labels))
        lm.mark_saved()
        key = map_key(vol)
        named = {seg.number: seg for seg in opened.segments}
        for lb in labels:  # the names as shown (made unique) are the ones that keep the file's codes
            if lb.value in named:
                named[lb.value] = replace(named[lb.value], label=lb.name)
        self.session.origins.pop(key, None)
        self.session.blank.discard(key)  # another tool's map: it replaces the AI's layer
        self.session.opened[key] = (lm.array.copy(), named)
        self.session.adopt(lm, vol, source=str(opened.path))
        self.window.set_segmentation_visible(True)
        names = ", ".join(lb.name for lb in labels[:6]) + (" …" if len(labels) > 6 else "")
        text = f"Opened {len(labels)} segment(s) from {opened.path.name} ({opened.kind}): {names}"
        self.window.show_message(text + ("\n" + "\n".join(opened.notes) if opened.notes else ""),
                                 "warning" if opened.notes else "info")
        self.refresh_panel()
        self.labels_opened.emit(lm)
        return lm

    def offer_label_files(self, series, paths) -> None:
        """Label files found beside ``series`` (same scan, referencing it): listed in the panel."""
        self.found_labels[series.key] = list(paths)
        self.panel.set_found(list(paths))
        if paths and self.dock.isHidden():
            self.dock.show()  # where the offer is: a tab in the right column, the image stays as it was

    def open_labels_dialog(self) -> None:
        view = self.session.active_view()
        if view is None or view.volume is None:
            self.window.show_message("Open labels: open the image the segmentation belongs to first", "warning")
            return
        path, _ = QFileDialog.getOpenFileName(
            self.window, "Open labels", self.window.workspace.last_dir,
            "Label files (*.dcm *.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd);;All files (*)")
        if path:
            self.open_labels(path)

    def save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.window, "Save segmentation", self.window.workspace.last_dir,
                                              "NIfTI (*.nii.gz *.nii);;DICOM SEG (*.dcm)")
        if path:
            try:
                self.save(path)
            except (OSError, ValueError) as exc:
                self.window.show_message(f"Cannot save {path}: {exc}", "error")

    def load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Load segmentation", self.window.workspace.last_dir,
                                              "Segmentations (*.nii.gz *.nii *.dcm);;All files (*)")
        if path:
            try:
                self.load(path)
            except (OSError, ValueError, LightboxError) as exc:
                self.window.show_message(f"Cannot load {path}: {exc}", "error")

    # -- export for retraining ------------------------------------------------------------------------
    def export(self, root, view=None, dataset_name: str = "Dataset501_Lightbox", should_stop=None) -> None:
        """Export the shown image's map in the background (window's worker: progress bar, Cancel)."""
        self.run_export(ExportRequest(str(root), dataset_name, True, {}, False), view, should_stop)

    def _mammo_shown(self) -> bool:
        return self.window.hanging_shown()

    def _mammo_views(self) -> dict:
        """{view: (volume, series)} of the 4-view hanging on screen."""
        layout = self.window.mammo_layout
        return {name: (cell.volume, layout.series.get(name)) for name, cell in layout.cells.items()
                if cell.volume is not None}

    def _edited(self, view) -> tuple | None:
        """(labels snapshot, names, model's map or None, model) of ``view``'s map; None without voxels."""
        got = self.session.lookup(view, create=False) if view is not None else None
        if got is None or not got[0].array.any():
            return None
        lm, vol = got
        original, model = self.session.origins.get(map_key(vol), (None, ""))
        # a snapshot: editing may go on while it is written
        return lm.array.copy(), {v: lb.name for v, lb in lm.labels.items()}, original, model

    def _edited_mammo(self) -> dict:
        cells = self.window.mammo_layout.cells
        return {name: e for name in self._mammo_views() if (e := self._edited(cells[name])) is not None}

    def _ai_exam(self):
        """The cached analysis of the exam on screen, or None (Analyze not run)."""
        analysis = self.window.analysis
        target = analysis.target() if self.window.shown_mammo is not None else (None,)
        return analysis.cache.get(analysis.cache_key(target)) if target[0] == "mammo" else None

    def export_subject(self) -> ExportSubject:
        """What can be exported from the screen, with the AI's classes as suggestions."""
        if self._mammo_shown():
            views = self._mammo_views()
            edited = self._edited_mammo()
            text = "; ".join(f"{n}: {', '.join(e[1][v] for v in sorted(e[1]) if v and (e[0] == v).any())}"
                             for n, e in edited.items())
            names = {v: n for e in edited.values() for v, n in e[1].items()}
            result = self._ai_exam()
            suggestions = {}
            if result is not None:
                for name, sr in result.series.items():
                    if "malignancy" in sr.scores:
                        p = float(sr.scores["malignancy"])
                        suggestions[name] = (suggested_class(p), p)
                if result.exam_scores:
                    p = max(float(v) for v in result.exam_scores.values())
                    suggestions[EXAM_VIEW] = (suggested_class(p), p)
            image = next(iter(views.values()))[0] if views else None
            return ExportSubject(image, text, names, tuple(views), suggestions, tuple(views.values()))
        view = self.session.active_view()
        edited = self._edited(view)
        if edited is None:
            return ExportSubject(view.volume if view is not None else None)
        labels, names, _original, _model = edited
        present = [names[v] for v in sorted(names) if v and (labels == v).any()]
        text = f"{', '.join(present)} ({int(np.count_nonzero(labels))} voxels)"
        return ExportSubject(view.volume, text, names)

    def run_export(self, request: ExportRequest, view=None, should_stop=None) -> None:
        """Run an ExportRequest on the window's worker (progress bar, Cancel); the result or the
        ExportError naming the folder ends in the status bar."""
        from ..core.export.training import export_case, export_exam

        if self._mammo_shown() and view is None:
            views = self._mammo_views()
            edited = self._edited_mammo() if request.segmentation else {}
            result = self._ai_exam()
            model = (result.models.get("exam", "") if result is not None else "") if request.classes else ""
            if not request.classes and not edited:
                self.window.show_message("Export: nothing to export (no class and no corrected segmentation)",
                                         "warning")
                return

            def job(progress, stop):
                progress(0, 1)
                out = export_exam(request.root, views, request.classes, dataset_name=request.dataset,
                                  labels={n: e[:3] for n, e in edited.items()}, model=model,
                                  seg_models={n: e[3] for n, e in edited.items() if e[3]},
                                  keep_mapping=request.keep_mapping,
                                  allow_unverified_pixels=request.allow_unverified_pixels)
                progress(1, 1)
                return Committed(out)  # written: a late Cancel must not say otherwise
        else:
            view = view or self.session.active_view()
            edited = self._edited(view) if request.segmentation else None
            if edited is None:
                self.window.show_message("Export: no segmentation for the shown image", "warning")
                return
            labels, names, original, model = edited
            vol = view.volume
            series = self.window.viewport_series(view) or self._series_of(vol)
            opened = self.session.opened.get(map_key(vol))  # another tool's file: keep its codes

            def job(progress, stop):
                progress(0, 1)
                out = export_case(request.root, vol, labels, names, series, dataset_name=request.dataset,
                                  model=model, original_labels=original, keep_mapping=request.keep_mapping,
                                  classes=request.classes, allow_unverified_pixels=request.allow_unverified_pixels,
                                  opened=opened)
                progress(1, 1)
                return Committed(out)  # written: a late Cancel must not say otherwise

        self.window.tasks.start("Exporting for training", job, self._exported, should_stop)

    def _exported(self, out: dict) -> None:
        self.last_export = out
        if "images" in out:  # an exam
            what = [f"{len(out['images'])} view image(s), {out['rows']} class row(s)"] if out["images"] else []
            what += [f"segmentation {v} as {o['case']}" for v, o in out["segmentations"].items()]
            detail = f" ({'; '.join(what)})"
        else:
            detail = " (with a de-identified DICOM SEG)" if out["seg"] else ""
        self.window.show_message(f"Exported {out['case']} to {out['dataset']}{detail}")
        self.exported.emit(out)

    def export_dialog(self) -> ExportDialog:
        """Segment ▸ Export for training…: the dialog; Export runs the request on the worker."""
        dialog = ExportDialog(self.export_subject(), self.window, browse_from=self.window.workspace.last_dir)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.run_export(dialog.request()))
        dialog.finished.connect(lambda _r: setattr(self, "export_box", None))
        self.export_box = dialog
        dialog.open()
        return dialog

    # -- unsaved work ----------------------------------------------------------------------------------
    def dirty_maps(self) -> list[tuple[str, LabelMap]]:
        return [(k, lm) for k, lm in self.session.maps.items() if lm.dirty]

    def offer_recovery(self) -> list[recovery.RecoverySnapshotInfo]:
        """At launch: unsaved segmentations left by a crash; a non-blocking question to restore them."""
        self.offered = [i for i in recovery.list_snapshots() if i.ok]
        if not self.offered:
            return []
        info = self.offered[0]
        when = info.saved_datetime.strftime("%Y-%m-%d %H:%M") if info.saved_datetime else "earlier"
        box = QMessageBox(QMessageBox.Icon.Question, "Recover unsaved segmentation",
                          f"Lightbox closed with unsaved segmentation edits ({when}):\n"
                          f"{info.description or info.series_uid}\nlabels: {', '.join(info.label_names)}\n\n"
                          "Open the study and restore them?", parent=self.window)
        restore = box.addButton("Restore", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Later", QMessageBox.ButtonRole.RejectRole)
        box.buttonClicked.connect(lambda b: self._recovery_answer(info, b is restore, b.text()))
        self.recovery_box = box
        box.open()
        return self.offered

    def _recovery_answer(self, info, restore: bool, text: str) -> None:
        self.recovery_box = None
        if restore:
            self.restore(info)
        elif text == "Discard":
            recovery.discard_snapshot(info)

    def restore(self, info: recovery.RecoverySnapshotInfo) -> None:
        """Open the snapshot's study; when its series is shown the edits come back (marked unsaved)."""
        self.pending_restore = info
        if not self._try_restore() and info.source_path and Path(info.source_path).exists():
            self.window.open_path(info.source_path)

    def _image_shown(self) -> None:
        self.session.show_layers()
        if self.pending_restore is not None:
            self._try_restore()
        series = self.window.shown_series
        self.panel.set_found(self.found_labels.get(series.key, []) if series is not None else [])
        pending, self._pending_labels = self._pending_labels, None
        if pending is not None:  # its series was opened for it: read it now (a worker could be superseded)
            try:
                self.load(pending)
            except (OSError, ValueError, LightboxError) as exc:
                self.window.show_message(f"Cannot open {pending.name}: {exc}", "error")
        self.refresh_panel()

    def _try_restore(self) -> bool:
        info = self.pending_restore
        for view in self.window.all_views():
            vol = view.volume
            if vol is None or not info.matches_volume(vol):
                continue
            snap = recovery.load_snapshot(info)
            fields = set(Label.__dataclass_fields__)
            labels = [Label(**{k: v for k, v in d.items() if k in fields}) for d in snap.labels]
            lm = LabelMap(vol, snap.array, labels)
            lm.version = snap.version
            lm._new_token()  # unsaved: differs from the (never) saved state
            self.session.blank.discard(map_key(vol))
            self.session.adopt(lm, vol, source=info.source_path)
            self.pending_restore = None
            self.window.show_message(f"Restored unsaved segmentation of {info.description or info.series_uid}")
            self.autosaver.request_save()
            return True
        return False

    def confirm_close(self) -> bool:
        """Closing with unsaved edits asks: Save (each map), Discard, or Cancel the close."""
        dirty = self.dirty_maps()
        if not dirty:
            return True
        names = ", ".join(self.session.volumes[k].info.series_description or k for k, _ in dirty)
        answer = QMessageBox.question(
            self.window, "Unsaved segmentation",
            f"The segmentation of {names} has unsaved edits. Save before closing?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Save)
        if answer == QMessageBox.StandardButton.Cancel:
            return False
        if answer == QMessageBox.StandardButton.Save:
            for key, _lm in dirty:
                view = next(iter(self.session.views_of(key)), None)
                path, _ = QFileDialog.getSaveFileName(self.window, "Save segmentation", self.window.workspace.last_dir,
                                                      "NIfTI (*.nii.gz *.nii);;DICOM SEG (*.dcm)")
                if not path:
                    return False
                self.save(path, view)
        else:
            for key, _lm in dirty:
                vol = self.session.volumes[key]
                self.autosaver.discard(vol.info.series_uid)
                recovery.discard_series(vol.info.series_uid)
            for _key, lm in dirty:
                lm.mark_saved()
        return True

    def shutdown(self) -> None:
        self.autosaver.stop(final_save=True)


def _tool_button(action: QAction):
    from PySide6.QtWidgets import QToolButton

    b = QToolButton()
    b.setDefaultAction(action)
    b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
    return b
