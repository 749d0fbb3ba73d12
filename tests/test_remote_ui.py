"""The Remote panel, the server dialog and AI ▸ Send results to PACS against a real Orthanc:
add a server, test it, search, retrieve with progress (the first slices show while the rest
arrives, the user's slice and window survive each re-read), Cancel and resume, a wrong password's
one-line reason, and the edited segmentation with its Parametric Maps and SR stored back."""
from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from qt_helpers import close_quietly, editor_window

from viewer.core.errors import Cancelled
from viewer.core.synthetic import write_ct_study, write_mr_study
from viewer.remote import servers as store_mod
from viewer.remote.cache import RetrieveCache

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
PM_CLASS = "1.2.840.10008.5.1.4.1.1.30"


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct")
    return write_ct_study(out, shape=(20, 64, 64), spacing=(5.0, 3.0, 3.0), seed=11)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, ct_files):
    """One real Orthanc holding ``ct_files`` for the tests that neither kill it nor need a password
    (each start and stop of a server costs seconds); the others use conftest's own per test."""
    import orthanc_server

    orthanc_server.require()
    server = orthanc_server.OrthancServer(tmp_path_factory.mktemp("pacs")).start()
    server.upload(ct_files.files)
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path):
    return store_mod.ServerStore(tmp_path / "servers.json")


@pytest.fixture
def window(qtbot, tmp_path, store):
    from viewer.ui.remote_panel import RemotePanel

    w = editor_window(qtbot)
    w.remote.shutdown()
    w.remote = RemotePanel(w, store, RetrieveCache(tmp_path / "cache"))  # this test's own settings and cache
    w.remote_dock.setWidget(w.remote)
    w.show_remote()
    yield w
    close_quietly(w)


class Slow:
    """The real client, each arriving instance delayed (so a retrieve of 20 small files lasts long
    enough to see it arrive, and to Cancel it in the middle). Cancel is honoured after each instance:
    the DICOMweb client checks between network chunks, and 20 small files fit in one."""

    def __init__(self, client, delay):
        self._client, self._delay = client, delay

    def __getattr__(self, name):
        return getattr(self._client, name)

    def fetch(self, study_uid, series_uid, sop_uids, sink, should_stop=None):
        def slow_sink(data):
            sink(data)
            time.sleep(self._delay)
            if should_stop is not None and should_stop():
                raise Cancelled("retrieve cancelled")
        return self._client.fetch(study_uid, series_uid, sop_uids, slow_sink, should_stop=should_stop)


def slow_connect(monkeypatch, delay, small_buffer=False):
    """connect() gives Slow clients; ``small_buffer``: a 64 kB socket receive buffer, so the kernel
    cannot hold the rest of the answer when the server is killed (as tests/test_remote_dicomweb.py)."""
    import requests
    import viewer.remote as remote

    real = remote.connect

    def connect(server, secret=""):
        client = real(server, secret)
        if small_buffer:
            adapter = requests.adapters.HTTPAdapter()
            adapter.init_poolmanager(10, 10, socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)])
            client.session.mount("http://", adapter)
        return Slow(client, delay)
    monkeypatch.setattr(remote, "connect", connect)


def add_server(panel, name, url, user="", password=""):
    dialog = panel.show_servers()
    dialog.new_server()
    dialog.name.setText(name)
    dialog.url.setText(url)
    if user:
        dialog.auth.setCurrentIndex(dialog.auth.findData("basic"))
        dialog.username.setText(user)
        dialog.secret.setText(password)
    assert dialog.save() is not None, dialog.status.text()
    panel.server_combo.setCurrentText(name)
    return dialog


def search(qtbot, panel, **fields):
    for key, value in fields.items():
        getattr(panel, key).setText(value)
    with qtbot.waitSignal(panel.searched, timeout=20000) as got:
        panel.search()
    return got.args[0]


