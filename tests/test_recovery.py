"""Recovery snapshots and the autosaver: never lose a segmentation to a crash."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import OBLIQUE

from viewer.core import recovery as rec
from viewer.core.recovery import (
    Autosaver,
    RecoveryError,
    RecoverySnapshot,
    discard_series,
    discard_snapshot,
    find_snapshot,
    list_snapshots,
    load_snapshot,
    mark_clean,
    recovery_dir,
    save_snapshot,
)

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("recovery_child.py")
LABELS = [{"value": 1, "name": "liver", "color": (200, 80, 40), "opacity": 0.6, "visible": True, "locked": False},
          {"value": 2, "name": "lesion", "color": [255, 255, 0], "opacity": 1.0, "visible": False, "locked": True}]


def child_module():
    spec = importlib.util.spec_from_file_location("recovery_child", CHILD)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def blobs(shape=(20, 64, 72), dtype=np.uint8, values=(1, 2)):
    a = np.zeros(shape, dtype)
    z, y, x = np.indices(shape)
    for i, v in enumerate(values):
        c = np.array(shape) * (0.3 + 0.35 * i)
        a[((z - c[0]) / 5) ** 2 + ((y - c[1]) / 9) ** 2 + ((x - c[2]) / 7) ** 2 <= 1] = v
    return a


def snap(array=None, version=1, uid="1.2.840.99.1", **kw):
    kw.setdefault("study_uid", "1.2.840.99")
    kw.setdefault("source_path", "/studies/ct-chest")
    return RecoverySnapshot(blobs() if array is None else array, LABELS, uid, version=version,
                            spacing=(2.5, 0.7, 0.9), origin=(-30.0, -20.0, 15.5), direction=OBLIQUE, **kw)


# -- format ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_round_trip_is_bit_exact_with_labels_and_identity(tmp_path, dtype):
    array = blobs(dtype=dtype, values=(1, 300) if dtype == np.uint16 else (1, 2))
    s = snap(array, version=17, description="TEST^PATIENT — CT chest")
    path = save_snapshot(s, tmp_path)
    assert path.parent == tmp_path and path.name.endswith(".lbrecovery")

    [info] = list_snapshots(tmp_path)
    assert info.ok and info.path == path and info.series_uid == "1.2.840.99.1"
    assert info.version == 17 and info.shape == array.shape and info.dtype == np.dtype(dtype).name
    assert info.label_names == ["liver", "lesion"]
    values, counts = np.unique(array[array > 0], return_counts=True)
    assert info.voxel_counts == {int(v): int(c) for v, c in zip(values, counts)}
    assert abs(info.saved_at - time.time()) < 60 and info.description == "TEST^PATIENT — CT chest"

    back = load_snapshot(info)
    assert back.array.dtype == array.dtype and np.array_equal(back.array, array)
    assert back.array.flags.writeable and back.saved_at == info.saved_at  # ready to edit
    assert back.labels == [{**LABELS[0], "color": [200, 80, 40]}, {**LABELS[1]}]
    assert (back.series_uid, back.study_uid, back.source_path) == ("1.2.840.99.1", "1.2.840.99", "/studies/ct-chest")
    assert back.version == 17 and back.app_version
    np.testing.assert_array_equal(back.spacing, [2.5, 0.7, 0.9])
    np.testing.assert_array_equal(back.origin, [-30.0, -20.0, 15.5])
    np.testing.assert_array_equal(back.direction, OBLIQUE)
    assert back.matches_grid(array.shape, (2.5, 0.7, 0.9), (-30.0, -20.0, 15.5), OBLIQUE)


def test_speckled_map_falls_back_to_plain_zlib_and_round_trips(tmp_path):
    array = (np.random.default_rng(1).random((16, 64, 64)) < 0.5).astype(np.uint16) * 7
    path = save_snapshot(snap(array), tmp_path)
    assert list_snapshots(tmp_path)[0].voxel_counts is None  # raw encoding: no run table
    back = load_snapshot(path)
    assert np.array_equal(back.array, array) and back.array.flags.writeable
    empty = np.zeros((3, 4, 5), np.uint8)
    assert np.array_equal(load_snapshot(save_snapshot(snap(empty, uid="9.9"), tmp_path)).array, empty)


def test_label_like_objects_and_volume_identity(tmp_path, ramp):
    from dataclasses import dataclass

    @dataclass
    class Label:  # what labels.py will have; recovery never imports it
        value: int
        name: str
        color: tuple
        opacity: float = 1.0
        visible: bool = True
        locked: bool = False

    vol = ramp(direction=OBLIQUE, series_uid="1.2.3.4.5", study_uid="1.2.3", patient_name="DOE^J",
               series_description="ramp")
    array = np.zeros(vol.shape, np.uint8)
    array[3:5, 10:20, 10:30] = 4
    s = RecoverySnapshot.from_volume(vol, array, [Label(4, "tumour", (1, 2, 3))], version=3,
                                     source_path="/data/x")
    array[:] = 0  # a copy was taken
    info = read = list_snapshots(save_snapshot(s, tmp_path).parent)[0]
    assert read.description == "DOE^J — ramp" and info.labels[0]["name"] == "tumour"
    assert info.matches_volume(vol) and not info.matches_volume(ramp(series_uid="other"))
    assert find_snapshot("1.2.3.4.5", vol.shape, vol.spacing, vol.origin, vol.direction, tmp_path).path == info.path
    assert find_snapshot("1.2.3.4.5", (1, 2, 3), folder=tmp_path) is None
    back = load_snapshot(info).to_volume()
    assert back.same_grid(vol) and back.info.series_uid == "1.2.3.4.5" and back.array.sum() == 4 * 2 * 10 * 20


def test_recovery_dir_follows_the_cache_conventions(monkeypatch, tmp_path):
    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path / "c"))
    assert recovery_dir() == tmp_path / "c" / "recovery"
    monkeypatch.delenv("LIGHTBOX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert recovery_dir() == tmp_path / "xdg" / "lightbox" / "recovery"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert recovery_dir() == Path("~/.cache/lightbox/recovery").expanduser()


def test_one_file_per_series_and_grid_with_safe_names(tmp_path):
    save_snapshot(snap(version=1), tmp_path)
    save_snapshot(snap(version=2), tmp_path)  # replaces: one file per series
    assert [i.version for i in list_snapshots(tmp_path)] == [2]
    save_snapshot(snap(blobs((10, 64, 72)), uid="1.2.840.99.1"), tmp_path)  # other part of a split series
    for uid in ("../../etc/passwd", "", "a" * 300, "con:<>|*?"):
        path = save_snapshot(snap(uid=uid), tmp_path)
        assert path.parent == tmp_path and not path.name.startswith(".")
    infos = list_snapshots(tmp_path)
    assert len(infos) == 6 and all(i.ok for i in infos)
    assert sorted(i.series_uid for i in infos).count("1.2.840.99.1") == 2
    assert discard_series("1.2.840.99.1", tmp_path) == 2 and len(list_snapshots(tmp_path)) == 4
    assert mark_clean("../../etc/passwd", tmp_path) == 1 and len(list_snapshots(tmp_path)) == 3


# -- atomicity -------------------------------------------------------------------------
def test_a_save_that_dies_halfway_keeps_the_previous_snapshot(tmp_path, monkeypatch):
    good = snap(version=1)
    path = save_snapshot(good, tmp_path)
    calls = []

    def dying_write(fh, data):
        calls.append(len(data))
        if len(calls) == 2:  # the voxels: half of them, then the "crash"
            fh.write(data[: len(data) // 2])
            raise RuntimeError("simulated crash mid-write")
        fh.write(data)

    monkeypatch.setattr(rec, "_write_file", dying_write)
    with pytest.raises(RuntimeError):
        save_snapshot(snap(blobs(values=(2, 1)), version=2), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    [info] = list_snapshots(tmp_path)
    assert info.version == 1 and np.array_equal(load_snapshot(info).array, good.array)

    # ... and a disk that fills up at the last step: a clear error naming the file
    monkeypatch.setattr(rec, "_write_file", lambda fh, data: fh.write(data))

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rec.os, "replace", full)
    with pytest.raises(RecoveryError, match="No space left on device") as err:
        save_snapshot(snap(version=3), tmp_path)
    assert str(path) in str(err.value)
    assert [i.version for i in list_snapshots(tmp_path)] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_leftovers_of_a_crash_are_never_listed_and_swept_when_old(tmp_path):
    path = save_snapshot(snap(version=5), tmp_path)
    tmp = tmp_path / f".{path.name}.4242.deadbeef.tmp"
    tmp.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert [i.version for i in list_snapshots(tmp_path)] == [5] and tmp.exists()  # young: maybe another writer
    old = time.time() - 3600
    os.utime(tmp, (old, old))
    assert [i.version for i in list_snapshots(tmp_path)] == [5] and not tmp.exists()


# -- damaged files ---------------------------------------------------------------------
def _rewrite_header(path: Path, edit) -> None:
    data = path.read_bytes()
    n = len(rec.MAGIC)
    size, _ = struct.unpack_from("<QI", data, n)
    header = json.loads(data[n + 12:n + 12 + size])
    edit(header)
    head = json.dumps(header).encode()
    path.write_bytes(rec.MAGIC + struct.pack("<QI", len(head), zlib.crc32(head)) + head + data[n + 12 + size:])


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated"),
    (lambda p: p.write_bytes(p.read_bytes()[:60]), "truncated header|header checksum"),
    (lambda p: p.write_bytes(b"PK\x03\x04 not ours"), "bad signature"),
    (lambda p: p.write_bytes(b""), "bad signature"),
    (lambda p: p.write_bytes(p.read_bytes()[:-10] + bytes(10)), "checksum"),
    (lambda p: _rewrite_header(p, lambda h: h.update(shape=[20, 64, 73])), "runs do not fill|wrong size"),
    (lambda p: _rewrite_header(p, lambda h: h.update(dtype="float32")), "bad voxel type"),
    (lambda p: _rewrite_header(p, lambda h: h.update(runs=10 ** 9)), "bad run count|wrong size"),
    (lambda p: _rewrite_header(p, lambda h: h.update(format_version=99)), "not supported"),
    (lambda p: _rewrite_header(p, lambda h: h.pop("labels")), "labels"),
])
def test_damaged_files_are_refused_naming_the_file(tmp_path, damage, message):
    path = save_snapshot(snap(), tmp_path)
    damage(path)
    with pytest.raises(RecoveryError, match=message) as err:
        load_snapshot(path)
    assert str(path) in str(err.value)
    infos = list_snapshots(tmp_path)
    if not infos[0].ok:  # header-level damage is seen without reading the voxels
        assert str(path) in infos[0].problem
    assert discard_snapshot(infos[0]) and list_snapshots(tmp_path) == []


# -- the autosaver ---------------------------------------------------------------------
class Editor:
    """A stand-in for the segment editor: array + version under one lock."""

    def __init__(self, uid="1.2.3.9"):
        self.lock = threading.Lock()
        self.array = np.zeros((8, 32, 32), np.uint8)
        self.version = 0
        self.uid = uid
        self.calls = 0

    def edit(self, value=1):
        with self.lock:
            self.version += 1
            self.array[self.version % 8, :4, :4] = value

    def snapshot(self):
        self.calls += 1
        with self.lock:
            return RecoverySnapshot(self.array.copy(), LABELS, self.uid, version=self.version)


class Events:
    def __init__(self):
        self.saved, self.errors = [], []
        self.cond = threading.Condition()

    def on_saved(self, info):
        with self.cond:
            self.saved.append(info.version)
            self.cond.notify_all()

    def on_error(self, exc):
        with self.cond:
            self.errors.append(exc)
            self.cond.notify_all()

    def wait(self, pred, timeout=5.0):
        with self.cond:
            return self.cond.wait_for(pred, timeout)


def test_autosaver_saves_each_interval_only_when_changed(tmp_path):
    ed, ev = Editor(), Events()
    ed.edit()
    saver = Autosaver(ed.snapshot, interval_s=0.15, folder=tmp_path, on_saved=ev.on_saved).start()
    try:
        t0 = time.monotonic()
        assert ev.wait(lambda: ev.saved == [1])
        assert 0.1 < time.monotonic() - t0 < 2.0
        calls = ed.calls
        time.sleep(0.6)  # several intervals, nothing changed: asked, but nothing written
        assert ed.calls > calls and ev.saved == [1] and saver.saves == 1
        ed.edit()
        ed.edit()
        assert ev.wait(lambda: ev.saved == [1, 3])
        assert saver.last_saved_version(ed.uid) == 3
        assert np.array_equal(load_snapshot(list_snapshots(tmp_path)[0]).array, ed.array)
    finally:
        assert saver.stop()
    assert not saver.running


def test_request_save_saves_soon_and_coalesces_a_burst(tmp_path):
    ed, ev = Editor(), Events()
    saver = Autosaver(ed.snapshot, interval_s=60, folder=tmp_path, on_saved=ev.on_saved, debounce_s=0.25).start()
    try:
        for _ in range(20):
            ed.edit()
        for _ in range(20):  # e.g. twenty brush strokes in quick succession, each asking
            saver.request_save()
        t0 = time.monotonic()
        assert ev.wait(lambda: ev.saved)
        assert time.monotonic() - t0 < 2.0
        time.sleep(0.3)
        assert ev.saved == [20] and ed.calls == 1
        ed.edit(2)
        assert saver.flush(timeout=5) and ev.saved == [20, 21]
    finally:
        saver.stop(final_save=False)


def test_stop_makes_a_final_save_and_none_means_nothing_to_save(tmp_path):
    ed, ev = Editor(), Events()
    dirty = {"on": False}
    saver = Autosaver(lambda: ed.snapshot() if dirty["on"] else None, interval_s=60, folder=tmp_path,
                      on_saved=ev.on_saved).start()
    assert saver.flush(timeout=5) and ev.saved == [] and list_snapshots(tmp_path) == []
    ed.edit()
    dirty["on"] = True
    assert saver.stop(final_save=True) and ev.saved == [1]
    assert list_snapshots(tmp_path)[0].version == 1


def test_errors_are_reported_not_raised_and_retried(tmp_path):
    ed, ev = Editor(), Events()
    blocked = tmp_path / "recovery"
    blocked.write_text("a file where the folder should be: like a read-only or full disk")
    ed.edit()
    saver = Autosaver(ed.snapshot, interval_s=0.1, folder=blocked, on_saved=ev.on_saved,
                      on_error=ev.on_error).start()
    try:
        assert ev.wait(lambda: len(ev.errors) >= 2)  # reported, and tried again next interval
        assert isinstance(ev.errors[0], RecoveryError) and str(blocked) in str(ev.errors[0])
        assert saver.running and ev.saved == []
        blocked.unlink()  # the user frees the disk
        assert ev.wait(lambda: ev.saved == [1])
        assert list_snapshots(blocked)[0].version == 1
    finally:
        saver.stop(final_save=False)


def test_a_failing_snapshot_fn_does_not_kill_the_saver(tmp_path):
    ed, ev = Editor(), Events()
    ed.edit()
    state = {"fail": True}

    def flaky():
        if state["fail"]:
            raise ValueError("label map busy")
        return ed.snapshot()

    saver = Autosaver(flaky, interval_s=0.1, folder=tmp_path, on_saved=ev.on_saved, on_error=ev.on_error).start()
    try:
        assert ev.wait(lambda: ev.errors) and "busy" in str(ev.errors[0])
        state["fail"] = False
        assert ev.wait(lambda: ev.saved == [1])
    finally:
        saver.stop(final_save=False)


def test_mark_clean_and_discard_remove_the_snapshot(tmp_path):
    ed, ev = Editor(), Events()
    ed.edit()
    saver = Autosaver(ed.snapshot, interval_s=60, folder=tmp_path, on_saved=ev.on_saved).start()
    try:
        assert saver.flush(5) and ev.saved == [1] and len(list_snapshots(tmp_path)) == 1
        saver.mark_clean(ed.uid, version=1)  # the user saved the segmentation
        assert list_snapshots(tmp_path) == []
        assert saver.flush(5) and ev.saved == [1]  # same version: still clean, nothing written
        ed.edit()
        assert saver.flush(5) and ev.saved == [1, 2]
        saver.discard(ed.uid)  # closed without keeping the edits
        assert list_snapshots(tmp_path) == []
    finally:
        saver.stop(final_save=False)


# -- the kill tests --------------------------------------------------------------------
def _spawn(folder, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(CHILD), str(folder), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _read_until(proc, pred, timeout=20.0):
    """Lines from the child until pred(lines) holds (a reader thread: no blocking forever)."""
    lines, cond = [], threading.Condition()

    def reader():
        for line in proc.stdout:
            with cond:
                lines.append(line.strip())
                cond.notify_all()

    threading.Thread(target=reader, daemon=True).start()
    with cond:
        ok = cond.wait_for(lambda: pred(lines), timeout)
        if not ok:
            proc.kill()
            raise AssertionError(f"child never got there: {lines[-5:]} {proc.stderr.read()[-2000:]}")
        return lines


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("saves_before_kill, extra_delay", [(2, 0.0), (4, 0.037), (6, 0.11)])
def test_sigkill_while_editing_loses_nothing_that_was_saved(tmp_path, saves_before_kill, extra_delay):
    child = child_module()
    proc = _spawn(tmp_path, "0.2")
    try:
        lines = _read_until(proc, lambda ls: sum(l.startswith("saved ") for l in ls) >= saves_before_kill)
        time.sleep(extra_delay)  # land anywhere: between saves, or in the middle of one
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    reported = [int(l.split()[1]) for l in lines if l.startswith("saved ")]
    assert not [l for l in lines if l.startswith("error")]
    [info] = list_snapshots(tmp_path)
    assert info.ok and info.series_uid == child.SERIES_UID and info.version >= reported[-1]
    back = load_snapshot(info)
    assert np.array_equal(back.array, child.state_at(back.version)), back.version
    assert back.labels[2]["locked"] and back.source_path == "/data/study"


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_in_the_middle_of_a_write_keeps_the_previous_snapshot(tmp_path):
    child = child_module()
    proc = _spawn(tmp_path, "0.1", "--slow")
    try:
        def mid_write_after_a_save(ls):
            return any(l.startswith("saved ") for l in ls) and ls[-1] == "writing"

        lines = _read_until(proc, mid_write_after_a_save)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    last = [int(l.split()[1]) for l in lines if l.startswith("saved ")][-1]
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the half-written file...
    [info] = list_snapshots(tmp_path)  # ...is not listed
    assert info.version == last
    assert np.array_equal(load_snapshot(info).array, child.state_at(last))
