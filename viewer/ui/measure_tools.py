"""Measurement tools on a SliceView: ruler, rectangle ROI and ellipse ROI.

Each tool is one class behind a small interface (``activate`` / ``deactivate``
/ ``press`` / ``move`` / ``release``, points in the view's scene units, i.e.
millimetres, as the ViewBox shows them), the way 3D Slicer's editor effects
are. While a tool is active the SliceView hands it left-drags instead of
panning. Every drag makes a ``Measurement``: pyqtgraph items plus a TextItem
label, tied to the slice it was drawn on (hidden on the others).

Pressing on an existing measurement edits it: a ruler end or a box corner
reshapes it, the line or the box's inside moves it; the numbers follow.

Scene (x, y) mm are mapped back to fractional pixel (row, col) of
``current_image()`` undoing the display flips, and the numbers come from
``viewer.core.measure`` (``distance_mm`` per-axis pixel size, ``roi_stats``).
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsRectItem

from pydicom.uid import generate_uid

from ..core.measure import distance_mm, roi_stats

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
        self.view = view
        self.slice_index = view.slice_index if slice_index is None else int(slice_index)
        self.uid = uid or generate_uid()  # the SR tracking UID: one measurement keeps it across saves
        self.p0 = (float(p0[0]), float(p0[1]))  # scene mm
        self.p1 = (float(p1[0]), float(p1[1]))
        self.pen = pg.mkPen(COLOR, width=2)
        self.label = pg.TextItem("", color=COLOR, anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 150))
        self.items = [self._make_shape(), self.label]
        for it in self.items:
            it.setZValue(50)
            view.view.addItem(it)
        self.value = None
        self.update(self.p1)

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

    def stats(self) -> dict:
        """What a saved record keeps: value (mm or mm2), mean, std and their unit."""
        return {"value": float(self.value), "mean": None, "std": None, "unit": ""}


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


GRAB_PIXELS = 7  # how close (screen pixels) a press must be to a handle or line to grab it


class MeasureTool:
    """A left-drag interaction on one SliceView; subclasses pick the measurement made.

    A press on an existing measurement of the shown slice edits it instead: near a handle
    (ruler end, box corner) it reshapes, on the line or inside the box it moves the whole thing.
    """

    name = "tool"
    title = "Tool"  # the menu/toolbar text (the Tools menu is built from TOOLS)
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
    measurement_class = RectMeasurement


class EllipseRoiTool(MeasureTool):
    name = "ellipse"
    title, tip = "Ellipse ROI", "Left-drag an ellipse: mean ± SD, min/max, area"
    measurement_class = EllipseMeasurement


TOOLS: dict[str, type[MeasureTool]] = {t.name: t for t in (RulerTool, RectRoiTool, EllipseRoiTool)}
MEASUREMENTS: dict[str, type[Measurement]] = {t.name: t.measurement_class for t in TOOLS.values()}
