"""DIMSE against a real Orthanc: C-ECHO, C-FIND (names, modality, dates, counts), C-GET of a series
and of chosen instances (same UIDs, same pixels, same transfer syntax, compressed too), C-MOVE to our
own storage SCP, C-STORE then C-FIND, and every failure: killed server, rejected association, closed
port, unknown study, Cancel."""
from __future__ import annotations

import io
import logging
import time

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from orthanc_server import free_port

from viewer.core import synthetic
from viewer.core.errors import Cancelled
from viewer.remote import Query, RemoteError, Server, connect, parse_address
from viewer.remote.cache import RetrieveCache
from viewer.remote.dimse import DimseClient, get_storage_contexts

TESTFILES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm")


def _require_orthanc():
    import orthanc_server
    orthanc_server.require()
    return orthanc_server


def _load(orthanc, folder):
    """Upload a 20-slice synthetic CT and pydicom's test files; {sop uid: original path}."""
    ct = synthetic.write_ct_study(folder, shape=(20, 64, 64))
    paths = list(ct.files) + [get_testdata_file(n) for n in TESTFILES]
    orthanc.upload(paths)
    return ct, {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in paths}


class Loaded:
    def __init__(self, orthanc, ct, originals, move_port):
        self.orthanc, self.ct, self.originals, self.move_port = orthanc, ct, originals, move_port
        self.study = str(ct.volume.info.study_uid)
        self.series = str(ct.volume.info.series_uid)

    def server(self, **kw) -> Server:
        s = parse_address(self.orthanc.dimse_url, name="test")
        s.timeout = 10
        for k, v in kw.items():
            setattr(s, k, v)
        return s

    def client(self, **kw) -> DimseClient:
        return DimseClient(self.server(**kw))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """One Orthanc for the read-only tests, knowing our SCP ("LIGHTBOX") for C-MOVE."""
    mod = _require_orthanc()
    root = tmp_path_factory.mktemp("dimse")
    port = free_port()
    server = mod.OrthancServer(root / "orthanc", modalities={"lightbox": ("LIGHTBOX", "127.0.0.1", port)}).start()
    try:
        ct, originals = _load(server, root / "ct")
        yield Loaded(server, ct, originals, port)
    finally:
        server.stop()


def _collect():
    got = []
    return got, got.append


def _ds(data: bytes):
    return pydicom.dcmread(io.BytesIO(data))


def test_get_contexts_fit_one_association():
    pairs = [(cls, tuple(ts)) for cls, ts in get_storage_contexts()]
    assert len(pairs) == len(set(pairs))
    assert len(pairs) + 1 <= 128  # + the C-GET model
    assert ("1.2.840.10008.5.1.4.1.1.66.4", ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")) in pairs  # SEG
    assert ("1.2.840.10008.5.1.4.1.1.2", ("1.2.840.10008.1.2.4.90",)) in pairs  # CT in JPEG 2000 lossless


def test_connect_gives_dimse_client(loaded):
    client = connect(loaded.server())
    assert isinstance(client, DimseClient)
    client.echo()


def test_find_studies_by_name_modality_and_date(loaded, caplog):
    caplog.set_level(logging.DEBUG)
    client = loaded.client()
    every = client.find_studies(Query())
    assert len(every) == 4  # CT phantom, CT_small, MR_small, JPEG2000 (an NM patient)
    hits = client.find_studies(Query(patient_name="PHANTOM*"))
    assert [h.study_uid for h in hits] == [loaded.study]
    hit = hits[0]
    assert hit.patient_name == "PHANTOM^CT" and hit.patient_id == "LBX-CT-001"
    assert hit.modalities == ["CT"] and hit.n_series == 1 and hit.n_instances == 20
    assert hit.study_date == str(loaded.ct.volume.info.study_date)
    mr = client.find_studies(Query(modality="MR"))
    assert len(mr) == 1 and mr[0].patient_name == "CompressedSamples^MR1" and mr[0].n_instances == 1
    assert client.find_studies(Query(date_from="20040101", date_to="20040131"))[0].patient_name == \
        "CompressedSamples^CT1"
    assert {h.study_date for h in client.find_studies(Query(date_from="20040201"))} == \
        {"20040826", str(loaded.ct.volume.info.study_date)}
    assert client.find_studies(Query(patient_name="NOBODY*")) == []
    assert len(client.find_studies(Query(limit=2))) == 2
    assert "PHANTOM" not in caplog.text and "CompressedSamples" not in caplog.text  # no PHI in logs


def test_find_series_and_instances(loaded):
    client = loaded.client()
    series = client.find_series(loaded.study)
    assert [(s.series_uid, s.modality, s.n_instances, s.number) for s in series] == [(loaded.series, "CT", 20, 1)]
    uids = client.instance_uids(loaded.study, loaded.series)
    expected = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in loaded.ct.files]
    assert sorted(uids) == sorted(expected) and len(uids) == 20
    assert client.find_series("1.2.3.4.5") == []


