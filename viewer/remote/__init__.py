"""Remote sources: PACS servers over DICOMweb (QIDO/WADO/STOW-RS) and DIMSE (C-ECHO/FIND/GET/MOVE/STORE).

``connect(server, secret)`` gives the RemoteClient for a Server; ``RetrieveCache`` (cache.py) keeps
retrieved instances as plain DICOM files and resumes an interrupted retrieve. No Qt here.
"""
from __future__ import annotations

from .base import (Query, RemoteClient, RemoteError, SeriesHit, Server, StoreReport, StudyHit,
                   parse_address, parse_dates)


def connect(server: Server, secret: str = "") -> RemoteClient:
    """The client for ``server``; ``secret`` is the password (basic auth) or token (bearer)."""
    if server.kind == "dicomweb":
        from .dicomweb import DicomWebClient
        return DicomWebClient(server, secret)
    from .dimse import DimseClient
    return DimseClient(server)


__all__ = ["Query", "RemoteClient", "RemoteError", "SeriesHit", "Server", "StoreReport", "StudyHit",
           "connect", "parse_address", "parse_dates"]
