"""Overlay layers drawn above a SliceView's image: probability heatmaps and label maps.

DESIGN: an overlay lives in the image's own voxel grid (same shape as the
volume). Each shown slice is cut with the same ``core.mpr.extract_slice`` and
display flips as the image, turned into RGBA by numpy look-up-table indexing
(no per-pixel Python) and shown in an ImageItem with the image's rect, so it
lines up in every plane. The source array is never resampled.

    view.add_layer("ai", ProbabilityLayer(prob, colormap="inferno", opacity=0.5, threshold=0.5))
    view.add_layer("seg", LabelLayer(labels, colors={1: (255, 0, 0)}, outline=True))
    view.set_layer_visible("ai", False)
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt

from ..core.colors import label_color

# Not bundled with pyqtgraph (matplotlib's); defined here so "jet" works offline.
_EXTRA_MAPS = {
    "jet": ([0.0, 0.11, 0.125, 0.34, 0.35, 0.64, 0.66, 0.89, 1.0],
            [(0, 0, 127), (0, 0, 255), (0, 0, 255), (0, 219, 255), (0, 229, 246),
             (245, 255, 10), (255, 236, 0), (255, 18, 0), (127, 0, 0)]),
    "hot": ([0.0, 0.375, 0.75, 1.0], [(10, 0, 0), (255, 0, 0), (255, 255, 0), (255, 255, 255)]),
}


# Names of the layers the window's controllers put on a SliceView; here, below both, so neither
# controller imports the other (or the window) for a string.
HEAT_LAYER, LABEL_LAYER = "ai:heatmap", "ai:labels"  # the AI's chosen heatmap and its segmentation
EDIT_LAYER_NAME = "edit:labels"  # the segment editor's map; replaces the AI's labels where present

OVERLAY_Z = 10  # above the image item (z 0); later layers stack above earlier ones


def colormap_lut(name: str, n: int = 256) -> np.ndarray:
    """(n, 3) uint8 RGB table of a named colour map (pyqtgraph bundled, or 'jet'/'hot')."""
    if name in _EXTRA_MAPS:
        pos, cols = _EXTRA_MAPS[name]
        cmap = pg.ColorMap(pos, cols)
    else:
        try:
            cmap = pg.colormap.get(name)
        except (FileNotFoundError, ValueError, KeyError, OSError) as e:
            raise ValueError(f"unknown colormap {name!r}; try one of "
                             f"{sorted([*pg.colormap.listMaps(), *_EXTRA_MAPS])[:12]}…") from e
        if cmap is None:
            raise ValueError(f"unknown colormap {name!r}")
    lut = cmap.getLookupTable(0.0, 1.0, n, alpha=False)
    return np.ascontiguousarray(lut[:, :3], dtype=np.uint8)


def _as_u32(table: np.ndarray) -> np.ndarray:
    """(n, 4) uint8 RGBA table as n uint32 words (same bytes), for one-word-per-pixel indexing."""
    return table.view(np.uint32).reshape(-1)


def _as_rgba(words: np.ndarray) -> np.ndarray:
    """(rows, cols) uint32 RGBA words back to a (rows, cols, 4) uint8 view."""
    return np.ascontiguousarray(words).view(np.uint8).reshape(*words.shape, 4)


class OverlayLayer:
    """Base: one array in the volume's grid, drawn in its own ImageItem on a SliceView."""

    def __init__(self, array: np.ndarray, opacity: float):
        array = np.asarray(array)
        if array.ndim != 3:
            raise ValueError(f"overlay array must be 3D (z, y, x) like the volume, got shape {array.shape}")
        self.array = array
        self._opacity = float(np.clip(opacity, 0.0, 1.0))
        self.visible = True
        self.name: str | None = None
        self.item = pg.ImageItem(axisOrder="row-major")
        self.item.setAcceptedMouseButtons(Qt.MouseButton.NoButton)  # clicks reach the view box
        self.image: np.ndarray | None = None  # the RGBA slice last given to the item (display orientation)
        self._view = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def opacity(self) -> float:
        return self._opacity

    @opacity.setter
    def opacity(self, value: float) -> None:
        self._opacity = float(np.clip(value, 0.0, 1.0))
        self._rebuild()

    def rgba(self, plane_slice: np.ndarray) -> np.ndarray:
        """(rows, cols, 4) uint8 for one 2D slice of ``array``; subclasses implement."""
        raise NotImplementedError

    # -- hosting (called by SliceView) -----------------------------------------------
    def _attach(self, view, z: float) -> None:
        self._view = view
        self.item.setZValue(z)
        view.view.addItem(self.item)
        self.refresh()

    def _detach(self) -> None:
        if self._view is not None:
            self._view.view.removeItem(self.item)
        self._view = None
        self.item.clear()
        self.image = None

    def _rebuild(self) -> None:
        """Tables changed (opacity, colours, …): redraw the current slice."""
        self.refresh()

    def refresh(self) -> None:
        """Redraw for the host view's current volume, plane, slice and flips."""
        view = self._view
        self.item.setVisible(self.visible and view is not None and view.volume is not None)
        if view is None or view.volume is None or not self.visible:
            return
        img = view._shown(self.rgba(view._cut(self.array, view.slice_index)))
        self.image = img
        w, h = view.image_size_mm()
        self.item.setImage(img, autoLevels=False, levels=None, rect=QRectF(0, 0, w, h))