def list_series(qtbot, panel, study_uid):
    with qtbot.waitSignal(panel.series_listed, timeout=20000) as got:
        panel.study_item(study_uid).setExpanded(True)
    return got.args[1]


def test_server_dialog_saves_tests_and_guards_tls(qtbot, pacs, store):
    from viewer.ui.server_dialog import ServerDialog

    dialog = ServerDialog(None, store)
    qtbot.addWidget(dialog)
    dialog.name.setText("")
    assert dialog.save() is None and "name" in dialog.status.text()
    dialog.name.setText("local")
    dialog.url.setText(pacs.dicomweb_url + "/")
    assert dialog.save() is not None
    assert store.get("local").url == pacs.dicomweb_url and store.get("local").verify_tls
    with qtbot.waitSignal(dialog.test_done, timeout=20000) as got:
        dialog.test()
    assert got.args[0] is True and got.args[1].startswith("OK") and pacs.dicomweb_url in got.args[1]

    asked = []
    dialog.confirm = lambda *a: asked.append(a) or False
    dialog.verify_tls.setChecked(False)
    assert asked and dialog.verify_tls.isChecked()  # refused: stays on
    dialog.confirm = lambda *a: True
    dialog.verify_tls.setChecked(False)
    dialog.save()
    assert store.get("local").verify_tls is False

    # DIMSE: the form checks AE titles, and the echo goes over C-ECHO
    dialog.new_server()
    dialog.name.setText("dimse")
    dialog.kind.setCurrentIndex(dialog.kind.findData("dimse"))
    dialog.host.setText("127.0.0.1")
    dialog.port.setValue(pacs.dicom_port)
    dialog.called_ae.setText("")
    assert dialog.save() is None and "AE" in dialog.status.text()
    dialog.called_ae.setText(pacs.aet)
    assert dialog.save() is not None
    with qtbot.waitSignal(dialog.test_done, timeout=20000) as got:
        dialog.test()
    assert got.args[0] is True, got.args[1]
    dialog.port.setValue(1)  # nobody listens on port 1
    with qtbot.waitSignal(dialog.test_done, timeout=40000) as got:
        dialog.test()
    assert got.args[0] is False and "\n" not in got.args[1] and "127.0.0.1" in got.args[1]
    dialog.list.setCurrentRow([dialog.list.item(i).text() for i in range(dialog.list.count())].index("dimse"))
    dialog.remove_current()
    assert [s.name for s in store.load()] == ["local"]
    dialog.shutdown()


def test_a_wrong_password_shows_the_auth_reason_and_no_secret_is_written(qtbot, orthanc_factory, window, store):
    server = orthanc_factory(users={"alice": "right-horse-battery"})
    panel = window.remote
    dialog = add_server(panel, "secured", server.dicomweb_url, user="alice", password="wrong-password-123")
    kept = store_mod.keyring_available()
    assert ("keyring" in dialog.status.text()) and (kept or "session only" in dialog.status.text())
    assert "wrong-password-123" not in store.path.read_text() and "alice" in store.path.read_text()
    with qtbot.waitSignal(panel.failed, timeout=20000) as got:
        panel.search()
    message = got.args[0]
    assert "\n" not in message and "wrong-password-123" not in message
    assert server.dicomweb_url.split("//")[1].split("/")[0] in message or "secured" in message
    assert any(w in message.lower() for w in ("auth", "password", "credential", "401", "unauthori")), message
    assert panel.status.text().startswith("Search:") and "c0392b" in panel.status.styleSheet()
    with qtbot.waitSignal(panel.failed, timeout=20000) as got:
        panel.retrieve("1.2.3.4", "1.2.3.4.5")
    assert got.args[0] == message or "\n" not in got.args[0]
    qtbot.waitUntil(lambda: panel.early.done, timeout=5000)
    assert window.source is None and not panel.retrieving  # nothing arrived: nothing opened
    store_mod.forget_secret(store.get("secured"))
    dialog.list.setCurrentRow(0)
    dialog.secret.setText("right-horse-battery")
    dialog.save()
    hits = search(qtbot, panel)  # the right one works
    assert hits == []


