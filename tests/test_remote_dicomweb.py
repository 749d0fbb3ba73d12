"""The DICOMweb client (viewer/remote/dicomweb.py) against a real Orthanc with its DICOMweb plugin, and
the incremental multipart reader (viewer/remote/multipart.py) on every chunk boundary."""
from __future__ import annotations

import http.server
import io
import json
import socket
import subprocess
import threading

import numpy as np
import pydicom
import pydicom.data
import pytest
import requests
from pydicom.uid import generate_uid

from viewer.core.errors import Cancelled
from viewer.core.synthetic import write_ct_study
from viewer.remote import Query, RemoteError, Server, connect
from viewer.remote import dicomweb
from viewer.remote.cache import RetrieveCache
from viewer.remote.dicomweb import DicomWebClient
from viewer.remote.multipart import MultipartError, MultipartReader, boundary_of, encode

TEST_FILES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm")


# -- the multipart reader -------------------------------------------------------------------------
def _body(boundary: bytes, parts, preamble=b"", epilogue=b"") -> bytes:
    out = preamble
    for i, data in enumerate(parts):
        if i == 0:
            head = b"Content-Type: application/dicom\r\nContent-Length: %d\r\n" % len(data)
        elif i == 1:
            head = b"Content-Type: application/dicom\r\n"  # no length: the delimiter is searched for
        elif i == 2:
            head = b"Content-Length: %d\r\n" % (len(data) + 7)  # a wrong length must not cut the part
        else:
            head = b""  # a part without headers
        out += (b"\r\n" if out else b"") + b"--" + boundary + b"  \r\n" + head + b"\r\n" + data
    return out + b"\r\n--" + boundary + b"--" + epilogue


PARTS = [b"\x00" * 5 + b"DICM" + bytes(range(40)), b"\r\n--not-the-boundary\r\n" + b"x" * 30, b"", b"\r\n\r\n-"]


@pytest.mark.parametrize("preamble,epilogue", [(b"", b""), (b"a preamble\r\n", b"\r\nan epilogue\r\n")])
def test_multipart_reader_on_every_chunk_boundary(preamble, epilogue):
    boundary = b"b0und4ry-123"
    body = _body(boundary, PARTS, preamble, epilogue)
    for cut in range(len(body) + 1):
        for cut2 in (cut, min(len(body), cut + 3)):
            got = []
            reader = MultipartReader(boundary.decode(), lambda data, headers: got.append(data))
            reader.feed(body[:cut])
            reader.feed(body[cut:cut2])
            reader.feed(body[cut2:])
            reader.close()
            assert got == PARTS, (cut, cut2)
    got = []
    reader = MultipartReader(boundary, lambda data, headers: got.append(data))
    for i in range(len(body)):  # byte by byte
        reader.feed(body[i:i + 1])
    reader.close()
    assert got == PARTS and reader.complete


def test_multipart_reader_hands_each_part_over_as_soon_as_it_is_whole():
    boundary = "xyz"
    body = _body(boundary.encode(), PARTS)
    got = []
    reader = MultipartReader(boundary, lambda data, headers: got.append(data))
    end_of_first = body.index(b"\r\n--xyz", body.index(PARTS[0])) + len(b"\r\n--xyz")
    reader.feed(body[:end_of_first])
    assert got == PARTS[:1]


def test_a_body_cut_short_is_an_error_at_every_length():
    boundary = b"cut"
    body = _body(boundary, PARTS)
    for n in range(len(body) - len(b"--cut--") + 2):
        reader = MultipartReader(boundary, lambda data, headers: None)
        reader.feed(body[:n])
        with pytest.raises(MultipartError, match="ended"):
            reader.close()


def test_boundary_and_encode_round_trip():
    assert boundary_of('multipart/related; type="application/dicom"; boundary="a b;c"') == "a b;c"
    assert boundary_of("Multipart/Related; boundary=abc; type=application/dicom") == "abc"
    for bad in ("application/dicom+json", "multipart/related; type=application/dicom", ""):
        with pytest.raises(MultipartError):
            boundary_of(bad)
    body, content_type = encode(PARTS)
    got = []
    reader = MultipartReader(boundary_of(content_type), lambda data, headers: got.append((data, headers)))
    reader.feed(body)
    reader.close()
    assert [g[0] for g in got] == PARTS
    assert all(g[1]["content-type"] == "application/dicom" for g in got)


