"""Drag-and-drop payload for a series dragged from the browser onto a viewport."""
from __future__ import annotations

from PySide6.QtCore import QMimeData

SERIES_MIME = "application/x-lightbox-series"


def series_mime(key: str) -> QMimeData:
    mime = QMimeData()
    mime.setData(SERIES_MIME, key.encode("utf-8"))
    mime.setText(key)
    return mime


def series_key(mime: QMimeData | None) -> str | None:
    """The dragged series' key, or None when the drag carries something else (e.g. files)."""
    if mime is None or not mime.hasFormat(SERIES_MIME):
        return None
    key = bytes(mime.data(SERIES_MIME)).decode("utf-8", "replace")
    return key or None
