"""Multi-planar layout: axial, coronal and sagittal views of one volume with a
shared crosshair.

The crosshair is one point in world (LPS mm) coordinates. A left click (or
shift+click) in any view puts it at the centre of the clicked pixel; the other
two views jump to the slices through it (``core.mpr.slice_for_world``) and every
view draws the two other planes as lines, coloured as in 3D Slicer: axial red,
sagittal yellow, coronal green. Scrolling a view moves the crosshair along
that view's normal. Window/level is linked across the three views.

Mouse per view: left click = crosshair, wheel = slice, Ctrl+wheel = zoom,
right-drag = window/level, left/middle-drag = pan; R resets.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

from ..core.mpr import PLANES, nearest_image_slice, pixel_to_world, world_to_pixel
from ..core.volume import Volume
from .slice_view import SliceView, _fmt, _format_name

PLANE_COLORS = {"axial": "#e04040", "sagittal": "#e8d040", "coronal": "#40c060"}  # Slicer red / yellow / green
GRID = {"axial": (0, 0), "coronal": (0, 1), "sagittal": (1, 0)}


class MprLayout(QWidget):
    """2x2: axial | coronal over sagittal | info. ``views[plane]`` is that plane's SliceView."""

    crosshair_changed = Signal(object)  # LPS mm, shape (3,)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._volume: Volume | None = None
        self._world = np.zeros(3)
        self._syncing = False
        self.views: dict[str, SliceView] = {}
        # lines[plane][other plane] = the line in ``plane``'s view showing ``other``'s slice
        self.lines: dict[str, dict[str, pg.InfiniteLine]] = {}

        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(2)
        for plane in PLANES:
            view = SliceView(self, plane=plane)
            view.setObjectName(f"mpr-{plane}")
            view.set_placeholder(f"{plane.capitalize()} — no volume")
            view.setStyleSheet(f"#mpr-{plane} {{ border-top: 3px solid {PLANE_COLORS[plane]}; }}")
            view.pixel_clicked.connect(lambda r, c, _m, p=plane: self._clicked(p, r, c))
            view.slice_changed.connect(lambda k, p=plane: self._scrolled(p, k))
            view.window_changed.connect(lambda c, w, p=plane: self._window_changed(p, c, w))
            self.lines[plane] = {}
            for other in PLANES:
                if other == plane:
                    continue
                line = pg.InfiniteLine(angle=90, movable=False,
                                       pen=pg.mkPen(PLANE_COLORS[other], width=1))
                line.setZValue(10)
                line.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
                line.setAcceptHoverEvents(False)
                line.hide()
                view.view.addItem(line, ignoreBounds=True)
                self.lines[plane][other] = line
            self.views[plane] = view
            grid.addWidget(view, *GRID[plane])
        self.info = QLabel(self)
        self.info.setObjectName("mpr-info")
        self.info.setTextFormat(Qt.TextFormat.PlainText)
        self.info.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.info.setWordWrap(True)
        self.info.setStyleSheet("background: black; color: #dcdcd0; padding: 10px;")
        grid.addWidget(self.info, 1, 1)
        for i in range(2):
            grid.setRowStretch(i, 1)
            grid.setColumnStretch(i, 1)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setStyleSheet("MprLayout { background: #3a3a3a; }")
        self._update_info()

    # -- content ------------------------------------------------------------------
    @property
    def volume(self) -> Volume | None:
        return self._volume

    @property
    def crosshair_world(self) -> np.ndarray:
        """The crosshair in LPS millimetres (a copy)."""
        return self._world.copy()

    def set_volume(self, volume: Volume, window: tuple[float, float] | None = None, at=None) -> None:
        """Show a volume in the three planes, the crosshair at ``at`` (LPS mm: where the reader was, e.g.
        ``SliceView.reading_point()``, so M on image 71 opens on image 71) or else the centre voxel."""
        self._volume = volume
        self._syncing = True
        try:
            for view in self.views.values():
                view.set_volume(volume, window)
        finally:
            self._syncing = False
        if at is not None and np.all(np.isfinite(np.asarray(at, dtype=float))):
            self.set_crosshair_world(at)
            return
        centre = (np.asarray(volume.shape) - 1) // 2
        centre[0] = nearest_image_slice(volume, centre[0])  # a sparse series opens on an image
        self.set_crosshair_world(volume.index_to_world(centre))

    def clear(self) -> None:
        self._volume = None
        for plane, view in self.views.items():
            view.clear()
            for line in self.lines[plane].values():
                line.hide()
        self._update_info()

    def set_crosshair_world(self, lps) -> None:
        """Move the crosshair: every view goes to the slice through it and redraws its lines."""
        self._world = np.asarray(lps, dtype=float).reshape(3).copy()
        if self._volume is None:
            return
        self._syncing = True
        try:
            for view in self.views.values():
                k, _, _ = world_to_pixel(self._volume, view.plane_geometry, self._world)
                view.set_slice(k)
        finally:
            self._syncing = False
        self._update_lines()
        self._update_info()
        self.crosshair_changed.emit(self.crosshair_world)

    def reset_all(self) -> None:
        for view in self.views.values():
            if view.volume is not None:
                view.reset_view(window=True)

    # -- interaction ----------------------------------------------------------------
    def _clicked(self, plane: str, row: int, col: int) -> None:
        view = self.views[plane]
        if self._volume is None:
            return
        self.set_crosshair_world(pixel_to_world(self._volume, view.plane_geometry, view.slice_index, row, col))

    def _scrolled(self, plane: str, k: int) -> None:
        """A view changed slice on its own (wheel, keys): move the crosshair along its normal."""
        if self._syncing or self._volume is None:
            return
        g = self.views[plane].plane_geometry
        _, r, c = world_to_pixel(self._volume, g, self._world)
        self.set_crosshair_world(pixel_to_world(self._volume, g, k, r, c))

    def _window_changed(self, plane: str, center: float, width: float) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            for other, view in self.views.items():
                if other != plane and view.volume is not None:
                    view.set_window(center, width)
        finally:
            self._syncing = False
        self._update_info()

    # -- drawing --------------------------------------------------------------------------
    def _update_lines(self) -> None:
        vol = self._volume
        for plane, view in self.views.items():
            g = view.plane_geometry
            if vol is None or g is None:
                continue
            _, r, c = world_to_pixel(vol, g, self._world)
            x, y = view.pixel_center(r, c)
            for other, line in self.lines[plane].items():
                axis = self.views[other].plane_geometry.axis
                if axis == g.col_axis:  # the other plane is a column of this view: vertical line
                    line.setAngle(90)
                    line.setPos((x, 0))
                else:  # its normal runs along this view's rows: horizontal line
                    line.setAngle(0)
                    line.setPos((0, y))
                line.show()

    def line_position(self, plane: str, other: str) -> tuple[float, float]:
        """(angle, scene coordinate in mm) of the line showing ``other`` in ``plane``'s view."""
        line = self.lines[plane][other]
        pos = line.pos()
        return line.angle, (pos.x() if line.angle == 90 else pos.y())

    def _update_info(self) -> None:
        vol = self._volume
        if vol is None:
            self.info.setText("MPR\n\nNo volume")
            return
        info = vol.info
        w = self._world
        idx = vol.world_to_index(w)
        k = np.clip(np.rint(idx).astype(int), 0, np.asarray(vol.shape) - 1)
        value = vol.array[tuple(k)]
        lines = [
            _format_name(info.patient_name) or "(no name)",
            info.series_description or "",
            "",
            "Crosshair (LPS mm)",
            (f"  {'R' if w[0] < 0 else 'L'} {abs(w[0]):.1f}   {'A' if w[1] < 0 else 'P'} {abs(w[1]):.1f}"
             f"   {'I' if w[2] < 0 else 'S'} {abs(w[2]):.1f}"),
            f"  voxel (x, y, z) {k[2]}, {k[1]}, {k[0]}   value {_fmt(float(value))}",
            "",
            "Click: move crosshair   Wheel: slice",
            "Right-drag: W/L   Ctrl+wheel: zoom   R: reset",
        ]
        self.info.setText("\n".join(lines))
