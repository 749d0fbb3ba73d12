"""Segment-editor tools on a SliceView: brush, eraser, threshold brush, flood fill, lasso.

Each tool is one class behind the interface SliceView already gives measurement
tools (activate / deactivate / press / move / release, plus click and hover),
registered by name in ``EDIT_TOOLS`` — the Segment Editor pattern of 3D Slicer.
A tool turns scene millimetres into plane pixels (``core.editing.plane``) and
calls the Qt-free effects in ``core.editing``; the label map then tells its
listeners what changed, and the layers redraw. The tools ask the session
(``EditorSession``, editor_controller.py) for the label map of the view, the
active label and the options (brush radius, sphere, threshold, tolerance).
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import QGraphicsEllipseItem

from ..core.editing import Stroke, fill_polygon, flood_fill, scene_to_pixel
from ..core.editing.plane import inside, nearest
from ..core.undo import LabelLocked

PREVIEW_COLOR = QColor(255, 255, 255, 200)


class EditTool:
    """Base: the view it is active on, the session it edits through."""

    name = "edit"

    def __init__(self, session):
        self.session = session
        self.view = None
        self.current = None  # SliceView API: an unfinished measurement/edit

    def activate(self, view) -> None:
        self.view = view

    def deactivate(self) -> None:
        self.cancel()
        self.view = None

    def cancel(self) -> None:
        pass

    def plane_pixel(self, x_mm: float, y_mm: float) -> tuple[float, float]:
        return scene_to_pixel(self.view.plane_geometry, x_mm, y_mm, self.view.flips)

    def target(self):
        """(labelmap, volume) for this view, creating an empty map if needed; None when not editable."""
        if self.view is None or self.view.volume is None:
            return None
        return self.session.labelmap_for(self.view)

    def press(self, x_mm: float, y_mm: float):
        return None

    def move(self, x_mm: float, y_mm: float) -> None:
        pass

    def release(self, x_mm, y_mm=None):
        return None


class BrushTool(EditTool):
    """Paint the active label with a round brush (disc in the plane, or a sphere); a drag is one undo step."""

    name = "brush"
    erase = False
    use_threshold = False

    def __init__(self, session):
        super().__init__(session)
        self.stroke: Stroke | None = None
        self.cursor: QGraphicsEllipseItem | None = None

    def activate(self, view) -> None:
        super().activate(view)
        self.cursor = QGraphicsEllipseItem()
        self.cursor.setPen(QPen(PREVIEW_COLOR, 0))
        self.cursor.setZValue(60)
        self.cursor.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.cursor.hide()
        view.view.addItem(self.cursor)

    def deactivate(self) -> None:
        if self.cursor is not None and self.view is not None:
            self.view.view.removeItem(self.cursor)
        self.cursor = None
        super().deactivate()

    def cancel(self) -> None:
        if self.stroke is not None:
            self.stroke.finish()  # what was painted stays, as one undo step
            self.stroke = None
            self.session.edited()

    def footprint_mm(self) -> tuple[float, float]:
        """(width, height) in scene mm of the brush footprint on this view: the cursor drawn."""
        from ..core.editing import footprint

        g = self.view.plane_geometry
        fp = footprint(self.session.radius_mm, g.pixel_size)
        return fp.shape[1] * g.pixel_size[1], fp.shape[0] * g.pixel_size[0]

    def hover(self, x_mm, y_mm) -> None:
        if self.cursor is None:
            return
        if x_mm is None or self.view is None or self.view.volume is None:
            self.cursor.hide()
            return
        g = self.view.plane_geometry
        r, c = self.plane_pixel(x_mm, y_mm)
        cx, cy = self.view.pixel_center(int(nearest(r)), int(nearest(c)))  # the brush centre snaps to a pixel
        w, h = self.footprint_mm()
        self.cursor.setRect(QRectF(cx - w / 2, cy - h / 2, w, h))
        self.cursor.setVisible(inside(g, r, c))

    def _start(self):
        got = self.target()
        if got is None:
            return None
        labelmap, volume = got
        s = self.session
        value = labelmap.active if not self.erase else 0
        if value is None:
            s.report("Add a label first (Segment editor ▸ Add)")
            return None
        try:
            return Stroke(labelmap, volume, self.view.plane_geometry, self.view.slice_index, s.radius_mm,
                          value or 0, sphere=s.sphere, erase=self.erase,
                          threshold=s.threshold if (self.use_threshold or s.threshold_always) else None,
                          name=self.name)
        except (LabelLocked, KeyError) as exc:
            s.report(str(exc).strip("'\""))
            return None

    def press(self, x_mm: float, y_mm: float):
        self.stroke = self._start()
        if self.stroke is not None:
            self.stroke.add(*self.plane_pixel(x_mm, y_mm))
            self.hover(x_mm, y_mm)
        return self.stroke

    def move(self, x_mm: float, y_mm: float) -> None:
        if self.stroke is not None:
            self.stroke.add(*self.plane_pixel(x_mm, y_mm))
        self.hover(x_mm, y_mm)

    def release(self, x_mm, y_mm=None):
        if y_mm is None:
            x_mm, y_mm = x_mm
        stroke, self.stroke = self.stroke, None
        if stroke is not None:
            stroke.add(*self.plane_pixel(x_mm, y_mm))
            stroke.finish()
            self.session.edited()
        return stroke

    def click(self, x_mm: float, y_mm: float) -> None:
        """A single dab."""
        self.press(x_mm, y_mm)
        self.release(x_mm, y_mm)


class EraseTool(BrushTool):
    """Clear any unlocked label under the brush (lock a label to protect it)."""

    name = "erase"
    erase = True


class ThresholdBrushTool(BrushTool):
    """Paint only voxels whose intensity lies in the session's threshold range (e.g. HU)."""

    name = "threshold"
    use_threshold = True