def _check_same(got: list[bytes], originals: dict):
    for data in got:
        ds = _ds(data)
        original = pydicom.dcmread(originals[str(ds.SOPInstanceUID)])
        assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert ds.PixelData == original.PixelData
        if not ds.file_meta.TransferSyntaxUID.is_compressed:
            np.testing.assert_array_equal(ds.pixel_array, original.pixel_array)


@pytest.mark.parametrize("retrieve", ["get", "move"])
def test_fetch_series_and_subset(loaded, retrieve):
    client = loaded.client(retrieve=retrieve, move_port=loaded.move_port)
    got, sink = _collect()
    n = client.fetch(loaded.study, loaded.series, None, sink)
    assert n == 20 == len(got)
    uids = {str(_ds(b).SOPInstanceUID) for b in got}
    assert uids == set(client.instance_uids(loaded.study, loaded.series))
    _check_same(got, loaded.originals)
    some = sorted(uids)[3:6]
    got, sink = _collect()
    assert client.fetch(loaded.study, loaded.series, some, sink) == 3
    assert sorted(str(_ds(b).SOPInstanceUID) for b in got) == some
    one = sorted(uids)[7:8]
    got, sink = _collect()
    assert client.fetch(loaded.study, loaded.series, one, sink) == 1
    assert str(_ds(got[0]).SOPInstanceUID) == one[0]


@pytest.mark.parametrize("retrieve", ["get", "move"])
def test_fetch_keeps_compressed_transfer_syntax(loaded, retrieve):
    client = loaded.client(retrieve=retrieve, move_port=loaded.move_port)
    nm = client.find_studies(Query(modality="NM"))[0]
    got, sink = _collect()
    for s in client.find_series(nm.study_uid):
        client.fetch(nm.study_uid, s.series_uid, None, sink)
    assert [str(_ds(b).file_meta.TransferSyntaxUID) for b in got] == ["1.2.840.10008.1.2.4.91"]  # as stored
    _check_same(got, loaded.originals)


def test_cache_retrieve_over_dimse(loaded, tmp_path):
    cache = RetrieveCache(tmp_path / "cache")
    report = cache.retrieve(loaded.client(), loaded.study, loaded.series)
    assert report.fetched == 20 and len(report.files) == 20 and not report.missing
    again = cache.retrieve(loaded.client(retrieve="move", move_port=loaded.move_port), loaded.study)
    assert again.fetched == 0 and again.reused == 20


@pytest.mark.parametrize("retrieve", ["get", "move"])
def test_unknown_study_or_series_is_not_found(loaded, retrieve):
    client = loaded.client(retrieve=retrieve, move_port=loaded.move_port)
    with pytest.raises(RemoteError) as e:
        client.fetch("1.2.3.999", "1.2.3.999.1", None, lambda b: None)
    assert e.value.kind == "not_found" and loaded.orthanc.dimse_url.split("//")[1] in str(e.value)
    with pytest.raises(RemoteError) as e:
        client.fetch(loaded.study, "1.2.3.999.1", None, lambda b: None)
    assert e.value.kind == "not_found"
    with pytest.raises(RemoteError) as e:
        client.fetch(loaded.study, loaded.series, ["1.2.3.999.1.1"], lambda b: None)
    assert e.value.kind == "not_found"


def test_move_to_unknown_destination_names_the_problem(loaded):
    client = loaded.client(retrieve="move", calling_ae="STRANGER", move_port=free_port())
    with pytest.raises(RemoteError) as e:
        client.fetch(loaded.study, loaded.series, None, lambda b: None)
    assert e.value.kind == "protocol" and "STRANGER" in str(e.value) and "0xC000" in str(e.value)


@pytest.mark.parametrize("retrieve", ["get", "move"])
def test_cancel_mid_transfer(loaded, retrieve):
    client = loaded.client(retrieve=retrieve, move_port=loaded.move_port)
    got = []
    started = time.monotonic()
    with pytest.raises(Cancelled):
        client.fetch(loaded.study, loaded.series, None, got.append, should_stop=lambda: len(got) >= 3)
    assert len(got) == 3 and time.monotonic() - started < 10
    client.echo()  # the server is fine after our abort


