"""Our own C-GET wire code (viewer/remote/dimse_get.py) against a second implementation and hostile
peers: command sets and file meta checked by pydicom, PDUs split to the peer's limit, pynetdicom as
the C-GET SCP (small PDUs, a request too long for one PDU, warnings and failures, a server that
stalls or aborts), and servers that are not DICOM at all. Orthanc is covered by test_remote_dimse.py.
"""
from __future__ import annotations

import io
import socket
import struct
import threading
import time

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

from orthanc_server import free_port

from viewer.core.errors import Cancelled
from viewer.remote import RemoteError, Server
from viewer.remote.dimse import DimseClient
from viewer.remote.dimse_get import (AFFECTED_INSTANCE, COMMAND_FIELD, STATUS, decode_command,
                                     encode_command, file_meta, p_data_pdus)

FILES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm")


def test_command_set_round_trips_through_pydicom():
    raw = encode_command([(0x1000, "1.2.3.4.5"), (COMMAND_FIELD, 0x8001), (0x0120, 7), (0x0800, 0x0101),
                          (STATUS, 0xB000), (0x0002, "1.2.840.10008.5.1.4.1.1.2")])
    ds = decode(io.BytesIO(raw), True, True)
    assert ds.CommandGroupLength == len(raw) - 12
    assert ds.CommandField == 0x8001 and ds.MessageIDBeingRespondedTo == 7 and ds.Status == 0xB000
    assert ds.AffectedSOPInstanceUID == "1.2.3.4.5" and ds.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert len(raw) % 2 == 0
    # and pydicom's encoding of a command reads back with our parser
    cmd = Dataset()
    cmd.CommandField, cmd.Status, cmd.ErrorComment = 0x8010, 0xA702, "out of space "
    cmd.AffectedSOPInstanceUID, cmd.NumberOfFailedSuboperations = "1.2.3", 4
    parsed = decode_command(encode(cmd, True, True))
    assert parsed[COMMAND_FIELD] == 0x8010 and parsed[STATUS] == 0xA702 and parsed[0x1022] == 4
    assert parsed[0x0902] == "out of space" and parsed[AFFECTED_INSTANCE] == "1.2.3"


def test_file_meta_makes_a_part10_file_pydicom_reads():
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    body = encode(src, False, True)
    data = file_meta(src.SOPClassUID, src.SOPInstanceUID, "1.2.840.10008.1.2.1", "ORTHANC") + body
    back = pydicom.dcmread(io.BytesIO(data))
    meta = back.file_meta
    assert meta.MediaStorageSOPInstanceUID == src.SOPInstanceUID and meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert meta.SourceApplicationEntityTitle == "ORTHANC" and meta.FileMetaInformationVersion == b"\x00\x01"
    assert meta.FileMetaInformationGroupLength == len(data) - 132 - 12 - len(body)
    assert back.PixelData == src.PixelData


@pytest.mark.parametrize("max_pdu", [0, 64, 4096])
def test_p_data_pdus_respect_the_peer_limit(max_pdu):
    payload = bytes(range(256)) * 40
    pdus = p_data_pdus(5, payload, False, max_pdu)
    joined, flags = b"", []
    for pdu in pdus:
        assert pdu[0] == 4 and struct.unpack(">I", pdu[2:6])[0] == len(pdu) - 6
        assert not max_pdu or len(pdu) - 6 <= max_pdu
        assert pdu[10] == 5
        flags.append(pdu[11])
        joined += pdu[12:]
    assert joined == payload and flags[-1] == 2 and all(f == 0 for f in flags[:-1])
    assert len(pdus) == (1 if not max_pdu else -(-len(payload) // (max_pdu - 12)))


class _Scp:
    """pynetdicom as a C-GET SCP serving pydicom's test files; ``behaviour`` changes what it does."""

    def __init__(self, max_pdu=16382, behaviour="normal"):
        self.datasets = [pydicom.dcmread(get_testdata_file(n)) for n in FILES]
        self.behaviour = behaviour
        self.identifiers: list[Dataset] = []
        ae = AE(ae_title="PYNETDICOM")
        ae.maximum_pdu_size = max_pdu
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        for cx in StoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        self.port = free_port()
        from pynetdicom import evt
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_GET, self._handle)])

    def _handle(self, event):
        self.identifiers.append(event.identifier)
        if self.behaviour == "stall":
            time.sleep(3)
        if self.behaviour == "fail":
            yield 1
            yield 0xA702, None  # out of resources, nothing sent
            return
        yield len(self.datasets)
        for k, ds in enumerate(self.datasets):
            if self.behaviour == "abort" and k == 2:
                event.assoc.abort()
                return
            yield 0xFF00, ds
        if self.behaviour == "warn":
            yield 0xB000, None

    def client(self, **kw) -> DimseClient:
        return DimseClient(Server(name="scp", kind="dimse", host="127.0.0.1", port=self.port,
                                  called_ae="PYNETDICOM", timeout=kw.pop("timeout", 10), **kw))

    def close(self):
        self.server.shutdown()


