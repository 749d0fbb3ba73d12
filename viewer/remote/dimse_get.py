"""C-GET on a socket of our own: the one DIMSE exchange whose speed a user waits on.

pynetdicom (used for everything else in dimse.py) runs each PDU through its state machine, event
queue and two threads, and decodes and re-encodes every command set with pydicom: about 4 ms of
CPU per instance, 3-4x the time of DCMTK's getscu on a 300-slice CT. Here one thread reads PDUs
straight off the socket, parses the few command elements a C-GET needs by hand, answers each
C-STORE with a C-STORE-RSP built as bytes, and hands each instance on as the bytes that arrived
behind a file meta header (never decoded or re-encoded).

Only the association request/accept PDUs go through pynetdicom's PDU classes (they run once per
retrieve). The wire format is DICOM PS3.8 (upper layer PDUs) and PS3.7 (DIMSE command sets, always
implicit VR little endian).
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Callable

from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (A_ASSOCIATE, ImplementationClassUIDNotification,
                                       ImplementationVersionNameNotification, MaximumLengthNotification,
                                       SCP_SCU_RoleSelectionNegotiation)
from pynetdicom.presentation import build_context

from viewer.core.errors import Cancelled

from .base import RemoteError, Server, StopCheck

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
TICK_S = 0.2  # how often a blocked read looks at Cancel
MAX_PDU_RECEIVED = 4 << 20  # what we tell the server we take (Orthanc sends 128 kB); anything longer is refused
ASSOCIATION_PDU_LIMIT = 1 << 20  # an A-ASSOCIATE-AC/RJ longer than this is not from a DICOM server
PENDING = (0xFF00, 0xFF01)
# Acknowledge every segment at once (Linux; re-armed before each read because the kernel drops it).
# A PACS left with Nagle's algorithm on (Orthanc's default) holds the tail of each instance until
# our delayed ACK comes, ~40 ms an instance: with it a 300-slice C-GET takes 0.4 s instead of 3-6 s.
QUICKACK = getattr(socket, "TCP_QUICKACK", 0)

# PDU types (PS3.8 9.3)
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA, RELEASE_RQ, RELEASE_RP, ABORT = 1, 2, 3, 4, 5, 6, 7
# DIMSE command fields (PS3.7 E.1)
C_STORE_RQ, C_STORE_RSP, C_GET_RQ, C_GET_RSP = 0x0001, 0x8001, 0x0010, 0x8010
NO_DATASET = 0x0101
# command elements (group 0000) we read or write
AFFECTED_CLASS, COMMAND_FIELD, MESSAGE_ID, RESPONDED_TO = 0x0002, 0x0100, 0x0110, 0x0120
PRIORITY, DATASET_TYPE, STATUS, ERROR_COMMENT, AFFECTED_INSTANCE = 0x0700, 0x0800, 0x0900, 0x0902, 0x1000
N_FAILED = 0x1022
_US = {COMMAND_FIELD, MESSAGE_ID, RESPONDED_TO, PRIORITY, DATASET_TYPE, STATUS,
       0x1020, 0x1021, 0x1022, 0x1023}

_ABORT_PDU = bytes([ABORT, 0]) + struct.pack(">I", 4) + b"\x00\x00\x00\x00"
_RELEASE_RQ_PDU = bytes([RELEASE_RQ, 0]) + struct.pack(">I", 4) + b"\x00\x00\x00\x00"
_RELEASE_RP_PDU = bytes([RELEASE_RP, 0]) + struct.pack(">I", 4) + b"\x00\x00\x00\x00"


class ConnectionLost(Exception):
    """The server closed or aborted the association before the final C-GET response."""


def _even(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def encode_command(elements: list[tuple[int, object]]) -> bytes:
    """A DIMSE command set (implicit VR little endian, group 0000) with its group length first."""
    body = bytearray()
    for element, value in sorted(elements):
        if isinstance(value, int):
            raw = struct.pack("<H", value) if element in _US else struct.pack("<I", value)
        else:
            raw = _even(str(value).encode("ascii"), b"\x00" if element in (AFFECTED_CLASS, AFFECTED_INSTANCE)
                        else b" ")
        body += struct.pack("<HHI", 0x0000, element, len(raw)) + raw
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + bytes(body)


def decode_command(data: bytes) -> dict[int, object]:
    """Element number -> value for a command set: US/UL as int, everything else as text."""
    out: dict[int, object] = {}
    pos, end = 0, len(data)
    while pos + 8 <= end:
        group, element, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        raw = data[pos:pos + length]
        pos += length
        if group != 0x0000:
            break
        if element in _US and length == 2:
            out[element] = struct.unpack("<H", raw)[0]
        elif element == 0x0000 and length == 4:
            out[element] = struct.unpack("<I", raw)[0]
        else:
            out[element] = bytes(raw).rstrip(b"\x00 ").decode("ascii", "replace")
    return out


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str) -> bytes:
    """Preamble, 'DICM' and the group 0002 file meta of a Part-10 file (explicit VR little endian)."""
    def short(element: int, vr: bytes, value: bytes) -> bytes:
        return struct.pack("<HH", 0x0002, element) + vr + struct.pack("<H", len(value)) + value

    def uid(element: int, value: str) -> bytes:
        return short(element, b"UI", _even(value.encode("ascii"), b"\x00"))

    body = (struct.pack("<HH", 0x0002, 0x0001) + b"OB\x00\x00" + struct.pack("<I", 2) + b"\x00\x01"
            + uid(0x0002, sop_class) + uid(0x0003, sop_instance) + uid(0x0010, transfer_syntax)
            + uid(0x0012, str(PYNETDICOM_IMPLEMENTATION_UID))
            + short(0x0013, b"SH", _even(PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" ")))
    if source_ae.strip():
        body += short(0x0016, b"AE", _even(source_ae.strip()[:16].encode("ascii", "replace"), b" "))
    group_length = struct.pack("<HH", 0x0002, 0x0000) + b"UL" + struct.pack("<HI", 4, len(body))
    return b"\x00" * 128 + b"DICM" + group_length + body


def p_data_pdus(context_id: int, payload: bytes, command: bool, max_pdu: int) -> list[bytes]:
    """``payload`` as P-DATA-TF PDUs of one PDV each, no longer than the peer accepts (0: no limit)."""
    room = (max_pdu - 12) if max_pdu and max_pdu > 12 else max(len(payload), 1)
    pieces = [payload[i:i + room] for i in range(0, len(payload), room)] or [b""]
    out = []
    for k, piece in enumerate(pieces):
        header = (1 if command else 0) | (2 if k == len(pieces) - 1 else 0)
        pdv = struct.pack(">I", len(piece) + 2) + bytes([context_id, header]) + piece
        out.append(bytes([P_DATA, 0]) + struct.pack(">I", len(pdv)) + pdv)
    return out


@dataclass
class Outcome:
    """What a C-GET ended with: the final response's status, or lost=True."""
    status: int | None = None
    failed: int = 0
    lost: bool = False
    reason: str = ""  # why it was lost, when we know