class ProbabilityLayer(OverlayLayer):
    """A float map (e.g. an AI probability in 0..1) as a colour-mapped heatmap.

    Pixels below ``threshold`` (and NaN) are transparent; the rest take the
    colour of ``colormap`` at their value (clipped to ``vmin..vmax``) with
    alpha ``round(opacity * 255)``.
    """

    def __init__(self, array: np.ndarray, colormap: str = "inferno", opacity: float = 0.5,
                 threshold: float = 0.5, vmin: float = 0.0, vmax: float = 1.0):
        super().__init__(np.asarray(array, dtype=np.float32), opacity)
        if not vmax > vmin:
            raise ValueError(f"vmax ({vmax}) must be greater than vmin ({vmin})")
        self._threshold = float(threshold)
        self.vmin, self.vmax = float(vmin), float(vmax)
        self._colormap = colormap
        self.title = ""  # shown above the colour bar (else the layer's name), e.g. "mass probability"
        self._rgb = colormap_lut(colormap)
        self._table = self._make_table()

    def _make_table(self) -> np.ndarray:
        t = np.empty((256, 4), np.uint8)
        t[:, :3] = self._rgb
        t[:, 3] = int(round(self._opacity * 255))
        return t

    def _rebuild(self) -> None:
        self._table = self._make_table()
        super()._rebuild()
        if self._view is not None:
            self._view.update_legend()

    @property
    def colormap(self) -> str:
        return self._colormap

    @colormap.setter
    def colormap(self, name: str) -> None:
        self._rgb = colormap_lut(name)
        self._colormap = name
        self._rebuild()

    @property
    def threshold(self) -> float:
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = float(value)
        self.refresh()
        if self._view is not None:
            self._view.update_legend()

    def lut(self) -> np.ndarray:
        """(256, 4) uint8 RGBA table from vmin (row 0) to vmax (row 255), for a legend/colour bar."""
        return self._table.copy()

    def legend_info(self) -> tuple[str, np.ndarray, float, float, float]:
        """(title, (256, 3) RGB, vmin, vmax, threshold) for the viewport's colour bar."""
        return (self.title or self.name or "", self._rgb, self.vmin, self.vmax, self._threshold)

    def rgba(self, plane_slice: np.ndarray) -> np.ndarray:
        p = plane_slice
        idx = np.subtract(p, self.vmin, dtype=np.float32)
        idx *= np.float32(255.0 / (self.vmax - self.vmin))
        np.fmax(idx, 0, out=idx)  # fmax/fmin map NaN to the bound, so the cast is defined
        np.fmin(idx, 255, out=idx)
        out = np.take(_as_u32(self._table), idx.astype(np.uint8))  # one 32-bit RGBA word per pixel
        out *= p >= self._threshold  # below threshold (and NaN, which compares False): all zero
        return _as_rgba(out)


class LabelLayer(OverlayLayer):
    """An integer label map: label 0 transparent, each other label its colour.

    ``outline=True`` colours only boundary pixels (4-neighbour differs, or the
    slice edge) of each label on the shown slice.
    """

    def __init__(self, array: np.ndarray, colors: dict[int, tuple[int, int, int]] | None = None,
                 opacity: float = 0.4, outline: bool = False):
        array = np.asarray(array)
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            raise ValueError(f"label map must be an integer array, got {array.dtype}")
        if array.dtype == bool:
            array = array.view(np.uint8)
        if array.size and array.min() < 0:
            raise ValueError("label map has negative labels")
        super().__init__(array, opacity)
        self._max_label = int(array.max()) if array.size else 0
        self._colors = {int(k): tuple(int(c) for c in v[:3]) for k, v in (colors or {}).items()}
        self._outline = bool(outline)
        self._table = self._make_table()

    def _make_table(self) -> np.ndarray:
        n = max(self._max_label, max(self._colors, default=0)) + 1
        t = np.zeros((n, 4), np.uint8)
        for lab in range(1, n):
            t[lab, :3] = self.color(lab)
        t[1:, 3] = int(round(self._opacity * 255))
        return t

    def _rebuild(self) -> None:
        self._table = self._make_table()
        super()._rebuild()

    def color(self, label: int) -> tuple[int, int, int]:
        label = int(label)
        if label in self._colors:
            return self._colors[label]
        return label_color(label)

    @property
    def colors(self) -> dict[int, tuple[int, int, int]]:
        return dict(self._colors)

    @colors.setter
    def colors(self, colors: dict[int, tuple[int, int, int]]) -> None:
        self._colors = {int(k): tuple(int(c) for c in v[:3]) for k, v in colors.items()}
        self._rebuild()

    def set_color(self, label: int, rgb: tuple[int, int, int]) -> None:
        self._colors[int(label)] = tuple(int(c) for c in rgb[:3])
        self._rebuild()

    @property
    def outline(self) -> bool:
        return self._outline

    @outline.setter
    def outline(self, value: bool) -> None:
        self._outline = bool(value)
        self.refresh()

    def lut(self) -> np.ndarray:
        """(max label + 1, 4) uint8 RGBA table; row 0 (background) is transparent."""
        return self._table.copy()

    @staticmethod
    def boundary(lab: np.ndarray) -> np.ndarray:
        """Bool mask of non-zero pixels with a 4-neighbour of another label (or the slice edge)."""
        edge = np.zeros(lab.shape, bool)
        if lab.size == 0:
            return edge
        edge[0, :] = edge[-1, :] = True
        edge[:, 0] = edge[:, -1] = True
        diff_v = lab[1:, :] != lab[:-1, :]
        diff_h = lab[:, 1:] != lab[:, :-1]
        edge[1:, :] |= diff_v
        edge[:-1, :] |= diff_v
        edge[:, 1:] |= diff_h
        edge[:, :-1] |= diff_h
        return edge & (lab != 0)

    def rgba(self, plane_slice: np.ndarray) -> np.ndarray:
        lab = plane_slice
        if self._outline:
            lab = np.where(self.boundary(lab), lab, 0)
        return _as_rgba(np.take(_as_u32(self._table), lab))