def test_search_retrieve_shows_first_slices_early_and_keeps_slice_and_window(
        qtbot, pacs, window, ct_files, monkeypatch, tmp_path):
    panel = window.remote
    add_server(panel, "local", pacs.dicomweb_url)
    hits = search(qtbot, panel, patient_name="PHANTOM*")
    info = ct_files.volume.info
    ours = [h for h in hits if h.study_uid == info.study_uid]
    assert len(ours) == 1 and ours[0].patient_id == info.patient_id and ours[0].modalities == ["CT"]
    series = list_series(qtbot, panel, info.study_uid)
    assert [(s.series_uid, s.n_instances) for s in series] == [(info.series_uid, 20)]
    assert search(qtbot, panel, patient_name="NOBODY*") == []
    panel.patient_name.setText("")
    panel.dates.setText("1999")
    with qtbot.waitSignal(panel.failed, timeout=5000):
        panel.search()
    panel.dates.setText("")
    search(qtbot, panel, patient_id=info.patient_id)
    list_series(qtbot, panel, info.study_uid)

    slow_connect(monkeypatch, 0.15)
    panel.early_first = 4
    values = []
    panel.progress.valueChanged.connect(values.append)
    panel.tree.setCurrentItem(panel.series_item(info.series_uid))
    task = panel.retrieve_selected()
    assert task is not None and panel.retrieving
    with qtbot.waitSignal(panel.early.first_shown, timeout=30000):
        pass
    early = panel.early
    first = window.slice_view.volume.shape[0]
    assert panel.retrieving and 4 <= first < 20  # on screen before the retrieve ended
    # the user looks somewhere and sets a window while the rest arrives
    view = window.slice_view
    view.set_slice(1)
    view.set_window(123.0, 456.0)
    z_before = view.volume.index_to_world((1, 0, 0))
    with qtbot.waitSignal(panel.retrieved, timeout=30000) as got:
        pass
    report = got.args[0]
    qtbot.waitUntil(lambda: early.done, timeout=30000)
    assert report.fetched == 20 and len(report.files) == 20 and not report.missing
    assert values and max(values) == 20 and len(set(values)) > 3  # it moved as files landed
    vol = window.slice_view.volume
    assert vol.shape == (20, 64, 64) and window.slice_view.window == (123.0, 456.0)
    assert np.allclose(vol.index_to_world((window.slice_view.slice_index, 0, 0)), z_before)
    assert np.array_equal(vol.array, ct_files.volume.array)
    assert Path(window.source) == panel.cache.series_dir(info.study_uid, info.series_uid)
    assert len(window.scan_result.series) == 1 and len(window.scan_result.series[0].instances) == 20
    assert window.shown_series is not None and len(window.shown_series.instances) == 20

    # screenshot of the panel with its results (README): two studies, the CT's series listed
    mr = write_mr_study(tmp_path / "mr", shape=(6, 32, 32), seed=3)
    pacs.upload(mr.files)
    panel.patient_id.setText("")
    assert len(search(qtbot, panel, patient_name="PHANTOM*")) >= 2
    list_series(qtbot, panel, info.study_uid)
    panel.tree.setCurrentItem(panel.series_item(info.series_uid))
    shot = tmp_path / "remote-panel.png"  # (scripts/screenshot_remote.py makes the README's)
    panel.resize(560, 640)
    assert panel.grab().save(str(shot)) and shot.stat().st_size > 0