class _Link:
    """A TCP connection read in whole PDUs; a blocked read checks Cancel every TICK_S."""

    def __init__(self, sock: socket.socket, should_stop: StopCheck, idle_limit: float):
        self.sock = sock
        self.should_stop = should_stop
        self.idle_limit = idle_limit
        self.pdu_limit = ASSOCIATION_PDU_LIMIT
        sock.settimeout(TICK_S)

    def read_exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got, idle = 0, 0.0
        while got < n:
            try:
                if QUICKACK:
                    self.sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
                k = self.sock.recv_into(view[got:], n - got)
            except socket.timeout:
                idle += TICK_S
                if self.should_stop():
                    raise Cancelled("retrieve cancelled") from None
                if idle >= self.idle_limit:
                    raise ConnectionLost(f"no data for {self.idle_limit:g} s") from None
                continue
            except OSError as exc:
                raise ConnectionLost(str(exc)) from None
            if k == 0:
                raise ConnectionLost("the server closed the connection")
            got += k
            idle = 0.0
        return buf

    def read_pdu(self) -> tuple[int, bytearray]:
        """(PDU type, body); a length beyond what we accept is refused before anything is allocated."""
        header = self.read_exact(6)
        kind, length = header[0], struct.unpack_from(">I", header, 2)[0]
        if not ASSOCIATE_RQ <= kind <= ABORT:
            raise ConnectionLost(f"not a DICOM server: it sent {bytes(header)!r} where a PDU should begin")
        if length > self.pdu_limit:
            raise ConnectionLost(f"the server sent a PDU of {length} bytes; we accept at most {self.pdu_limit}")
        return kind, self.read_exact(length)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except socket.timeout:
            # sendall with a timeout may have sent part; the association is unusable either way
            raise ConnectionLost("the server stopped reading") from None
        except OSError as exc:
            raise ConnectionLost(str(exc)) from None


