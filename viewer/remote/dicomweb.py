"""A DICOMweb client (QIDO-RS search, WADO-RS retrieve, STOW-RS store) over one ``requests`` session.

Why our own and not ``dicomweb-client``: that library hands back decoded pydicom Datasets, which the
cache would have to encode again, and asks for explicit little endian unless told otherwise, so a
server holding JPEG 2000 must transcode (Orthanc without a codec refuses). Here a series is ONE
WADO-RS request with ``transfer-syntax=*`` (the server sends what it stores), streamed through an
incremental multipart reader that passes each instance's bytes to the sink as soon as it is whole.
benchmarks/bench_retrieve_dicomweb.py (300x512x512 CT, local Orthanc): ``fetch`` writing each part
to a file takes 0.8-1.3x curl's time for the same answer; dicomweb-client iter_series + save_as 3.4-4x.

Every failure is a RemoteError naming ``server.address``; the secret lives only in the session's
auth object and never appears in a message, a repr or a log.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import quote

import pydicom
import requests

from viewer.core.errors import Cancelled

from .base import Progress, Query, RemoteError, SeriesHit, Server, StopCheck, StoreReport, StudyHit, Sink
from .multipart import MultipartError, MultipartReader, boundary_of, encode

log = logging.getLogger(__name__)

USER_AGENT = "Lightbox-DICOMweb/1.0 (+requests)"
CHUNK = 1 << 20  # bytes per read of a streamed answer; Cancel is checked between reads
STOW_BATCH_BYTES = 64 * 1024 * 1024
ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ACCEPT_JSON = "application/dicom+json, application/json;q=0.9"

STUDY_FIELDS = ("NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "ModalitiesInStudy",
                "StudyDescription")
SERIES_FIELDS = ("NumberOfSeriesRelatedInstances", "SeriesDescription", "SeriesNumber", "Modality")

# DICOM JSON keys (tags as 8 hex digits)
T_STUDY_DATE, T_ACCESSION, T_MODALITIES, T_MODALITY = "00080020", "00080050", "00080061", "00080060"
T_STUDY_DESC, T_SERIES_DESC, T_PATIENT_NAME, T_PATIENT_ID = "00081030", "0008103E", "00100010", "00100020"
T_STUDY_UID, T_SERIES_UID, T_SOP_UID, T_SERIES_NUMBER = "0020000D", "0020000E", "00080018", "00200011"
T_N_SERIES, T_N_STUDY_INSTANCES, T_N_SERIES_INSTANCES = "00201206", "00201208", "00201209"
T_REFERENCED_SOPS, T_FAILED_SOPS = "00081199", "00081198"
T_REF_SOP_UID, T_FAILURE_REASON = "00081155", "00081197"

FAILURE_REASONS = {0xA700: "out of resources", 0xA900: "data set does not match SOP class",
                   0xC000: "cannot understand", 0x0110: "processing failure",
                   0x0122: "SOP class not supported", 0xA7FF: "out of resources"}


class _Bearer(requests.auth.AuthBase):
    """Authorization: Bearer <token>, attached per request (so it is not in session.headers)."""

    def __init__(self, token: str):
        self._token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "<bearer token>"


class _Basic(requests.auth.HTTPBasicAuth):
    def __repr__(self) -> str:
        return f"<basic auth for {self.username!r}>"


def _first(item: dict, tag: str):
    try:
        values = item[tag].get("Value") or []
    except (KeyError, AttributeError, TypeError):
        return None
    return values[0] if values else None


def _text(item: dict, tag: str) -> str:
    value = _first(item, tag)
    if isinstance(value, dict):  # PN: {"Alphabetic": "..."}
        value = value.get("Alphabetic", "")
    return "" if value is None else str(value)


def _int(item: dict, tag: str) -> int | None:
    value = _first(item, tag)
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _all(item: dict, tag: str) -> list[str]:
    try:
        return [str(v) for v in item[tag].get("Value") or [] if v is not None]
    except (KeyError, AttributeError, TypeError):
        return []


def query_string(params) -> str:
    """QIDO arguments, percent-encoded except the wildcards * and ? (RFC 3986 allows both in a query).

    Orthanc 1.10 with DICOMweb plugin 1.7 does not percent-decode QIDO arguments, so an encoded
    character matches nothing there; urllib3 encodes ^ and space whatever we send, so in matching
    values those two become the one-character wildcard ?: DOE^J* is sent as DOE?J*, which every
    server matches (on a strict server it may also match DOE J...; the user still sees the names).
    """
    def value(v) -> str:
        return quote(str(v).replace("^", "?").replace(" ", "?"), safe="*?-._~:,")

    return "&".join(f"{quote(str(k), safe='')}={value(v)}" for k, v in params)


def _q(uid: str) -> str:
    """A UID as one path segment (a hostile 'UID' cannot add segments)."""
    return quote(str(uid), safe="")


def _sop_uid_of_file(path: Path) -> str:
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    return str(ds.SOPInstanceUID)


class DicomWebClient:
    """The RemoteClient of a DICOMweb server (see base.RemoteClient for each method's contract)."""

    def __init__(self, server: Server, secret: str = ""):
        if server.kind != "dicomweb":
            raise ValueError(f"{server.name}: not a DICOMweb server")
        self.server = server
        self.base = server.url.rstrip("/")
        self._secret = secret or ""
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        if server.auth == "basic":
            self.session.auth = _Basic(server.username, self._secret)
        elif server.auth == "bearer":
            self.session.auth = _Bearer(self._secret)
        # TLS: verified by default; the hospital's CA bundle when given; off only when the user says so
        if not server.verify_tls:
            self.session.verify = False
        else:
            self.session.verify = server.ca_bundle or True
        self.timeout = server.timeout

    def __repr__(self) -> str:
        return f"DicomWebClient({self.server.address!r}, auth={self.server.auth!r})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- errors -----------------------------------------------------------------------
    def _fail(self, kind: str, what: str) -> RemoteError:
        text = f"{self.server.address}: {what}"
        if self._secret:
            text = text.replace(self._secret, "***")
        return RemoteError(kind, " ".join(text.split()))

    def _network_error(self, exc: Exception, doing: str) -> RemoteError:
        """A requests/urllib3 exception as one line; never its full text (it can be long)."""
        if isinstance(exc, requests.exceptions.SSLError):
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate" in str(exc).lower():
                return self._fail("tls", f"the server's TLS certificate is not trusted ({doing}): give the "
                                         "hospital's CA bundle, or turn verification off for this server "
                                         "only if you trust the network")
            return self._fail("tls", f"TLS handshake failed while {doing} (is it an https server?)")
        detail = str(exc)
        if isinstance(exc, requests.exceptions.Timeout):
            return self._fail("unreachable", f"no answer within {self.timeout:g} s while {doing}")
        if "refused" in detail.lower():
            reason = "connection refused"
        elif any(s in detail for s in ("Name or service not known", "nodename nor servname", "getaddrinfo",
                                       "Temporary failure in name resolution", "NameResolution")):
            reason = "host name not found"
        elif isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                              requests.exceptions.InvalidSchema)):
            reason = "not a valid http(s) URL"
        else:
            reason = f"connection failed ({type(exc).__name__})"
        return self._fail("unreachable", f"{reason} while {doing}")

    def _check_status(self, response: requests.Response, doing: str) -> None:
        code = response.status_code
        if code < 300:
            return
        if code == 401:
            raise self._fail("auth", f"authentication failed (HTTP 401) while {doing}: "
                                     "check the user name and password or token")
        if code == 403:
            raise self._fail("refused", f"access refused (HTTP 403) while {doing}")
        if code == 404:
            raise self._fail("not_found", f"not found (HTTP 404) while {doing}")
        reason = (response.reason or "").strip()
        raise self._fail("protocol", f"HTTP {code} {reason} while {doing}".replace("  ", " "))

    def _request(self, method: str, path: str, doing: str, params=None, headers=None, data=None,
                 stream: bool = False, check: bool = True) -> requests.Response:
        """One HTTP request; the query string is ours (see query_string), not requests' re-quoting."""
        try:
            prepared = self.session.prepare_request(requests.Request(method, self.base + path, headers=headers,
                                                                     data=data))
            if params:
                prepared.url = prepared.url.split("?", 1)[0] + "?" + query_string(params)
            # verify passed explicitly: else REQUESTS_CA_BUNDLE would replace the server's own CA bundle
            settings = self.session.merge_environment_settings(prepared.url, {}, stream, self.session.verify, None)
            response = self.session.send(prepared, timeout=self.timeout, **settings)
        except requests.exceptions.RequestException as exc:
            raise self._network_error(exc, doing) from None
        if check:
            try:
                self._check_status(response, doing)
            except RemoteError:
                response.close()
                raise
        return response

    def _get(self, path: str, doing: str, params=None, headers=None, stream: bool = False) -> requests.Response:
        return self._request("GET", path, doing, params=params, headers=headers, stream=stream)

    def _qido(self, path: str, params, doing: str) -> list[dict]:
        response = self._get(path, doing, params=params, headers={"Accept": ACCEPT_JSON})
        if response.status_code == 204 or not response.content.strip():
            return []
        try:
            data = response.json()
        except (ValueError, json.JSONDecodeError):
            raise self._fail("protocol", f"the answer to {doing} is not DICOM JSON") from None
        if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
            raise self._fail("protocol", f"the answer to {doing} is not a list of DICOM JSON objects")
        return data

    # -- QIDO-RS ----------------------------------------------------------------------
    def echo(self) -> None:
        self._qido("/studies", [("limit", "1")], "checking the server (QIDO-RS)")

    def find_studies(self, query: Query) -> list[StudyHit]:
        params: list[tuple[str, str]] = []
        for key, value in (("PatientName", query.patient_name), ("PatientID", query.patient_id),
                           ("StudyDate", query.date_range), ("ModalitiesInStudy", query.modality.upper()),
                           ("AccessionNumber", query.accession), ("StudyInstanceUID", query.study_uid)):
            if value:
                params.append((key, value.strip()))
        if query.limit:
            params.append(("limit", str(int(query.limit))))
        params.append(("fuzzymatching", "false"))
        params += [("includefield", f) for f in STUDY_FIELDS]
        hits = []
        for item in self._qido("/studies", params, "searching studies (QIDO-RS)"):
            uid = _text(item, T_STUDY_UID)
            if not uid:
                continue
            hits.append(StudyHit(study_uid=uid, patient_name=_text(item, T_PATIENT_NAME),
                                 patient_id=_text(item, T_PATIENT_ID), study_date=_text(item, T_STUDY_DATE),
                                 description=_text(item, T_STUDY_DESC), accession=_text(item, T_ACCESSION),
                                 modalities=_all(item, T_MODALITIES), n_series=_int(item, T_N_SERIES),
                                 n_instances=_int(item, T_N_STUDY_INSTANCES)))
        return hits

    def find_series(self, study_uid: str) -> list[SeriesHit]:
        params = [("includefield", f) for f in SERIES_FIELDS]
        hits = []
        for item in self._qido(f"/studies/{_q(study_uid)}/series", params,
                               f"listing the series of study {study_uid}"):
            uid = _text(item, T_SERIES_UID)
            if uid:
                hits.append(SeriesHit(study_uid=study_uid, series_uid=uid, modality=_text(item, T_MODALITY),
                                      description=_text(item, T_SERIES_DESC), number=_int(item, T_SERIES_NUMBER),
                                      n_instances=_int(item, T_N_SERIES_INSTANCES)))
        return hits

    def instance_uids(self, study_uid: str, series_uid: str) -> list[str]:
        items = self._qido(f"/studies/{_q(study_uid)}/series/{_q(series_uid)}/instances",
                           [("includefield", "SOPInstanceUID")],
                           f"listing the instances of series {series_uid}")
        return [uid for uid in (_text(item, T_SOP_UID) for item in items) if uid]

    # -- WADO-RS ----------------------------------------------------------------------
    def fetch(self, study_uid: str, series_uid: str, sop_uids: list[str] | None, sink: Sink,
              should_stop: StopCheck | None = None) -> int:
        stop = should_stop or (lambda: False)
        series_path = f"/studies/{_q(study_uid)}/series/{_q(series_uid)}"
        if sop_uids is None:
            n = self._stream(series_path, sink, stop, f"retrieving series {series_uid}", 0)
            if n == 0:
                raise self._fail("not_found", f"series {series_uid} of study {study_uid} has no instances there")
            return n
        delivered = missing = 0
        for sop in sop_uids:
            try:
                delivered += self._stream(f"{series_path}/instances/{_q(sop)}", sink, stop,
                                          f"retrieving instance {sop}", delivered)
            except RemoteError as exc:
                if exc.kind != "not_found":
                    raise
                missing += 1  # gone since it was listed: the cache reports what never came
                log.info("%s", exc)
        if missing and not delivered:
            raise self._fail("not_found", f"none of the {missing} instances asked for are in series {series_uid}")
        return delivered

    def _stream(self, path: str, sink: Sink, stop: StopCheck, doing: str, before: int) -> int:
        """One WADO-RS request; each part goes to ``sink`` as soon as it is whole. ``before`` = instances
        delivered by earlier requests of the same fetch (for the message if the connection drops)."""
        if stop():
            raise Cancelled("retrieve cancelled")
        response = self._get(path, doing, headers={"Accept": ACCEPT_DICOM}, stream=True)
        count = 0

        def on_part(body: bytes, headers: dict) -> None:
            nonlocal count
            self._check_part10(body, doing, before + count)
            count += 1
            sink(body)
            if stop():  # one network chunk can hold many small instances: Cancel is honoured between them
                raise Cancelled("retrieve cancelled")

        try:
            content_type = response.headers.get("Content-Type", "")
            if content_type.split(";")[0].strip().lower() == "application/dicom":
                return self._single(response, sink, stop, doing, before)  # a server that ignores multipart
            try:
                reader = MultipartReader(boundary_of(content_type), on_part)
            except MultipartError as exc:
                raise self._fail("protocol", f"{exc} while {doing}") from None
            try:
                for chunk in response.iter_content(CHUNK):
                    reader.feed(chunk)
                    if reader.complete:
                        break
                    if stop():
                        raise Cancelled("retrieve cancelled")
                reader.close()
            except requests.exceptions.RequestException as exc:
                raise self._dropped(exc, doing, before + count) from None
            except MultipartError as exc:
                if not reader.complete and "ended" in str(exc):
                    # a body cut short is a dropped connection (the server died or the network went)
                    raise self._fail("unreachable", f"connection dropped while {doing}: "
                                                    f"{before + count} instances had arrived") from None
                raise self._fail("protocol", f"{exc} while {doing}") from None
        finally:
            response.close()
        return count

    def _single(self, response: requests.Response, sink: Sink, stop: StopCheck, doing: str, before: int) -> int:
        """A bare application/dicom answer (one instance) instead of multipart."""
        chunks = []
        try:
            for chunk in response.iter_content(CHUNK):
                chunks.append(chunk)
                if stop():
                    raise Cancelled("retrieve cancelled")
        except requests.exceptions.RequestException as exc:
            raise self._dropped(exc, doing, before) from None
        expected = response.headers.get("Content-Length")
        data = b"".join(chunks)
        if expected is not None and expected.isdigit() and int(expected) != len(data):
            raise self._fail("unreachable", f"connection dropped while {doing}: {before} instances had arrived")
        if not data:
            return 0
        self._check_part10(data, doing, before)
        sink(data)
        return 1

    def _check_part10(self, data: bytes, doing: str, index: int) -> None:
        """WADO-RS sends Part-10 files (PS3.18): 128-byte preamble, then DICM. Anything else (an error
        page, a bare data set) stops here rather than landing in the cache."""
        if data[128:132] != b"DICM":
            raise self._fail("protocol", f"instance {index + 1} of the answer is not a DICOM file while {doing}")

    def _dropped(self, exc: Exception, doing: str, arrived: int) -> RemoteError:
        if isinstance(exc, requests.exceptions.Timeout):
            return self._fail("unreachable", f"no data for {self.timeout:g} s while {doing}: "
                                             f"{arrived} instances had arrived")
        return self._fail("unreachable", f"connection dropped while {doing}: {arrived} instances had arrived")

    # -- STOW-RS ----------------------------------------------------------------------
    def store(self, files: list, progress: Progress | None = None,
              should_stop: StopCheck | None = None) -> StoreReport:
        stop = should_stop or (lambda: False)
        report = StoreReport()
        batches: list[list[tuple[Path, str]]] = [[]]
        size = 0
        for f in files:
            path = Path(f)
            try:
                uid = _sop_uid_of_file(path)
                n = path.stat().st_size
            except Exception as exc:  # noqa: BLE001 - pydicom's many ways of refusing a file
                report.failed[str(path)] = f"not a DICOM file ({type(exc).__name__})"
                continue
            if batches[-1] and size + n > STOW_BATCH_BYTES:
                batches.append([])
                size = 0
            batches[-1].append((path, uid))
            size += n
        total = sum(len(b) for b in batches)
        done = 0
        for batch in batches:
            if not batch:
                continue
            if stop():
                raise Cancelled("send cancelled")
            datas = []
            for path, uid in batch:
                try:
                    datas.append((uid, path.read_bytes()))
                except OSError as exc:
                    report.failed[str(path)] = f"cannot read ({exc.strerror or type(exc).__name__})"
            if datas:
                self._stow(datas, report)
            done += len(batch)
            if progress:
                progress(done, total, f"sent {done} of {total} files")
        return report

    def _stow(self, datas: list[tuple[str, bytes]], report: StoreReport) -> None:
        body, content_type = encode([d for _, d in datas])
        doing = f"storing {len(datas)} instances (STOW-RS)"
        response = self._request("POST", "/studies", doing, data=body, check=False,
                                 headers={"Content-Type": content_type, "Accept": ACCEPT_JSON})
        if response.status_code not in (200, 202, 409):
            self._check_status(response, doing)
        try:
            answer = response.json() if response.content.strip() else {}
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            if response.status_code == 200:  # stored, but the answer lists nothing we can read
                raise self._fail("protocol", f"the answer to {doing} is not DICOM JSON")
            raise self._fail("protocol", f"HTTP {response.status_code} and no readable answer while {doing}")
        stored = {_text(item, T_REF_SOP_UID) for item in (answer.get(T_REFERENCED_SOPS) or {}).get("Value") or []
                  if isinstance(item, dict)}
        failed = {}
        for item in (answer.get(T_FAILED_SOPS) or {}).get("Value") or []:
            if isinstance(item, dict):
                code = _int(item, T_FAILURE_REASON)
                reason = FAILURE_REASONS.get(code, f"failure reason {code:#06x}" if code is not None else "refused")
                failed[_text(item, T_REF_SOP_UID)] = f"{reason} (HTTP {response.status_code})"
        for uid, _ in datas:
            if uid in stored:
                report.stored.append(uid)
            elif uid in failed:
                report.failed[uid] = failed[uid]
            else:
                report.failed[uid] = f"not in the server's answer (HTTP {response.status_code})"