def test_cancel_keeps_what_arrived_and_the_next_retrieve_resumes(qtbot, pacs, window, ct_files, monkeypatch):
    panel = window.remote
    add_server(panel, "local", pacs.dicomweb_url)
    info = ct_files.volume.info
    slow_connect(monkeypatch, 0.2)
    landed = []
    panel._landed.connect(lambda done, total: landed.append(done))
    assert panel.retrieve(info.study_uid, info.series_uid, open_when_done=False) is not None
    qtbot.waitUntil(lambda: len(landed) >= 3, timeout=20000)
    with qtbot.waitSignal(panel.cancelled, timeout=20000):
        panel.cancel_button.click()
    here = len(panel.cache.present(info.study_uid, info.series_uid))
    assert 3 <= here < 20 and not panel.retrieving and "cancelled" in panel.status.text()
    monkeypatch.undo()
    with qtbot.waitSignal(panel.retrieved, timeout=30000) as got:
        panel.retrieve(info.study_uid)  # the whole study: resumes the series
    report = got.args[0]
    assert report.reused == here and report.fetched == 20 - here and len(report.files) == 20


def got_kinds(dialog) -> list[str]:
    return list(dialog.last[1].values())


def _series_on_server(pacs) -> list[dict]:
    out = []
    for sid in pacs.rest("/series"):
        s = pacs.rest(f"/series/{sid}")
        inst = s["Instances"][0]
        tags = pacs.rest(f"/instances/{inst}/simplified-tags")
        out.append({"modality": s["MainDicomTags"].get("Modality"), "sop_class": tags.get("SOPClassUID"),
                    "instances": s["Instances"]})
    return out


def test_send_results_stores_the_edited_seg_with_maps_and_report(qtbot, pacs, window, tmp_path):
    ct = write_ct_study(tmp_path / "ct", shape=(24, 64, 64), spacing=(10.0, 5.6, 5.6), seed=6)
    pacs.upload(ct.files)
    panel = window.remote
    add_server(panel, "local", pacs.dicomweb_url)
    info = ct.volume.info
    with qtbot.waitSignal(window.image_shown, timeout=30000):
        with qtbot.waitSignal(panel.retrieved, timeout=30000):
            panel.retrieve(info.study_uid, info.series_uid)
    qtbot.waitUntil(lambda: panel.early.done and not window.busy, timeout=30000)
    with qtbot.waitSignal(window.analysis.analysis_finished, timeout=180000):
        window.analysis.action.trigger()
    # the user edits the segmentation: a box of a new label, painted by hand
    lm, vol = window.editor.session.lookup(window.slice_view, create=True)
    before = int(np.count_nonzero(lm.array))
    value = lm.add_label("hand drawn")
    value = value if isinstance(value, int) else lm.value_of("hand drawn")
    with lm.edit("paint") as e:
        e.write((10, 14, 20, 30, 20, 30), None, value)
    edited = lm.array.copy()
    assert int(np.count_nonzero(edited == value)) == 400

    dialog = window.show_send_results()
    assert "your edits" in dialog.what.text()
    n_before = pacs.instance_count()
    with qtbot.waitSignal(dialog.sent, timeout=120000) as got:
        dialog.send("local")
    report = got.args[0]
    assert report.stored and not report.failed, dialog.status.text()
    assert dialog.status.text().startswith("Stored")
    assert pacs.instance_count() == n_before + len(report.stored)
    found = _series_on_server(pacs)
    seg_series = next(s for s in found if s["sop_class"] == SEG_CLASS)
    import highdicom as hd

    data = pacs._request(f"/instances/{seg_series['instances'][0]}/file")
    ds = pydicom.dcmread(io.BytesIO(data))
    seg = hd.seg.Segmentation.from_dataset(ds)  # highdicom reads it back
    names = [d.SegmentLabel for d in seg.SegmentSequence]
    assert "hand drawn" in names, names
    number = names.index("hand drawn") + 1
    kinds = {d.SegmentLabel: d.SegmentAlgorithmType for d in seg.SegmentSequence}
    assert kinds["hand drawn"] == "MANUAL", kinds  # the model never drew it: the SEG says so
    frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
    mine = [i for i, g in enumerate(ds.PerFrameFunctionalGroupsSequence)
            if g.SegmentIdentificationSequence[0].ReferencedSegmentNumber == number]
    assert int(sum(np.count_nonzero(frames[i]) for i in mine)) == 400  # exactly the painted box
    assert before > 0  # the AI's own segmentation was there to edit
    # ... and its heatmaps as Parametric Maps, its scores as a TID 1500 SR
    modalities = {s["modality"] for s in found}
    assert "SR" in modalities, modalities
    assert any(s["sop_class"] == PM_CLASS for s in found), [s["sop_class"] for s in found]
    assert {"SEG", "Parametric Map", "SR"} <= set(got_kinds(dialog)), dialog.status.text()
    # the report's volume of the hand-drawn label is the edited one (400 voxels), as in the SEG
    from viewer.core.export.dicom_sr import read_analysis_report

    sr_series = next(s for s in found if s["modality"] == "SR")
    sr_path = tmp_path / "report.dcm"
    sr_path.write_bytes(pacs._request(f"/instances/{sr_series['instances'][0]}/file"))
    report = read_analysis_report(sr_path)
    values = {k: v for entry in report["series"].values() for group in ("scores", "volumes")
              for k, v in entry.get(group, {}).items() if "hand drawn" in k}
    assert values and all(abs(v - 400 * np.prod(vol.spacing) / 1000) < 1e-3 for v in values.values()), values


