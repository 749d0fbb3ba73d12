"""What the window's controllers may use of it: the narrow interface they are written against.

Controllers (analysis, editor, study, presets, cine, remote, send results, DICOM results) take a
``WindowHost`` instead of importing the main window, so viewer/ui has no import circle and a
controller can be driven by any object with these few members.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..core.study import ScanResult, Series, Study
    from ..core.workspace import Workspace
    from .analysis_controller import AnalysisController
    from .editor_controller import EditorController
    from .mammo_layout import MammoLayout
    from .series_browser import SeriesBrowser
    from .slice_view import SliceView
    from .tasks import TaskBar
    from .viewport_grid import ViewportGrid


class WindowHost(Protocol):
    workspace: Workspace  # what is open (no Qt)
    tasks: TaskBar  # the one foreground task: start, busy, label, generation
    image_shown: Any  # Signal(): a volume is on screen
    scan_finished: Any  # Signal(ScanResult)
    task_failed: Any  # Signal(str)
    grid: ViewportGrid  # the 1x1 / 1x2 / 2x2 viewports
    mammo_layout: MammoLayout  # the 4-view hanging
    browser: SeriesBrowser
    analysis: AnalysisController  # the editor starts from the AI's result
    editor: EditorController  # send results and the remote panel read the edited maps

    def show_message(self, text: str, level: str = "info") -> None: ...

    @property
    def busy(self) -> bool: ...

    @property
    def slice_view(self) -> SliceView: ...

    @property
    def shown_series(self) -> Series | None: ...

    @property
    def source(self) -> Path | None: ...

    @property
    def scan_result(self) -> ScanResult | None: ...

    @property
    def shown_mammo(self) -> Study | None: ...

    def hanging_shown(self) -> bool: ...

    def shown_views(self) -> list[SliceView]: ...

    def all_views(self) -> list[SliceView]: ...

    def viewport_series(self, view: SliceView) -> Series | None: ...

    def apply_layer_visibility(self) -> None: ...

    def set_segmentation_visible(self, on: bool) -> None: ...

    def load_series(self, series: Series, should_stop=None, viewport: SliceView | None = None) -> None: ...

    def open_path(self, path, should_stop=None) -> None: ...

    def set_tool(self, name: str) -> None: ...

    def refresh_scan(self, path, result: ScanResult, volumes: dict) -> None: ...