@pytest.fixture
def scp_factory():
    made = []

    def make(**kw):
        made.append(_Scp(**kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.mark.parametrize("max_pdu", [16382, 1024])
def test_get_from_pynetdicom_keeps_every_byte_and_syntax(scp_factory, max_pdu):
    scp = scp_factory(max_pdu=max_pdu)
    got = []
    sops = [f"1.2.826.0.1.3680043.8.498.{10**20 + k}" for k in range(120)]  # an identifier of ~4 kB
    n = scp.client().fetch("1.2.3", "1.2.3.4", sops, got.append)
    assert n == len(FILES) == len(got)
    assert list(scp.identifiers[0].SOPInstanceUID) == sops and scp.identifiers[0].QueryRetrieveLevel == "IMAGE"
    for data, src in zip(got, scp.datasets):
        back = pydicom.dcmread(io.BytesIO(data))
        assert back.SOPInstanceUID == src.SOPInstanceUID
        if src.file_meta.TransferSyntaxUID.is_compressed:  # sent as held, not transcoded
            assert back.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
        else:  # the server picks one of the uncompressed pair we offer in one context
            assert back.file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
        assert back.file_meta.SourceApplicationEntityTitle == "PYNETDICOM"
        assert back.PixelData == src.PixelData


def test_warning_status_keeps_what_arrived(scp_factory):
    got = []
    assert scp_factory(behaviour="warn").client().fetch("1.2.3", "1.2.3.4", None, got.append) == len(FILES)


def test_failure_with_nothing_sent_names_the_status(scp_factory):
    with pytest.raises(RemoteError) as e:
        scp_factory(behaviour="fail").client().fetch("1.2.3", "1.2.3.4", None, lambda b: None)
    assert e.value.kind == "protocol" and "0xA702" in str(e.value) and "series 1.2.3.4" in str(e.value)


def test_server_abort_mid_transfer_is_connection_lost(scp_factory):
    got = []
    with pytest.raises(RemoteError) as e:
        scp_factory(behaviour="abort").client().fetch("1.2.3", "1.2.3.4", None, got.append)
    assert e.value.kind == "unreachable" and "after 2 instances" in str(e.value) and len(got) == 2


def test_cancel_while_the_server_is_silent(scp_factory):
    scp = scp_factory(behaviour="stall")
    started = time.monotonic()
    with pytest.raises(Cancelled):
        scp.client().fetch("1.2.3", "1.2.3.4", None, lambda b: None,
                           should_stop=lambda: time.monotonic() - started > 0.5)
    assert time.monotonic() - started < 1.5


def test_silent_server_times_out(scp_factory):
    scp = scp_factory(behaviour="stall")
    started = time.monotonic()
    with pytest.raises(RemoteError) as e:
        scp.client(timeout=1).fetch("1.2.3", "1.2.3.4", None, lambda b: None)
    assert e.value.kind == "unreachable" and "no data for 1 s" in str(e.value)
    assert time.monotonic() - started < 2.9


def test_a_failing_sink_aborts_and_propagates(scp_factory):
    calls = []

    def sink(data):
        calls.append(data)
        raise ValueError("disk full")

    with pytest.raises(RemoteError) as e:
        scp_factory().client().fetch("1.2.3", "1.2.3.4", None, sink)
    assert e.value.kind == "protocol" and "disk full" in str(e.value) and len(calls) == 1


def _fake_server(answer: bytes):
    """A TCP server that reads one request and answers ``answer``, whatever was asked."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)

    def serve():
        conn, _ = sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(answer)
            time.sleep(0.5)
        sock.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1]


@pytest.mark.parametrize("answer, kind, words", [
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "protocol", "not a DICOM server"),
    (b"\x02\x00\xff\xff\xff\xff", "unreachable", "no DICOM association"),  # a 4 GB 'accept'
    (b"\x02\x00\x00\x00\x00\x08garbage!", "refused", "accepts none of what we asked for"),
    (b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00", "unreachable", "A-ABORT"),
])
def test_hostile_or_foreign_servers(answer, kind, words):
    port = _fake_server(answer)
    client = DimseClient(Server(name="x", kind="dimse", host="127.0.0.1", port=port, called_ae="ANY", timeout=3))
    with pytest.raises(RemoteError) as e:
        client.fetch("1.2.3", "1.2.3.4", None, lambda b: None)
    assert e.value.kind == kind and words in str(e.value) and f"127.0.0.1:{port}" in str(e.value)
