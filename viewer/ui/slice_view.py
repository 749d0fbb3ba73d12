"""One 2D slice of a Volume, in millimetres, with window/level and corner text.

Display conventions: the first array row is at the top and the first column
at the left, so an axial LPS stack shows the patient's Right on the viewer's
left (radiological convention). One scene unit is one millimetre, so
anisotropic pixels keep their true aspect. MONOCHROME1 images are inverted
for display only; ``current_image()`` always returns modality values.

Mouse: wheel = next/previous slice, Ctrl+wheel = zoom, right-drag =
window/level (horizontal = width, vertical = center), left- or middle-drag =
pan (``pixel_clicked`` reports left clicks, e.g. for a crosshair). Keys: Up/Down = previous/next slice, PageUp/PageDown = 10% of the
stack, Home/End = first/last, R = reset view and window.
With a measurement tool set (``set_tool``: ruler, rect, ellipse) left-drag
draws that measurement instead of panning; Escape returns to navigate and
Delete removes the selected (else the last) measurement on the shown slice.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QKeyEvent
from PySide6.QtWidgets import (
    QGraphicsDropShadowEffect,
    QGraphicsView,
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..core.geometry import axis_letter
from ..core.mpr import (PlaneGeometry, extract_slice, initial_slice, native_geometry, normal_world_axis,
                        pixel_to_world, plane_geometry)
from ..core.probe import Probe, probe, readout_lines
from ..core.volume import Volume
from ..core.windowing import default_window  # noqa: F401 - re-exported for the UI
from .legend import ColorLegend
from .measure_tools import TOOLS, MeasureTool
from .mime import series_key

WHEEL_STEP = 120  # one notch of a mouse wheel, in eighths of a degree


def _format_date(d: str) -> str:
    d = (d or "").strip()
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


def _format_name(name: str) -> str:
    """DICOM person name 'FAMILY^GIVEN^MIDDLE' as 'FAMILY, GIVEN MIDDLE'."""
    parts = [p.strip() for p in (name or "").split("^")]
    if len(parts) > 1 and parts[0]:
        rest = " ".join(p for p in parts[1:] if p)
        return f"{parts[0]}, {rest}" if rest else parts[0]
    return (name or "").strip()


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.4g}"




class _SliceViewBox(pg.ViewBox):
    """A ViewBox whose wheel scrolls slices and whose right-drag sets window/level."""

    def __init__(self, owner: SliceView):
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self._owner = owner
        self.setAcceptHoverEvents(True)  # editing tools show a cursor preview (tool.hover)

    def hoverEvent(self, ev):
        p = None if ev.isExit() else self.mapSceneToView(ev.scenePos())
        self._owner.set_cursor(None if p is None else (p.x(), p.y()))  # the value readout follows the mouse
        hover = getattr(self._owner.tool, "hover", None)
        if hover is not None:
            hover(None, None) if p is None else hover(p.x(), p.y())

    def wheelEvent(self, ev, axis=None):
        if self._owner.wheel_zooms or ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)  # zoom around the mouse
            return
        ev.accept()
        self._owner.wheel(ev.delta())

    def mouseDragEvent(self, ev, axis=None):
        tool = self._owner.tool
        if ev.button() == Qt.MouseButton.LeftButton and tool is not None:
            ev.accept()  # a measurement tool draws instead of panning
            if ev.isStart():
                p = self.mapSceneToView(ev.buttonDownScenePos(Qt.MouseButton.LeftButton))
                tool.press(p.x(), p.y())
            p = self.mapSceneToView(ev.scenePos())
            if ev.isFinish():
                tool.release(p.x(), p.y())
            else:
                tool.move(p.x(), p.y())
            return
        if ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            start = ev.buttonDownScreenPos(Qt.MouseButton.RightButton)
            now = ev.screenPos()
            self._owner.drag_window(now.x() - start.x(), now.y() - start.y(),
                                    start=ev.isStart(), finish=ev.isFinish())
            return
        super().mouseDragEvent(ev, axis)  # left / middle: pan (ViewBox PanMode)

    def mouseClickEvent(self, ev):
        tool = self._owner.tool
        click = getattr(tool, "click", None)
        if ev.button() == Qt.MouseButton.LeftButton and click is not None and self._owner.volume is not None:
            ev.accept()  # e.g. flood fill, or a brush dab without a drag
            p = self.mapSceneToView(ev.scenePos())
            click(p.x(), p.y())
            return
        if ev.button() == Qt.MouseButton.LeftButton and self._owner.volume is not None:
            ev.accept()
            p = self.mapSceneToView(ev.scenePos())
            self._owner.click_at(p.x(), p.y(), ev.modifiers())
            return
        super().mouseClickEvent(ev)


class _Canvas(pg.GraphicsView):
    """The graphics view; hands navigation keys to the SliceView."""

    def __init__(self, owner: SliceView):
        super().__init__(background="k")
        self._owner = owner
        self.setFocusPolicy(Qt.FocusPolicy.WheelFocus)
        # One bounding rect per repaint: with Qt's default (minimal) mode, an item's old area (a crosshair line
        # that moved) was lost whenever the translucent corner labels on this viewport changed in the same
        # pass, leaving pieces of the old line on screen until the next full redraw (issue 14).
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.BoundingRectViewportUpdate)
        self.setAcceptDrops(True)  # a series dragged from the browser; file drops go on to the main window

    def mousePressEvent(self, ev):
        self._owner.activated.emit()
        super().mousePressEvent(ev)

    def leaveEvent(self, ev):
        self._owner.set_cursor(None)  # the readout blanks when the mouse leaves, whatever the scene saw
        super().leaveEvent(ev)

    def dragEnterEvent(self, ev):
        if series_key(ev.mimeData()) is not None:
            ev.acceptProposedAction()
        else:
            ev.ignore()  # -> the parent widgets (the main window opens dropped files)

    def dragMoveEvent(self, ev):
        if series_key(ev.mimeData()) is not None:
            ev.acceptProposedAction()
        else:
            ev.ignore()

    def dropEvent(self, ev):
        key = series_key(ev.mimeData())
        if key is None:
            ev.ignore()
            return
        ev.acceptProposedAction()
        self._owner.activated.emit()
        self._owner.series_dropped.emit(key)

    def keyPressEvent(self, ev: QKeyEvent):
        if self._owner.handle_key(ev.key(), ev.modifiers()):
            ev.accept()
            return
        super().keyPressEvent(ev)

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        owner = getattr(self, "_owner", None)  # pyqtgraph resizes during __init__
        if owner is not None:
            owner._place_overlay()


class _OverlayLabel(QLabel):
    def __init__(self, parent: QWidget, align: Qt.AlignmentFlag):
        super().__init__(parent)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setAlignment(align)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        # a translucent backing keeps the text legible on bright images too
        self.setStyleSheet("color: #f2f2e6; background: rgba(0, 0, 0, 120); padding: 1px 3px;")
        font = self.font()
        font.setPointSizeF(max(9.0, font.pointSizeF()))
        self.setFont(font)
        shadow = QGraphicsDropShadowEffect(self)
        shadow.setBlurRadius(0)
        shadow.setOffset(1, 1)
        shadow.setColor(QColor(0, 0, 0))
        self.setGraphicsEffect(shadow)


class SliceView(QWidget):
    """Shows one slice of a Volume; the API below is what the window and tests use."""

    slice_changed = Signal(int)
    window_changed = Signal(float, float)  # center, width
    volume_changed = Signal()
    tool_changed = Signal(str)  # 'navigate', 'ruler', 'rect' or 'ellipse'
    pixel_clicked = Signal(int, int, object)  # row, col of the shown slice (display orientation), modifiers
    activated = Signal()  # pressed or dropped on: the window makes this the active viewport
    series_dropped = Signal(str)  # key of a series dragged here from the browser
    measurements_changed = Signal()  # the user drew, edited, deleted or cleared measurements (not a new volume)
    cursor_probed = Signal(object)  # core.probe.Probe under the mouse, or None off the image

    MARGIN = 6

    def __init__(self, parent: QWidget | None = None, plane: str | None = None):
        super().__init__(parent)
        # None: the array as stored (today's single view); 'axial' / 'coronal' / 'sagittal':
        # that reformatted plane (core.mpr), whatever the acquisition direction.
        self.plane = plane
        self.geometry_: PlaneGeometry | None = None
        self._volume: Volume | None = None
        self._k = 0
        self._window = (0.5, 1.0)
        self._default_window = (0.5, 1.0)
        self._wheel_acc = 0
        self._drag_start_window: tuple[float, float] | None = None
        self._wl_step = 1.0  # modality units per screen pixel of right-drag
        self._min_width = 1.0
        # Display options for embedding (e.g. the mammography hanging); defaults = plain view.
        self.flips: tuple[bool, bool] = (False, False)  # (left_right, up_down) mirror of the shown slice
        self.h_align = "center"  # 'left' / 'right': fit the image against that side of the view
        self.wheel_zooms = False  # plain wheel zooms instead of scrolling slices
        self.corner_text = None  # optional callable(SliceView) -> {'tl','tr','bl','br': str} overriding the overlay
        self.corner_text_visible = True  # False hides the four corner texts; orientation letters stay
        self.hidden_edges: set[str] = set()  # orientation letters not to show ('left', 'right', 'top', 'bottom')
        self._fitted = False
        self._layers: dict = {}  # name -> overlays.OverlayLayer, drawn above the image in insertion order
        self.tool: MeasureTool | None = None  # active measurement tool (None: navigate / pan)
        self.measurements: list = []  # measure_tools.Measurement, each tied to its slice
        self.selected_measurement = None
        self._cursor: tuple[float, float] | None = None  # scene (x, y) mm of the mouse, None when away
        self.cursor_probe: Probe | None = None  # what the readout shows

        self.warning = QLabel(self)
        self.warning.setWordWrap(True)
        self.warning.setTextFormat(Qt.TextFormat.PlainText)
        self.warning.setStyleSheet("background: #4a3b00; color: #ffe9a0; padding: 3px 6px;")
        self.warning.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.warning.hide()

        self.canvas = _Canvas(self)
        self.view = _SliceViewBox(self)
        self.canvas.setCentralItem(self.view)
        self.view.sigRangeChangedManually.connect(self._range_changed_manually)
        self.view.sigResized.connect(self._view_resized)
        self.image_item = pg.ImageItem(axisOrder="row-major", autoDownsample=True)
        self.view.addItem(self.image_item)
        self._gray = np.arange(256, dtype=np.uint8)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.warning)
        layout.addWidget(self.canvas, 1)
        self.setFocusProxy(self.canvas)

        vp = self.canvas.viewport()
        al = Qt.AlignmentFlag
        self._tl = _OverlayLabel(vp, al.AlignLeft | al.AlignTop)
        self._tr = _OverlayLabel(vp, al.AlignRight | al.AlignTop)
        self._bl = _OverlayLabel(vp, al.AlignLeft | al.AlignBottom)
        self._br = _OverlayLabel(vp, al.AlignRight | al.AlignBottom)
        self._edge = {side: _OverlayLabel(vp, al.AlignCenter) for side in ("left", "right", "top", "bottom")}
        self._readout = _OverlayLabel(vp, al.AlignRight | al.AlignBottom)  # value / position under the cursor
        self._readout.hide()
        self._placeholder = _OverlayLabel(vp, al.AlignCenter)
        self._placeholder.setText("No image\n\nFile > Open Folder… or drop a folder or file here")
        self.legend = ColorLegend(vp)  # colour bar of the topmost visible probability layer
        self._update_overlay()

    # -- public API ---------------------------------------------------------------
    @property
    def volume(self) -> Volume | None:
        return self._volume

    @property
    def slice_index(self) -> int:
        return self._k

    @property
    def slice_count(self) -> int:
        return 0 if self.geometry_ is None else self.geometry_.n_slices

    @property
    def plane_geometry(self) -> PlaneGeometry | None:
        """How the shown slices are cut from the volume (None without a volume)."""
        return self.geometry_

    def image_size_mm(self) -> tuple[float, float]:
        """(width, height) of the shown slice in scene units (mm)."""
        g = self.geometry_
        if g is None:
            return 0.0, 0.0
        return g.n_cols * g.pixel_size[1], g.n_rows * g.pixel_size[0]

    def pixel_center(self, row: float, col: float) -> tuple[float, float]:
        """Scene (x, y) in mm of the centre of a displayed pixel (before display flips)."""
        g = self.geometry_
        w, h = self.image_size_mm()
        x, y = (col + 0.5) * g.pixel_size[1], (row + 0.5) * g.pixel_size[0]
        lr, ud = self.flips
        return (w - x if lr else x), (h - y if ud else y)

    @property
    def window(self) -> tuple[float, float]:
        """(center, width) in modality units (HU for CT)."""
        return self._window

    def set_volume(self, volume: Volume, window: tuple[float, float] | None = None,
                   flips: tuple[bool, bool] | None = None) -> None:
        """Show a new volume at its middle slice with the given or default window.

        ``flips`` (left_right, up_down) mirrors the display only (e.g. mammography hanging).
        """
        previous, self._volume = self._volume, volume
        self.flips = (bool(flips[0]), bool(flips[1])) if flips is not None else (False, False)
        g = self.geometry_ = native_geometry(volume) if self.plane is None else plane_geometry(volume, self.plane)
        self._k = initial_slice(volume, g)  # the middle, or the nearest image in a sparse series
        self._default_window = window if window is not None else default_window(volume)
        self._window = self._default_window
        arr = volume.array
        img = self._slice(self._k)
        span = float(np.nanmax(img) - np.nanmin(img)) if np.isfinite(img).any() else 0.0
        span = max(span if np.isfinite(span) else 0.0, self._default_window[1])
        self._wl_step = max(self._default_window[1] / 256.0, span / 2000.0, 1e-6)
        self._min_width = 1.0 if np.issubdtype(arr.dtype, np.integer) else max(span * 1e-4, 1e-6)
        lut = self._gray[::-1] if volume.info.photometric.upper() == "MONOCHROME1" else self._gray
        self.image_item.setLookupTable(lut)
        self.image_item.setImage(self._shown(img), autoLevels=False, levels=self._levels(),
                                 rect=QRectF(0, 0, *self.image_size_mm()))
        other_image = previous is not None and not (previous is volume or previous.same_grid(volume)
                                                     and previous.info.series_uid == volume.info.series_uid)
        for name in [n for n, lay in self._layers.items() if other_image or lay.shape != volume.shape]:
            self.remove_layer(name)  # overlays belong to one image's grid; another image drops them
        self._refresh_layers()
        self._drop_measurements()
        self._set_problems(volume.problems)
        self._update_readout()
        self.reset_view(window=False)
        self._update_overlay()
        self.volume_changed.emit()
        self.slice_changed.emit(self._k)
        self.window_changed.emit(*self._window)

    def clear(self) -> None:
        self._volume = None
        self.geometry_ = None
        self._k = 0
        self.image_item.clear()
        for name in list(self._layers):
            self.remove_layer(name)
        self._drop_measurements()
        self._set_problems([])
        self._cursor = None
        self._update_readout()
        self._update_overlay()
        self.volume_changed.emit()

    def set_slice(self, k: int) -> None:
        """Go to slice k (clamped to the stack)."""
        if self._volume is None:
            return
        k = int(np.clip(k, 0, self.slice_count - 1))
        if k == self._k:
            return
        self._k = k
        self.image_item.setImage(self._shown(self._slice(k)), autoLevels=False, levels=self._levels())
        self._refresh_layers()
        self._refresh_measurements()
        self._update_overlay()
        self._update_readout()  # scrolling under a still mouse reads the new slice
        self.slice_changed.emit(k)

    def step_slice(self, steps: int) -> None:
        self.set_slice(self._k + int(steps))

    def set_window(self, center: float, width: float) -> None:
        width = max(float(width), self._min_width)
        self._window = (float(center), width)
        if self._volume is not None:
            self.image_item.setLevels(self._levels())
        self._update_overlay()
        self.window_changed.emit(*self._window)

    def set_corner_text_visible(self, on: bool) -> None:
        """Show or hide patient/series/slice/W-L text (the T key); orientation letters always show."""
        self.corner_text_visible = bool(on)
        self._update_overlay()
        self._update_readout()

    def current_image(self) -> np.ndarray | None:
        """The 2D array shown, in modality values (HU for CT), before windowing and display flips."""
        return None if self._volume is None else self._slice(self._k)

    def set_placeholder(self, text: str) -> None:
        """Text shown when there is no image."""
        self._placeholder.setText(text)
        self._place_overlay()

    def reset_view(self, window: bool = True) -> None:
        """Fit the image to the view; with ``window`` also restore the default window."""
        if self._volume is not None:
            width, height = self.image_size_mm()
            pw, ph = self.view.width(), self.view.height()
            if self.h_align in ("left", "right") and pw > 1 and ph > 1 and pw / ph > width / height:
                span = height * pw / ph  # fit the height; the spare width goes to the other side
                x0 = 0.0 if self.h_align == "left" else width - span
                self.view.setRange(xRange=(x0, x0 + span), yRange=(0, height), padding=0)
            else:
                self.view.setRange(QRectF(0, 0, width, height), padding=0)
            self._fitted = True
        if window:
            self.set_window(*self._default_window)

    # -- value under the cursor (core.probe) ----------------------------------------------
    def probe_at(self, x_mm: float, y_mm: float) -> Probe | None:
        """The voxel under scene point (x, y) mm of the shown slice, with every visible probability layer's
        value there (the AI heatmap); None off the image."""
        g = self.geometry_
        if g is None or self._volume is None:
            return None
        w, h = self.image_size_mm()
        lr, ud = self.flips
        x, y = (w - x_mm if lr else x_mm), (h - y_mm if ud else y_mm)
        heat = {name: layer.array for name, layer in self._layers.items()
                if layer.visible and hasattr(layer, "legend_info")}  # probability layers have a colour scale
        return probe(self._volume, g, self._k, y / g.pixel_size[0] - 0.5, x / g.pixel_size[1] - 0.5, heat)

    def reading_point(self):
        """Where the reader is, in LPS mm: the point under the mouse when it is on the image, else the centre
        of the shown slice; None without a volume. Another layout (MPR) opens there."""
        g = self.geometry_
        if g is None or self._volume is None:
            return None
        if self.cursor_probe is not None:
            return self.cursor_probe.world_lps.copy()
        return pixel_to_world(self._volume, g, self._k, (g.n_rows - 1) / 2, (g.n_cols - 1) / 2)

    def set_cursor(self, scene_xy: tuple[float, float] | None) -> None:
        """The mouse is at scene (x, y) mm (None: it left the view); the readout follows it."""
        self._cursor = None if scene_xy is None else (float(scene_xy[0]), float(scene_xy[1]))
        self._update_readout()

    def cursor_readout(self) -> str:
        """The readout's text as shown ('' when blank)."""
        return self._readout.text() if self._readout.isVisible() else ""

    def _update_readout(self) -> None:
        p = None if self._cursor is None else self.probe_at(*self._cursor)
        self.cursor_probe = p
        names = [n for n in (p.overlays if p else {})]
        lines = readout_lines(p, {n: "AI" if len(names) == 1 else f"AI {n}" for n in names})
        self._readout.setText("\n".join(lines))
        self._readout.setVisible(bool(lines) and self.corner_text_visible)
        self._place_overlay()
        self.cursor_probed.emit(p)

    # -- overlay layers (viewer.ui.overlays) -------------------------------------------
    def add_layer(self, name: str, layer):
        """Show ``layer`` (same shape as the volume) above the image; replaces a layer of that name."""
        if self._volume is None:
            raise ValueError(f"cannot add overlay {name!r}: no volume shown")
        if tuple(layer.shape) != tuple(self._volume.shape):
            raise ValueError(f"overlay {name!r} has shape {tuple(layer.shape)}, but the volume is "
                             f"{tuple(self._volume.shape)}; overlays must be on the volume's own grid")
        if name in self._layers:
            self.remove_layer(name)
        layer.name = name
        self._layers[name] = layer
        layer._attach(self, z=10 + len(self._layers))
        self.update_legend()
        return layer

    def remove_layer(self, name: str):
        """Remove and return the named layer (KeyError if there is none)."""
        layer = self._layers.pop(name)
        layer._detach()
        self.update_legend()
        return layer

    def layer(self, name: str):
        """The named layer, or None."""
        return self._layers.get(name)

    @property
    def layers(self) -> dict:
        return dict(self._layers)

    def set_layer_visible(self, name: str, visible: bool) -> None:
        layer = self._layers[name]
        layer.visible = bool(visible)
        layer.refresh()  # hidden layers are not recomputed while scrolling; catch up now
        self.update_legend()

    def set_layers_visible(self, kind: type, visible: bool) -> list[str]:
        """Show or hide every layer of a class (the H and S keys); returns the names touched."""
        names = [n for n, layer in self._layers.items() if isinstance(layer, kind)]
        for n in names:
            self.set_layer_visible(n, visible)
        return names

    def update_legend(self) -> None:
        """The colour bar follows the topmost visible layer that has a colour scale (``legend_info``)."""
        shown = [layer for layer in self._layers.values()
                 if layer.visible and hasattr(layer, "legend_info")]
        if self._cursor is not None:
            self._update_readout()  # the AI value appears / goes with its layer
        if not shown or self._volume is None:
            self.legend.hide()
            return
        self.legend.show_layer(*shown[-1].legend_info())
        self._place_overlay()

    def _refresh_layers(self) -> None:
        for layer in self._layers.values():
            layer.refresh()

    # -- measurement tools (viewer.ui.measure_tools) -----------------------------------
    @property
    def tool_name(self) -> str:
        return "navigate" if self.tool is None else self.tool.name

    def set_tool(self, tool) -> MeasureTool | None:
        """'navigate' / None (left-drag pans), 'ruler', 'rect', 'ellipse' or a MeasureTool instance."""
        if isinstance(tool, str):
            tool = None if tool == "navigate" else TOOLS[tool]()
        if self.tool is not None:
            self.tool.deactivate()
        self.tool = tool
        if tool is not None:
            tool.activate(self)
        self.tool_changed.emit(self.tool_name)
        return tool

    def _add_measurement(self, m) -> None:
        self.measurements.append(m)
        self.select_measurement(m)

    def select_measurement(self, m) -> None:
        if self.selected_measurement is not None and self.selected_measurement in self.measurements:
            self.selected_measurement.set_selected(False)
        self.selected_measurement = m
        if m is not None:
            m.set_selected(True)

    def measurements_on_slice(self, k: int | None = None) -> list:
        k = self._k if k is None else k
        return [m for m in self.measurements if m.slice_index == k]

    def add_restored_measurement(self, kind: str, k: int, p0_rc, p1_rc, uid: str):
        """Put back a saved measurement on slice ``k``: display (row, col) points, its tracking UID."""
        from .measure_tools import MEASUREMENTS

        p0, p1 = self.pixel_center(*p0_rc), self.pixel_center(*p1_rc)
        m = MEASUREMENTS[kind](self, p0, p1, slice_index=k, uid=uid)
        self.measurements.append(m)
        m.set_selected(False)
        m.refresh_visibility()
        return m

    def remove_measurement(self, m=None, notify: bool = True) -> bool:
        """Remove ``m`` or else the selected (or last) measurement on the shown slice."""
        if m is None:
            here = self.measurements_on_slice()
            m = self.selected_measurement if self.selected_measurement in here else (here[-1] if here else None)
        if m is None or m not in self.measurements:
            return False
        if self.tool is not None and self.tool.current is m:
            self.tool.current = None
        self.measurements.remove(m)
        m.remove()
        if m is self.selected_measurement:
            here = self.measurements_on_slice()
            self.selected_measurement = None
            self.select_measurement(here[-1] if here else None)
        if notify:
            self.measurements_changed.emit()
        return True

    def clear_measurements(self) -> None:
        """The user clears them (the store forgets them); a new volume only drops them from the view."""
        had = bool(self.measurements)
        self._drop_measurements()
        if had:
            self.measurements_changed.emit()

    def _drop_measurements(self) -> None:
        for m in list(self.measurements):
            self.remove_measurement(m, notify=False)
        self.selected_measurement = None

    def _refresh_measurements(self) -> None:
        for m in self.measurements:
            m.refresh_visibility()

    # -- interaction (called by the view box / canvas, and by tests) ---------------
    def wheel(self, delta: int) -> None:
        """Wheel delta in eighths of a degree: each notch away from the user goes back a slice."""
        self._wheel_acc += int(delta)
        steps = int(self._wheel_acc / WHEEL_STEP)  # truncates toward zero, both signs
        if steps:
            self._wheel_acc -= steps * WHEEL_STEP
            self.step_slice(-steps)

    def click_at(self, x_mm: float, y_mm: float, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
        """A left click at scene (x, y) mm: emits ``pixel_clicked`` with the pixel under it."""
        g = self.geometry_
        if g is None:
            return
        w, h = self.image_size_mm()
        lr, ud = self.flips
        x, y = (w - x_mm if lr else x_mm), (h - y_mm if ud else y_mm)
        row = int(np.clip(np.floor(y / g.pixel_size[0]), 0, g.n_rows - 1))
        col = int(np.clip(np.floor(x / g.pixel_size[1]), 0, g.n_cols - 1))
        self.pixel_clicked.emit(row, col, modifiers)

    def drag_window(self, dx: float, dy: float, start: bool = False, finish: bool = False) -> None:
        """Right-drag by (dx, dy) screen pixels since the press: right = wider, down = higher center."""
        if start or self._drag_start_window is None:
            self._drag_start_window = self._window
        c0, w0 = self._drag_start_window
        self.set_window(c0 + dy * self._wl_step, w0 + dx * self._wl_step)
        if finish:
            self._drag_start_window = None

    def handle_key(self, key: int, modifiers=Qt.KeyboardModifier.NoModifier) -> bool:
        """Navigation keys; True when the key was used."""
        if key == Qt.Key.Key_Escape and self.tool is not None:
            self.set_tool("navigate")
            return True
        if self._volume is None:
            return False
        if key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            return self.remove_measurement()
        n = self.slice_count
        page = max(1, n // 10)
        k = Qt.Key
        moves = {k.Key_Up: -1, k.Key_Down: 1, k.Key_PageUp: -page, k.Key_PageDown: page}
        if key in moves:
            self.step_slice(moves[key])
        elif key == k.Key_Home:
            self.set_slice(0)
        elif key == k.Key_End:
            self.set_slice(n - 1)
        elif key == k.Key_R and not (modifiers & Qt.KeyboardModifier.ControlModifier):
            self.reset_view(window=True)
        else:
            return False
        return True

    def keyPressEvent(self, ev: QKeyEvent):
        if self.handle_key(ev.key(), ev.modifiers()):
            ev.accept()
            return
        super().keyPressEvent(ev)

    # -- internals ----------------------------------------------------------------
    def _slice(self, k: int) -> np.ndarray:
        return self._cut(self._volume.array, k)

    def _cut(self, array: np.ndarray, k: int) -> np.ndarray:
        """Slice k of any array on the volume's grid (the image, or an overlay), before flips."""
        if self.plane is None:
            return array[k]
        return extract_slice(array, self.geometry_, k)

    def _shown(self, image: np.ndarray) -> np.ndarray:
        lr, ud = self.flips
        if lr:
            image = image[:, ::-1]
        return image[::-1, :] if ud else image

    def _range_changed_manually(self, *_args) -> None:
        self._fitted = False  # the user zoomed or panned: keep their view on resize

    def _view_resized(self, *_args) -> None:
        if self._fitted and self._volume is not None:  # not zoomed or panned by the user: keep it fitted
            self.reset_view(window=False)

    def _levels(self) -> tuple[float, float]:
        c, w = self._window
        return c - w / 2, c + w / 2

    def _set_problems(self, problems: list[str]) -> None:
        if not problems:
            self.warning.hide()
            self.warning.clear()
            return
        shown = problems[:3]
        more = f"\n(+{len(problems) - 3} more)" if len(problems) > 3 else ""
        self.warning.setText("\n".join(f"⚠ {p}" for p in shown) + more)
        self.warning.setToolTip("\n".join(problems))
        self.warning.show()

    def _update_overlay(self) -> None:
        v = self._volume
        labels = [self._tl, self._tr, self._bl, self._br, *self._edge.values()]
        if v is None:
            for lab in labels:
                lab.hide()
            self._placeholder.show()
            self._place_overlay()
            return
        self._placeholder.hide()
        info = v.info
        name = _format_name(info.patient_name) or "(no name)"
        top_left = [name]
        if info.patient_id:
            top_left.append(f"ID {info.patient_id}")
        if info.study_date:
            top_left.append(_format_date(info.study_date))
        desc = info.series_description or "(no description)"
        top_left.append(desc)
        self._tl.setText("\n".join(top_left))

        g = self.geometry_
        nz, ny, nx = g.n_slices, g.n_rows, g.n_cols
        top_right = [" ".join(b for b in (info.modality,
                                          f"Se {info.series_number}" if info.series_number is not None else "",
                                          f"{info.laterality}{info.view_position}".strip()) if b)]
        top_right.append(f"{nx} × {ny}")
        top_right.append(f"{g.pixel_size[1]:.3g} × {g.pixel_size[0]:.3g} mm")
        if self.plane is not None:
            top_right.insert(0, self.plane.capitalize())
        if info.photometric.upper() == "MONOCHROME1":
            top_right.append("MONOCHROME1 (inverted)")
        self._tr.setText("\n".join(t for t in top_right if t))

        c, w = self._window
        bottom = [f"Im {self._k + 1}/{nz}"]
        if nz > 1 and self.plane is None:
            pos = float(np.dot(v.index_to_world([self._k, 0, 0]), v.direction[:, 0]))
            bottom[0] += f"   Pos {pos:.1f} mm"
        elif nz > 1:  # world coordinate along the plane's axis, e.g. "S 12.5 mm"
            axis = normal_world_axis(self.plane)
            pos = float(pixel_to_world(v, g, self._k, (g.n_rows - 1) / 2, (g.n_cols - 1) / 2)[axis])
            letter = axis_letter(np.eye(3)[axis] * (1 if pos >= 0 else -1))
            bottom[0] += f"   {letter} {abs(pos):.1f} mm"
        bottom.append(f"W/L {_fmt(w)}/{_fmt(c)}")
        self._bl.setText("\n".join(bottom))
        self._br.setText("")
        if self.corner_text is not None:
            for key, text in self.corner_text(self).items():
                getattr(self, f"_{key}").setText(text)
        if not self.corner_text_visible:
            for lab in (self._tl, self._tr, self._bl, self._br):
                lab.setText("")

        show_edges = v.shape[0] > 1 or info.patient_orientation is not None or v.oriented
        if show_edges:
            text = dict(g.edge_letters)
            if self.flips[0]:
                text["left"], text["right"] = text["right"], text["left"]
            if self.flips[1]:
                text["top"], text["bottom"] = text["bottom"], text["top"]
            for side, lab in self._edge.items():
                lab.setText(text[side])
        for side in self.hidden_edges:
            self._edge[side].setText("")
        for lab in labels:
            lab.setVisible(bool(lab.text()) and (lab not in self._edge.values() or show_edges))
        self._place_overlay()

    def _place_overlay(self) -> None:
        if not hasattr(self, "_placeholder"):  # still constructing
            return
        vp = self.canvas.viewport()
        w, h, m = vp.width(), vp.height(), self.MARGIN
        for lab in (self._tl, self._tr, self._bl, self._br, self._placeholder, *self._edge.values()):
            lab.adjustSize()
        self._tl.move(m, m)
        self._tr.move(w - self._tr.width() - m, m)
        self._bl.move(m, h - self._bl.height() - m)
        self._br.move(w - self._br.width() - m, h - self._br.height() - m)
        e = self._edge
        e["left"].move(m, (h - e["left"].height()) // 2)
        e["right"].move(w - e["right"].width() - m, (h - e["right"].height()) // 2)
        e["top"].move((w - e["top"].width()) // 2, m)
        e["bottom"].move((w - e["bottom"].width()) // 2, h - e["bottom"].height() - m)
        self._placeholder.move((w - self._placeholder.width()) // 2, (h - self._placeholder.height()) // 2)
        self._place_readout(w, h, m)
        top = self._tr.y() + self._tr.height() + m if self._tr.isVisible() else m
        if self.h_align == "right":  # image against the right edge (RCC/RMLO): the free side is the left
            top = self._tl.y() + self._tl.height() + m if self._tl.isVisible() else m
            self.legend.move(m, top)
        else:
            self.legend.move(w - self.legend.width() - m, top)

    def _place_readout(self, w: int, h: int, m: int) -> None:
        """Bottom corner on the image's free side (left when the image hugs the right edge, as RCC/RMLO
        do), stacked above that corner's own text."""
        r = self._readout
        r.adjustSize()
        left = self.h_align == "right"
        below = self._bl if left else self._br
        bottom = below.y() - m if below.isVisible() and below.text() else h - m
        r.setAlignment((Qt.AlignmentFlag.AlignLeft if left else Qt.AlignmentFlag.AlignRight)
                       | Qt.AlignmentFlag.AlignBottom)
        r.move(m if left else w - r.width() - m, bottom - r.height())

    def event(self, ev):  # keep the overlay placed when first shown
        if ev.type() in (QEvent.Type.Show, QEvent.Type.LayoutRequest):
            self._place_overlay()
        return super().event(ev)
