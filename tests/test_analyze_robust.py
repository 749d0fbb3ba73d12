"""`lightbox analyze` keeps every good result: one unreadable series, or one series whose outputs
cannot be written, is reported by name while the others are analysed and written whole;
results.json is always written and lists what failed; no hidden staging folder is left behind."""
from __future__ import annotations

import contextlib
import errno
import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless

import viewer.analysis.batch as batch
import viewer.analysis.outputs as outputs
from viewer.analysis.results import AnalysisResult, Overlay, SeriesResult
from viewer.cli import main
from viewer.core.errors import Cancelled, LoadError
from viewer.core.io import scan
from viewer.core.synthetic import write_ct_study
from viewer.core.volume import Volume

SMALL = dict(shape=(48, 96, 96), spacing=(6.25, 3.73, 3.73))


def corrupt_pixels(folder: Path) -> None:
    """Every file of a series claims RLE and holds one bogus fragment: the scan lists the series,
    loading its pixels fails."""
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = RLELossless
        ds.PixelData = encapsulate([b"\x00" * 64])
        ds.save_as(f, enforce_file_format=False)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """Two good CT series (6.25 mm and 7.5 mm) and one whose pixel files are all corrupt."""
    root = tmp_path_factory.mktemp("src")
    write_ct_study(root / "a", seed=5, **SMALL)
    write_ct_study(root / "b", shape=(40, 96, 96), spacing=(7.5, 3.73, 3.73), seed=7)
    write_ct_study(root / "bad", seed=6, **SMALL)
    corrupt_pixels(root / "bad")
    return root


def analyze(src, out) -> tuple[int, list[str], dict | None]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["analyze", str(src), "--out", str(out), "--device", "cpu"])
    results = out / "results.json"
    return code, err.getvalue().splitlines(), json.loads(results.read_text()) if results.exists() else None


