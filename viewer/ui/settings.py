"""The application's settings, in one place every UI module may import (as napari's ``get_settings``).

Kept apart from the main window so that dialogs and controllers read their remembered choices
without importing the window that builds them (the import circle of issue 14).
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

MAX_RECENT = 8
RECENT_KEY = "recent/paths"
LINK_SCROLL_KEY = "view/link_scroll"
WARM_UP_KEY = "ai/warm_up"


def settings() -> QSettings:
    """The application's settings (an INI file in the user scope, organisation "Lightbox")."""
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "Lightbox", "Lightbox")


def recent_paths() -> list[str]:
    """File ▸ Open Recent, newest first."""
    value = settings().value(RECENT_KEY, [])
    if isinstance(value, str):
        value = [value] if value else []
    return [str(v) for v in (value or []) if v]


def save_recent(paths: list[str]) -> None:
    _remember(RECENT_KEY, paths[:MAX_RECENT])


def _same_place(path: str) -> str:
    """Where ``path`` really is (symlinks followed): two entries that land there are one folder."""
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError, ValueError):
        return str(path)


def as_opened(path) -> str:
    """The path as the user opened it: absolute and ``~`` expanded, but symlinks kept (their names mean
    something to the user; the resolved target often does not)."""
    p = Path(path).expanduser()
    try:
        return str(p if p.is_absolute() else Path.cwd() / p)
    except OSError:
        return str(p)


def remember_recent(path) -> None:
    """Put ``path`` first in Open Recent, as opened; older entries reaching the same place are dropped."""
    p = as_opened(path)
    here = _same_place(p)
    save_recent([p, *(q for q in recent_paths() if q != p and _same_place(q) != here)])


def _remember(key: str, value) -> None:
    s = settings()
    s.setValue(key, value)
    s.sync()


def link_scroll_enabled() -> bool:
    return settings().value(LINK_SCROLL_KEY, True, type=bool)


def remember_link_scroll(on: bool) -> None:
    _remember(LINK_SCROLL_KEY, bool(on))


def warm_up_enabled() -> bool:
    """AI ▸ Prepare models at start (on by default): load and run the models in the background."""
    return settings().value(WARM_UP_KEY, True, type=bool)


def remember_warm_up(on: bool) -> None:
    _remember(WARM_UP_KEY, bool(on))
