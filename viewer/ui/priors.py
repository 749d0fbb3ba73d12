""""Compare with prior": what the action does, kept out of the main window.

On the mammography hanging it hangs the patient's newest prior exam beside the current one (8 cells),
and a second press goes back to the 4-view hanging. On a CT/MR series it opens the 1x2 layout with the
current series on the left and the matching series of the newest prior study on the right, scrolling
together: through the geometry when both share a frame of reference (the grid's own linked scroll), else
through ``PriorScrollLink``, which lines the two stacks up by their anatomy (``core.priors.stack_offset_mm``).

The window passed in needs: ``scan_result``, ``shown_mammo``, ``shown_series``, ``mammo_layout``, ``grid``,
``study_of(series)``, ``viewport_series(view)``, ``set_layout(mode)``, ``load_series(series, viewport=)``
and ``show_message(text, level)``; ``run_task(label, fn, on_done)`` runs ``fn(progress, should_stop)`` on a
worker with progress and Cancel (the window's ``tasks.start``).
"""
from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QObject, QTimer

from ..core.priors import current_slice, mammo_priors, prior_for_series, prior_slice, stack_offset_mm
from ..core.study import Series
from ..core.sync import same_frame_of_reference
from .mammo_layout import load_four_view
from .slice_view import SliceView, _format_date as format_date

RunTask = Callable[[str, Callable[..., Any], Callable[[Any], None]], Any]


def compare_with_prior(window, run_task: RunTask) -> str:
    """Show the current exam or series beside its newest prior; returns what it did or why it could not
    (also shown in the status bar)."""
    if window.scan_result is None:
        return _say(window, "Open a study first: there is nothing to compare", "warning")
    if window.shown_mammo is not None:
        return _compare_mammo(window, run_task)
    series = window.shown_series
    if series is None:
        return _say(window, "Show a series first: Compare with prior needs the series being read", "warning")
    return _compare_stack(window, series)


def offer_prior(window) -> str | None:
    """After a mammography exam is hung: enable the hanging's "Compare with prior" button when the patient
    has an older exam; returns that exam's date (None when there is none)."""
    if window.scan_result is None or window.shown_mammo is None:
        window.mammo_layout.offer_prior(None)
        return None
    _exam, older = mammo_priors(window.scan_result, window.shown_mammo)
    date = older[0].date if older else None
    window.mammo_layout.offer_prior(date)
    return date


def _say(window, text: str, level: str = "info") -> str:
    window.show_message(text, level)
    return text


def _compare_mammo(window, run_task: RunTask) -> str:
    layout = window.mammo_layout
    if layout.comparing:
        layout.set_prior_views(None)
        return _say(window, "4-view mammography: the prior exam is put away")
    exam, older = mammo_priors(window.scan_result, window.shown_mammo)
    if not older:
        why = ("this exam has no date" if exam is not None and not exam.date
               else "no earlier mammography exam of this patient in the open folder")
        return _say(window, f"No prior to compare with: {why}", "warning")
    prior = older[0].as_study()
    current = window.shown_mammo

    def job(progress, should_stop):
        return load_four_view(prior, progress=progress, should_stop=should_stop)

    def done(views) -> None:
        if window.shown_mammo is not current:  # another exam was opened meanwhile
            return
        layout.set_prior_views(views, prior)
        missing = [n for n, v in views.items() if v is None]
        _say(window, f"Current {format_date(current.date)} beside prior {format_date(prior.date)}"
             + (f" — not in the prior: {' '.join(missing)}" if missing else ""), "warning" if missing else "info")

    run_task(f"Loading the prior mammography exam of {format_date(prior.date)}", job, done)
    return f"loading the prior exam of {format_date(prior.date)}"


