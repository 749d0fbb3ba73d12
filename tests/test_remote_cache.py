"""The retrieve cache: files land whole under their UIDs, an interrupted retrieve resumes without
refetching, a hostile 'UID' cannot name a path outside the cache; the server list and its secrets."""
from __future__ import annotations

import json
import os

import pydicom
import pytest
from pydicom.data import get_testdata_file

from viewer.core.errors import Cancelled
from viewer.remote import RemoteError, Server, parse_address, parse_dates
from viewer.remote import servers as servers_mod
from viewer.remote.base import Query, SeriesHit
from viewer.remote.cache import RetrieveCache, file_name


class FakeClient:
    """A server in memory: {series_uid: [Part-10 bytes]} of one study; ``die_after`` drops the
    connection after that many instances of a fetch, as a killed server would."""

    def __init__(self, study_uid, series):
        self.server = Server(name="fake", kind="dicomweb", url="http://fake/dicom-web")
        self.study_uid = study_uid
        self.series = series
        self.die_after = None
        self.fetch_calls = []

    def find_series(self, study_uid):
        return [SeriesHit(study_uid, uid, n_instances=len(v)) for uid, v in self.series.items()]

    def instance_uids(self, study_uid, series_uid):
        return [str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(b), stop_before_pixels=True).SOPInstanceUID)
                for b in self.series.get(series_uid, [])]

    def fetch(self, study_uid, series_uid, sop_uids, sink, should_stop=None):
        self.fetch_calls.append((series_uid, None if sop_uids is None else list(sop_uids)))
        sent = 0
        for data in self.series[series_uid]:
            sop = str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True).SOPInstanceUID)
            if sop_uids is not None and sop not in sop_uids:
                continue
            if should_stop and should_stop():
                raise Cancelled("cancelled")
            if self.die_after is not None and sent >= self.die_after:
                raise RemoteError("unreachable", f"{self.server.address}: connection dropped after {sent}")
            sink(data)
            sent += 1
        return sent