# -- requests wiring without a server -------------------------------------------------------------
class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list = []

    stow_answer: dict = {}
    single: bytes = b""

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).seen.append((self.path, dict(self.headers)))
        body, content_type = b"[]", "application/dicom+json"
        if "/instances/" in self.path:  # a server answering one bare application/dicom, not multipart
            body, content_type = type(self).single, "application/dicom"
        self.send_response(401 if "deny" in self.path else 200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        data = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((self.path, dict(self.headers), data))
        body = json.dumps(type(self).stow_answer).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    _Recorder.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/dicom-web", _Recorder.seen
    httpd.shutdown()
    httpd.server_close()


def test_bearer_token_and_user_agent_are_sent_and_never_shown(recorder):
    url, seen = recorder
    token = "s3cr3t-t0ken-value"
    client = connect(Server("tok", "dicomweb", url=url, auth="bearer"), token)
    client.echo()
    assert client.find_studies(Query(patient_name="DOE^J*", modality="CT", date_from="20240101")) == []
    path, headers = seen[-1]
    assert headers["Authorization"] == f"Bearer {token}"
    assert "Lightbox" in headers["User-Agent"]
    assert "PatientName=DOE?J*" in path and "ModalitiesInStudy=CT" in path and "StudyDate=20240101-" in path
    assert "fuzzymatching=false" in path and "includefield=NumberOfStudyRelatedInstances" in path
    assert token not in repr(client) and token not in repr(client.session.auth)
    assert token not in str(client.session.headers)
    client.base = url + "/deny"
    with pytest.raises(RemoteError) as err:
        client.echo()
    assert err.value.kind == "auth" and url in str(err.value) and token not in str(err.value)


def test_basic_auth_header(recorder):
    url, seen = recorder
    connect(Server("b", "dicomweb", url=url, auth="basic", username="alice"), "pw").echo()
    assert seen[-1][1]["Authorization"] == requests.auth._basic_auth_str("alice", "pw")


def test_stow_answer_with_failures_and_a_bare_dicom_answer(recorder, tmp_path):
    url, seen = recorder
    a, b = (pydicom.dcmread(pydicom.data.get_testdata_file(n)) for n in ("CT_small.dcm", "MR_small.dcm"))
    paths = [tmp_path / "a.dcm", tmp_path / "b.dcm", tmp_path / "c.dcm"]
    a.save_as(paths[0])
    b.save_as(paths[1])
    paths[2].write_bytes(b"DICM? no")
    _Recorder.stow_answer = {
        "00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [a.SOPInstanceUID]}}]},
        "00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [b.SOPInstanceUID]},
                                            "00081197": {"vr": "US", "Value": [0xA900]}}]}}
    report = connect(Server("s", "dicomweb", url=url)).store(paths)
    assert report.stored == [a.SOPInstanceUID]
    assert report.failed[b.SOPInstanceUID] == "data set does not match SOP class (HTTP 202)"
    assert "not a DICOM file" in report.failed[str(paths[2])]
    path, headers, body = seen[-1]
    assert path == "/dicom-web/studies" and headers["Content-Type"].startswith("multipart/related")
    got = []
    reader = MultipartReader(boundary_of(headers["Content-Type"]), lambda data, h: got.append(data))
    reader.feed(body)
    reader.close()
    assert got == [paths[0].read_bytes(), paths[1].read_bytes()]
    _Recorder.single = paths[0].read_bytes()
    got = []
    assert connect(Server("s", "dicomweb", url=url)).fetch("1.2", "1.3", ["1.4"], got.append) == 1
    assert got == [paths[0].read_bytes()]
    _Recorder.single = b"<html>Internal error</html>"
    with pytest.raises(RemoteError) as err:
        connect(Server("s", "dicomweb", url=url)).fetch("1.2", "1.3", ["1.4"], got.append)
    assert err.value.kind == "protocol" and "not a DICOM file" in str(err.value) and len(got) == 1


@pytest.fixture(scope="module")
def https_server(tmp_path_factory):
    """A QIDO answerer over https with a self-signed certificate (not in any trust store)."""
    import ssl
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}/dicom-web", str(cert)
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_by_default(https_server):
    url, cert = https_server
    with pytest.raises(RemoteError) as err:
        connect(Server("t", "dicomweb", url=url, timeout=5)).echo()
    assert err.value.kind == "tls" and "not trusted" in str(err.value) and url in str(err.value)
    connect(Server("t", "dicomweb", url=url, ca_bundle=cert, timeout=5)).echo()  # the hospital's CA
    connect(Server("t", "dicomweb", url=url, verify_tls=False, timeout=5)).echo()  # the user said so
    plain = url.replace("https://", "http://")
    with pytest.raises(RemoteError) as err:
        connect(Server("t", "dicomweb", url=plain, timeout=5)).echo()
    assert err.value.kind in ("unreachable", "protocol")