def _compare_stack(window, series: Series) -> str:
    study = window.study_of(series)
    if study is None:
        return _say(window, "This series is not part of the open folder's studies", "warning")
    found = prior_for_series(window.scan_result, series, study)
    if isinstance(found, str):
        return _say(window, found, "warning")
    prior, prior_series = found
    source = window.grid.active
    window.set_layout("1x2")
    left, right = window.grid.visible_cells()[:2]
    current_view = source if source in (left, right) else left
    prior_view = right if current_view is left else left

    def load_prior() -> None:
        for old in window.grid.findChildren(PriorScrollLink):
            old.stop()
        PriorScrollLink(window.grid, current_view, prior_view, series, prior_series)  # a child of the grid
        window.load_series(prior_series, viewport=prior_view)

    if window.viewport_series(current_view) is not None and window.viewport_series(current_view).key == series.key:
        load_prior()
    else:  # the series was read in a viewport the 1x2 layout hides: show it on the left first, then the prior
        # (on the next turn of the event loop: the window's own fill of empty viewports runs first and is
        # then superseded by the prior's load)
        _when_shown(current_view, series, lambda: QTimer.singleShot(0, load_prior))
        window.load_series(series, viewport=current_view)
    return _say(window, f"{series.label()} beside the prior of {format_date(prior.facts.date)}: "
                f"{prior_series.label()}")


def _when_shown(view: SliceView, series: Series, then: Callable[[], None]) -> None:
    """Call ``then`` once ``view`` shows ``series`` (loads run on a worker, one at a time)."""
    def check() -> None:
        if view.volume is not None and view.volume.info.series_uid == series.uid:
            view.volume_changed.disconnect(check)
            then()
    view.volume_changed.connect(check)


class PriorScrollLink(QObject):
    """Scrolls a current and a prior stack together when they have no frame of reference in common.

    The shift between them comes from their anatomy (``stack_offset_mm``) as soon as both are shown; it
    follows the window's Link scroll switch. Stacks that share a frame of reference are left to the grid's
    own linked scroll. The link ends itself once either viewport shows another series."""

    def __init__(self, grid, current: SliceView, prior: SliceView, current_series: Series, prior_series: Series):
        super().__init__(grid)
        self.grid, self.current, self.prior = grid, current, prior
        self.uids = (current_series.uid, prior_series.uid)
        self.offset_mm: float | None = None
        self._moving = False
        self._seen = False  # both series were on screen together: showing another one ends the link
        current.slice_changed.connect(self._current_moved)
        prior.slice_changed.connect(self._prior_moved)
        prior.volume_changed.connect(self._shown)
        current.volume_changed.connect(self._shown)
        self._shown()

    @property
    def active(self) -> bool:
        cur, pri = self.current.volume, self.prior.volume
        return (cur is not None and pri is not None and (cur.info.series_uid, pri.info.series_uid) == self.uids
                and not same_frame_of_reference(cur.info, pri.info))

    def _shown(self) -> None:
        cur, pri = self.current.volume, self.prior.volume
        both = cur is not None and pri is not None and (cur.info.series_uid, pri.info.series_uid) == self.uids
        if not both:
            if self._seen:
                self.stop()
            return
        self._seen = True
        if self.offset_mm is None and self.active:
            self.offset_mm = stack_offset_mm(cur, pri)
            self._current_moved(self.current.slice_index)

    def stop(self) -> None:
        for signal, slot in ((self.current.slice_changed, self._current_moved),
                             (self.prior.slice_changed, self._prior_moved),
                             (self.prior.volume_changed, self._shown), (self.current.volume_changed, self._shown)):
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError):
                pass  # already disconnected
        self.offset_mm = None
        self.setParent(None)  # the grid lets go of it; Python frees it
        self.deleteLater()

    def _follow(self, target: SliceView, k: int | None) -> None:
        if k is None or not self.grid.link_scroll:
            return
        self._moving = True
        try:
            target.set_slice(k)
        finally:
            self._moving = False

    def _current_moved(self, k: int) -> None:
        if not self._moving and self.offset_mm is not None and self.active:
            self._follow(self.prior, prior_slice(self.current.volume, k, self.prior.volume, self.offset_mm))

    def _prior_moved(self, j: int) -> None:
        if not self._moving and self.offset_mm is not None and self.active:
            self._follow(self.current, current_slice(self.prior.volume, j, self.current.volume, self.offset_mm))
