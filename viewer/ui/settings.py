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
    s = settings()
    s.setValue(RECENT_KEY, paths[:MAX_RECENT])
    s.sync()


def remember_recent(path) -> None:
    """Put ``path`` first in Open Recent (resolved, so one folder is listed once)."""
    try:
        p = str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError, ValueError):
        p = str(path)
    save_recent([p, *(q for q in recent_paths() if q != p)])


def link_scroll_enabled() -> bool:
    return settings().value(LINK_SCROLL_KEY, True, type=bool)


def remember_link_scroll(on: bool) -> None:
    s = settings()
    s.setValue(LINK_SCROLL_KEY, bool(on))
    s.sync()