class CGetAssociation:
    """One association that runs C-GETs with us as the storage SCP of the instances they bring."""

    def __init__(self, server: Server, model: str, storage: list[tuple[str, list[str]]]):
        self.server = server
        self.model = model
        self.storage = storage
        self.link: _Link | None = None
        self.contexts: dict[int, tuple[str, str]] = {}  # accepted id -> (abstract syntax, transfer syntax)
        self.peer_max_pdu = 0
        self.message_id = 0

    # -- association -----------------------------------------------------------------
    def _request_pdu(self) -> bytes:
        s = self.server
        prim = A_ASSOCIATE()
        prim.application_context_name = APPLICATION_CONTEXT
        prim.calling_ae_title = s.calling_ae
        prim.called_ae_title = s.called_ae
        wanted = [(self.model, [ImplicitVRLittleEndian])] + list(self.storage)
        if len(wanted) > 128:
            raise ValueError(f"{len(wanted)} presentation contexts: an association holds 128")
        contexts = []
        for k, (abstract, syntaxes) in enumerate(wanted):
            cx = build_context(abstract, syntaxes)
            cx.context_id = 2 * k + 1
            contexts.append(cx)
        prim.presentation_context_definition_list = contexts
        max_length = MaximumLengthNotification()
        max_length.maximum_length_received = MAX_PDU_RECEIVED  # large: fewer PDUs, each costs a few us
        impl = ImplementationClassUIDNotification()
        impl.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
        roles = []
        for cls in dict.fromkeys(cls for cls, _ in self.storage):
            role = SCP_SCU_RoleSelectionNegotiation()
            role.sop_class_uid = cls
            role.scu_role, role.scp_role = False, True
            roles.append(role)
        prim.user_information = [max_length, impl, version, *roles]
        pdu = A_ASSOCIATE_RQ()
        pdu.from_primitive(prim)
        return pdu.encode()

    def open(self, should_stop: StopCheck) -> None:
        s = self.server
        try:
            sock = socket.create_connection((s.host, int(s.port)), timeout=float(s.timeout))
        except OSError as exc:
            raise RemoteError("unreachable", f"{s.address}: cannot connect ({exc})") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.link = _Link(sock, should_stop, float(s.timeout))
        try:
            self.link.send(self._request_pdu())
            kind, body = self.link.read_pdu()
        except ConnectionLost as exc:
            self.close_socket()
            if str(exc).startswith("not a DICOM server"):
                raise RemoteError("protocol", f"{s.address}: {exc}") from None
            raise RemoteError("unreachable", f"{s.address}: no DICOM association (no answer, connection "
                                             f"refused or timed out after {s.timeout:g} s)") from None
        except BaseException:
            self.close_socket()
            raise
        raw = bytes([kind, 0]) + struct.pack(">I", len(body)) + bytes(body)
        if kind == ASSOCIATE_RJ:
            self.close_socket()
            why = ""
            try:
                rj = A_ASSOCIATE_RJ()
                rj.decode(raw)
                why = f": {rj.to_primitive().reason_str}"
            except Exception:  # noqa: BLE001 - a reject we cannot read is still a reject
                pass
            raise RemoteError("refused", f"{s.address}: association rejected{why} (our AE title {s.calling_ae})")
        if kind != ASSOCIATE_AC:
            self.close_socket()
            raise RemoteError("unreachable" if kind == ABORT else "protocol",
                              f"{s.address}: the server answered the association request with "
                              f"{'an A-ABORT' if kind == ABORT else f'PDU type {kind}'}")
        try:
            ac = A_ASSOCIATE_AC()
            ac.decode(raw)
            accepted = ac.to_primitive()
        except Exception as exc:  # noqa: BLE001 - whatever a malformed accept makes pynetdicom raise
            self.close_socket()
            raise RemoteError("protocol", f"{s.address}: unreadable association accept "
                                          f"({type(exc).__name__})") from None
        self.link.pdu_limit = MAX_PDU_RECEIVED
        for item in accepted.user_information:
            if isinstance(item, MaximumLengthNotification):
                self.peer_max_pdu = int(item.maximum_length_received or 0)
        offered = {2 * k + 1: abstract for k, (abstract, _) in
                   enumerate([(self.model, None)] + list(self.storage))}
        for cx in accepted.presentation_context_definition_results_list:
            if cx.result == 0 and cx.context_id in offered and cx.transfer_syntax:
                self.contexts[cx.context_id] = (offered[cx.context_id], str(cx.transfer_syntax[0]))
        if not self.contexts:
            self.abort()
            raise RemoteError("refused", f"{s.address}: accepts none of what we asked for (C-GET)")
        if 1 not in self.contexts:
            self.abort()
            raise RemoteError("refused", f"{s.address}: does not accept C-GET; use C-MOVE (retrieve=move)")

    def close_socket(self) -> None:
        if self.link is not None:
            try:
                self.link.sock.close()
            except OSError:
                pass

    def abort(self) -> None:
        if self.link is not None:
            try:
                self.link.sock.sendall(_ABORT_PDU)
            except OSError:
                pass
            self.close_socket()
            self.link = None

    def release(self) -> None:
        """A-RELEASE, waiting briefly for the answer; the socket is closed whatever happens."""
        link = self.link
        if link is None:
            return
        try:
            link.send(_RELEASE_RQ_PDU)
            link.idle_limit = min(link.idle_limit, 5.0)
            for _ in range(64):
                kind, _body = link.read_pdu()
                if kind in (RELEASE_RP, ABORT):
                    break
                if kind == RELEASE_RQ:
                    link.send(_RELEASE_RP_PDU)
                    break
        except (ConnectionLost, Cancelled):
            pass
        self.close_socket()
        self.link = None

    # -- C-GET -----------------------------------------------------------------------
    def _send_message(self, context_id: int, command: bytes, dataset: bytes | None) -> None:
        pdus = p_data_pdus(context_id, command, True, self.peer_max_pdu)
        if dataset is not None:
            pdus += p_data_pdus(context_id, dataset, False, self.peer_max_pdu)
        self.link.send(b"".join(pdus))

    def _store_response(self, context_id: int, cmd: dict, status: int) -> None:
        self._send_message(context_id, encode_command([
            (AFFECTED_CLASS, cmd.get(AFFECTED_CLASS, "")), (COMMAND_FIELD, C_STORE_RSP),
            (RESPONDED_TO, cmd.get(MESSAGE_ID, 0)), (DATASET_TYPE, NO_DATASET), (STATUS, status),
            (AFFECTED_INSTANCE, cmd.get(AFFECTED_INSTANCE, ""))]), None)

    def get(self, identifier: Dataset, on_instance: Callable[[bytes], None], should_stop: StopCheck) -> Outcome:
        """Send one C-GET-RQ and serve its C-STOREs until the final C-GET-RSP.

        Each instance is answered Success as soon as its last byte is here (the server starts on the
        next while ``on_instance`` keeps this one), then handed on. Cancel, or an exception from
        ``on_instance``, aborts the association and propagates.
        """
        outcome = Outcome()
        self.message_id = self.message_id % 65535 + 1
        self._send_message(1, encode_command([
            (AFFECTED_CLASS, self.model), (COMMAND_FIELD, C_GET_RQ), (MESSAGE_ID, self.message_id),
            (PRIORITY, 0), (DATASET_TYPE, 0x0001)]), encode(identifier, True, True))
        command_parts: list = []
        data_parts: list = []
        cmd: dict | None = None
        link = self.link
        try:
            while True:
                kind, body = link.read_pdu()
                if kind != P_DATA:
                    if kind == RELEASE_RQ:
                        link.send(_RELEASE_RP_PDU)
                    outcome.lost = True
                    return outcome
                view = memoryview(body)
                pos, end = 0, len(body)
                while pos + 6 <= end:
                    length = struct.unpack_from(">I", body, pos)[0]
                    context_id, header = body[pos + 4], body[pos + 5]
                    fragment = view[pos + 6:pos + 4 + length]
                    pos += 4 + length
                    if header & 1:
                        command_parts.append(fragment)
                        if not header & 2:
                            continue
                        cmd = decode_command(b"".join(command_parts))
                        command_parts = []
                        if cmd.get(DATASET_TYPE, NO_DATASET) != NO_DATASET:
                            continue  # its data set follows
                    else:
                        data_parts.append(fragment)
                        if not header & 2:
                            continue
                    if cmd is None:
                        raise ConnectionLost("a data set arrived without its command")
                    done = self._dispatch(cmd, context_id, data_parts, on_instance, should_stop, outcome)
                    cmd, data_parts = None, []
                    if done:
                        return outcome
        except ConnectionLost as exc:
            outcome.lost, outcome.reason = True, str(exc)
            self.close_socket()
            self.link = None
            return outcome
        except BaseException:
            self.abort()
            raise

    def _dispatch(self, cmd: dict, context_id: int, data_parts: list, on_instance, should_stop,
                  outcome: Outcome) -> bool:
        field_ = cmd.get(COMMAND_FIELD)
        if field_ == C_STORE_RQ:
            if should_stop():
                raise Cancelled("retrieve cancelled")
            abstract, syntax = self.contexts.get(context_id, ("", ""))
            if not syntax:
                self._store_response(context_id, cmd, 0x0122)  # SOP class not supported
                return False
            self._store_response(context_id, cmd, 0x0000)
            meta = file_meta(str(cmd.get(AFFECTED_CLASS) or abstract), str(cmd.get(AFFECTED_INSTANCE, "")),
                             syntax, self.server.called_ae)
            on_instance(b"".join([meta, *data_parts]))
            return False
        if field_ == C_GET_RSP:
            status = int(cmd.get(STATUS, 0xC000))
            if status in PENDING:
                return False
            outcome.status = status
            outcome.failed = int(cmd.get(N_FAILED, 0) or 0)
            return True
        raise ConnectionLost(f"unexpected DIMSE command 0x{int(field_ or 0):04X} during C-GET")

