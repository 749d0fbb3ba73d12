"""One exported case is one commit: a failed or killed export leaves the dataset as it was (or the
whole case), the next open sweeps what a kill left, and exporting the same thing twice gives one case.

The kill test runs the real `lightbox export` in a child process and kills it with SIGKILL at times
spread over its run, when its staging folder first appears, and (deterministically, by a child
script that ends itself with ``os._exit`` right after its k-th rename) at every rename of the commit.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from viewer.cli import main
from viewer.core.export.commit import STAGING_PREFIX
from viewer.core.export.dataset import DatasetWriter, ExportError, existing_datasets
from viewer.core.io import load_series, scan
from viewer.core.synthetic import write_ct_study

REPO = Path(__file__).resolve().parents[1]
NAME = "Dataset501_Lightbox"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A small CT study and a corrected label map of it (NIfTI), as `lightbox export` takes them."""
    from viewer.core.export.nifti import write_label_map

    tmp = tmp_path_factory.mktemp("study")
    src = tmp / "ct"
    write_ct_study(src, shape=(16, 48, 48), spacing=(10.0, 7.0, 7.0), seed=5)
    series = scan(src).series[0]
    volume = load_series(series)
    labels = np.zeros(volume.shape, np.uint8)
    labels[5:10, 12:30, 12:30] = 1
    other = labels.copy()
    other[5:10, 30:34, 12:30] = 1
    return {"src": src, "series": series, "volume": volume, "labels": labels,
            "seg": write_label_map(labels, volume, tmp / "edited.nii.gz"),
            "seg2": write_label_map(other, volume, tmp / "edited2.nii.gz")}


def _args(study, out, seg="seg"):
    return ["export", str(study["src"]), "--labels", str(study[seg]), "--names", "liver", "--out", str(out)]


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def check_dataset(out: Path) -> list[str]:
    """Open the dataset as the app does, then check that every listed case is whole and that nothing
    else is there; returns the case ids."""
    names = existing_datasets(out)  # the export dialog's listing: finishes or undoes a commit first
    ds = out / NAME
    writer = DatasetWriter(out, NAME, create=False)  # the dialog's / export's open
    if not (ds / "dataset.json").exists():
        assert names == [] and writer.case_ids() == []
        leftovers = [p for p in out.rglob("*") if p.is_file()]
        assert leftovers == [], leftovers
        return []
    assert names == [NAME]
    cases = writer.case_ids()
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["numTraining"] == len(cases)
    datalist = json.loads((ds / "datalist.json").read_text())["training"]
    assert [e["label"] for e in datalist] == [f"labelsTr/{c}.nii.gz" for c in cases]
    records = [json.loads(line) for line in (ds / "provenance.jsonl").read_text().splitlines()]
    assert sorted(r["case"] for r in records) == cases  # one line per case
    expected = {ds / "dataset.json", ds / "datalist.json", ds / "provenance.jsonl"}
    for c in cases:
        expected |= {ds / "imagesTr" / f"{c}_0000.nii.gz", ds / "labelsTr" / f"{c}.nii.gz",
                     ds / "segTr" / f"{c}.seg.dcm"}
    found = {p for p in out.rglob("*") if p.is_file()}
    assert found == expected, (sorted(map(str, found - expected)), sorted(map(str, expected - found)))
    assert not [p for p in out.rglob(".*")], "hidden leftovers"
    return cases


# -- a failed export ------------------------------------------------------------------------------
def _failing_seg(monkeypatch):
    import viewer.core.export.dicom_seg as dicom_seg

    def fail(*_a, **_k):
        raise ValueError("cannot build a DICOM SEG for series 1 CT: PatientBirthDate is missing")

    monkeypatch.setattr(dicom_seg, "write_dicom_seg", fail)