def test_tls_verification_reaches_requests(monkeypatch):
    sent = []

    def fake_send(self, request, **kwargs):
        sent.append(kwargs["verify"])
        response = requests.Response()
        response.status_code, response._content, response.url = 200, b"[]", request.url
        return response

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", fake_send)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # these would stand in for True
        monkeypatch.delenv(name, raising=False)
    assert Server("x", "dicomweb", url="https://pacs.example").verify_tls is True
    DicomWebClient(Server("x", "dicomweb", url="https://pacs.example")).echo()
    DicomWebClient(Server("x", "dicomweb", url="https://pacs.example", ca_bundle="/etc/ca.pem")).echo()
    DicomWebClient(Server("x", "dicomweb", url="https://pacs.example", verify_tls=False)).echo()
    assert sent == [True, "/etc/ca.pem", False]


def test_closed_port_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/dicom-web"
    client = connect(Server("gone", "dicomweb", url=url, timeout=5))
    for call in (client.echo, lambda: client.find_series("1.2.3"),
                 lambda: client.fetch("1.2", "1.3", None, lambda b: None)):
        with pytest.raises(RemoteError) as err:
            call()
        assert err.value.kind == "unreachable" and url in str(err.value) and "\n" not in str(err.value)


# -- against a real Orthanc -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """One Orthanc for the read-only tests: a synthetic CT (20 slices) and pydicom's CT, MR and JPEG 2000 files."""
    import orthanc_server
    orthanc_server.require()
    root = tmp_path_factory.mktemp("orthanc-dicomweb")
    ct = write_ct_study(root / "ct", shape=(20, 64, 64)).files
    files = list(ct) + [pydicom.data.get_testdata_file(n) for n in TEST_FILES]
    server = orthanc_server.OrthancServer(root / "server").start()
    server.upload(files)
    by_sop = {str(pydicom.dcmread(f).SOPInstanceUID): f for f in files}
    yield server, ct, by_sop
    server.stop()


def _client(server, **kw) -> DicomWebClient:
    return connect(Server("orthanc", "dicomweb", url=server.dicomweb_url, timeout=20, **kw))