def hidden(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


def test_an_unreadable_series_is_listed_and_the_others_are_analysed_and_written(src, tmp_path):
    out = tmp_path / "out"
    stale = out / f"{outputs.STAGING_PREFIX}CT_Axial_6.25mm-dead"  # as a killed run leaves it
    stale.mkdir(parents=True)
    (stale / "segmentation.nii.gz").write_bytes(b"half")
    code, err, data = analyze(src, out)
    assert code == 0, err
    assert not any("Traceback" in line for line in err), err
    assert data is not None and data["failed"] == []
    assert {entry["title"] for r in data["results"] for entry in r["series"].values()} == \
        {"CT Axial 6.25mm", "CT Axial 7.5mm"}
    (line,) = data["not_analysed"]
    assert str(src / "bad") in line and "cannot decode" in line
    assert any(f"not analysed: {line}" in e for e in err)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["CT_Axial_6.25mm", "CT_Axial_6.25mm_report",
                                                                   "CT_Axial_7.5mm", "CT_Axial_7.5mm_report"]
    for r in data["results"]:
        for entry in r["series"].values():
            assert entry["files"] and all((out / f).is_file() for f in entry["files"].values())
    assert hidden(out) == []  # the stale staging folder is gone, and no new one is left


def test_a_series_whose_seg_cannot_be_written_is_absent_and_listed_and_a_rerun_replaces(src, tmp_path,
                                                                                          monkeypatch):
    out = tmp_path / "out"
    code, err, first = analyze(src, out)  # a complete run first: the second replaces it
    assert code == 0, err
    old_a = {p.name: p.stat().st_mtime_ns for p in (out / "CT_Axial_6.25mm").iterdir()}
    (out / "notes.txt").write_text("mine")  # not Lightbox's: never touched
    real = outputs.write_seg

    def failing(ov, sr, series, path):
        if sr.title == "CT Axial 7.5mm":
            raise RuntimeError("SEG builder broke")
        return real(ov, sr, series, path)

    monkeypatch.setattr(outputs, "write_seg", failing)
    code, err, data = analyze(src, out)
    assert code == 0, err
    assert not any("Traceback" in line for line in err), err
    assert data["failed"] == [{"series": "CT Axial 7.5mm", "reason": "RuntimeError: SEG builder broke"}]
    assert any("not written: CT Axial 7.5mm" in e for e in err)
    assert not (out / "CT_Axial_7.5mm").exists()  # neither this run's half nor the last run's folder
    a = out / "CT_Axial_6.25mm"
    assert sorted(p.name for p in a.iterdir()) == sorted(old_a)
    assert all(p.stat().st_mtime_ns >= old_a[p.name] for p in a.iterdir())
    assert (out / "notes.txt").read_text() == "mine"
    written = [f for r in data["results"] for e in r["series"].values() for f in e["files"].values()]
    assert written and all(f.startswith("CT_Axial_6.25mm/") and (out / f).is_file() for f in written)
    assert hidden(out) == []


def test_nothing_analysable_exits_2_with_one_line_and_results_json_says_why(src, tmp_path):
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    for f in (src / "bad").glob("*.dcm"):
        (only_bad / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "out"
    code, err, data = analyze(only_bad, out)
    assert code == 2
    assert not any("Traceback" in line for line in err), err
    assert err[-1].startswith("lightbox: nothing analysed: CT Axial 6.25mm: ") and "cannot decode" in err[-1]
    assert data is not None and data["results"] == [] and data["failed"] == []
    (line,) = data["not_analysed"]
    assert "cannot decode" in line
    assert hidden(out) == []


# -- fast checks of the two pieces, without models -------------------------------------------------
def test_analyze_scan_turns_any_error_of_one_series_into_a_line(src, monkeypatch):
    result = scan(src)
    calls = []

    def fake_load(series, should_stop=None):
        calls.append(series.label())
        if series.label() == "CT Axial 7.5mm":
            raise MemoryError("out of memory")
        return Volume(np.zeros((2, 4, 4), np.float32))

    def fake_ct(series, volume, device, progress=None, should_stop=None, models=None):
        return AnalysisResult("ct", "1.2", {series.key: SeriesResult(series.key, series.uid, series.label(), volume)})

    monkeypatch.setattr(batch, "load_series", fake_load)
    monkeypatch.setattr(batch, "analyze_volume", fake_ct)
    analyses, skipped = batch.analyze_scan(result, "cpu")
    assert len(calls) == 3 and len(analyses) == 2
    assert skipped == ["CT Axial 7.5mm: MemoryError: out of memory"]
    tried: list[str] = []  # tried and failed, as opposed to "no model for this kind"
    batch.analyze_scan(result, "cpu", failures=tried)
    assert tried == skipped

    def cancel(series, should_stop=None):
        raise Cancelled("cancelled")

    monkeypatch.setattr(batch, "load_series", cancel)
    with pytest.raises(Cancelled):
        batch.analyze_scan(result, "cpu")
    monkeypatch.setattr(batch, "load_series", lambda s, should_stop=None: (_ for _ in ()).throw(LoadError(s.key, "bad")))
    analyses, skipped = batch.analyze_scan(result, "cpu")
    assert analyses == [] and len(skipped) == 3 and all(line.endswith(": bad") for line in skipped)


def _result(title: str) -> AnalysisResult:
    vol = Volume(np.zeros((3, 8, 8), np.float32), spacing=(2.0, 1.0, 1.0))
    labels = np.zeros(vol.shape, np.uint8)
    labels[1, 2:5, 2:5] = 1
    sr = SeriesResult(f"key-{title}", f"1.2.{len(title)}", title, vol,
                      [Overlay("segmentation", "labels", labels, "m 1", ["background", "organ"])])
    return AnalysisResult("ct", "1.2", {sr.series_key: sr})


def test_a_disk_error_midway_through_one_series_leaves_neither_its_files_nor_a_staging_folder(tmp_path,
                                                                                              monkeypatch):
    real = outputs.write_series_outputs

    def disk_full(sr, series, folder):
        files = real(sr, series, folder)  # its NIfTI is already on disk, in the staging folder
        if sr.title == "two":
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / "more.nii.gz"))
        return files

    monkeypatch.setattr(outputs, "write_series_outputs", disk_full)
    results = [_result("one"), _result("two"), _result("three")]
    path = outputs.write_outputs(results, {}, tmp_path / "a", extra={"not_analysed": ["x: no model"]})
    data = json.loads(path.read_text())
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["one", "results.json", "three"]
    assert data["not_analysed"] == ["x: no model"]
    assert [f["series"] for f in data["failed"]] == ["two"] and "No space left" in data["failed"][0]["reason"]
    assert [e["files"] for r in data["results"] for e in r["series"].values()][1] == {}
    failed: list[dict] = []  # the same entries for the caller, with the folder that was not written
    outputs.write_outputs(results, {}, tmp_path / "b", failed=failed)
    assert [(f["series"], f["folder"]) for f in failed] == [("two", "two")]