def test_an_export_whose_seg_fails_leaves_nothing(tmp_path, study, monkeypatch, capsys):
    out = tmp_path / "out"
    _failing_seg(monkeypatch)
    assert main(_args(study, out)) == 2
    assert "cannot build a DICOM SEG" in capsys.readouterr().err
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no image, no label, no dataset.json
    assert existing_datasets(out) == []

    # into a dataset that has a case: it stays exactly as it was
    monkeypatch.undo()
    assert main(_args(study, out)) == 0
    before = _files(out)
    _failing_seg(monkeypatch)
    assert main(_args(study, out, "seg2")) == 2
    assert _files(out) == before
    monkeypatch.undo()
    assert check_dataset(out) == ["CASE_0001"]


def test_an_exam_whose_seg_fails_writes_no_rows_or_images(tmp_path, monkeypatch):
    from viewer.core.export.training import export_exam
    from viewer.core.mammo import four_view
    from viewer.core.synthetic import write_mammo_exam

    write_mammo_exam(tmp_path / "mg", (64, 48), seed=3)
    views = {n: (load_series(s), s) for n, s in four_view(scan(tmp_path / "mg").studies[0]).items()}
    edited = np.zeros(views["LCC"][0].shape, np.uint8)
    edited[0, 20:30, 10:20] = 1
    _failing_seg(monkeypatch)
    with pytest.raises(ValueError, match="cannot build a DICOM SEG"):
        export_exam(tmp_path / "ds", views, {"LCC": "suspicious", "exam": "suspicious"},
                    labels={"LCC": (edited, {1: "mass"}, None)})
    assert [p for p in tmp_path.joinpath("ds").rglob("*") if p.is_file()] == []


