"""Measurement tools on a SliceView: ruler, rectangle ROI and ellipse ROI.

Each tool is one class behind a small interface (``activate`` / ``deactivate``
/ ``press`` / ``move`` / ``release``, points in the view's scene units, i.e.
millimetres, as the ViewBox shows them), the way 3D Slicer's editor effects
are. While a tool is active the SliceView hands it left-drags instead of
panning. Every drag makes a ``Measurement``: pyqtgraph items plus a TextItem
label, tied to the slice it was drawn on (hidden on the others).

Scene (x, y) mm are mapped back to fractional pixel (row, col) of
``current_image()`` undoing the display flips, and the numbers come from
``viewer.core.measure`` (``distance_mm`` per-axis pixel size, ``roi_stats``).
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsRectItem

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

    def __init__(self, view, p0, p1):
        self.view = view
        self.slice_index = view.slice_index
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
        self._draw()
        self.value = self._compute()
        self.label.setText(self._text())

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

    def _compute(self):
        (r0, c0), (r1, c1) = self.pixel_points()
        image = self.view.current_image()
        if self.view.slice_index != self.slice_index:
            image = self.view._slice(self.slice_index)
        return roi_stats(image, self.view.plane_geometry.pixel_size, shape=self.shape,
                         center=((r0 + r1) / 2, (c0 + c1) / 2),
                         half_size=(abs(r1 - r0) / 2, abs(c1 - c0) / 2))

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


class MeasureTool:
    """A left-drag interaction on one SliceView; subclasses pick the measurement made."""

    name = "tool"
    measurement_class: type[Measurement] = Measurement

    def __init__(self):
        self.view = None
        self.current: Measurement | None = None

    def activate(self, view) -> None:
        self.view = view

    def deactivate(self) -> None:
        if self.current is not None:  # a drag cut short keeps what was drawn so far
            self.release(self.current.p1)
        self.view = None

    def press(self, x_mm: float, y_mm: float) -> Measurement | None:
        if self.view is None or self.view.volume is None:
            return None
        self.current = self.measurement_class(self.view, (x_mm, y_mm), (x_mm, y_mm))
        self.view._add_measurement(self.current)
        return self.current

    def move(self, x_mm: float, y_mm: float) -> None:
        if self.current is not None:
            self.current.update((x_mm, y_mm))

    def release(self, x_mm, y_mm=None) -> Measurement | None:
        if y_mm is None:
            x_mm, y_mm = x_mm
        m, self.current = self.current, None
        if m is not None:
            m.update((x_mm, y_mm))
        return m


class RulerTool(MeasureTool):
    name = "ruler"
    measurement_class = RulerMeasurement


class RectRoiTool(MeasureTool):
    name = "rect"
    measurement_class = RectMeasurement


class EllipseRoiTool(MeasureTool):
    name = "ellipse"
    measurement_class = EllipseMeasurement


TOOLS: dict[str, type[MeasureTool]] = {t.name: t for t in (RulerTool, RectRoiTool, EllipseRoiTool)}
