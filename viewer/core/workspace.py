"""What the reader has open, with no Qt: the source, its scan, which series each viewport shows.

The window's controllers share this model instead of reaching into the window for its private
fields (napari keeps a viewer's model apart from its Qt widgets in the same way). Viewports are
opaque keys here: the model never draws and never imports the UI.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .study import ScanResult, Series, Study

LAYOUTS = ("1x1", "1x2", "2x2", "mpr")


@dataclass
class Workspace:
    source: Path | None = None  # the folder or file opened last
    scan_result: ScanResult | None = None  # what its scan found
    cell_series: dict[Any, Series] = field(default_factory=dict)  # viewport -> the series it shows
    shown_mammo: Study | None = None  # the study on the 4-view hanging, when that is shown
    layout_mode: str = "1x1"  # chosen in the Layout menu; kept across loads
    last_dir: str = field(default_factory=lambda: str(Path.home()))  # where file dialogs start
    beside: dict[str, list[Path]] = field(default_factory=dict)  # series key -> SEG/RTSTRUCT files citing it

    def set_scan(self, source, result: ScanResult) -> None:
        """A new scan: what was found beside each series is read again for it."""
        self.source, self.scan_result, self.beside = Path(source), result, {}

    def set_layout(self, mode: str) -> None:
        if mode not in LAYOUTS:
            raise ValueError(f"unknown layout {mode!r}")
        self.layout_mode = mode

    def series_of(self, viewport) -> Series | None:
        return self.cell_series.get(viewport)

    def on_screen(self, keys, shown_views) -> bool:
        """True when one of ``shown_views`` shows a series whose key is in ``keys`` (or, on the
        mammography hanging, when its study holds one of them)."""
        keys = set(keys)
        if self.shown_mammo is not None:
            return any(s.key in keys for s in self.shown_mammo.series)
        return any(s.key in keys for v, s in self.cell_series.items() if v in shown_views)

    def study_of(self, series: Series) -> Study | None:
        """The study of the open scan that holds ``series``."""
        if self.scan_result is None:
            return None
        return next((st for st in self.scan_result.studies if any(s.key == series.key for s in st.series)), None)

    def study_with_key(self, key: str) -> Study | None:
        if self.scan_result is None or not key:
            return None
        return next((st for st in self.scan_result.studies if any(s.key == key for s in st.series)), None)

    def unshown(self, candidates: list[Series], exclude: Series | None = None) -> list[Series]:
        """Image series of ``candidates`` that no viewport shows yet (nor ``exclude``), projections and
        results left out: what an empty viewport is filled with."""
        on_screen = {s.key for s in self.cell_series.values()} | ({exclude.key} if exclude else set())
        return [s for s in candidates if s.key not in on_screen and not s.is_projection and not s.is_result]
