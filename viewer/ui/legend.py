"""Colour bar for the heatmap shown in a viewport: what a colour means, and where the threshold is."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import QWidget

BAR_WIDTH = 14
BAR_HEIGHT = 150
TEXT_WIDTH = 60


def _fmt(v: float) -> str:
    return f"{v:.2g}" if abs(v) < 10 else f"{v:.0f}"


class ColorLegend(QWidget):
    """Vertical bar, vmax at the top; values under the threshold are drawn faded (they are not shown)."""

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.title = ""
        self.vmin, self.vmax, self.threshold = 0.0, 1.0, 0.5
        self._rgb = np.zeros((256, 3), np.uint8)
        self._bar = QImage()
        self.setFixedSize(BAR_WIDTH + TEXT_WIDTH + 8, BAR_HEIGHT + 34)
        self.hide()

    def show_layer(self, title: str, rgb: np.ndarray, vmin: float, vmax: float, threshold: float) -> None:
        self.title = title
        self.setToolTip(title)
        self._rgb = np.ascontiguousarray(np.asarray(rgb, np.uint8)[:, :3])
        self.vmin, self.vmax, self.threshold = float(vmin), float(vmax), float(threshold)
        rgb = np.ascontiguousarray(np.repeat(self.bar_image()[:, None, :], BAR_WIDTH, axis=1))
        self._bar = QImage(rgb.data, BAR_WIDTH, BAR_HEIGHT, 3 * BAR_WIDTH, QImage.Format.Format_RGB888).copy()
        self.show()
        self.update()

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
        p.setPen(QColor("#f2f2e6"))
        title = p.fontMetrics().elidedText(self.title, Qt.TextElideMode.ElideRight, self.width() - 6)
        p.drawText(QRect(3, 1, self.width() - 6, 14), Qt.AlignmentFlag.AlignLeft, title)
        top = 18
        p.drawImage(4, top, self._bar)  # built once per change of layer, not per repaint
        x_text = 4 + BAR_WIDTH + 4
        p.drawText(x_text, top + 9, _fmt(self.vmax))
        p.drawText(x_text, top + BAR_HEIGHT, _fmt(self.vmin))
        y = top + self.threshold_row()
        p.setPen(QPen(QColor("#ffffff"), 1))
        p.drawLine(2, y, 4 + BAR_WIDTH + 2, y)
        p.drawText(x_text, min(max(y + 4, top + 22), top + BAR_HEIGHT - 12), f"≥{_fmt(self.threshold)}")
        p.end()
