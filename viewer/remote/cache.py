"""Retrieved instances as plain DICOM files, reused on the next open, resumed after an interruption.

Layout: ``<root>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``, each file exactly the
bytes the server sent. A file appears under its final name only when it is whole (written beside it,
then renamed), so what is there after a crash, a kill or a Cancel is complete; a retrieve asks the
server which instances the series holds and fetches only those not yet here. The same layout serves
``lightbox remote get ... DIR``, so a re-run into DIR resumes too.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from viewer.core.errors import Cancelled

from .base import Progress, RemoteClient, RemoteError, StopCheck

PART_SUFFIX = ".part"
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_HEADER_TAGS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]


def default_root() -> Path:
    """``$LIGHTBOX_CACHE_DIR/remote``, else ``$XDG_CACHE_HOME/lightbox/remote``, else ~/.cache/lightbox/remote."""
    if os.environ.get("LIGHTBOX_CACHE_DIR"):
        return Path(os.environ["LIGHTBOX_CACHE_DIR"]).expanduser() / "remote"
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "lightbox" / "remote"


def file_name(uid: str) -> str:
    """A UID as a file or folder name; anything that is not a plain UID is hashed, so a hostile
    server's 'UID' can never name a path outside the cache."""
    uid = str(uid or "").strip()
    if uid and len(uid) <= 64 and _UID.fullmatch(uid):
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "replace")).hexdigest()[:40]