def _uids(path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def test_find_studies_by_name_modality_date_accession(loaded):
    server, ct, _ = loaded
    client = _client(server)
    ct_study = _uids(ct[0])[0]
    names = {h.patient_name for h in client.find_studies(Query(patient_name="compressedsamples*"))}
    assert names == {"CompressedSamples^CT1", "CompressedSamples^MR1", "CompressedSamples^NM1"}
    assert [h.patient_name for h in client.find_studies(Query(patient_name="CompressedSamples^MR?"))] == \
        ["CompressedSamples^MR1"]
    mr = client.find_studies(Query(modality="MR"))
    assert [h.modalities for h in mr] == [["MR"]]
    in_2004 = client.find_studies(Query(date_from="20040101", date_to="20041231"))
    assert {h.study_date[:4] for h in in_2004} == {"2004"} and len(in_2004) == 3
    assert {h.study_date for h in client.find_studies(Query(date_from="20040801", date_to="20040831"))} == \
        {"20040826"}
    hit, = client.find_studies(Query(patient_name="PHANTOM*", modality="CT"))
    assert (hit.study_uid, hit.n_series, hit.n_instances, hit.patient_id) == (ct_study, 1, 20, "LBX-CT-001")
    assert hit.description == pydicom.dcmread(ct[0]).StudyDescription
    assert client.find_studies(Query(accession="NO-SUCH-ACCESSION")) == []
    assert client.find_studies(Query(patient_name="nobody*")) == []
    assert len(client.find_studies(Query(limit=2))) == 2


def test_find_by_accession_after_storing(orthanc, tmp_path):
    """Accession numbers are searched (the test files have none, so store one that has)."""
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds.AccessionNumber = "ACC-42"
    ds.StudyInstanceUID = generate_uid()
    ds.save_as(tmp_path / "acc.dcm")
    client = _client(orthanc)
    report = client.store([tmp_path / "acc.dcm"])
    assert report.stored == [str(ds.SOPInstanceUID)] and not report.failed
    hit, = client.find_studies(Query(accession="ACC-42"))
    assert hit.accession == "ACC-42" and hit.study_uid == ds.StudyInstanceUID


def test_series_and_instances_are_listed_with_counts(loaded):
    server, ct, _ = loaded
    client = _client(server)
    study, series, _ = _uids(ct[0])
    hit, = client.find_series(study)
    assert (hit.series_uid, hit.modality, hit.n_instances, hit.number) == (series, "CT", 20, 1)
    assert sorted(client.instance_uids(study, series)) == sorted(_uids(p)[2] for p in ct)


def _same_file(data: bytes, original) -> str:
    got = pydicom.dcmread(io.BytesIO(data))
    want = pydicom.dcmread(original)
    assert got.file_meta.TransferSyntaxUID == want.file_meta.TransferSyntaxUID
    assert got.PixelData == want.PixelData
    return str(got.SOPInstanceUID)


def test_fetch_whole_series_and_a_subset_gives_the_uploaded_files(loaded):
    server, ct, by_sop = loaded
    client = _client(server)
    study, series, _ = _uids(ct[0])
    got = []
    assert client.fetch(study, series, None, got.append) == 20
    assert sorted(_same_file(d, by_sop[_uids(io.BytesIO(d))[2]]) for d in got) == \
        sorted(_uids(p)[2] for p in ct)
    first = pydicom.dcmread(io.BytesIO(got[0]))
    assert np.array_equal(first.pixel_array, pydicom.dcmread(by_sop[first.SOPInstanceUID]).pixel_array)
    wanted = [_uids(p)[2] for p in ct[3:6]]
    got = []
    assert client.fetch(study, series, wanted, got.append) == 3
    assert sorted(_uids(io.BytesIO(d))[2] for d in got) == sorted(wanted)


def test_compressed_files_keep_their_transfer_syntax(loaded):
    server, _, by_sop = loaded
    client = _client(server)
    for name in TEST_FILES:
        path = pydicom.data.get_testdata_file(name)
        study, series, sop = _uids(path)
        got = []
        assert client.fetch(study, series, None, got.append) == 1
        assert _same_file(got[0], path) == sop
    j2k = pydicom.dcmread(pydicom.data.get_testdata_file("JPEG2000.dcm"))
    assert j2k.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.91"  # the test means a compressed file


def test_unknown_study_or_series_is_not_found(loaded):
    server, ct, _ = loaded
    client = _client(server)
    study, series, _ = _uids(ct[0])
    for call in (lambda: client.fetch("1.2.3.4", "1.2.3.5", None, lambda b: None),
                 lambda: client.fetch(study, "1.2.3.5", None, lambda b: None),
                 lambda: client.fetch(study, series, ["1.2.3.6"], lambda b: None),
                 lambda: RetrieveCache(server.root / "cache-unknown").retrieve(client, "1.2.3.4")):
        with pytest.raises(RemoteError) as err:
            call()
        assert err.value.kind == "not_found" and server.dicomweb_url in str(err.value)
    assert client.find_series("1.2.3.4") == []


def test_cancel_mid_stream_stops_and_closes(loaded, monkeypatch):
    server, ct, _ = loaded
    monkeypatch.setattr(dicomweb, "CHUNK", 4096)  # many chunks even for a small series
    client = _client(server)
    study, series, _ = _uids(ct[0])
    got = []
    with pytest.raises(Cancelled):
        client.fetch(study, series, None, got.append, should_stop=lambda: len(got) >= 3)
    assert 3 <= len(got) < 20
    assert client.fetch(study, series, None, lambda b: None) == 20  # the client still works


def _big_series(folder, n: int, size: int = 512) -> list:
    """``n`` uncompressed slices of noise (bigger than the socket buffers between us and Orthanc)."""
    template = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    folder.mkdir()
    paths = []
    for i in range(n):
        ds = template.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName, ds.InstanceNumber = "KILL^TEST", i + 1
        ds.Rows = ds.Columns = size
        ds.PixelData = rng.integers(0, 4000, (size, size), dtype=np.int16).tobytes()
        paths.append(folder / f"{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def test_server_killed_mid_transfer_is_unreachable_then_resumes(orthanc, tmp_path):
    files = _big_series(tmp_path / "big", 40)
    orthanc.upload(files)
    study, series, _ = _uids(files[0])
    client = _client(orthanc)
    # a small receive buffer: the kernel cannot swallow the whole answer before the kill
    adapter = requests.adapters.HTTPAdapter()
    adapter.init_poolmanager(10, 10, socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)])
    client.session.mount("http://", adapter)
    cache = RetrieveCache(tmp_path / "cache")

    def on_file(path, done, total):
        if done == 3:
            orthanc.kill()

    with pytest.raises(RemoteError) as err:
        cache.retrieve(client, study, series, on_file=on_file)
    assert err.value.kind == "unreachable" and orthanc.dicomweb_url in str(err.value)
    assert "instances had arrived" in str(err.value)
    kept = cache.present(study, series)
    assert 3 <= len(kept) < 40
    orthanc.start()
    report = cache.retrieve(_client(orthanc), study, series)
    assert report.reused == len(kept) and report.fetched == 40 - len(kept) and len(report.files) == 40
    assert report.fetched < 40 - 2  # only what was missing travelled again


