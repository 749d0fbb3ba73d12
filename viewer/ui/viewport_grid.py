"""1x1, 1x2 and 2x2 viewports, each showing its own series; one is active.

The active viewport is the one the browser loads into, the W/L presets and
cine act on, and MPR reformats. Clicking or dropping a series on a viewport
makes it active; with more than one shown, the active one has a coloured frame.

Linked scrolling: in 1x2 and 2x2, moving the slice of one viewport moves every
other shown viewport of the same frame of reference to the slice at the same
patient position (core.sync); a newly loaded series joins at that position.
The viewports moved this way do not pass the move on, so nothing loops.
"""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QGridLayout, QVBoxLayout, QWidget

from ..core.sync import matching_slice, same_frame_of_reference, slice_plane
from .slice_view import SliceView

MODES: dict[str, tuple[int, int]] = {"1x1": (1, 1), "1x2": (1, 2), "2x2": (2, 2)}
CELL_POSITIONS = ((0, 0), (0, 1), (1, 0), (1, 1))
ACTIVE_FRAME = "QFrame#viewport-cell { border: 2px solid #e0b030; }"
IDLE_FRAME = "QFrame#viewport-cell { border: 2px solid #303030; }"
SINGLE_FRAME = "QFrame#viewport-cell { border: 0px; }"
EMPTY_CELL_TEXT = "Empty viewport\n\nDrag a series here from the list,\nor click here and double-click a series"


class ViewportGrid(QWidget):
    active_changed = Signal(object)  # SliceView
    series_dropped = Signal(object, str)  # SliceView, series key

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.cells: list[SliceView] = []
        self._frames: list[QFrame] = []
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(2)
        for i, (row, col) in enumerate(CELL_POSITIONS):
            frame = QFrame(self)
            frame.setObjectName("viewport-cell")
            box = QVBoxLayout(frame)
            box.setContentsMargins(2, 2, 2, 2)
            view = SliceView(frame)
            if i:
                view.set_placeholder(EMPTY_CELL_TEXT)
            box.addWidget(view)
            grid.addWidget(frame, row, col)
            view.activated.connect(lambda v=view: self.set_active(v))
            view.series_dropped.connect(lambda key, v=view: self.series_dropped.emit(v, key))
            view.slice_changed.connect(lambda _k, v=view: self._slice_moved(v))
            view.volume_changed.connect(lambda v=view: self._volume_shown(v))
            self.cells.append(view)
            self._frames.append(frame)
        self.mode = "1x1"
        self._active = self.cells[0]
        self.link_scroll = True  # the window's "Link scroll" toggle
        self._following = False  # True while viewports are moved to follow another one
        self._joining: set[SliceView] = set()  # just loaded: its first slice_changed is not a scroll
        self._apply()

    @property
    def active(self) -> SliceView:
        return self._active

    def set_active(self, view: SliceView) -> None:
        if view not in self.cells or view is self._active:
            return
        self._active = view
        if view not in self.visible_cells():  # e.g. chosen by the window while in 1x1
            self._apply()
        self._paint_frames()
        self.active_changed.emit(view)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown viewport layout {mode!r}; one of {', '.join(MODES)}")
        self.mode = mode
        if self._active not in self.cells[:self.count] and mode != "1x1":
            self._active = self.cells[0]
            self.active_changed.emit(self._active)
        self._apply()
        if self.link_scroll and self._active.volume is not None:
            self.follow(self._active)  # viewports shown again line up with the active one

    @property
    def count(self) -> int:
        rows, cols = MODES[self.mode]
        return rows * cols

    def visible_cells(self) -> list[SliceView]:
        """On screen now: in 1x1 the active viewport alone, else the first 2 or 4."""
        return [self._active] if self.mode == "1x1" else self.cells[:self.count]

    def empty_cells(self) -> list[SliceView]:
        return [v for v in self.visible_cells() if v.volume is None]

    def _apply(self) -> None:
        shown = self.visible_cells()
        for view, frame in zip(self.cells, self._frames):
            frame.setVisible(view in shown)
        self._paint_frames()

    def _paint_frames(self) -> None:
        single = len(self.visible_cells()) == 1
        for view, frame in zip(self.cells, self._frames):
            frame.setStyleSheet(SINGLE_FRAME if single else ACTIVE_FRAME if view is self._active else IDLE_FRAME)

    # -- linked scrolling -----------------------------------------------------------------
    def set_link_scroll(self, on: bool) -> None:
        """Turn linked scrolling on or off; turning it on lines the others up with the active viewport."""
        self.link_scroll = bool(on)
        if self.link_scroll and self._active.volume is not None:
            self.follow(self._active)

    def linked_views(self, view: SliceView) -> list[SliceView]:
        """The other shown viewports that scroll with ``view`` (none in 1x1 or with linking off)."""
        shown = self.visible_cells()
        if not self.link_scroll or len(shown) < 2 or view not in shown or view.volume is None:
            return []
        return [v for v in shown if v is not view and v.volume is not None
                and same_frame_of_reference(v.volume.info, view.volume.info)]

    def follow(self, source: SliceView) -> None:
        """Move the viewports linked to ``source`` to its patient position (each stays put where
        its planes are not parallel to the source's, or the position lies outside its series)."""
        peers = self.linked_views(source)
        if peers:
            self._move_to(peers, source)

    def _move_to(self, views: list[SliceView], source: SliceView) -> None:
        """Set each view to the slice at ``source``'s position, without passing the moves on."""
        plane = slice_plane(source.volume, source.plane_geometry.axis, source.slice_index)
        self._following = True
        try:
            for view in views:
                k = matching_slice(plane, view.volume, view.plane_geometry.axis)
                if k is not None:
                    view.set_slice(k)
        finally:
            self._following = False

    def _slice_moved(self, view: SliceView) -> None:
        if self._following:  # moved to follow another viewport: never passed on
            return
        if view in self._joining:  # set_volume's own announcement of its first slice
            self._joining.discard(view)
            return
        self.follow(view)

    def _volume_shown(self, view: SliceView) -> None:
        """A series just loaded here: start at the position of the viewports it links with."""
        if view.volume is None:
            return
        self._joining.add(view)  # set_volume emits slice_changed right after volume_changed
        peers = self.linked_views(view)
        if peers:
            self._move_to([view], self._active if self._active in peers else peers[0])