def _series_files(tmp_path, n=6):
    """``n`` instances of one series: pydicom's CT_small with new SOP UIDs."""
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    out = []
    for i in range(n):
        ds = src.copy()
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{i + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        path = tmp_path / f"src{i}.dcm"
        ds.save_as(path)
        out.append(path.read_bytes())
    return str(src.StudyInstanceUID), str(src.SeriesInstanceUID), out


def test_retrieve_writes_exact_bytes_and_reuses_them(tmp_path):
    study, series, files = _series_files(tmp_path)
    client = FakeClient(study, {series: files})
    cache = RetrieveCache(tmp_path / "cache")
    seen = []
    report = cache.retrieve(client, study, series, on_file=lambda p, d, t: seen.append((p.name, d, t)))
    assert report.fetched == 6 and report.reused == 0 and not report.missing
    assert sorted(p.read_bytes() for p in report.files) == sorted(files)
    assert [d for _, d, _ in seen] == list(range(1, 7)) and {t for *_, t in seen} == {6}
    again = cache.retrieve(client, study, series)
    assert again.fetched == 0 and again.reused == 6 and len(client.fetch_calls) == 1  # nothing asked twice


def test_interrupted_retrieve_resumes_with_only_the_missing(tmp_path):
    study, series, files = _series_files(tmp_path, n=8)
    client = FakeClient(study, {series: files})
    cache = RetrieveCache(tmp_path / "cache")
    client.die_after = 3
    with pytest.raises(RemoteError) as err:
        cache.retrieve(client, study, series)
    assert err.value.kind == "unreachable"
    assert len(cache.present(study, series)) == 3
    (cache.series_dir(study, series) / f".half{os.getpid()}.part").write_bytes(b"half")  # a killed write
    client.die_after = None
    report = cache.retrieve(client, study, series)
    assert report.reused == 3 and report.fetched == 5
    asked = client.fetch_calls[-1][1]
    assert asked is not None and len(asked) == 5  # only the five not here
    assert not list(cache.series_dir(study, series).glob(".*.part"))
    assert sorted(p.read_bytes() for p in report.files) == sorted(files)


def test_cancel_keeps_what_arrived(tmp_path):
    study, series, files = _series_files(tmp_path)
    client = FakeClient(study, {series: files})
    cache = RetrieveCache(tmp_path / "cache")
    arrived = []
    with pytest.raises(Cancelled):
        cache.retrieve(client, study, series, on_file=lambda p, d, t: arrived.append(p),
                       should_stop=lambda: len(arrived) >= 2)
    assert len(cache.present(study, series)) == 2


def test_whole_study_and_unknown_study(tmp_path):
    study, series, files = _series_files(tmp_path, n=3)
    client = FakeClient(study, {series: files})
    report = RetrieveCache(tmp_path / "c").retrieve(client, study)
    assert report.series == [series] and report.fetched == 3
    client.series = {}
    with pytest.raises(RemoteError) as err:
        RetrieveCache(tmp_path / "c2").retrieve(client, "1.2.3.4")
    assert err.value.kind == "not_found" and "1.2.3.4" in str(err.value)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_hostile_uids_stay_inside_the_cache(tmp_path):
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    src.StudyInstanceUID = "../../../etc"
    src.SeriesInstanceUID = "/abs/path"
    src.SOPInstanceUID = "..\\..\\x"
    path = tmp_path / "bad.dcm"
    src.save_as(path)
    cache = RetrieveCache(tmp_path / "cache")
    written = cache.put(path.read_bytes())
    assert written.resolve().is_relative_to((tmp_path / "cache").resolve())
    assert file_name("1.2.3") == "1.2.3" and file_name("../x") != "../x"


def test_parse_addresses_and_dates():
    web = parse_address("https://alice@pacs.example.org:8443/dicom-web/")
    assert (web.kind, web.url, web.auth, web.username) == ("dicomweb", "https://pacs.example.org:8443/dicom-web",
                                                           "basic", "alice")
    assert web.verify_tls is True
    with pytest.raises(ValueError, match="password"):
        parse_address("https://alice:secret@pacs/dicom-web")
    node = parse_address("dicom://ORTHANC@127.0.0.1:4242?calling=ME&retrieve=move&port=11113")
    assert (node.kind, node.called_ae, node.calling_ae, node.retrieve, node.move_port) == \
        ("dimse", "ORTHANC", "ME", "move", 11113)
    with pytest.raises(ValueError):
        parse_address("ftp://x")
    assert parse_dates("20240101-20241231") == ("20240101", "20241231")
    assert parse_dates("2024-01-01..2024-02-01") == ("20240101", "20240201")
    assert parse_dates("-20241231") == ("", "20241231")
    assert Query(date_from="20240101", date_to="").date_range == "20240101-"
    with pytest.raises(ValueError):
        parse_dates("yesterday")


class MemoryKeyring:
    """A keyring backend held in memory (the test's stand-in for the OS keyring)."""

    priority = 1

    def __init__(self):
        self.store = {}

    def get_password(self, service, user):
        return self.store.get((service, user))

    def set_password(self, service, user, password):
        self.store[(service, user)] = password

    def delete_password(self, service, user):
        self.store.pop((service, user), None)


def test_server_store_never_holds_secrets(tmp_path, monkeypatch):
    import keyring
    import keyring.backend

    class Backend(MemoryKeyring, keyring.backend.KeyringBackend):
        pass

    backend = Backend()
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    try:
        store = servers_mod.ServerStore(tmp_path / "servers.json")
        server = parse_address("http://alice@127.0.0.1:8042/dicom-web", name="orthanc")
        store.put(server)
        assert servers_mod.set_secret(server, "s3cret-pw") is True  # the keyring keeps it
        text = (tmp_path / "servers.json").read_text()
        assert "s3cret-pw" not in text and json.loads(text)["servers"][0]["username"] == "alice"
        assert oct((tmp_path / "servers.json").stat().st_mode & 0o777) == "0o600"
        assert servers_mod.get_secret(store.get("orthanc")) == "s3cret-pw"
        assert "s3cret-pw" not in repr(store.get("orthanc"))
        assert servers_mod.resolve("orthanc", store).url == server.url
        assert servers_mod.resolve("http://other/dicom-web", store).url == "http://other/dicom-web"
        servers_mod.forget_secret(server)
        assert servers_mod.get_secret(server) == ""
    finally:
        keyring.set_keyring(previous)


def test_without_a_keyring_secrets_live_for_the_session_only(tmp_path, monkeypatch):
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        server = parse_address("http://bob@127.0.0.1:8042/dicom-web", name="nokeyring")
        assert servers_mod.keyring_available() is False
        assert servers_mod.set_secret(server, "pw") is False
        assert servers_mod.get_secret(server) == "pw"
        servers_mod.forget_secret(server)
        monkeypatch.setenv("LIGHTBOX_REMOTE_PASSWORD", "from-env")
        assert servers_mod.get_secret(server) == "from-env"
    finally:
        keyring.set_keyring(previous)


def test_prune_drops_least_recently_used_studies_but_keeps_the_new_one(tmp_path, monkeypatch):
    cache = RetrieveCache(tmp_path / "cache")
    for i, name in enumerate(["1.1", "1.2", "1.3"]):
        folder = cache.series_dir(name, "9.9")
        folder.mkdir(parents=True)
        (folder / "1.dcm").write_bytes(b"x" * 1000)
        os.utime(folder / "1.dcm", (1000 + i, 1000 + i))
    monkeypatch.setenv("LIGHTBOX_REMOTE_CACHE_MB", str(2500 / 1024 / 1024))
    removed = cache.prune(keep="1.1")  # 1.1 is the oldest, but just retrieved
    assert [p.name for p in removed] == ["1.2"]
    assert sorted(p.name for p in cache.root.iterdir()) == ["1.1", "1.3"]
