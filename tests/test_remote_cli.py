"""`lightbox remote find/get/send/echo` and `analyze --send` against a real Orthanc, over DICOMweb and DIMSE:
the headless half of "find a study, retrieve it, analyse it, send the results back"."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pydicom
import pytest

from viewer.core.synthetic import write_ct_study, write_mammo_exam


def run_cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "viewer.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def ct_on_server(orthanc, tmp_path):
    files = write_ct_study(tmp_path / "src", shape=(16, 48, 48), spacing=(6.0, 4.0, 4.0), seed=2).files
    orthanc.upload(files)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return orthanc, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.PatientName), files


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_find_then_get_then_get_again_fetches_nothing(ct_on_server, tmp_path, protocol):
    orthanc, study, series, name, files = ct_on_server
    url = orthanc.dicomweb_url if protocol == "dicomweb" else orthanc.dimse_url
    found = run_cli("remote", "find", url, "--patient", name[:3] + "*", "--modality", "CT", "--series", "--json")
    assert found.returncode == 0, found.stderr
    studies = json.loads(found.stdout)["studies"]
    assert [s["study_uid"] for s in studies] == [study]
    assert studies[0]["series"][0]["series_uid"] == series
    assert studies[0]["series"][0]["n_instances"] == len(files)
    out = tmp_path / f"got-{protocol}"
    got = run_cli("remote", "get", url, "--study", study, "--series", series, out, "--json")
    assert got.returncode == 0, got.stderr
    summary = json.loads(got.stdout)
    assert summary["fetched"] == len(files) and summary["files"] == len(files)
    sent = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f).pixel_array.tobytes() for f in files}
    got_files = sorted(out.rglob("*.dcm"))
    assert {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f).pixel_array.tobytes() for f in got_files} == sent
    again = run_cli("remote", "get", url, "--study", study, out, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["fetched"] == 0 and json.loads(again.stdout)["reused"] == len(files)
    info = run_cli("info", out, "--json")
    assert info.returncode == 0 and series in info.stdout


def test_server_failures_are_exit_2_with_one_line(orthanc_factory, ct_on_server, tmp_path):
    orthanc, study, *_ = ct_on_server
    locked = orthanc_factory(users={"alice": "right-pw"})
    cases = {
        "unreachable": ("remote", "find", "http://127.0.0.1:9/dicom-web"),
        "dimse unreachable": ("remote", "echo", "dicom://ORTHANC@127.0.0.1:9"),
        "missing study": ("remote", "get", orthanc.dicomweb_url, "--study", "1.2.3.999", tmp_path / "x"),
        "missing study dimse": ("remote", "get", orthanc.dimse_url, "--study", "1.2.3.999", tmp_path / "y"),
        "no credentials": ("remote", "find", locked.dicomweb_url),
    }
    for what, args in cases.items():
        proc = run_cli(*args)
        assert proc.returncode == 2, (what, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lightbox: "), (what, proc.stderr)
        assert "Traceback" not in proc.stderr
    bad = run_cli("remote", "find", locked.dicomweb_url, "--user", "alice",
                  env={"LIGHTBOX_REMOTE_PASSWORD": "wrong-pw"})
    assert bad.returncode == 2 and "wrong-pw" not in bad.stderr + bad.stdout
    assert "401" in bad.stderr or "credential" in bad.stderr.lower() or "auth" in bad.stderr.lower()
    good = run_cli("remote", "find", locked.dicomweb_url, "--user", "alice", "--json",
                   env={"LIGHTBOX_REMOTE_PASSWORD": "right-pw"})
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["studies"] == []


def test_send_files_then_find_them(orthanc, tmp_path):
    files = write_ct_study(tmp_path / "src", shape=(4, 32, 32), seed=4).files
    for url in (orthanc.dicomweb_url, orthanc.dimse_url):
        proc = run_cli("remote", "send", url, tmp_path / "src")
        assert proc.returncode == 0, proc.stderr
    assert orthanc.instance_count() == len(files)


def test_analyze_send_stores_seg_sr_and_parametric_maps(orthanc, tmp_path):
    """The headless flow: get a study, analyse it, send the DICOM results back, find them with a query."""
    write_mammo_exam(tmp_path / "src", (256, 192), seed=3, lesion_side="L")
    orthanc.upload(sorted((tmp_path / "src").rglob("*.dcm")))
    study = str(pydicom.dcmread(next((tmp_path / "src").rglob("*.dcm")), stop_before_pixels=True).StudyInstanceUID)
    got = run_cli("remote", "get", orthanc.dicomweb_url, "--study", study, tmp_path / "got", "--quiet")
    assert got.returncode == 0, got.stderr
    proc = run_cli("analyze", tmp_path / "got", "--out", tmp_path / "out", "--device", "cpu",
                   "--send", orthanc.dicomweb_url)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    paths = sorted((tmp_path / "out").rglob("*.dcm"))
    written = {p.name for p in paths}
    assert any(n.endswith(".seg.dcm") for n in written) and any(n.endswith(".pm.dcm") for n in written)
    assert any(n.endswith(".sr.dcm") for n in written), written
    found = run_cli("remote", "find", orthanc.dicomweb_url, "--study", study, "--series", "--json")
    modalities = {s["modality"] for s in json.loads(found.stdout)["studies"][0]["series"]}
    assert {"SEG", "SR"} <= modalities, modalities
    assert orthanc.instance_count() == 4 + len(paths), (results, paths)  # every object sent, each stored once


def test_analyze_send_to_a_dead_server_fails_before_the_analysis(tmp_path):
    write_ct_study(tmp_path / "src", shape=(8, 32, 32), seed=1)
    proc = run_cli("analyze", tmp_path / "src", "--out", tmp_path / "out", "--send", "http://127.0.0.1:9/dicom-web")
    assert proc.returncode == 2 and "--send" in proc.stderr
    assert not (tmp_path / "out").exists()