def instance_uids_of(data: bytes) -> tuple[str, str, str]:
    """(study, series, SOP instance) UIDs of one Part-10 file, reading only its header."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except Exception as exc:  # noqa: BLE001 - whatever pydicom raises for a broken part
        raise ValueError(f"not a DICOM file ({type(exc).__name__})") from exc
    uids = tuple(str(ds.get(k, "") or "") for k in _HEADER_TAGS)
    if not uids[2]:
        raise ValueError("no SOPInstanceUID")
    return uids  # type: ignore[return-value]


def sop_uid_of(data: bytes) -> str:
    """MediaStorageSOPInstanceUID from a Part-10 file meta (group 0002, always explicit VR little
    endian), without pydicom; "" when it is not there (the caller reads the header instead)."""
    if data[128:132] != b"DICM":
        return ""
    pos, end = 132, min(len(data), 132 + 65536)
    while pos + 8 <= end:
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            return ""
        vr = data[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            length = struct.unpack_from("<I", data, pos + 8)[0]
            value_at = pos + 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            value_at = pos + 8
        if element == 0x0003:
            uid = data[value_at:value_at + length].rstrip(b"\x00 ").decode("ascii", "replace")
            return uid if _UID.fullmatch(uid) else ""
        pos = value_at + length
    return ""


@dataclass
class RetrieveReport:
    folder: Path  # the study's folder (what the viewer opens)
    files: list[Path] = field(default_factory=list)  # every file of what was asked for, old and new
    fetched: int = 0  # arrived in this run
    reused: int = 0  # were already here
    series: list[str] = field(default_factory=list)
    missing: dict[str, int] = field(default_factory=dict)  # series UID -> instances the server listed but never sent
    seconds: float = 0.0


class RetrieveCache:
    def __init__(self, root=None):
        self.root = Path(root) if root is not None else default_root()

    def study_dir(self, study_uid: str) -> Path:
        return self.root / file_name(study_uid)

    def series_dir(self, study_uid: str, series_uid: str) -> Path:
        return self.study_dir(study_uid) / file_name(series_uid)

    def present(self, study_uid: str, series_uid: str) -> set[str]:
        """SOP Instance UIDs whose files are here (whole: a file only gets its name when complete)."""
        folder = self.series_dir(study_uid, series_uid)
        try:
            return {p.name[:-4] for p in folder.iterdir() if p.name.endswith(".dcm") and p.is_file()}
        except FileNotFoundError:
            return set()

    def put(self, data: bytes, study_uid: str = "", series_uid: str = "") -> Path:
        """Store one instance under its UIDs; returns its path. With the study and series the caller asked
        for, only the file meta is read (the instance UID): a header parse per file costs more than its
        transfer."""
        sop = sop_uid_of(data) if study_uid and series_uid else ""
        if not sop:
            study_uid, series_uid, sop = instance_uids_of(data)
        folder = self.series_dir(study_uid or "unknown-study", series_uid or "unknown-series")
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{file_name(sop)}.dcm"
        tmp = folder / f".{final.name}.{os.getpid()}{PART_SUFFIX}"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, final)
        return final

    def clean_partial(self, study_uid: str) -> None:
        """Remove half-written files an interrupted run left (they never got a final name)."""
        for p in self.study_dir(study_uid).glob(f"*/.*{PART_SUFFIX}"):
            p.unlink(missing_ok=True)

    def retrieve(self, client: RemoteClient, study_uid: str, series_uid: str | None = None,
                 progress: Progress | None = None, should_stop: StopCheck | None = None,
                 on_file=None) -> RetrieveReport:
        """Bring a series (or every series of a study) here, fetching only what is missing.

        A series with nothing here yet is fetched whole without listing its instances first (on
        Orthanc the instance listing reads every file and costs a third of the transfer); one with
        files here is listed and only the rest is asked for. ``on_file(path, done, total)`` fires as
        each file lands (the viewer opens the first slices from it); ``progress(done, total, message)``
        likewise. RemoteError / Cancelled propagate; whatever arrived before them stays and is not
        fetched again next time.
        """
        started = time.perf_counter()
        stop = should_stop or (lambda: False)
        self.clean_partial(study_uid)
        hits = {hit.series_uid: hit for hit in client.find_series(study_uid)}
        if series_uid:
            if series_uid not in hits:
                raise RemoteError("not_found", f"{client.server.address}: no series {series_uid} in study "
                                               f"{study_uid} there")
            series = [series_uid]
        else:
            series = list(hits)
            if not series:
                raise RemoteError("not_found", f"{client.server.address}: study {study_uid} has no series there")
        here = {uid: self.present(study_uid, uid) for uid in series}
        # resumed series are listed (to ask only for the rest); new ones are counted from the series query
        listed = {uid: client.instance_uids(study_uid, uid) for uid in series if here[uid]}
        expected = {uid: len(listed[uid]) if uid in listed else hits[uid].n_instances for uid in series}
        total = sum(n or 0 for n in expected.values())
        report = RetrieveReport(folder=self.study_dir(study_uid), series=list(series))
        report.reused = sum(1 for uid, sops in listed.items() for s in sops if file_name(s) in here[uid])
        done = report.reused
        if progress:
            progress(done, total, f"{report.reused} of {total} instances already here")
        for uid in series:
            missing = None if uid not in listed else [s for s in listed[uid] if file_name(s) not in here[uid]]
            if missing == []:
                continue
            if stop():
                raise Cancelled("retrieve cancelled")

            def sink(data: bytes, uid=uid) -> None:
                nonlocal done, total
                path = self.put(data, study_uid, uid)
                done += 1
                total = max(total, done)
                report.fetched += 1
                if on_file is not None:
                    on_file(path, done, total)
                if progress:
                    progress(done, total, f"{done} of {total} instances")

            client.fetch(study_uid, uid, missing, sink, should_stop=stop)
            got = self.present(study_uid, uid)
            wanted = listed.get(uid)
            short = (sum(1 for s in wanted if file_name(s) not in got) if wanted is not None
                     else max(0, (expected[uid] or 0) - len(got)))
            if short:
                report.missing[uid] = short
        for uid in series:
            folder = self.series_dir(study_uid, uid)
            report.files.extend(sorted(folder / f"{name}.dcm" for name in self.present(study_uid, uid)))
        report.seconds = time.perf_counter() - started
        return report

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*.dcm") if p.is_file())

    def prune(self, max_bytes: int | None = None, keep: str = "") -> list[Path]:
        """Remove least recently used study folders until the cache holds at most ``max_bytes``
        (default: LIGHTBOX_REMOTE_CACHE_MB, else 20 GB); the study ``keep`` (just retrieved) stays."""
        if max_bytes is None:
            max_bytes = int(float(os.environ.get("LIGHTBOX_REMOTE_CACHE_MB", 20 * 1024)) * 1024 * 1024)
        if not self.root.is_dir():
            return []
        studies = []
        kept = self.study_dir(keep).name if keep else None
        for d in self.root.iterdir():
            if d.is_dir() and not d.is_symlink() and d.name != kept:
                files = [p for p in d.rglob("*") if p.is_file()]
                used = max((p.stat().st_mtime for p in files), default=d.stat().st_mtime)
                studies.append((used, sum(p.stat().st_size for p in files), d))
        total = sum(s for _, s, _ in studies) + (sum(p.stat().st_size for p in self.study_dir(keep).rglob("*")
                                                      if p.is_file()) if kept else 0)
        removed = []
        for _, size, d in sorted(studies):
            if total <= max_bytes:
                break
            shutil.rmtree(d, ignore_errors=True)
            total -= size
            removed.append(d)
        return removed
