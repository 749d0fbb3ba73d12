"""The mammography 4-view hanging: RCC | LCC above RMLO | LMLO.

The right breast hangs on the viewer's left, the left breast on the right,
each mirrored (``core.mammo.display_flips``) so that its chest wall is on the
side of the cell facing the middle, and each image is fitted against that
side: the two breasts face each other back to back, as on a mammography
workstation. Every cell is a ``SliceView`` (one projection image) with the
display options it offers for this (flips, alignment, wheel zoom, compact
corner text).

Mouse per cell: wheel (or Ctrl+wheel) = zoom, right-drag = window/level,
left/middle-drag = pan. R resets every cell. With "Link W/L, zoom and pan" on
(the default), window/level, zoom and pan in one cell apply to all four; pan is
mirrored between the sides, so the same region of each breast stays in view.

Current vs prior (``set_prior_views``): the prior exam's four views hang beside the current ones,
RCC | LCC over RMLO | LMLO again, with the same mirroring so each pair's chest walls meet; linking
then spans all eight cells and every cell names its exam date.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QGridLayout, QLabel, QToolBar, QVBoxLayout, QWidget

from ..core.mammo import FOUR_VIEWS, GRID, display_flips, four_view
from ..core.study import Series, Study
from ..core.volume import Volume
from ..core.windowing import dense_window, full_range_window
from .slice_view import SliceView, _fmt, _format_date, _format_name, default_window

PRESETS = ("Full range", "Dense")
PRIOR = "prior:"  # key prefix of the prior exam's cells: 'prior:RCC'


def _view(key: str) -> str:
    """'RCC' of 'RCC' or 'prior:RCC'."""
    return key[len(PRIOR):] if key.startswith(PRIOR) else key

# One loaded view: (series, volume, (center, width), (flip_left_right, flip_up_down)); None = not in the study.
LoadedView = tuple[Series, Volume, tuple[float, float], tuple[bool, bool]]


def load_four_view(study: Study, progress=None, should_stop=None) -> dict[str, LoadedView | None]:
    """Decode the four standard views of a study (no Qt: runs on a worker thread)."""
    from ..core.errors import Cancelled
    from ..core.io import load_series

    chosen = four_view(study)
    present = [v for v in FOUR_VIEWS if chosen[v] is not None]
    out: dict[str, LoadedView | None] = {v: None for v in FOUR_VIEWS}
    for i, name in enumerate(present):
        if should_stop is not None and should_stop():
            raise Cancelled("loading the 4-view exam cancelled")
        series = chosen[name]
        volume = load_series(series, should_stop=should_stop)
        flips = display_flips(volume.info, volume.array[0])
        out[name] = (series, volume, default_window(volume), (flips.left_right, flips.up_down))
        if progress is not None:
            progress(i + 1, len(present))
    return out


def preset_window(image: np.ndarray, preset: str) -> tuple[float, float]:
    """(center, width) of a preset for one MG image: 'Full range' or 'Dense' (upper tissue range)."""
    if preset == "Full range":
        return full_range_window(image)
    if preset == "Dense":
        return dense_window(image)
    raise ValueError(f"unknown preset {preset!r}")


class MammoLayout(QWidget):
    """2x2 hanging of RCC, LCC, RMLO, LMLO; ``cells[name]`` is the SliceView of that view."""

    views_changed = Signal()
    prior_requested = Signal()  # "Compare with prior" pressed: the window hangs (or puts away) the prior

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._syncing = False
        self.study: Study | None = None
        self.series: dict[str, Series | None] = {v: None for v in FOUR_VIEWS}
        self.cells: dict[str, SliceView] = {}
        self.prior_study: Study | None = None  # shown beside the current exam when comparing
        self.prior_series: dict[str, Series | None] = {v: None for v in FOUR_VIEWS}
        self.prior_cells: dict[str, SliceView] = {}  # same view names; keys 'prior:RCC' in the linked set

        self.toolbar = QToolBar("Mammography", self)
        self.toolbar.setStyleSheet(
            "QToolBar { background: #2b2b2b; border: 0; spacing: 4px; }"
            "QToolButton { color: #e6e6e6; padding: 2px 8px; border-radius: 3px; }"
            "QToolButton:hover { background: #404040; }"
            "QToolButton:checked { background: #3d6185; }"
            "QToolButton:disabled { color: #7a7a7a; }"
            "QLabel { color: #cfcfcf; }")
        self.link_action = QAction("Link W/L, zoom and pan", self)
        self.link_action.setCheckable(True)
        self.link_action.setChecked(True)
        self.link_action.setToolTip("Window/level, zoom and pan in one view apply to all the others, the "
                                    "prior's too (pan mirrored, so the same region of both breasts shows)")
        self.toolbar.addAction(self.link_action)
        self.toolbar.addSeparator()
        self.preset_actions: dict[str, QAction] = {}
        group = QActionGroup(self)
        group.setExclusive(False)
        for name in PRESETS:
            act = QAction(name, self)
            act.setToolTip({"Full range": "Window over each image's full pixel range",
                            "Dense": "Narrow window on the upper intensity range (dense tissue)"}[name])
            act.triggered.connect(lambda _checked=False, n=name: self.apply_preset(n))
            group.addAction(act)
            self.toolbar.addAction(act)
            self.preset_actions[name] = act
        self.reset_action = QAction("Reset (R)", self)
        self.reset_action.triggered.connect(self.reset_all)
        self.toolbar.addSeparator()
        self.toolbar.addAction(self.reset_action)
        self.prior_action = QAction("Compare with prior", self)
        self.prior_action.setCheckable(True)
        self.prior_action.setEnabled(False)
        self.prior_action.setToolTip("No earlier mammography exam of this patient in the open folder")
        self.prior_action.triggered.connect(self._prior_pressed)
        self.toolbar.addSeparator()
        self.toolbar.addAction(self.prior_action)
        self.header = QLabel(self)
        self.header.setTextFormat(Qt.TextFormat.PlainText)
        self.header.setStyleSheet("padding: 0 8px;")
        self.toolbar.addWidget(self.header)

        grid = self._grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(2)
        for name in FOUR_VIEWS:
            row, col = GRID[name]
            self.cells[name] = self._make_cell(name, f"{name} — not in this study")
            grid.addWidget(self.cells[name], row, col)
            prior = self._make_cell(PRIOR + name, f"prior {name} — not in the prior exam")
            prior.hide()
            grid.addWidget(prior, row, col + 3)  # column 2: the gap between current and prior
            self.prior_cells[name] = prior
        grid.setRowStretch(0, 1)
        grid.setRowStretch(1, 1)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.toolbar)
        layout.addLayout(grid, 1)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setStyleSheet("MammoLayout { background: #3a3a3a; }")  # dark gaps between the cells

    def _make_cell(self, key: str, placeholder: str) -> SliceView:
        """One hanging cell; ``key`` is the view name, 'prior:'-prefixed for the prior exam's cells."""
        right = _view(key)[0] == "R"
        cell = SliceView(self)
        cell.setObjectName(f"mammo-{key.replace(':', '-')}")
        cell.h_align = "right" if right else "left"  # chest walls meet in the middle
        cell.wheel_zooms = True
        cell.hidden_edges = {"right" if right else "left"}  # keep the chest-wall edge clear
        cell.corner_text = partial(self._corner_text, key)
        cell.set_placeholder(placeholder)
        cell.window_changed.connect(lambda c, w, n=key: self._window_changed(n, c, w))
        cell.view.sigRangeChangedManually.connect(lambda *_mask, n=key: self._zoom_changed(n))
        cell.canvas.installEventFilter(self)
        return cell

    # -- content ------------------------------------------------------------------
    @property
    def linked(self) -> bool:
        return self.link_action.isChecked()

    def set_linked(self, on: bool) -> None:
        self.link_action.setChecked(bool(on))

    def set_views(self, views: dict[str, LoadedView | None], study: Study | None = None) -> None:
        """Show loaded views (``load_four_view``'s result); missing ones get an empty labelled cell.
        A new exam ends any comparison with a prior (it was the previous exam's prior)."""
        self.study = study
        self._fill(self.cells, self.series, views)
        self._show_prior(False)
        self.offer_prior(None)  # until the window has looked for this exam's prior
        self._update_header()
        self.views_changed.emit()

    def set_prior_views(self, views: dict[str, LoadedView | None] | None, study: Study | None = None) -> None:
        """Hang a prior exam beside the current one (8 cells), or with None go back to the 4-view hanging.
        Missing prior views get an empty labelled cell; when linked, each prior view starts with the window of
        the same current view."""
        if views is None:
            self._show_prior(False)
        else:
            self.prior_study = study
            self._fill(self.prior_cells, self.prior_series, views)
            for name in FOUR_VIEWS:
                self.prior_cells[name].set_placeholder(
                    f"prior {name} — not in the {_format_date(study.date) if study else 'prior'} exam")
            self._show_prior(True)
            self._match_prior_windows()
        self._update_header()
        self.views_changed.emit()

    def offer_prior(self, date: str | None) -> None:
        """Enable "Compare with prior" for a prior exam of ``date`` (None: this exam has no prior)."""
        self.prior_action.setEnabled(date is not None or self.comparing)
        self.prior_action.setToolTip(
            f"Hang the prior exam of {_format_date(date) or '(undated)'} beside this one, 8 cells" if date is not None
            else "No earlier mammography exam of this patient in the open folder")

    def _prior_pressed(self, *_args) -> None:
        self.prior_action.setChecked(self.comparing)  # the hanging itself says when the prior is shown
        self.prior_requested.emit()

    @property
    def comparing(self) -> bool:
        """The prior exam hangs beside the current one."""
        return self.prior_study is not None

    def _fill(self, cells: dict[str, SliceView], series: dict[str, Series | None],
              views: dict[str, LoadedView | None]) -> None:
        self._syncing = True
        try:
            for name in FOUR_VIEWS:
                cell, loaded = cells[name], views.get(name)
                if loaded is None:
                    series[name] = None
                    cell.clear()
                    continue
                series[name], volume, window, flips = loaded
                cell.set_volume(volume, window, flips=flips)
        finally:
            self._syncing = False

    def _match_prior_windows(self) -> None:
        """When linked, each prior view takes the window of the same current view: like with like."""
        if not (self.linked and self.comparing):
            return
        self._syncing = True
        try:
            for name, cell in self.prior_cells.items():
                if cell.volume is not None and self.cells[name].volume is not None:
                    cell.set_window(*self.cells[name].window)
        finally:
            self._syncing = False

    def _show_prior(self, on: bool) -> None:
        if not on:
            self.prior_study = None
            for name, cell in self.prior_cells.items():
                self.prior_series[name] = None
                cell.clear()  # do not keep the prior's pixels alive
        for cell in self.prior_cells.values():
            cell.setVisible(on)
        self.prior_action.setChecked(on)
        if on:
            self.prior_action.setEnabled(True)  # pressed again, it puts the prior away
        self._grid.setColumnMinimumWidth(2, 10 if on else 0)  # a wider gap: two exams, not one
        for col in (3, 4):
            self._grid.setColumnStretch(col, 1 if on else 0)
        for cell in self.cells.values():
            cell._update_overlay()  # the dates now say CURRENT / nothing

    def linked_cells(self) -> dict[str, SliceView]:
        """Every shown cell by key: 'RCC'... for the current exam, 'prior:RCC'... for the prior when comparing."""
        out = dict(self.cells)
        if self.comparing:
            out.update({PRIOR + n: c for n, c in self.prior_cells.items()})
        return out

    def clear(self) -> None:
        self.set_views({})

    def cell_label(self, name: str) -> str:
        """What the cell says about itself: its corner text, or the 'not in this study' text."""
        cell = self._cell(name)
        if cell.volume is None:
            return cell._placeholder.text()
        return "\n".join(t for t in self._corner_text(name, cell).values() if t)

    # -- interaction ----------------------------------------------------------------
    def reset_all(self) -> None:
        self._syncing = True
        try:
            for cell in self.linked_cells().values():
                if cell.volume is not None:
                    cell.reset_view(window=True)
        finally:
            self._syncing = False
        self._match_prior_windows()

    def apply_preset(self, preset: str, *_args) -> None:
        """Window every image with a preset computed from its own pixels."""
        self._syncing = True
        try:
            for cell in self.linked_cells().values():
                image = cell.current_image()
                if image is not None:
                    cell.set_window(*preset_window(image, preset))
        finally:
            self._syncing = False

    def zoom_of(self, name: str) -> float:
        """Magnification relative to the fitted view (1 = fitted)."""
        cell = self._cell(name)
        fit = self._fit_scale(cell)
        (x0, x1), _ = cell.view.viewRange()
        if fit is None or x1 <= x0:
            return 1.0
        return (cell.view.width() / (x1 - x0)) / fit

    def pan_of(self, name: str) -> tuple[float, float]:
        """(depth, dy) in mm: how far the view's inner edge lies from the chest wall (towards the
        nipple), and its vertical centre relative to the image's. Mirror-symmetric between sides."""
        cell = self._cell(name)
        (x0, x1), (y0, y1) = cell.view.viewRange()
        width, height = cell.image_size_mm()
        depth = (width - x1) if _view(name)[0] == "R" else x0
        return depth, (y0 + y1) / 2 - height / 2

    def set_view(self, name: str, zoom: float, depth: float, dy: float) -> None:
        """Show one cell at ``zoom`` x its fitted scale with its inner (chest-wall) edge ``depth`` mm
        into the breast and its centre ``dy`` mm below the image centre; the R and L views of a pair
        given the same numbers show mirror-symmetric regions, still meeting in the middle."""
        cell = self._cell(name)
        fit = self._fit_scale(cell)
        if fit is None or zoom <= 0:
            return
        width, height = cell.image_size_mm()
        scale = fit * zoom  # screen pixels per mm
        span_x, hh = cell.view.width() / scale, cell.view.height() / scale / 2
        x_range = (width - depth - span_x, width - depth) if _view(name)[0] == "R" else (depth, depth + span_x)
        cy = height / 2 + dy
        cell.view.setRange(xRange=x_range, yRange=(cy - hh, cy + hh), padding=0)
        cell._fitted = False

    def set_zoom(self, name: str, zoom: float) -> None:
        """Magnify one cell to ``zoom`` x its fitted scale, keeping its chest-wall edge (the side
        facing the middle) and its vertical centre in place, so the breasts still meet in the middle."""
        self.set_view(name, zoom, *self.pan_of(name))

    def eventFilter(self, obj: QObject, ev: QEvent) -> bool:
        if (ev.type() == QEvent.Type.KeyPress and ev.key() == Qt.Key.Key_R
                and not ev.modifiers() & Qt.KeyboardModifier.ControlModifier):
            self.reset_all()
            return True
        return super().eventFilter(obj, ev)

    # -- internals -------------------------------------------------------------------
    def _cell(self, key: str) -> SliceView:
        return self.prior_cells[_view(key)] if key.startswith(PRIOR) else self.cells[key]

    @staticmethod
    def _fit_scale(cell: SliceView) -> float | None:
        vol = cell.volume
        pw, ph = cell.view.width(), cell.view.height()
        if vol is None or pw <= 1 or ph <= 1:
            return None
        _, ny, nx = vol.shape
        return min(pw / (nx * vol.spacing[2]), ph / (ny * vol.spacing[1]))

    def _window_changed(self, name: str, center: float, width: float) -> None:
        if self._syncing or not self.linked:
            return
        self._syncing = True
        try:
            for other, cell in self.linked_cells().items():
                if other != name and cell.volume is not None:
                    cell.set_window(center, width)
        finally:
            self._syncing = False

    def _zoom_changed(self, name: str, *_args) -> None:
        """Zoom or pan in one cell: the others follow, mirrored so the same region of each breast shows."""
        if self._syncing or not self.linked:
            return
        zoom = self.zoom_of(name)
        depth, dy = self.pan_of(name)
        self._syncing = True
        try:
            for other, cell in self.linked_cells().items():
                if other != name and cell.volume is not None:
                    self.set_view(other, zoom, depth, dy)
        finally:
            self._syncing = False

    def _corner_text(self, key: str, cell: SliceView) -> dict[str, Any]:
        """View name, series and W/L in the outer corners (the chest-wall side stays clear), and the exam
        date (which exam, when comparing with a prior)."""
        name, prior = _view(key), key.startswith(PRIOR)
        series = (self.prior_series if prior else self.series).get(name)
        desc = series.info.series_description if series is not None else ""
        number = series.info.series_number if series is not None else None
        head = "  ".join(b for b in (name, desc, f"Se {number}" if number is not None else "") if b)
        study = self.prior_study if prior else self.study
        date = _format_date((study.date if study is not None else "") or
                            (cell.volume.info.study_date if cell.volume is not None else ""))
        if self.comparing:
            date = f"{'PRIOR' if prior else 'CURRENT'} {date}".strip()
        head = "\n".join(b for b in (head, date) if b)
        c, w = cell.window
        wl = f"W/L {_fmt(w)}/{_fmt(c)}"
        if name[0] == "R":  # right breast: left column, outer side = left
            return {"tl": head, "tr": "", "bl": wl, "br": ""}
        return {"tl": "", "tr": head, "bl": "", "br": wl}

    def _update_header(self) -> None:
        info = next((c.volume.info for c in self.cells.values() if c.volume is not None), None)
        if info is None:
            self.header.setText("")
            return
        date = _format_date(info.study_date)
        if self.comparing:
            date = f"{date} vs prior {_format_date(self.prior_study.date) or '(undated)'}"
        parts = [_format_name(info.patient_name), f"ID {info.patient_id}" if info.patient_id else "",
                 date, info.study_description]
        self.header.setText("   ".join(p for p in parts if p))