# -- the same export twice ------------------------------------------------------------------------
def test_the_same_export_twice_is_one_case_and_new_labels_a_new_one(tmp_path, study):
    from viewer.core.export.training import export_case

    out = tmp_path / "out"
    first = export_case(out, study["volume"], study["labels"], {1: "liver"}, study["series"], keep_mapping=True)
    again = export_case(out, study["volume"], study["labels"], {1: "liver"}, study["series"], keep_mapping=True)
    assert first["case"] == again["case"] == "CASE_0001"
    ds = out / NAME
    records = [json.loads(line) for line in (ds / "provenance.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["content_key"].startswith("sha256:")
    assert sorted(p.name for p in ds.glob("deid-mapping-*")) == ["deid-mapping-CASE_0001.json"]
    assert oct((ds / "deid-mapping-CASE_0001.json").stat().st_mode & 0o777) == "0o600"
    # the key is made of what the dataset holds: no UID of the source in it or anywhere in provenance
    assert study["series"].uid not in (ds / "provenance.jsonl").read_text()

    # a changed label map of the same image is another sample: a new case, the first one kept
    other = study["labels"].copy()
    other[0, :4, :4] = 1
    new = export_case(out, study["volume"], other, {1: "liver"}, study["series"])
    assert new["case"] == "CASE_0002"
    assert len((ds / "provenance.jsonl").read_text().splitlines()) == 2
    for p in ds.glob("deid-mapping-*"):
        p.unlink()  # check_dataset expects only the case files
    assert check_dataset(out) == ["CASE_0001", "CASE_0002"]


def test_the_same_exam_twice_is_one_exam(tmp_path):
    from viewer.core.export.training import export_exam
    from viewer.core.mammo import four_view
    from viewer.core.synthetic import write_mammo_exam

    write_mammo_exam(tmp_path / "mg", (64, 48), seed=3)
    views = {n: (load_series(s), s) for n, s in four_view(scan(tmp_path / "mg").studies[0]).items()}
    edited = np.zeros(views["LCC"][0].shape, np.uint8)
    edited[0, 20:30, 10:20] = 1
    args = (tmp_path / "ds", views, {"LCC": "suspicious", "exam": "suspicious"})
    first = export_exam(*args, labels={"LCC": (edited, {1: "mass"}, None)}, model="mammo-exam 1")
    ds = first["dataset"]
    before = sorted(p.relative_to(ds) for p in ds.rglob("*") if p.is_file())
    again = export_exam(*args, labels={"LCC": (edited, {1: "mass"}, None)}, model="mammo-exam 1")
    assert again["case"] == first["case"] == "CASE_0001"
    assert again["segmentations"]["LCC"]["case"] == "CASE_0001_LCC"
    assert sorted(p.relative_to(ds) for p in ds.rglob("*") if p.is_file()) == before
    records = [json.loads(line) for line in (ds / "provenance.jsonl").read_text().splitlines()]
    assert [r["case"] for r in records] == ["CASE_0001", "CASE_0001_LCC"]
    assert len(json.loads((ds / "classification.json").read_text())["classification"]) == 2
    # another class for the exam is another export: a new exam case
    assert export_exam(tmp_path / "ds", views, {"exam": "normal"})["case"] == "CASE_0002"


def test_two_exports_at_once_into_one_dataset_take_turns(tmp_path, study):
    """The app and the CLI exporting into one dataset: the dataset's lock makes them take turns, and
    the second reads what the first wrote (two cases, both listed, numbered apart)."""
    import threading

    from viewer.core.export.training import export_case

    out, results, errors = tmp_path / "out", [], []
    other = study["labels"].copy()
    other[0, :4, :4] = 1

    def run(labels):
        try:
            results.append(export_case(out, study["volume"], labels, {1: "liver"}, study["series"])["case"])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(lab,)) for lab in (study["labels"], other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and sorted(results) == ["CASE_0001", "CASE_0002"]
    assert check_dataset(out) == ["CASE_0001", "CASE_0002"]


# -- what a kill leaves, swept on the next open -----------------------------------------------------
def test_stale_staging_and_partial_files_are_swept_on_open(tmp_path, study):
    out = tmp_path / "out"
    assert main(_args(study, out)) == 0
    ds = out / NAME
    before = _files(out)
    staging = ds / f"{STAGING_PREFIX}abc123"  # a kill while staging: no journal
    staging.mkdir()
    (staging / "001.part").write_bytes(b"\x1f\x8b" + b"0" * 1000)
    (staging / "002.part.nii").write_bytes(b"0" * 1000)
    partial = ds / "imagesTr" / ".tmpk2j3.partial.CASE_0002_0000.nii.gz"  # what older versions left
    partial.write_bytes(b"0" * 1000)
    (ds / "segTr" / ".seg-x1y2").mkdir()
    (ds / "segTr" / ".seg-x1y2" / "seg.dcm").write_bytes(b"DICM")
    assert DatasetWriter(out, NAME, create=False).case_ids() == ["CASE_0001"]
    assert _files(out) == before and not list(ds.rglob(".*"))


def test_an_undo_cut_short_is_finished_on_open(tmp_path, study, monkeypatch):
    """A rename fails half-way through a commit and the undo is interrupted too: the next open
    finishes the undo from the journal and the backups (the provenance gets its old bytes back)."""
    import errno

    import viewer.core.export.commit as commit

    out = tmp_path / "out"
    assert main(_args(study, out)) == 0
    before = _files(out)
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith("datalist.json") and STAGING_PREFIX in str(src):
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst)

    def cut_short(*_a):
        raise OSError(errno.EIO, "killed while undoing")

    monkeypatch.setattr(commit.os, "replace", replace)
    monkeypatch.setattr(commit, "_roll_back", cut_short)
    assert main(_args(study, out, "seg2")) == 2  # a new case: image, SEG, provenance, label moved, then this
    monkeypatch.undo()
    assert (out / NAME / "labelsTr" / "CASE_0002.nii.gz").exists()  # half-applied, until the next open
    assert check_dataset(out) == ["CASE_0001"]
    assert _files(out) == before


def test_a_live_writers_staging_folder_is_left_alone(tmp_path, study):
    import fcntl

    out = tmp_path / "out"
    assert main(_args(study, out)) == 0
    ds = out / NAME
    staging = ds / f"{STAGING_PREFIX}live"
    staging.mkdir()
    fd = os.open(ds, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as an export in progress holds it
        existing_datasets(out)
        DatasetWriter(out, NAME, create=False)
        assert staging.is_dir()
    finally:
        os.close(fd)
    DatasetWriter(out, NAME, create=False)
    assert not staging.exists()


# -- kill tests -------------------------------------------------------------------------------------
# the child: `lightbox export`, ending itself right after its KILL_AFTER_REPLACE-th os.replace (0: never);
# it prints how many it made when it ends normally
CHILD = """
import os, sys
real, n, k = os.replace, 0, int(os.environ.get("KILL_AFTER_REPLACE", "0"))
def replace(a, b):
    global n
    real(a, b)
    n += 1
    if n == k:
        os._exit(9)
os.replace = replace
from viewer.cli import main
code = main(sys.argv[1:])
print("renames", n, file=sys.stderr)
sys.exit(code)
"""


def _child(args, env_extra=None) -> subprocess.Popen:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _no_temp_named_like_a_case(out: Path) -> None:
    """Before any open: files not yet in place never end in .nii.gz (a listing would take them)."""
    for p in out.rglob("*"):
        hidden = any(part.startswith(".") for part in p.relative_to(out).parts)
        if hidden and p.is_file():
            assert not p.name.endswith(".nii.gz"), p


def _after_kill(out: Path, study) -> str:
    """What a kill left: no temp named like a case; the dataset whole on open; a re-run gives one case."""
    _no_temp_named_like_a_case(out)
    cases = check_dataset(out)
    assert cases in ([], ["CASE_0001"])
    assert main(_args(study, out)) == 0
    assert check_dataset(out) == ["CASE_0001"]
    return "case" if cases else "nothing"


def _staging_began(out: Path) -> bool:
    return (out / NAME).is_dir() and any(p.name.startswith(STAGING_PREFIX) for p in (out / NAME).iterdir())


def _run_watching(args, out: Path, kill_after: float | None = None, env_extra=None):
    """Run the child; SIGKILL it ``kill_after`` seconds after its staging folder first appears (None:
    let it end). Returns (the child, seconds from the staging folder's appearance to its removal,
    i.e. staging and committing)."""
    child = _child(args, env_extra)
    deadline = time.monotonic() + 180
    seen = gone = None
    while child.poll() is None and time.monotonic() < deadline:
        staging = _staging_began(out)
        if seen is None and staging:
            seen = time.monotonic()
        if seen is not None and gone is None and not staging:
            gone = time.monotonic()
        if seen is not None and kill_after is not None and time.monotonic() >= seen + kill_after:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    _, err = child.communicate(timeout=60)
    child.stderr_text = err
    return child, ((gone or time.monotonic()) - seen if seen is not None else 0.0)


def test_kills_during_an_export_leave_a_whole_case_or_none(tmp_path, study):
    results = {}
    # a full run: how many renames it makes, how long it stages and commits
    full, staged_for = _run_watching(_args(study, tmp_path / "full"), tmp_path / "full")
    assert full.returncode == 0, full.stderr_text
    renames = int(full.stderr_text.split("renames")[-1].split()[0])
    finals = 6  # image, SEG, provenance, label, datalist, dataset.json; before them the commit journal
    assert renames > finals + 1  # and before that the staged SEG's own renames
    assert check_dataset(tmp_path / "full") == ["CASE_0001"]

    # deterministic: right after every rename (the staged SEG, the journal, each file put in place);
    # these children run side by side: each ends itself at its point, whatever the load
    children = {k: _child(_args(study, tmp_path / f"after-rename-{k}"), {"KILL_AFTER_REPLACE": str(k)})
                for k in range(1, renames + 1)}
    for k, child in children.items():
        child.communicate(timeout=180)
        assert child.returncode == 9
        results[f"after rename {k}"] = _after_kill(tmp_path / f"after-rename-{k}", study)
    journal = renames - finals
    assert all(results[f"after rename {k}"] == ("case" if k >= journal else "nothing") for k in children), results

    # SIGKILL when the staging folder appears, and at times spread over staging and committing
    for fraction in (0.0, 0.33, 0.66, 0.95):
        out = tmp_path / f"staging+{fraction}"
        _run_watching(_args(study, out), out, kill_after=fraction * staged_for)
        results[f"{fraction:.0%} of {staged_for:.2f} s after staging began"] = _after_kill(out, study)
    print(f"{len(results)} kill points:", results)
