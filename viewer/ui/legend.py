"""Colour bar for the heatmap shown in a viewport: what a colour means, where the threshold is, and
whether the map can be trusted at all (a model shown images unlike its training data)."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import QWidget

BAR_WIDTH = 14
BAR_HEIGHT = 150
TEXT_WIDTH = 60
WARNING_ROW = 16  # extra height for the warning line above the title
WARNING_WIDTH = 34  # extra width, so "⚠ out of domain" is read whole
WARNING_RED = QColor("#e53935")


def _fmt(v: float) -> str:
    return f"{v:.2g}" if abs(v) < 10 else f"{v:.0f}"


class ColorLegend(QWidget):
    """Vertical bar, vmax at the top; values under the threshold are drawn faded (they are not shown).

    ``set_warning("out of domain")`` marks the map as not meaningful: a red line above the title
    and red hatching with a red frame over the bar, so the colours cannot be read as a finding."""

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.title = ""
        self.warning = ""  # e.g. "out of domain"; empty: the map is shown as it is
        self._detail = ""  # the warning's why (score, threshold, model), for the tooltip
        self.vmin, self.vmax, self.threshold = 0.0, 1.0, 0.5
        self._rgb = np.zeros((256, 3), np.uint8)
        self._bar = QImage()
        self._resize()
        self.hide()

    def show_layer(self, title: str, rgb: np.ndarray, vmin: float, vmax: float, threshold: float) -> None:
        self.title = title
        self._rgb = np.ascontiguousarray(np.asarray(rgb, np.uint8)[:, :3])
        self.vmin, self.vmax, self.threshold = float(vmin), float(vmax), float(threshold)
        rgb = np.ascontiguousarray(np.repeat(self.bar_image()[:, None, :], BAR_WIDTH, axis=1))
        self._bar = QImage(rgb.data, BAR_WIDTH, BAR_HEIGHT, 3 * BAR_WIDTH, QImage.Format.Format_RGB888).copy()
        self._retip()
        self.show()
        self.update()

    def set_warning(self, text: str = "", detail: str = "") -> None:
        """Mark (text non-empty) or unmark the shown map; ``detail`` goes in the tooltip."""
        text = text or ""
        if text == self.warning and detail == self._detail:
            return
        self.warning, self._detail = text, detail
        self._resize()
        self._retip()
        self.update()

    def heading(self) -> str:
        """The title as drawn: the warning first when there is one."""
        return f"⚠ {self.warning}: {self.title}" if self.warning else self.title

    def _resize(self) -> None:
        """Grow or shrink for the warning towards the middle of the view: the edge the view placed
        the bar against stays where it is."""
        old = self.geometry()
        self.setFixedSize(BAR_WIDTH + TEXT_WIDTH + 8 + (WARNING_WIDTH if self.warning else 0),
                          BAR_HEIGHT + 34 + (WARNING_ROW if self.warning else 0))
        parent = self.parentWidget()
        if parent is not None and old.width() != self.width() and old.center().x() > parent.width() / 2:
            self.move(old.right() + 1 - self.width(), old.y())

    def _retip(self) -> None:
        self.setToolTip(self.heading() + (f"\n{self._detail}" if self._detail else ""))

    def bar_image(self) -> np.ndarray:
        """(BAR_HEIGHT, 3) RGB from vmax (row 0) down to vmin, faded below the threshold."""
        values = np.linspace(self.vmax, self.vmin, BAR_HEIGHT)
        idx = np.clip((values - self.vmin) / (self.vmax - self.vmin) * 255, 0, 255).astype(int)
        rows = self._rgb[idx].astype(np.float32)
        below = values < self.threshold
        rows[below] = rows[below] * 0.25 + 40  # not drawn on the image: shown dim
        return rows.astype(np.uint8)

    def threshold_row(self) -> int:
        frac = (self.vmax - self.threshold) / (self.vmax - self.vmin)
        return int(round(np.clip(frac, 0, 1) * (BAR_HEIGHT - 1)))

    def paintEvent(self, _ev) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(0, 0, 0, 140))
        font = QFont(self.font())
        font.setPointSizeF(max(7.5, font.pointSizeF() - 1))
        p.setFont(font)
        top = 1
        if self.warning:
            bold = QFont(font)
            bold.setBold(True)
            p.setFont(bold)
            p.fillRect(QRect(0, 0, self.width(), WARNING_ROW), WARNING_RED)
            p.setPen(QColor("#ffffff"))
            text = p.fontMetrics().elidedText(f"⚠ {self.warning}", Qt.TextElideMode.ElideRight, self.width() - 4)
            p.drawText(QRect(2, 0, self.width() - 4, WARNING_ROW), Qt.AlignmentFlag.AlignCenter, text)
            p.setFont(font)
            top += WARNING_ROW
        p.setPen(QColor("#f2f2e6"))
        title = p.fontMetrics().elidedText(self.title, Qt.TextElideMode.ElideRight, self.width() - 6)
        p.drawText(QRect(3, top, self.width() - 6, 14), Qt.AlignmentFlag.AlignLeft, title)
        top += 17
        p.drawImage(4, top, self._bar)  # built once per change of layer, not per repaint
        if self.warning:  # the colours are not a finding: hatch them out
            bar = QRect(4, top, BAR_WIDTH, BAR_HEIGHT)
            p.fillRect(bar, QBrush(WARNING_RED, Qt.BrushStyle.BDiagPattern))
            p.setPen(QPen(WARNING_RED, 2))
            p.drawRect(bar.adjusted(-1, -1, 0, 0))
            p.setPen(QColor("#f2f2e6"))
        x_text = 4 + BAR_WIDTH + 4
        p.drawText(x_text, top + 9, _fmt(self.vmax))
        p.drawText(x_text, top + BAR_HEIGHT, _fmt(self.vmin))
        y = top + self.threshold_row()
        p.setPen(QPen(QColor("#ffffff"), 1))
        p.drawLine(2, y, 4 + BAR_WIDTH + 2, y)
        p.drawText(x_text, min(max(y + 4, top + 22), top + BAR_HEIGHT - 12), f"≥{_fmt(self.threshold)}")
        if self.warning:  # said again beside the bar, where the eye reads the values
            p.save()
            p.setPen(WARNING_RED.lighter(130))
            p.translate(self.width() - 15, top + BAR_HEIGHT - 2)
            p.rotate(-90)
            p.drawText(QRect(0, 0, BAR_HEIGHT - 4, 12), Qt.AlignmentFlag.AlignCenter, "NOT MEANINGFUL")
            p.restore()
        p.end()