class FillTool(EditTool):
    """Click: fill the connected region around the pixel with intensity within ± tolerance (2D or 3D)."""

    name = "fill"

    def click(self, x_mm: float, y_mm: float) -> int:
        got = self.target()
        if got is None:
            return 0
        labelmap, volume = got
        s = self.session
        if labelmap.active is None:
            s.report("Add a label first (Segment editor ▸ Add)")
            return 0
        r, c = self.plane_pixel(x_mm, y_mm)
        if not inside(self.view.plane_geometry, r, c):
            return 0
        if s.fill_3d:  # seconds on a CT: computed on a worker, written as one undo step when done
            s.fill_in_background(self.view, labelmap, volume, r, c)
            return 0
        try:
            n = flood_fill(labelmap, volume, self.view.plane_geometry, self.view.slice_index, r, c, labelmap.active,
                           s.tolerance, three_d=s.fill_3d, over=0 if s.fill_unlabelled_only else None)
        except (LabelLocked, KeyError) as exc:
            s.report(str(exc).strip("'\""))
            return 0
        s.edited()
        return n

    def press(self, x_mm, y_mm):
        return None

    def release(self, x_mm, y_mm=None):
        if y_mm is None:
            x_mm, y_mm = x_mm
        self.click(x_mm, y_mm)


class LassoTool(EditTool):
    """Drag a closed outline: everything inside gets the active label (polygon fill on the plane)."""

    name = "lasso"

    def __init__(self, session):
        super().__init__(session)
        self.points: list[tuple[float, float]] = []  # scene mm
        self.line = None

    def press(self, x_mm, y_mm):
        self.points = [(x_mm, y_mm)]
        if self.line is None and self.view is not None:
            self.line = pg.PlotCurveItem(pen=pg.mkPen(PREVIEW_COLOR, width=1.5))
            self.line.setZValue(60)
            self.view.view.addItem(self.line)
        self._draw()
        return self.points

    def move(self, x_mm, y_mm) -> None:
        if self.points:
            self.points.append((x_mm, y_mm))
            self._draw()

    def _draw(self) -> None:
        if self.line is not None and self.points:
            pts = np.array(self.points + self.points[:1])
            self.line.setData(pts[:, 0], pts[:, 1])

    def release(self, x_mm, y_mm=None):
        if y_mm is None:
            x_mm, y_mm = x_mm
        self.points.append((x_mm, y_mm))
        points, self.points = self.points, []
        self.cancel()
        got = self.target()
        if got is None or len(points) < 3:
            return None
        labelmap, _volume = got
        if labelmap.active is None:
            self.session.report("Add a label first (Segment editor ▸ Add)")
            return None
        vertices = [self.plane_pixel(x, y) for x, y in points]
        try:
            n = fill_polygon(labelmap, self.view.plane_geometry, self.view.slice_index, vertices, labelmap.active)
        except (LabelLocked, KeyError) as exc:
            self.session.report(str(exc).strip("'\""))
            return None
        self.session.edited()
        return n

    def cancel(self) -> None:
        if self.line is not None and self.view is not None:
            self.view.view.removeItem(self.line)
        self.line = None


EDIT_TOOLS: dict[str, type[EditTool]] = {t.name: t for t in (BrushTool, EraseTool, ThresholdBrushTool, FillTool,
                                                              LassoTool)}
