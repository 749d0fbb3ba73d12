"""Measurement tools on a SliceView: ruler, rectangle / ellipse ROI, angle, Cobb angle, arrow, text.

Each tool is one class behind a small interface (``activate`` / ``deactivate``
/ ``press`` / ``move`` / ``release``, points in the view's scene units, i.e.
millimetres, as the ViewBox shows them), the way 3D Slicer's editor effects
are. While a tool is active the SliceView hands it left-drags instead of
panning. Every drag makes a ``Measurement``: pyqtgraph items plus a TextItem
label, tied to the slice it was drawn on (hidden on the others).

Pressing on an existing measurement edits it: a ruler end or a box corner
reshapes it, the line or the box's inside moves it; the numbers follow.

Angle and Cobb angle are placed point by point (clicks, or a drag for the first arm / each line,
the point being placed following the mouse); Escape or another tool cancels one half placed.
The text tool asks for its words; clicking an existing text with it asks again to edit them.

Scene (x, y) mm are mapped back to fractional pixel (row, col) of
``current_image()`` undoing the display flips, and the numbers come from
``viewer.core.measure`` (``distance_mm`` per-axis pixel size, ``roi_stats``).
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsRectItem, QInputDialog

from pydicom.uid import generate_uid

from ..core.measure import angle_deg, cobb_angle_deg, distance_mm, roi_stats

COLOR = (255, 214, 0)
SELECTED_COLOR = (0, 230, 255)


def scene_to_pixel(view, x_mm: float, y_mm: float) -> tuple[float, float]:
    """Fractional (row, col) of ``view.current_image()`` under scene (x, y) mm; pixel (i, j) centre = (i, j)."""
    g = view.plane_geometry
    w, h = view.image_size_mm()
    lr, ud = view.flips
    x, y = (w - x_mm if lr else x_mm), (h - y_mm if ud else y_mm)
    return y / g.pixel_size[0] - 0.5, x / g.pixel_size[1] - 0.5


def _units(view) -> str:
    v = view.volume
    return "HU" if v is not None and (v.info.modality or "").upper() == "CT" else ""


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return "–"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"


class Measurement:
    """Items of one measurement on one slice of one view."""

    kind = "measurement"

    def __init__(self, view, p0, p1, slice_index: int | None = None, uid: str | None = None):
        self.p0 = (float(p0[0]), float(p0[1]))  # scene mm
        self.p1 = (float(p1[0]), float(p1[1]))
        self._setup(view, slice_index, uid)
        self.update(self.p1)

    def _setup(self, view, slice_index, uid) -> None:
        self.view = view
        self.slice_index = view.slice_index if slice_index is None else int(slice_index)
        self.uid = uid or generate_uid()  # the SR tracking UID: one measurement keeps it across saves
        self.pen = pg.mkPen(COLOR, width=2)
        self.label = pg.TextItem("", color=COLOR, anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 150))
        self.items = [self._make_shape(), self.label]
        for it in self.items:
            it.setZValue(50)
            view.view.addItem(it)
        self.value = None

    # subclasses
    def _make_shape(self):
        raise NotImplementedError

    def _draw(self) -> None:
        raise NotImplementedError

    def _compute(self):
        raise NotImplementedError

    def _text(self) -> str:
        raise NotImplementedError

    def update(self, p1) -> None:
        self.p1 = (float(p1[0]), float(p1[1]))
        self._redraw()

    def _redraw(self) -> None:
        self._draw()
        self.value = self._compute()
        self.label.setText(self._text())

    # editing: grab a handle to reshape, or the body to move (scene mm)
    def handles(self) -> dict[str, tuple[float, float]]:
        return {"p0": self.p0, "p1": self.p1}

    def drag_handle(self, name: str, x: float, y: float) -> None:
        setattr(self, name, (float(x), float(y)))
        self._redraw()

    def translate(self, dx: float, dy: float) -> None:
        self.p0 = (self.p0[0] + dx, self.p0[1] + dy)
        self.p1 = (self.p1[0] + dx, self.p1[1] + dy)
        self._redraw()

    def contains(self, x: float, y: float, tol: float) -> bool:
        raise NotImplementedError

    def hit(self, x: float, y: float, tol: float) -> str | None:
        """'move', a handle name, or None: what a press at (x, y) within ``tol`` mm grabs."""
        near = [(np.hypot(x - hx, y - hy), name) for name, (hx, hy) in self.handles().items()]
        dist, name = min(near)
        if dist <= tol:
            return name
        return "move" if self.contains(x, y, tol) else None

    @property
    def text(self) -> str:
        return self.label.textItem.toPlainText()

    def set_selected(self, on: bool) -> None:
        color = SELECTED_COLOR if on else COLOR
        self.pen = pg.mkPen(color, width=2)
        self.items[0].setPen(self.pen)
        self.label.setColor(color)

    def is_visible(self) -> bool:
        return self.items[0].isVisible()

    def refresh_visibility(self) -> None:
        on = self.view.slice_index == self.slice_index
        for it in self.items:
            it.setVisible(on)

    def remove(self) -> None:
        for it in self.items:
            self.view.view.removeItem(it)

    def pixel_points(self):
        return scene_to_pixel(self.view, *self.p0), scene_to_pixel(self.view, *self.p1)

    def is_complete(self) -> bool:
        """Every point placed (an angle being clicked is not, and is not saved yet)."""
        return True

    def stats(self) -> dict:
        """What a saved record keeps: value (mm or mm2), mean, std and their unit."""
        return {"value": float(self.value), "mean": None, "std": None, "unit": ""}

    def record_values(self) -> dict:
        """What ``measure_records.from_display_points`` takes besides the points."""
        return self.stats()


class RulerMeasurement(Measurement):
    kind = "ruler"

    def _make_shape(self):
        return pg.PlotCurveItem(pen=self.pen)

    def _draw(self) -> None:
        (x0, y0), (x1, y1) = self.p0, self.p1
        self.items[0].setData([x0, x1], [y0, y1])
        self.label.setAnchor((0.5, 1.15))  # centred just above the middle of the line
        self.label.setPos((x0 + x1) / 2, min(y0, y1) if abs(y1 - y0) > abs(x1 - x0) else (y0 + y1) / 2)

    def _compute(self) -> float:
        a, b = self.pixel_points()
        return distance_mm(self.view.plane_geometry.pixel_size, a, b)

    def contains(self, x: float, y: float, tol: float) -> bool:
        """Within ``tol`` mm of the line segment."""
        p, a, b = np.array([x, y]), np.array(self.p0), np.array(self.p1)
        ab = b - a
        t = 0.0 if not ab.any() else float(np.clip(np.dot(p - a, ab) / np.dot(ab, ab), 0, 1))
        return float(np.hypot(*(p - (a + t * ab)))) <= tol

    def _text(self) -> str:
        return f"{self.value:.1f} mm"


class _BoxMeasurement(Measurement):
    shape = "rect"
    kind = "rect"
    item_class = QGraphicsRectItem

    def _make_shape(self):
        item = self.item_class()
        item.setPen(self.pen)
        return item

    def _draw(self) -> None:
        (x0, y0), (x1, y1) = self.p0, self.p1
        rect = QRectF(min(x0, x1), min(y0, y1), abs(x1 - x0), abs(y1 - y0))
        self.items[0].setRect(rect)
        self.label.setPos(rect.right(), rect.top())

    def handles(self) -> dict[str, tuple[float, float]]:
        """The four corners, named by which of p0/p1 gives each coordinate ('x0y1' = (p0.x, p1.y))."""
        (x0, y0), (x1, y1) = self.p0, self.p1
        return {"x0y0": (x0, y0), "x1y1": (x1, y1), "x0y1": (x0, y1), "x1y0": (x1, y0)}

    def drag_handle(self, name: str, x: float, y: float) -> None:
        xs, ys = [self.p0[0], self.p1[0]], [self.p0[1], self.p1[1]]
        xs[int(name[1])], ys[int(name[3])] = float(x), float(y)
        self.p0, self.p1 = (xs[0], ys[0]), (xs[1], ys[1])
        self._redraw()

    def contains(self, x: float, y: float, tol: float) -> bool:
        (x0, y0), (x1, y1) = self.p0, self.p1
        return min(x0, x1) - tol <= x <= max(x0, x1) + tol and min(y0, y1) - tol <= y <= max(y0, y1) + tol

    def _compute(self):
        (r0, c0), (r1, c1) = self.pixel_points()
        image = self.view.current_image()
        if self.view.slice_index != self.slice_index:
            image = self.view._slice(self.slice_index)
        return roi_stats(image, self.view.plane_geometry.pixel_size, shape=self.shape,
                         center=((r0 + r1) / 2, (c0 + c1) / 2),
                         half_size=(abs(r1 - r0) / 2, abs(c1 - c0) / 2))

    def stats(self) -> dict:
        s = self.value
        finite = s.n_pixels > 0
        return {"value": float(s.area_mm2), "mean": float(s.mean) if finite else None,
                "std": float(s.std) if finite else None, "unit": _units(self.view)}

    def _text(self) -> str:
        s, u = self.value, _units(self.view)
        u = f" {u}" if u else ""
        return (f"{_fmt(s.mean)} ± {_fmt(s.std)}{u}\n"
                f"min {_fmt(s.min)} / max {_fmt(s.max)}\n"
                f"{s.area_mm2:.1f} mm²")


class RectMeasurement(_BoxMeasurement):
    pass


class EllipseMeasurement(_BoxMeasurement):
    shape = "ellipse"
    kind = "ellipse"
    item_class = QGraphicsEllipseItem

def _near_segment(p, a, b, tol: float) -> bool:
    """Within ``tol`` of the segment a-b (all scene mm)."""
    p, a, b = np.asarray(p, float), np.asarray(a, float), np.asarray(b, float)
    ab = b - a
    t = 0.0 if not ab.any() else float(np.clip(np.dot(p - a, ab) / np.dot(ab, ab), 0, 1))
    return float(np.hypot(*(p - (a + t * ab)))) <= tol


def _degrees_text(v) -> str:
    return "" if v is None or not np.isfinite(v) else f"{v:.1f}°"


class _PointsMeasurement(Measurement):
    """A shape of ``n_points`` scene points (angle, Cobb angle, arrow, text), placed one at a time.

    ``placing`` is the index of the point that follows the mouse while the shape is being built
    (it and the ones after it move together); ``n_points`` once every point is placed.
    """

    n_points = 2
    segments: tuple[tuple[int, int], ...] = ()  # point index pairs a press can grab the body on

    def __init__(self, view, *points, slice_index: int | None = None, uid: str | None = None, text: str = ""):
        pts = [(float(x), float(y)) for x, y in points] or [(0.0, 0.0)]
        self.pts = (pts + [pts[-1]] * self.n_points)[:self.n_points]
        self.note = str(text or "")
        self.placing = self.n_points
        self.curves: list = []
        self._setup(view, slice_index, uid)
        self._redraw()

    @property
    def p0(self):
        return self.pts[0]

    @property
    def p1(self):
        return self.pts[-1]

    def is_complete(self) -> bool:
        return self.placing >= self.n_points

    def update(self, p) -> None:
        """The point being placed (and the unplaced ones after it) follow the mouse."""
        first = min(self.placing, self.n_points - 1)
        for j in range(first, self.n_points):
            self.pts[j] = (float(p[0]), float(p[1]))
        self._redraw()

    def handles(self) -> dict[str, tuple[float, float]]:
        return {f"p{i}": p for i, p in enumerate(self.pts)}

    def drag_handle(self, name: str, x: float, y: float) -> None:
        self.pts[int(name[1:])] = (float(x), float(y))
        self._redraw()

    def translate(self, dx: float, dy: float) -> None:
        self.pts = [(x + dx, y + dy) for x, y in self.pts]
        self._redraw()

    def contains(self, x: float, y: float, tol: float) -> bool:
        return any(_near_segment((x, y), self.pts[i], self.pts[j], tol) for i, j in self.segments)

    def pixel_points(self):
        return [scene_to_pixel(self.view, *p) for p in self.pts]

    def _make_shape(self):
        curve = pg.PlotCurveItem(pen=self.pen)
        self.curves.append(curve)
        return curve

    def _extra_curve(self, style=Qt.PenStyle.SolidLine):
        """A further line item (Cobb perpendiculars, dashed), drawn and hidden with the rest."""
        curve = pg.PlotCurveItem(pen=pg.mkPen(COLOR, width=1, style=style))
        curve.setZValue(50)
        self.view.view.addItem(curve)
        self.items.append(curve)
        self.curves.append(curve)
        return curve

    def set_selected(self, on: bool) -> None:
        color = SELECTED_COLOR if on else COLOR
        for curve in self.curves:
            pen = pg.mkPen(curve.opts["pen"])
            pen.setColor(pg.mkColor(color))
            curve.setPen(pen)
        self.pen = self.curves[0].opts["pen"] if self.curves else pg.mkPen(color, width=2)
        self.label.setColor(color)

    def record_values(self) -> dict:
        return {**self.stats(), "text": self.note}

    def _text(self) -> str:
        return self.note


class AngleMeasurement(_PointsMeasurement):
    """Arm end, vertex, arm end; the angle at the vertex, in patient mm."""

    kind = "angle"
    n_points = 3
    segments = ((0, 1), (1, 2))

    def _draw(self) -> None:
        xs, ys = zip(*self.pts)
        self.items[0].setData(list(xs), list(ys))
        self.label.setAnchor((0, 1.1))
        self.label.setPos(*self.pts[1])

    def _compute(self) -> float:
        a, v, b = self.pixel_points()
        return angle_deg(self.view.plane_geometry.pixel_size, a, v, b)

    def stats(self) -> dict:
        return {"value": float(self.value), "mean": None, "std": None, "unit": "deg"}

    def _text(self) -> str:
        return _degrees_text(self.value) if self.placing >= 2 else ""


class CobbMeasurement(AngleMeasurement):
    """Two end-plate lines; the angle between them, with the conventional perpendiculars drawn."""

    kind = "cobb"
    n_points = 4
    segments = ((0, 1), (2, 3))

    def _setup(self, view, slice_index, uid) -> None:
        super()._setup(view, slice_index, uid)
        self._perpendiculars = self._extra_curve(Qt.PenStyle.DashLine)

    def _draw(self) -> None:
        p = np.asarray(self.pts, dtype=float)
        self.items[0].setData(p[:, 0], p[:, 1], connect="pairs")
        m1, m2 = (p[0] + p[1]) / 2, (p[2] + p[3]) / 2
        right = [p[i] if p[i][0] >= p[j][0] else p[j] for i, j in ((0, 1), (2, 3))]
        self.label.setAnchor((-0.1, 0.5))  # right of the lines' right ends, clear of the perpendiculars
        self.label.setPos(*((right[0] + right[1]) / 2 if self.placing >= 3 else p[1]))
        if self.placing < 3 or not hasattr(self, "_perpendiculars"):
            if hasattr(self, "_perpendiculars"):
                self._perpendiculars.setData([], [])
            return
        reach = 0.6 * float(np.hypot(*(m2 - m1)))
        ends = []
        for mid, (a, b), other in ((m1, p[0:2], m2), (m2, p[2:4], m1)):
            d = b - a
            n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-9)
            if np.dot(n, other - mid) < 0:
                n = -n
            ends += [mid, mid + reach * n]
        e = np.asarray(ends)
        self._perpendiculars.setData(e[:, 0], e[:, 1], connect="pairs")

    def _compute(self) -> float:
        a, b, c, d = self.pixel_points()
        return cobb_angle_deg(self.view.plane_geometry.pixel_size, (a, b), (c, d))

    def _text(self) -> str:
        return f"Cobb {_degrees_text(self.value)}" if self.placing >= 3 and np.isfinite(self.value) else ""


ARROW_HEAD_PIXELS = 14  # screen pixels of an arrow head's wings


class ArrowMeasurement(_PointsMeasurement):
    """Tail to head, with a head sized in screen pixels (and never longer than a third of the arrow)."""

    kind = "arrow"
    n_points = 2
    segments = ((0, 1),)

    def _draw(self) -> None:
        tail, head = np.asarray(self.pts[0], float), np.asarray(self.pts[1], float)
        d = head - tail
        length = float(np.hypot(*d))
        pts = [tail, head]
        if length > 0:
            try:
                px = float(max(self.view.view.viewPixelSize()))
            except Exception:  # noqa: BLE001 - view not laid out yet
                px = length / 40
            wing = min(ARROW_HEAD_PIXELS * px, length / 3)
            back = -d / length
            for turn in (np.radians(25), -np.radians(25)):
                c, s = np.cos(turn), np.sin(turn)
                pts += [head + wing * np.array([c * back[0] - s * back[1], s * back[0] + c * back[1]]), head]
        p = np.asarray(pts)
        self.items[0].setData(p[:, 0], p[:, 1])
        self.label.setAnchor((0.5, 0) if d[1] <= 0 else (0.5, 1))  # the caption at the tail, away from the head
        self.label.setPos(*tail)

    def _compute(self) -> float:
        return 0.0  # an arrow points; it measures nothing


class TextMeasurement(_PointsMeasurement):
    """Words anchored at one point (a small cross marks it; a curve, since a scatter item would take the clicks)."""

    kind = "text"
    n_points = 1

    def _draw(self) -> None:
        x, y = self.pts[0]
        try:
            r = 4 * float(max(self.view.view.viewPixelSize()))  # a cross of 4 screen pixels' reach
        except Exception:  # noqa: BLE001 - view not laid out yet
            r = 1.0
        self.items[0].setData([x - r, x + r, x, x], [y, y, y - r, y + r], connect="pairs")
        self.label.setAnchor((0, 0.5))
        self.label.setPos(x + r, y)

    def _compute(self) -> float:
        return 0.0

    def set_note(self, words: str) -> None:
        self.note = str(words)
        self._redraw()

    def contains(self, x: float, y: float, tol: float) -> bool:
        """On the label (its box as shown at the current zoom) or near the point."""
        try:
            box = self.label.mapRectToView(self.label.boundingRect())
            if box.adjusted(-tol, -tol, tol, tol).contains(x, y):
                return True
        except Exception:  # noqa: BLE001 - not laid out: the point alone
            pass
        return bool(np.hypot(x - self.pts[0][0], y - self.pts[0][1]) <= tol)


GRAB_PIXELS = 7  # how close (screen pixels) a press must be to a handle or line to grab it


class MeasureTool:
    """A left-drag interaction on one SliceView; subclasses pick the measurement made.

    A press on an existing measurement of the shown slice edits it instead: near a handle
    (ruler end, box corner) it reshapes, on the line or inside the box it moves the whole thing.
    """

    name = "tool"
    title = "Tool"  # the menu/toolbar text (the Tools menu is built from TOOLS)
    short = ""  # a shorter toolbar text where the title is long (seven tools must fit the toolbar)
    tip = ""  # its tooltip
    measurement_class: type[Measurement] = Measurement

    def __init__(self):
        self.view = None
        self.current: Measurement | None = None
        self._grab: tuple[str, tuple[float, float]] | None = None  # (handle or 'move', last point)

    def grab_tolerance(self) -> float:
        """GRAB_PIXELS in scene mm at the current zoom."""
        try:
            px = self.view.view.viewPixelSize()
            return GRAB_PIXELS * max(float(px[0]), float(px[1]))
        except Exception:  # noqa: BLE001 - view not laid out yet
            return 1.0

    def _hit(self, x_mm: float, y_mm: float) -> tuple[Measurement, str] | None:
        tol = self.grab_tolerance()
        here = list(reversed(self.view.measurements_on_slice()))  # topmost (newest) first
        selected = self.view.selected_measurement
        if selected in here:
            here.remove(selected)
            here.insert(0, selected)
        for m in here:
            what = m.hit(x_mm, y_mm, tol)
            if what is not None:
                return m, what
        return None

    def activate(self, view) -> None:
        self.view = view

    def deactivate(self) -> None:
        if self.current is not None:  # a drag cut short keeps what was drawn so far
            self.release(self.current.p1)
        self.view = None

    def press(self, x_mm: float, y_mm: float) -> Measurement | None:
        if self.view is None or self.view.volume is None:
            return None
        hit = self._hit(x_mm, y_mm)
        if hit is not None:
            self.current, what = hit
            self._grab = (what, (x_mm, y_mm))
            self.view.select_measurement(self.current)
            return self.current
        self._grab = None
        self.current = self.measurement_class(self.view, (x_mm, y_mm), (x_mm, y_mm))
        self.view._add_measurement(self.current)
        return self.current

    def move(self, x_mm: float, y_mm: float) -> None:
        m = self.current
        if m is None:
            return
        if self._grab is None:
            m.update((x_mm, y_mm))
            return
        what, (lx, ly) = self._grab
        if what == "move":
            m.translate(x_mm - lx, y_mm - ly)
        else:
            m.drag_handle(what, x_mm, y_mm)
        self._grab = (what, (x_mm, y_mm))

    def release(self, x_mm, y_mm=None) -> Measurement | None:
        if y_mm is None:
            x_mm, y_mm = x_mm
        m = self.current
        self.move(x_mm, y_mm)
        self.current, self._grab = None, None
        if m is not None and self.view is not None:
            self.view.measurements_changed.emit()  # drawn or edited: the store saves it
        return m


class RulerTool(MeasureTool):
    name = "ruler"
    title, tip = "Ruler", "Left-drag measures a length in mm"
    measurement_class = RulerMeasurement


class RectRoiTool(MeasureTool):
    name = "rect"
    title, tip = "Rectangle ROI", "Left-drag a box: mean ± SD, min/max, area"
    short = "Rect"
    measurement_class = RectMeasurement


class EllipseRoiTool(MeasureTool):
    name = "ellipse"
    title, tip = "Ellipse ROI", "Left-drag an ellipse: mean ± SD, min/max, area"
    short = "Ellipse"
    measurement_class = EllipseMeasurement


class _PointByPointTool(MeasureTool):
    """Places a measurement point by point: each click fixes the point that follows the mouse; a
    drag fixes one point at the press and the next at the release (an angle's first arm, a Cobb
    line). A press on a finished measurement edits it, as with the ruler."""

    def _building(self) -> _PointsMeasurement | None:
        m = self.current
        if m is not None and (self.view is None or m not in self.view.measurements):
            self.current = None  # deleted (Delete key) while being placed
            return None
        if m is not None and not m.is_complete() and m.slice_index != self.view.slice_index:
            self.current = None  # scrolled away while placing it: dropped, as Escape would
            self.view.remove_measurement(m, notify=False)
            return None
        return m if m is not None and not m.is_complete() else None

    def _start(self, x: float, y: float) -> _PointsMeasurement:
        m = self.measurement_class(self.view, (x, y))
        m.placing = 1
        m._redraw()
        self.current, self._grab = m, None
        self.view._add_measurement(m)
        return m

    def _place(self, x: float, y: float) -> None:
        """Fix the point that follows the mouse; the last one finishes (and saves) the measurement."""
        m = self.current
        m.update((x, y))
        m.placing += 1
        m._redraw()
        if m.is_complete():
            self.current = None
            self.view.measurements_changed.emit()

    def click(self, x: float, y: float) -> None:
        if self.view is None or self.view.volume is None:
            return
        if self._building() is not None:
            self._place(x, y)
            return
        hit = self._hit(x, y)
        if hit is not None:
            self.view.select_measurement(hit[0])
            return
        self._start(x, y)

    def hover(self, x, y) -> None:
        m = self._building()
        if m is not None and x is not None:
            m.update((x, y))

    def press(self, x: float, y: float):
        if self.view is None or self.view.volume is None:
            return None
        if self._building() is not None:
            m = self.current
            self._place(x, y)
            return m
        if self._hit(x, y) is not None:
            return super().press(x, y)  # edit a finished one
        return self._start(x, y)

    def move(self, x: float, y: float) -> None:
        m = self._building()
        if m is not None:
            m.update((x, y))
        else:
            super().move(x, y)

    def release(self, x_mm, y_mm=None):
        if y_mm is None:
            x_mm, y_mm = x_mm
        m = self._building()
        if m is None:
            return super().release(x_mm, y_mm)
        self._place(x_mm, y_mm)
        return m

    def deactivate(self) -> None:
        """Escape or another tool: a measurement half placed is dropped, never saved."""
        m = self._building()
        if m is not None:
            self.current = None
            self.view.remove_measurement(m, notify=False)
        super().deactivate()


class AngleTool(_PointByPointTool):
    name = "angle"
    title, tip = "Angle", "Three clicks (or drag the first arm, then click): the angle at the vertex, in degrees"
    measurement_class = AngleMeasurement


class CobbTool(_PointByPointTool):
    name = "cobb"
    title, tip = "Cobb angle", "Draw two end-plate lines (drag or two clicks each): the Cobb angle between them"
    short = "Cobb"
    measurement_class = CobbMeasurement


class ArrowTool(MeasureTool):
    name = "arrow"
    title, tip = "Arrow", "Left-drag from tail to head to point at a finding"
    measurement_class = ArrowMeasurement


def ask_text_dialog(parent, current: str = "") -> str | None:
    """The words of a text annotation from a small dialog; None when cancelled."""
    words, ok = QInputDialog.getText(parent, "Text annotation", "Text:", text=current)
    return words if ok else None


class TextTool(MeasureTool):
    """Click: asks for the words and places them; click an existing text: edit its words; drag it: move it."""

    name = "text"
    title, tip = "Text", "Click to place a text label; click a label to edit it, drag it to move it"
    measurement_class = TextMeasurement

    def __init__(self, ask=None):
        super().__init__()
        self.ask = ask or ask_text_dialog  # tests pass their own instead of the modal dialog

    def click(self, x: float, y: float) -> None:
        if self.view is None or self.view.volume is None:
            return
        hit = self._hit(x, y)
        m = hit[0] if hit is not None else None
        if m is not None and not isinstance(m, TextMeasurement):
            self.view.select_measurement(m)
            return
        words = self.ask(self.view, m.note if m is not None else "")
        words = (words or "").strip()
        if not words:
            return  # cancelled or empty: nothing placed, nothing changed
        if m is None:
            m = TextMeasurement(self.view, (x, y), text=words)
            self.view._add_measurement(m)
        else:
            m.set_note(words)
            self.view.select_measurement(m)
        self.view.measurements_changed.emit()

    def press(self, x: float, y: float):
        if self.view is None or self.view.volume is None or self._hit(x, y) is None:
            return None  # a drag on empty space places nothing: a text needs its words (click)
        return super().press(x, y)


def restore_measurement(view, kind: str, k: int, points_rc, uid: str, text: str = ""):
    """Put back a saved measurement of any kind on slice ``k`` of ``view`` (display (row, col) points)."""
    if kind in ("ruler", "rect", "ellipse"):
        return view.add_restored_measurement(kind, k, points_rc[0], points_rc[1], uid)
    pts = [view.pixel_center(*p) for p in points_rc]
    m = MEASUREMENTS[kind](view, *pts, slice_index=k, uid=uid, text=text)
    view.measurements.append(m)
    m.set_selected(False)
    m.refresh_visibility()
    return m


TOOLS: dict[str, type[MeasureTool]] = {t.name: t for t in (RulerTool, RectRoiTool, EllipseRoiTool, AngleTool,
                                                           CobbTool, ArrowTool, TextTool)}
MEASUREMENTS: dict[str, type[Measurement]] = {t.name: t.measurement_class for t in TOOLS.values()}