def test_a_dimse_node_is_searched_and_retrieved_the_same_way(qtbot, pacs, window, ct_files):
    panel = window.remote
    dialog = panel.show_servers()
    dialog.new_server()
    dialog.name.setText("dimse")
    dialog.kind.setCurrentIndex(dialog.kind.findData("dimse"))
    dialog.host.setText("127.0.0.1")
    dialog.port.setValue(pacs.dicom_port)
    dialog.called_ae.setText(pacs.aet)
    assert dialog.save() is not None and panel.server_combo.currentText() == "dimse"
    panel.modality.setCurrentText("ct")
    info = ct_files.volume.info
    hits = search(qtbot, panel)
    assert info.study_uid in [h.study_uid for h in hits] and all("CT" in h.modalities for h in hits)
    panel.modality.setCurrentText("MR")
    assert info.study_uid not in [h.study_uid for h in search(qtbot, panel)]
    panel.modality.setCurrentText("")
    search(qtbot, panel)
    panel.tree.setCurrentItem(panel.study_item(info.study_uid))
    with qtbot.waitSignal(panel.retrieved, timeout=30000) as got:
        panel.retrieve_study_button.click()
    assert got.args[0].fetched == 20
    qtbot.waitUntil(lambda: panel.early.done and not window.busy, timeout=30000)
    assert window.slice_view.volume.shape == (20, 64, 64)
    assert Path(window.source) == panel.cache.study_dir(info.study_uid)


def test_a_server_killed_mid_retrieve_gives_one_line_and_shows_what_arrived(qtbot, orthanc, window, tmp_path,
                                                                         monkeypatch):
    ct = write_ct_study(tmp_path / "big", shape=(20, 512, 512), spacing=(5.0, 0.7, 0.7), seed=2)
    orthanc.upload(ct.files)  # 10 MB: more than the sockets hold, so the kill cuts the transfer
    panel = window.remote
    add_server(panel, "local", orthanc.dicomweb_url)
    info = ct.volume.info
    slow_connect(monkeypatch, 0.2, small_buffer=True)
    landed = []
    panel._landed.connect(lambda done, total: landed.append(done))
    panel.early_first = 3
    panel.retrieve(info.study_uid, info.series_uid)
    qtbot.waitUntil(lambda: len(landed) >= 5, timeout=20000)
    with qtbot.waitSignal(panel.failed, timeout=30000) as got:
        orthanc.kill()
    here = len(panel.cache.present(info.study_uid, info.series_uid))
    assert "\n" not in got.args[0] and 5 <= here < 20, (got.args[0], here)
    qtbot.waitUntil(lambda: panel.early.done and not window.busy, timeout=30000)
    assert window.slice_view.volume.shape[0] == here  # all that arrived is on screen, nothing else
