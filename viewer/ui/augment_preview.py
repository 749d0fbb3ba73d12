"""The real-vs-synthetic patch grid of the Train dialog (``inference.augment.grid_image`` or a version's saved
``augment_grid.png``), scaled to the space it gets: enlarged without smoothing, so the user judges the generator's
pixels and not Qt's interpolation; shrunk smoothly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget


def rgb_qimage(rgb: np.ndarray) -> QImage:
    """A QImage that owns a copy of an (H, W, 3) uint8 array (or a 2D grey one)."""
    array = np.asarray(rgb)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"a grid image is (H, W, 3) uint8, got {array.shape} {array.dtype}")
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    return QImage(array.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


class _ScaledPicture(QLabel):
    """A label that refits its image whenever the layout gives it another size."""

    def __init__(self, refit):
        super().__init__()
        self._refit = refit

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._refit()


class GridPreview(QWidget):
    """A caption over the grid image; empty (a hint only) until a grid is shown."""

    def __init__(self, hint: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.hint = hint
        self.caption = QLabel(hint)
        self.caption.setWordWrap(True)
        self.picture = _ScaledPicture(self._fit)
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.picture.setMinimumHeight(0)
        self.image: QImage | None = None  # the grid at its own resolution
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addWidget(self.picture, 1)
        self.clear()

    def show_grid(self, rgb: np.ndarray, caption: str) -> None:
        self._show(rgb_qimage(rgb), caption)

    def show_png(self, path, caption: str) -> bool:
        """Show a saved grid; False (and the reason in the caption) when the file cannot be read."""
        image = QImage(str(path))
        if image.isNull():
            self.clear(f"{caption}: {Path(path)} cannot be read as an image")
            return False
        self._show(image.convertToFormat(QImage.Format.Format_RGB888), caption)
        return True

    def clear(self, text: str | None = None) -> None:
        self.image = None
        self.picture.clear()
        self.picture.hide()
        self.caption.setText(self.hint if text is None else text)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)  # the hint: one line's room

    def _show(self, image: QImage, caption: str) -> None:
        self.image = image
        self.caption.setText(caption)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self.picture.show()
        self._fit()

    def _fit(self) -> None:
        if self.image is None:
            return
        space = self.picture.size()
        if space.width() < 8 or space.height() < 8:
            space = QSize(self.image.width(), self.image.height())
        enlarged = space.width() >= self.image.width() and space.height() >= self.image.height()
        mode = Qt.TransformationMode.FastTransformation if enlarged else Qt.TransformationMode.SmoothTransformation
        scaled = self.image.scaled(space, Qt.AspectRatioMode.KeepAspectRatio, mode)
        self.picture.setPixmap(QPixmap.fromImage(scaled))