def test_closed_port_is_unreachable():
    port = free_port()
    client = DimseClient(Server(name="x", kind="dimse", host="127.0.0.1", port=port, called_ae="NOBODY", timeout=5))
    started = time.monotonic()
    for call in (client.echo, lambda: client.find_studies(Query()),
                 lambda: client.fetch("1.2", "1.2.3", None, lambda b: None)):
        with pytest.raises(RemoteError) as e:
            call()
        assert e.value.kind == "unreachable" and f"127.0.0.1:{port}" in str(e.value)
    assert time.monotonic() - started < 10


def test_rejected_association_is_refused():
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, Verification
    scp = AE(ae_title="PICKY")
    scp.add_supported_context(Verification)
    scp.add_supported_context(CTImageStorage, scu_role=True, scp_role=True)  # storage, but no C-FIND/C-GET
    scp.require_calling_aet = ["SOMEONE"]
    port = free_port()
    listener = scp.start_server(("127.0.0.1", port), block=False)
    try:
        client = DimseClient(Server(name="x", kind="dimse", host="127.0.0.1", port=port, called_ae="PICKY",
                                    calling_ae="LIGHTBOX", timeout=5))
        with pytest.raises(RemoteError) as e:
            client.echo()
        assert e.value.kind == "refused" and "LIGHTBOX" in str(e.value) and "PICKY@127.0.0.1" in str(e.value)
        scp.require_calling_aet = []
        with pytest.raises(RemoteError) as e:  # accepts the association but not C-FIND
            client.find_studies(Query())
        assert e.value.kind == "refused" and "C-FIND" in str(e.value)
        with pytest.raises(RemoteError) as e:  # takes a storage context, not the C-GET model
            client.fetch("1.2.3", "1.2.3.4", None, lambda b: None)
        assert e.value.kind == "refused" and "does not accept C-GET" in str(e.value)
    finally:
        listener.shutdown()


def test_store_then_find(orthanc, tmp_path):
    client = DimseClient(parse_address(orthanc.dimse_url))
    ct = synthetic.write_ct_study(tmp_path / "ct", shape=(3, 32, 32))
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    files = list(ct.files) + [get_testdata_file(n) for n in TESTFILES] + [junk]
    seen = []
    report = client.store(files, progress=lambda d, t, m: seen.append((d, t)))
    assert len(report.stored) == 6 and list(report.failed) == [str(junk)]
    assert seen[-1] == (7, 7)
    assert orthanc.instance_count() == 6
    hits = client.find_studies(Query(patient_name="PHANTOM^CT"))
    assert [h.n_instances for h in hits] == [3]
    nm = client.find_studies(Query(modality="NM"))[0]
    got, sink = _collect()
    for s in client.find_series(nm.study_uid):
        client.fetch(nm.study_uid, s.series_uid, None, sink)
    j2k = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    back = [_ds(b) for b in got if _ds(b).SOPInstanceUID == j2k.SOPInstanceUID]
    assert back and back[0].PixelData == j2k.PixelData  # stored and returned as JPEG 2000
    with pytest.raises(Cancelled):
        client.store(files, should_stop=lambda: True)


def test_killed_server_mid_transfer_then_resume(orthanc, tmp_path):
    ct = synthetic.write_ct_study(tmp_path / "ct", shape=(20, 64, 64))
    orthanc.upload(ct.files)
    study, series = str(ct.volume.info.study_uid), str(ct.volume.info.series_uid)
    client = DimseClient(parse_address(orthanc.dimse_url))
    client.server.timeout = 10
    cache = RetrieveCache(tmp_path / "cache")
    arrived = []

    def on_file(path, done, total):
        arrived.append(path)
        if len(arrived) == 5:
            orthanc.kill()

    started = time.monotonic()
    with pytest.raises(RemoteError) as e:
        cache.retrieve(client, study, series, on_file=on_file)
    kept = len(cache.present(study, series))  # what arrived whole before the kill reaches the cache
    assert e.value.kind == "unreachable" and f"after {kept} instances" in str(e.value)
    assert 5 <= kept < 20 and time.monotonic() - started < 15
    orthanc.start()
    report = cache.retrieve(client, study, series)
    assert report.reused == kept and report.fetched == 20 - kept and len(report.files) == 20
