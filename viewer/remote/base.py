"""What every remote source shares: the server's address, a query, the hits, the errors, and the
one interface both protocols (DICOMweb, DIMSE) implement.

Instances travel as whole DICOM Part-10 files (bytes with preamble and file meta), so the cache
writes what the server sent without decoding pixels, and both protocols feed the same sink.
No Qt here: the CLI, the tests and the UI's workers all use these classes.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol
from urllib.parse import unquote, urlsplit

from viewer.core.errors import LightboxError

Sink = Callable[[bytes], None]  # receives one complete Part-10 file per instance, as it arrives
Progress = Callable[[int, int, str], None]  # (done, total, message)
StopCheck = Callable[[], bool]  # True = the user pressed Cancel


class RemoteError(LightboxError):
    """A server could not do what was asked; ``str()`` is one line for the user, naming the server.

    ``kind`` says which, for the CLI (all exit 2) and the UI's message:
    "unreachable" (no connection, timeout, DNS), "refused" (association rejected, HTTP 403),
    "auth" (HTTP 401, bad or missing credentials), "not_found" (no such study/series),
    "protocol" (the server answered something we cannot use), "tls" (certificate check failed).
    """

    KINDS = ("unreachable", "refused", "auth", "not_found", "protocol", "tls")

    def __init__(self, kind: str, message: str):
        if kind not in self.KINDS:
            raise ValueError(f"unknown RemoteError kind {kind!r}")
        self.kind = kind
        super().__init__(message)


@dataclass
class Server:
    """A configured PACS node. Secrets are never fields here: see viewer.remote.servers."""

    name: str
    kind: str  # "dicomweb" | "dimse"
    url: str = ""  # DICOMweb service root, e.g. https://pacs.example.org/dicom-web
    host: str = ""  # DIMSE
    port: int = 104
    called_ae: str = ""  # the server's AE title
    calling_ae: str = "LIGHTBOX"  # ours
    retrieve: str = "get"  # DIMSE retrieval: "get" (C-GET) or "move" (C-MOVE to our storage SCP)
    move_port: int = 0  # our storage SCP's port for C-MOVE (0 = any free port; the PACS must know it)
    auth: str = "none"  # "none" | "basic" | "bearer" (DICOMweb)
    username: str = ""
    verify_tls: bool = True  # off only when the user says so, per server
    ca_bundle: str = ""  # a PEM file of extra trusted CAs (hospital PKI)
    timeout: float = 30.0  # seconds per network operation

    def __post_init__(self):
        if self.kind not in ("dicomweb", "dimse"):
            raise ValueError(f"server kind must be 'dicomweb' or 'dimse', got {self.kind!r}")
        if self.retrieve not in ("get", "move"):
            raise ValueError(f"retrieve must be 'get' or 'move', got {self.retrieve!r}")
        if self.auth not in ("none", "basic", "bearer"):
            raise ValueError(f"auth must be 'none', 'basic' or 'bearer', got {self.auth!r}")

    @property
    def address(self) -> str:
        """Where it is, for messages (never with a secret)."""
        if self.kind == "dicomweb":
            return self.url
        return f"dicom://{self.called_ae}@{self.host}:{self.port}"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Server":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def parse_address(text: str, name: str = "") -> Server:
    """A server from a URL typed on the command line or in the dialog.

    ``http(s)://[user@]host[:port]/path`` is a DICOMweb root (the user name, if any, turns basic
    auth on; a password in the URL is refused: it would land in shell history and logs).
    ``dicom://AET@host:port`` (also ``dimse://``) is a DIMSE node; ``?calling=OURS&retrieve=move``
    set our AE title and C-MOVE.
    """
    text = text.strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if parts.password:
            raise ValueError("put no password in the URL: use --user and the keyring, "
                             "or LIGHTBOX_REMOTE_PASSWORD")
        host = parts.hostname or ""
        if not host:
            raise ValueError(f"{text}: no host")
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        if ":" in host:  # IPv6 literal
            netloc = f"[{host}]" + ("" if parts.port is None else f":{parts.port}")
        url = f"{scheme}://{netloc}{parts.path.rstrip('/')}"
        user = unquote(parts.username or "")
        return Server(name=name or url, kind="dicomweb", url=url,
                      auth="basic" if user else "none", username=user)
    if scheme in ("dicom", "dimse"):
        if not parts.hostname or parts.port is None:
            raise ValueError(f"{text}: a DIMSE address is dicom://AET@host:port")
        called = unquote(parts.username or "ANY-SCP")
        options = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        server = Server(name=name or text, kind="dimse", host=parts.hostname, port=int(parts.port),
                        called_ae=called, calling_ae=options.get("calling", "LIGHTBOX"),
                        retrieve=options.get("retrieve", "get"), move_port=int(options.get("port", 0) or 0))
        for ae in (server.called_ae, server.calling_ae):
            if not valid_ae(ae):
                raise ValueError(f"{ae!r}: an AE title is 1-16 characters, no backslash or control characters")
        return server
    raise ValueError(f"{text}: not a server address (http(s)://... for DICOMweb, dicom://AET@host:port for DIMSE)")


def valid_ae(title: str) -> bool:
    return 0 < len(title.strip()) <= 16 and not re.search(r"[\\\x00-\x1f]", title)


@dataclass
class Query:
    """A study search. Empty fields are not searched on; names may use * and ? wildcards."""

    patient_name: str = ""
    patient_id: str = ""
    date_from: str = ""  # YYYYMMDD
    date_to: str = ""  # YYYYMMDD
    modality: str = ""  # e.g. "CT"; matched against ModalitiesInStudy
    accession: str = ""
    study_uid: str = ""
    limit: int = 200

    @property
    def date_range(self) -> str:
        """DICOM range matching: '20240101-20241231', '20240101-', '-20241231' or ''."""
        if not (self.date_from or self.date_to):
            return ""
        if self.date_from and self.date_from == self.date_to:
            return self.date_from
        return f"{self.date_from}-{self.date_to}"


def parse_dates(text: str) -> tuple[str, str]:
    """'20240101', '20240101-20241231', '20240101-' or '-20241231' (dashes in dates allowed:
    2024-01-01..2024-12-31 also works) -> (from, to) as YYYYMMDD."""
    text = text.strip()
    if ".." in text:
        a, b = text.split("..", 1)
    elif re.fullmatch(r"\d{8}-\d{8}|\d{8}-|-\d{8}", text):
        a, b = text.split("-", 1)
    else:
        a = b = text
    out = []
    for value in (a, b):
        digits = value.replace("-", "").strip()
        if digits and not re.fullmatch(r"\d{8}", digits):
            raise ValueError(f"{text!r}: dates are YYYYMMDD, a range FROM-TO, FROM- or -TO")
        out.append(digits)
    return out[0], out[1]


@dataclass
class StudyHit:
    study_uid: str
    patient_name: str = ""
    patient_id: str = ""
    study_date: str = ""
    description: str = ""
    accession: str = ""
    modalities: list[str] = field(default_factory=list)
    n_series: int | None = None
    n_instances: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class SeriesHit:
    study_uid: str
    series_uid: str
    modality: str = ""
    description: str = ""
    number: int | None = None
    n_instances: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class StoreReport:
    """What a send did: SOP Instance UIDs stored, and those refused with the server's reason."""

    stored: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # SOP Instance UID (or file) -> reason


class RemoteClient(Protocol):
    """One connection to one server. Every method raises RemoteError (or Cancelled) and nothing else
    for a server's or network's failure; each opens what it needs and closes it again."""

    server: Server

    def echo(self) -> None:
        """Prove the server is there and accepts us (C-ECHO; a QIDO of one study over DICOMweb)."""

    def find_studies(self, query: Query) -> list[StudyHit]: ...

    def find_series(self, study_uid: str) -> list[SeriesHit]: ...

    def instance_uids(self, study_uid: str, series_uid: str) -> list[str]:
        """The SOP Instance UIDs the server holds for a series (to resume without refetching)."""

    def fetch(self, study_uid: str, series_uid: str, sop_uids: list[str] | None, sink: Sink,
              should_stop: StopCheck | None = None) -> int:
        """Deliver instances to ``sink`` as they arrive: the whole series when ``sop_uids`` is None,
        else only those. Returns how many were delivered; Cancelled when should_stop() turns True."""

    def store(self, files: list, progress: Progress | None = None,
              should_stop: StopCheck | None = None) -> StoreReport:
        """Send Part-10 files (paths) to the server (STOW-RS / C-STORE)."""