def test_bad_credentials_are_auth_and_right_ones_work(orthanc_factory):
    server = orthanc_factory(users={"alice": "pw"})
    server.upload([pydicom.data.get_testdata_file("MR_small.dcm")])
    for user, secret in (("alice", "wrong-pass"), ("mallory", "pw")):
        client = connect(Server("o", "dicomweb", url=server.dicomweb_url, auth="basic", username=user), secret)
        with pytest.raises(RemoteError) as err:
            client.find_studies(Query())
        assert err.value.kind == "auth" and secret not in str(err.value) and server.dicomweb_url in str(err.value)
    client = connect(Server("o", "dicomweb", url=server.dicomweb_url), "")
    with pytest.raises(RemoteError, match="401") as err:
        client.echo()
    assert err.value.kind == "auth"
    client = connect(Server("o", "dicomweb", url=server.dicomweb_url, auth="basic", username="alice"), "pw")
    client.echo()
    hit, = client.find_studies(Query(modality="MR"))
    got = []
    assert client.fetch(hit.study_uid, client.find_series(hit.study_uid)[0].series_uid, None, got.append) == 1


def test_store_a_seg_and_find_it_again(orthanc, tmp_path):
    import highdicom as hd

    ct = write_ct_study(tmp_path / "ct", shape=(6, 32, 32)).files
    source = [pydicom.dcmread(p) for p in ct]
    mask = np.zeros((len(source), 32, 32), dtype=bool)
    mask[2:4, 10:20, 10:20] = True
    seg = hd.seg.Segmentation(
        source_images=source, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[hd.seg.SegmentDescription(
            segment_number=1, segment_label="lesion",
            segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Abnormal Structure"),
            segmented_property_type=hd.sr.CodedConcept("4147007", "SCT", "Mass"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)],
        series_instance_uid=generate_uid(), series_number=99, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="Lightbox", manufacturer_model_name="test", software_versions="1", device_serial_number="1")
    seg.save_as(tmp_path / "seg.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    client = _client(orthanc)
    progress = []
    report = client.store(ct + [tmp_path / "seg.dcm", tmp_path / "junk.dcm"],
                          progress=lambda d, t, m: progress.append((d, t)))
    assert sorted(report.stored) == sorted([_uids(p)[2] for p in ct] + [seg.SOPInstanceUID])
    assert list(report.failed) == [str(tmp_path / "junk.dcm")]
    assert progress[-1] == (7, 7)
    hit, = client.find_studies(Query(patient_name="PHANTOM*"))
    assert "SEG" in hit.modalities and hit.n_series == 2
    seg_series = [s for s in client.find_series(hit.study_uid) if s.modality == "SEG"]
    assert [s.series_uid for s in seg_series] == [seg.SeriesInstanceUID]
    got = []
    client.fetch(hit.study_uid, seg.SeriesInstanceUID, None, got.append)
    back = hd.seg.segread(io.BytesIO(got[0]))
    assert back.SOPInstanceUID == seg.SOPInstanceUID


def test_store_batches_by_size(orthanc, tmp_path, monkeypatch):
    monkeypatch.setattr(dicomweb, "STOW_BATCH_BYTES", 30_000)
    files = write_ct_study(tmp_path / "ct", shape=(5, 64, 64)).files  # ~9 kB each
    posts = []
    real = requests.Session.send

    def counting(self, request, **kw):
        if request.method == "POST":
            posts.append(len(request.body))
        return real(self, request, **kw)

    monkeypatch.setattr(requests.Session, "send", counting)
    report = _client(orthanc).store(files)
    assert len(report.stored) == 5 and len(posts) == 2 and max(posts) < 30_000 + 2000
    assert orthanc.instance_count() == 5
    with pytest.raises(Cancelled):
        _client(orthanc).store(files, should_stop=lambda: True)
