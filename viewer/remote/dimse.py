"""DIMSE client: C-ECHO, C-FIND, C-MOVE to our own storage SCP and C-STORE with pynetdicom; C-GET
on our own lean association (dimse_get.py, 0.8x DCMTK getscu's time where pynetdicom took 3.8x).

Each call opens one association and closes it again. Instances reach the sink as the bytes the
server sent (preamble, file meta, dataset in the transfer syntax it arrived in), never decoded or
re-encoded. C-GET proposes one presentation context per (storage class, transfer syntax), so the
server sends each instance as it holds it instead of transcoding (a context's list of syntaxes gets
only one of them accepted); an association holds 128 contexts, hence the tiers below.

pynetdicom's own per-PDU/per-message logging handlers are switched off (they would name patients in
INFO/DEBUG lines, and formatting them costs a sixth of a retrieve's CPU) and its logger is set to
WARNING. Its reactor sleeps 1 ms whenever the socket is momentarily empty; a C-MOVE's storage
association polls every 0.1 ms instead. We accept PDUs of any size (MAX_PDU).
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (UID, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, JPEG2000, JPEG2000Lossless, JPEGBaseline8Bit,
                         JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom import sop_class as sc
from pynetdicom.status import (QR_FIND_SERVICE_CLASS_STATUS, QR_GET_SERVICE_CLASS_STATUS,
                               QR_MOVE_SERVICE_CLASS_STATUS, STORAGE_SERVICE_CLASS_STATUS)

from viewer.core.errors import Cancelled

from .base import Progress, Query, RemoteError, SeriesHit, Server, Sink, StopCheck, StoreReport, StudyHit
from .dimse_get import PENDING, CGetAssociation

logging.getLogger("pynetdicom").setLevel(logging.WARNING)
_config.LOG_HANDLER_LEVEL = "none"
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False

MAX_PDU = 0  # the PDU size we accept: 0 = no limit, so the server sends its largest (pynetdicom's
# per-PDU cost bounds a retrieve: its default 16 kB meant 5x as many PDUs and a 1.3x slower C-GET)
POLL_S = 1e-4  # pynetdicom's reactor sleep when the socket is empty (default 1 ms) during a retrieve
WARNING_STORE = (0xB000, 0xB006, 0xB007)
UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]

# C-GET storage contexts: (classes, transfer syntaxes offered one context each). 7x8 + 14x4 + 14x1
# + the GET model = 127 of 128. Anything else the server transcodes to one of these or reports failed.
_TIER_A = ([sc.CTImageStorage, sc.MRImageStorage, sc.DigitalMammographyXRayImageStorageForPresentation,
            sc.DigitalXRayImageStorageForPresentation, sc.ComputedRadiographyImageStorage,
            sc.UltrasoundImageStorage, sc.SecondaryCaptureImageStorage],
           [UNCOMPRESSED, [JPEGBaseline8Bit], [JPEGLossless], [JPEGLosslessSV1], [JPEGLSLossless],
            [JPEG2000Lossless], [JPEG2000], [RLELossless]])
_TIER_B = ([sc.DigitalMammographyXRayImageStorageForProcessing, sc.DigitalXRayImageStorageForProcessing,
            sc.UltrasoundMultiFrameImageStorage, sc.EnhancedCTImageStorage, sc.EnhancedMRImageStorage,
            sc.XRayAngiographicImageStorage, sc.XRayRadiofluoroscopicImageStorage,
            sc.NuclearMedicineImageStorage, sc.PositronEmissionTomographyImageStorage,
            sc.BreastTomosynthesisImageStorage, sc.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
            sc.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
            sc.MultiFrameTrueColorSecondaryCaptureImageStorage, sc.EnhancedPETImageStorage],
           [UNCOMPRESSED, [JPEGLosslessSV1], [JPEG2000Lossless], [JPEG2000]])
_TIER_C = ([sc.SegmentationStorage, sc.ParametricMapStorage, sc.ComprehensiveSRStorage, sc.EnhancedSRStorage,
            sc.BasicTextSRStorage, sc.Comprehensive3DSRStorage, sc.MammographyCADSRStorage,
            sc.KeyObjectSelectionDocumentStorage, sc.GrayscaleSoftcopyPresentationStateStorage,
            sc.RTStructureSetStorage, sc.RTDoseStorage, sc.RTPlanStorage, sc.EncapsulatedPDFStorage,
            sc.SpatialRegistrationStorage],
           [UNCOMPRESSED])


def get_storage_contexts() -> list[tuple[str, list[str]]]:
    """(storage class, transfer syntaxes) pairs proposed for C-GET, one accepted syntax each."""
    out = []
    for classes, syntax_groups in (_TIER_A, _TIER_B, _TIER_C):
        out.extend((cls, list(group)) for cls in classes for group in syntax_groups)
    return out


def status_text(code: int, table: dict | None = None) -> str:
    """'0xC000 (Failed: Unable to process)' from a DIMSE status code."""
    table = table or {}
    category, text = table.get(code, ("", ""))
    if not text:
        for lo, hi, cat in ((0xA700, 0xA7FF, "Out of resources"), (0xA900, 0xA9FF, "Identifier does not match"),
                            (0xC000, 0xCFFF, "Unable to process")):
            if lo <= code <= hi:
                text = cat
    return f"0x{code:04X}" + (f" ({text.rstrip('.')})" if text else "")


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword, "")
        if value is None:
            return ""
        if isinstance(value, (list, pydicom.multival.MultiValue)):
            return "\\".join(str(v) for v in value)
        return str(value).strip()
    except Exception:  # noqa: BLE001 - a malformed value from the server reads as empty
        return ""


def _list(ds: Dataset, keyword: str) -> list[str]:
    text = _text(ds, keyword)
    return [v.strip() for v in text.split("\\") if v.strip()]


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        return int(str(ds.get(keyword, "")).strip())
    except (TypeError, ValueError):
        return None


def _poll_fast(assoc) -> None:
    """Shorten the reactor's idle sleep of a retrieve's association (a private pynetdicom attribute:
    left alone if a later version renames it)."""
    dul = getattr(assoc, "dul", None)
    if dul is not None and isinstance(getattr(dul, "_run_loop_delay", None), float):
        dul._run_loop_delay = POLL_S


class _Receiver:
    """The C-STORE handler of a C-MOVE (on our pynetdicom storage SCP).

    The handler only queues each instance's bytes and answers Success at once, so the server sends
    the next one while a worker thread hands this one to the sink: writing and parsing overlap the
    network instead of adding to it (a slow disk or viewer callback does not stall the transfer
    until the short queue is full; then it slows the server rather than filling memory). On Cancel
    or a failing sink the worker aborts the association that delivers, and drops whatever is still
    queued.
    """

    QUEUE = 4

    def __init__(self, sink: Sink, should_stop: StopCheck):
        self.sink = sink
        self.should_stop = should_stop
        self.count = 0
        self.cancelled = False
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(self.QUEUE)
        self._worker = threading.Thread(target=self._work, name="dimse-sink", daemon=True)
        self._worker.start()

    @property
    def halted(self) -> bool:
        return self.cancelled or self.error is not None

    def handle(self, event) -> int:
        if self.halted:
            return 0xA700
        if self.should_stop():
            self.cancelled = True
            event.assoc.abort(block=False)
            return 0xA700
        self._queue.put((event.encoded_dataset(include_meta=True), event.assoc))
        return 0x0000

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.halted:
                continue  # drain, so a handler never blocks on a full queue
            data, assoc = item
            try:
                if self.should_stop():
                    raise Cancelled("retrieve cancelled")
                self.sink(data)
                self.count += 1
                continue
            except Cancelled:
                self.cancelled = True
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self.error = exc
            try:
                assoc.abort(block=False)
            except Exception:  # noqa: BLE001 - already closed
                pass

    def finish(self) -> None:
        """Wait until every queued instance reached the sink (or was dropped after a halt)."""
        self._queue.put(None)
        self._worker.join()


@dataclass
class _Tally:
    """How a C-GET went, as _Receiver tells it for a C-MOVE."""
    count: int = 0
    cancelled: bool = False
    error: BaseException | None = None
    reason: str = ""  # why the connection was lost, when known


class DimseClient:
    """RemoteClient over DIMSE for one PACS node (``server.kind == "dimse"``)."""

    def __init__(self, server: Server):
        self.server = server

    def __repr__(self) -> str:
        return f"DimseClient({self.server.address})"

    # -- associations ----------------------------------------------------------------
    def _ae(self) -> AE:
        ae = AE(ae_title=self.server.calling_ae)
        t = float(self.server.timeout)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = t
        ae.connection_timeout = t
        ae.maximum_pdu_size = MAX_PDU
        return ae

    def _associate(self, ae: AE, what: str, ext_neg=None, handlers=None):
        s = self.server
        try:
            assoc = ae.associate(s.host, int(s.port), ae_title=s.called_ae, max_pdu=MAX_PDU,
                                 ext_neg=ext_neg or [], evt_handlers=handlers or [])
        except (OSError, ValueError, RuntimeError) as exc:
            raise RemoteError("unreachable", f"{s.address}: cannot connect ({exc})") from None
        if assoc.is_established:
            return assoc
        if assoc.is_rejected:
            why = ""
            rsp = getattr(assoc.acceptor, "primitive", None)
            try:
                why = f": {rsp.reason_str}"
            except Exception:  # noqa: BLE001
                pass
            raise RemoteError("refused", f"{s.address}: association rejected{why} "
                                         f"(our AE title {s.calling_ae})")
        if assoc.acceptor.primitive is not None and getattr(assoc.acceptor.primitive, "result", None) == 0:
            raise RemoteError("refused", f"{s.address}: accepts none of what we asked for ({what})")
        raise RemoteError("unreachable", f"{s.address}: no DICOM association (no answer, connection refused "
                                         f"or timed out after {s.timeout:g} s)")

    def _require(self, assoc, model: str, what: str) -> None:
        """The server took the association but not the service (e.g. a PACS without C-GET)."""
        if not any(cx.abstract_syntax == model for cx in assoc.accepted_contexts):
            self._close(assoc)
            hint = "; use C-MOVE (retrieve=move)" if what == "C-GET" else ""
            raise RemoteError("refused", f"{self.server.address}: does not accept {what}{hint}")

    @staticmethod
    def _close(assoc) -> None:
        try:
            if assoc.is_established:
                assoc.release()
        except Exception:  # noqa: BLE001 - the peer is gone already
            assoc.abort()

    # -- C-ECHO ----------------------------------------------------------------------
    def echo(self) -> None:
        ae = self._ae()
        ae.add_requested_context(sc.Verification)
        assoc = self._associate(ae, "C-ECHO")
        try:
            status = assoc.send_c_echo()
        finally:
            self._close(assoc)
        if "Status" not in status:
            raise RemoteError("unreachable", f"{self.server.address}: no answer to C-ECHO")
        if status.Status != 0x0000:
            raise RemoteError("protocol", f"{self.server.address}: C-ECHO answered {status_text(status.Status)}")

    # -- C-FIND ----------------------------------------------------------------------
    def _find(self, level: str, keys: dict, limit: int = 0) -> list[Dataset]:
        ae = self._ae()
        model = sc.StudyRootQueryRetrieveInformationModelFind
        ae.add_requested_context(model)
        q = Dataset()
        q.QueryRetrieveLevel = level
        for k, v in keys.items():
            setattr(q, k, v)
        assoc = self._associate(ae, "C-FIND")
        self._require(assoc, model, "C-FIND")
        found: list[Dataset] = []
        final = None
        try:
            for status, ident in assoc.send_c_find(q, model):
                if "Status" not in status:
                    break
                if status.Status in PENDING:
                    if ident is not None:
                        found.append(ident)
                    if limit and len(found) >= limit:
                        assoc.abort()
                        return found
                    continue
                final = status.Status
        finally:
            self._close(assoc)
        if final is None:
            raise RemoteError("unreachable", f"{self.server.address}: connection lost during C-FIND "
                                             f"({len(found)} answers)")
        if final not in (0x0000, 0xFE00):
            raise RemoteError("protocol", f"{self.server.address}: C-FIND failed with "
                                          f"{status_text(final, QR_FIND_SERVICE_CLASS_STATUS)}")
        return found

    def find_studies(self, query: Query) -> list[StudyHit]:
        keys = {"PatientName": query.patient_name, "PatientID": query.patient_id,
                "StudyDate": query.date_range, "ModalitiesInStudy": query.modality,
                "AccessionNumber": query.accession, "StudyInstanceUID": query.study_uid,
                "StudyDescription": "", "StudyTime": "",
                "NumberOfStudyRelatedSeries": "", "NumberOfStudyRelatedInstances": ""}
        hits = []
        for ds in self._find("STUDY", keys, limit=max(0, int(query.limit or 0))):
            uid = _text(ds, "StudyInstanceUID")
            if not uid:
                continue
            modalities = _list(ds, "ModalitiesInStudy")
            if query.modality and modalities and query.modality.upper() not in (m.upper() for m in modalities):
                continue  # a server that ignores ModalitiesInStudy as a key
            hits.append(StudyHit(study_uid=uid, patient_name=_text(ds, "PatientName"),
                                 patient_id=_text(ds, "PatientID"), study_date=_text(ds, "StudyDate"),
                                 description=_text(ds, "StudyDescription"), accession=_text(ds, "AccessionNumber"),
                                 modalities=modalities, n_series=_int(ds, "NumberOfStudyRelatedSeries"),
                                 n_instances=_int(ds, "NumberOfStudyRelatedInstances")))
        hits.sort(key=lambda h: (h.study_date, h.patient_name), reverse=True)
        return hits

    def find_series(self, study_uid: str) -> list[SeriesHit]:
        keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": "", "Modality": "",
                "SeriesDescription": "", "SeriesNumber": "", "NumberOfSeriesRelatedInstances": ""}
        hits = [SeriesHit(study_uid=study_uid, series_uid=_text(ds, "SeriesInstanceUID"),
                          modality=_text(ds, "Modality"), description=_text(ds, "SeriesDescription"),
                          number=_int(ds, "SeriesNumber"), n_instances=_int(ds, "NumberOfSeriesRelatedInstances"))
                for ds in self._find("SERIES", keys)]
        hits = [h for h in hits if h.series_uid]
        hits.sort(key=lambda h: (h.number is None, h.number or 0, h.series_uid))
        return hits

    def instance_uids(self, study_uid: str, series_uid: str) -> list[str]:
        keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid, "SOPInstanceUID": "",
                "InstanceNumber": ""}
        rows = [(_int(ds, "InstanceNumber"), _text(ds, "SOPInstanceUID")) for ds in self._find("IMAGE", keys)]
        rows.sort(key=lambda r: (r[0] is None, r[0] or 0))
        seen, out = set(), []
        for _, uid in rows:
            if uid and uid not in seen:
                seen.add(uid)
                out.append(uid)
        return out

    # -- C-GET / C-MOVE -----------------------------------------------------------------
    @staticmethod
    def _identifier(study_uid: str, series_uid: str, sop_uids: list[str] | None) -> Dataset:
        q = Dataset()
        q.StudyInstanceUID = study_uid
        if sop_uids:
            q.QueryRetrieveLevel = "IMAGE"
            q.SeriesInstanceUID = series_uid
            q.SOPInstanceUID = list(sop_uids) if len(sop_uids) > 1 else sop_uids[0]
        elif series_uid:
            q.QueryRetrieveLevel = "SERIES"
            q.SeriesInstanceUID = series_uid
        else:
            q.QueryRetrieveLevel = "STUDY"
        return q

    def fetch(self, study_uid: str, series_uid: str, sop_uids: list[str] | None, sink: Sink,
              should_stop: StopCheck | None = None) -> int:
        stop = should_stop or (lambda: False)
        if sop_uids is not None and not sop_uids:
            return 0
        if stop():
            raise Cancelled("retrieve cancelled")
        q = self._identifier(study_uid, series_uid, sop_uids)
        if self.server.retrieve == "move":
            receiver = _Receiver(sink, stop)
            try:
                final, lost = self._move(q, receiver, stop)
            finally:
                receiver.finish()
            return self._outcome("C-MOVE", final, lost, receiver, study_uid, series_uid, sop_uids)
        tally = _Tally()
        final, lost = self._get(q, sink, stop, tally)
        return self._outcome("C-GET", final, lost, tally, study_uid, series_uid, sop_uids)

    def _drive(self, responses, receiver: _Receiver, stop: StopCheck,
               assoc) -> tuple[tuple[int, int] | None, bool]:
        """Follow C-MOVE responses to the final one; ((status, failed sub-operations), connection lost)."""
        for status, _ident in responses:
            if "Status" not in status:
                return None, not receiver.halted
            if status.Status in PENDING:
                if receiver.halted or stop():
                    receiver.cancelled = receiver.cancelled or receiver.error is None
                    assoc.abort()
                    return None, False
                continue
            return (int(status.Status), _int(status, "NumberOfFailedSuboperations") or 0), False
        return None, not receiver.halted

    def _get(self, q: Dataset, sink: Sink, stop: StopCheck, tally: "_Tally") -> tuple[tuple[int, int] | None, bool]:
        """C-GET on our own lean association (dimse_get.py): instances reach the sink in this thread."""
        assoc = CGetAssociation(self.server, sc.StudyRootQueryRetrieveInformationModelGet, get_storage_contexts())
        assoc.open(stop)

        def on_instance(data: bytes) -> None:
            sink(data)
            tally.count += 1

        try:
            out = assoc.get(q, on_instance, stop)
        except Cancelled:
            tally.cancelled = True
            return None, False
        except Exception as exc:  # noqa: BLE001 - the sink's error, raised by _outcome in context
            tally.error = exc
            return None, False
        finally:
            assoc.release()
        if out.lost:
            tally.reason = out.reason
            return None, True
        return (int(out.status), out.failed), False

    def _move(self, q: Dataset, receiver: _Receiver, stop: StopCheck):
        s = self.server
        scp = AE(ae_title=s.calling_ae)
        scp.maximum_pdu_size = MAX_PDU
        scp.acse_timeout = scp.dimse_timeout = scp.network_timeout = float(s.timeout)
        for cx in AllStoragePresentationContexts:
            scp.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        try:
            listener = scp.start_server(("", int(s.move_port)), block=False,
                                        evt_handlers=[(evt.EVT_C_STORE, receiver.handle),
                                                      (evt.EVT_ESTABLISHED, lambda e: _poll_fast(e.assoc))])
        except OSError as exc:
            raise RemoteError("unreachable", f"{s.address}: cannot listen on port {s.move_port} for C-MOVE "
                                             f"({exc.strerror or exc}); pick another port or use C-GET") from None
        try:
            ae = self._ae()
            model = sc.StudyRootQueryRetrieveInformationModelMove
            ae.add_requested_context(model)
            assoc = self._associate(ae, "C-MOVE")
            self._require(assoc, model, "C-MOVE")
            try:
                return self._drive(assoc.send_c_move(q, s.calling_ae, model), receiver, stop, assoc)
            finally:
                self._close(assoc)
        finally:
            listener.shutdown()

    def _exists(self, study_uid: str, series_uid: str, sop_uids: list[str] | None) -> bool | None:
        """Whether the server knows what we asked for (None when it cannot tell us)."""
        try:
            if sop_uids:
                have = set(self.instance_uids(study_uid, series_uid))
                return any(u in have for u in sop_uids)
            if series_uid:
                return any(h.series_uid == series_uid for h in self.find_series(study_uid))
            return bool(self._find("STUDY", {"StudyInstanceUID": study_uid}))
        except RemoteError:
            return None

    def _outcome(self, op: str, final: tuple[int, int] | None, lost: bool, receiver: "_Receiver | _Tally",
                 study_uid: str, series_uid: str, sop_uids: list[str] | None) -> int:
        addr, n = self.server.address, receiver.count
        if receiver.error is not None:
            if isinstance(receiver.error, ValueError):
                raise RemoteError("protocol", f"{addr}: an instance it sent could not be kept "
                                              f"({receiver.error})") from receiver.error
            raise receiver.error
        if receiver.cancelled:
            raise Cancelled(f"retrieve from {addr} cancelled after {n} instances")
        if lost or final is None:
            reason = getattr(receiver, "reason", "")
            raise RemoteError("unreachable", f"{addr}: connection lost during {op} after {n} instances"
                                             + (f" ({reason})" if reason else ""))
        code, failed = final
        what = f"series {series_uid}" if series_uid else f"study {study_uid}"
        if code == 0xFE00 and n == 0:  # we never send C-CANCEL: the server gave up on its own
            raise RemoteError("protocol", f"{addr}: the server cancelled the {op} of {what}")
        if n == 0:  # nothing came: a wrong UID, or a server that would not send
            exists = self._exists(study_uid, series_uid, sop_uids)
            if exists is False:
                where = f"{what} of study {study_uid}" if series_uid else what
                raise RemoteError("not_found", f"{addr}: no {where} there")
            if code in (0x0000, 0xB000) and not failed:
                return 0
            table = QR_MOVE_SERVICE_CLASS_STATUS if op == "C-MOVE" else QR_GET_SERVICE_CLASS_STATUS
            hint = ""
            if op == "C-MOVE":
                hint = (f"; does {self.server.called_ae} know our AE title {self.server.calling_ae} "
                        f"with this computer's address and port {self.server.move_port or '(any)'}?")
            raise RemoteError("protocol", f"{addr}: {op} of {what} sent nothing: "
                                          f"{status_text(code, table)}, {failed} failed{hint}")
        return n

    # -- C-STORE ---------------------------------------------------------------------
    def store(self, files: list, progress: Progress | None = None,
              should_stop: StopCheck | None = None) -> StoreReport:
        stop = should_stop or (lambda: False)
        report = StoreReport()
        items = []  # (path, sop class, sop instance, transfer syntax)
        for f in files:
            path = Path(f)
            try:
                meta = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
                cls = str(meta.MediaStorageSOPClassUID)
                sop = str(meta.MediaStorageSOPInstanceUID)
                ts = str(meta.TransferSyntaxUID)
            except Exception as exc:  # noqa: BLE001 - not a Part-10 file, say so per file
                report.failed[str(path)] = f"not a DICOM Part-10 file ({type(exc).__name__})"
                continue
            items.append((path, cls, sop, ts))
        total = len(files)
        done = len(files) - len(items)
        # one association per 128 distinct (class, syntax) pairs
        batches: list[list] = []
        pairs: set = set()
        for item in items:
            pair = (item[1], item[3])
            if not batches or (pair not in pairs and len(pairs) >= 128):
                batches.append([])
                pairs = set()
            pairs.add(pair)
            batches[-1].append(item)
        for batch in batches:
            if stop():
                raise Cancelled(f"sending to {self.server.address} cancelled after {len(report.stored)} objects")
            ae = self._ae()
            for cls, ts in dict.fromkeys((i[1], i[3]) for i in batch):
                extra = [t for t in UNCOMPRESSED if t != ts] if ts in UNCOMPRESSED else []
                ae.add_requested_context(cls, [ts] + extra)
            assoc = self._associate(ae, "C-STORE")
            try:
                for k, (path, cls, sop, ts) in enumerate(batch):
                    if stop():
                        raise Cancelled(f"sending to {self.server.address} cancelled after "
                                        f"{len(report.stored)} objects")
                    self._store_one(assoc, path, cls, sop, ts, k, report)
                    done += 1
                    if progress:
                        progress(done, total, f"sent {done} of {total}")
            finally:
                self._close(assoc)
        return report

    def _store_one(self, assoc, path: Path, cls: str, sop: str, ts: str, k: int, report: StoreReport) -> None:
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:  # noqa: BLE001
            report.failed[sop] = f"{path.name}: unreadable ({type(exc).__name__})"
            return
        try:
            status = assoc.send_c_store(ds, msg_id=k % 65535 + 1)
        except ValueError:
            report.failed[sop] = (f"the server does not accept {UID(cls).name} in {UID(ts).name}")
            return
        if "Status" not in status:
            raise RemoteError("unreachable", f"{self.server.address}: connection lost while storing "
                                             f"({len(report.stored)} stored)")
        code = int(status.Status)
        if code == 0x0000 or code in WARNING_STORE:
            report.stored.append(sop)
        else:
            comment = _text(status, "ErrorComment")
            report.failed[sop] = status_text(code, STORAGE_SERVICE_CLASS_STATUS) + (f": {comment}" if comment else "")
