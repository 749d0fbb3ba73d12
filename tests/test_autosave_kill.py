"""Autosave under SIGKILL: the recovery file is always a state that was on screen, at most one edit old.

A child process (this file, run as a script) opens a small CT in the real window (offscreen Qt)
and edits it the way a user does: brush and eraser drags as mouse press / move / release events
on the view, a fill click, undo and redo through their actions. Each finished edit prints its
state (version, sha1 of the voxels) while the map's edit lock is held, so no snapshot can contain
a state before the parent has heard of it. The child is SIGKILLed at chosen moments (right after
an edit, 50 ms after it, in the middle of a drag, in the middle of writing a snapshot, at a random
moment); the parent reads the recovery folder as the next launch would and checks that the map
it would restore equals the state after edit k with k >= N - 1 (N edits finished): at most one
edit lost, never a partial one.

    python tests/test_autosave_kill.py STUDY KILL   # the child; KILL as in SCENARIOS
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (16, 48, 48)

# (kind, plane pixels (row, col) of the shown axial slice): one user action each
ACTIONS = [
    ("brush", [(6, 6), (6, 10), (7, 14), (8, 18), (8, 22), (9, 26)]),
    ("brush", [(14, 8), (16, 12), (18, 16), (20, 20), (22, 24), (24, 28)]),
    ("brush", [(30, 6), (30, 12), (30, 18), (30, 24), (30, 30), (30, 36)]),
    ("erase", [(4, 14), (10, 16), (16, 16), (22, 18), (28, 18), (34, 20)]),
    ("brush", [(38, 10), (36, 16), (38, 22), (36, 28), (38, 34), (36, 40)]),
    ("fill", [(24, 44)]),
    ("undo", []),
    ("redo", []),
    ("brush", [(12, 34), (16, 36), (20, 38), (24, 40), (28, 42), (32, 42)]),
    ("brush", [(40, 4), (42, 10), (42, 16), (44, 22), (44, 28), (42, 34)]),
]

# kill points: first write, right after / 50 ms after the first stroke, mid-drag (with a save
# asked for while the mouse is down, as the 30 s timer or a tool change may), 50 ms and 0 ms
# after the last stroke, the middle of a later write, and a random moment chosen by the parent
SCENARIOS = ["write:1", "after:1:0", "after:1:0.05", "mid:5", "after:10:0.05", "after:10:0",
             "write:4", "random:7"]


# -- the child -------------------------------------------------------------------------
def child(study: str, kill: str) -> None:
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtTest import QTest

    from viewer.core import recovery
    from viewer.core.labels import LabelMap
    from viewer.core.undo import Edit
    from viewer.ui.main_window import MainWindow

    kind, *params = kill.split(":")

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def say(text):
        print(text, flush=True)

    count = [0]

    def report(lm):  # called with the edit lock held: the line is out before any snapshot sees the state
        count[0] += 1
        a = lm.array
        say(f"state {count[0]} {lm.version} {hashlib.sha1(a.tobytes()).hexdigest()} {np.count_nonzero(a)}")

    def lock_of(lm):
        return getattr(lm, "lock", None) or nullcontext()

    commit = Edit.commit

    def reporting_commit(self):
        with lock_of(self.labelmap):
            step = commit(self)
            if step is not None:
                report(self.labelmap)
        return step

    apply_step = LabelMap._apply_step

    def reporting_apply_step(self, step, undo):
        with lock_of(self):
            apply_step(self, step, undo)
            report(self)

    Edit.commit = reporting_commit
    LabelMap._apply_step = reporting_apply_step

    if kind == "write":  # SIGKILL halfway through the voxels of the n-th snapshot written
        target, writes, real = int(params[0]), [0], recovery._write_file

        def write(fh, data):
            writes[0] += 1
            if writes[0] == 2 * target:  # header, then voxels: two writes per snapshot
                real(fh, data[: len(data) // 2])
                fh.flush()
                say("killed mid-write")
                die()
            real(fh, data)

        recovery._write_file = write

    w = MainWindow()
    w.resize(900, 700)
    w.show()
    shown = []
    w.image_shown.connect(lambda: shown.append(1))
    w.open_path(study)
    end = time.monotonic() + 60
    while not (shown and not w.busy) and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)
    view = w.slice_view
    w.editor.panel.radius.setValue(3.0)
    w.editor.panel.fill_3d.setChecked(False)
    say(f"ready {'x'.join(map(str, view.volume.shape))}")
    clock = [50_000]

    def send(kind_, rc, buttons, button=Qt.MouseButton.LeftButton):
        vp = view.canvas.viewport()
        scene = view.view.mapViewToScene(QPointF(*view.pixel_center(*rc)))
        pos = QPointF(view.canvas.mapFromScene(scene))
        ev = QMouseEvent(kind_, pos, QPointF(vp.mapToGlobal(pos.toPoint())), button, buttons,
                         Qt.KeyboardModifier.NoModifier)
        clock[0] += 50
        ev.setTimestamp(clock[0])
        QApplication.sendEvent(vp, ev)

    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    for i, (what, pixels) in enumerate(ACTIONS, start=1):
        if what in ("undo", "redo"):
            (w.editor.undo_action if what == "undo" else w.editor.redo_action).trigger()
        else:
            w.set_tool(what)
            send(QEvent.Type.MouseButtonPress, pixels[0], left)
            for j, rc in enumerate(pixels[1:], start=1):
                QTest.qWait(20)  # pyqtgraph's mouse-move rate limit; the event loop runs meanwhile
                send(QEvent.Type.MouseMove, rc, left, none)
                if kind == "mid" and i == int(params[0]) and j == 3:
                    w.editor.autosaver.request_save()  # a save while the mouse is down (timer, tool change)
                    w.editor.autosaver.flush(timeout=10)
                    send(QEvent.Type.MouseMove, pixels[j + 1], left, none)
                    QTest.qWait(20)
                    die()
            send(QEvent.Type.MouseButtonRelease, pixels[-1], none)
        QApplication.processEvents()
        if kind == "after" and i == int(params[0]):
            delay = float(params[1])
            if delay:
                QTest.qWait(round(delay * 1000))
            die()
        QTest.qWait(100)  # between two edits: the hand moves to the next place
    say("done")
    QTest.qWait(3000)
    die()


# -- the parent ------------------------------------------------------------------------
def _digest(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array, np.uint8).tobytes()).hexdigest()


def run_scenario(study: Path, cache: Path, kill: str, seed: int = 0) -> dict:
    """Run one child to its kill; returns what it saw and what the next launch would restore."""
    from viewer.core.recovery import list_snapshots, load_snapshot

    env = {**os.environ, "LIGHTBOX_CACHE_DIR": str(cache), "QT_QPA_PLATFORM": "offscreen",
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, __file__, str(study), kill], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines: list[str] = []
    cond = threading.Condition()

    def reader():
        for line in proc.stdout:
            with cond:
                lines.append(line)
                cond.notify_all()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        if kill.startswith("random"):  # the parent's SIGKILL, some time into a seeded edit
            rng = np.random.default_rng(seed)
            after = int(rng.integers(2, len(ACTIONS)))
            with cond:
                cond.wait_for(lambda: any(l.startswith(f"state {after} ") for l in lines) or
                              proc.poll() is not None, 60)
            time.sleep(float(rng.uniform(0.0, 0.15)))
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    thread.join(10)
    err = proc.stderr.read()
    assert proc.returncode == -signal.SIGKILL, f"{kill}: child ended with {proc.returncode}\n{err[-3000:]}"
    ready = [l for l in lines if l.startswith("ready ")]
    assert ready, f"{kill}: the child never opened the study\n{err[-3000:]}"
    shape = tuple(int(s) for s in ready[0].split()[1].split("x"))
    states = [(0, _digest(np.zeros(shape, np.uint8)), 0)]  # (version, sha1, voxels) after edit k
    for line in lines:
        parts = line.split()
        if line.endswith("\n") and len(parts) == 5 and parts[0] == "state":  # a whole line
            assert int(parts[1]) == len(states)
            states.append((int(parts[2]), parts[3], int(parts[4])))
    n = len(states) - 1

    infos = list_snapshots(cache / "recovery")
    assert all(i.ok for i in infos), [i.problem for i in infos]
    assert len(infos) <= 1, infos
    if infos:
        snap = load_snapshot(infos[0])
        digest, version, voxels = _digest(snap.array), snap.version, int(np.count_nonzero(snap.array))
    else:
        digest, version, voxels = states[0][1], 0, 0
    matches = [k for k, s in enumerate(states) if s[1] == digest]
    k = max(matches) if matches else None
    return {"kill": kill, "edits": n, "restored": k, "lost": None if k is None else n - k,
            "partial": k is None, "voxels": voxels, "version": version,
            "version_ok": k is None or states[k][0] == version or k == 0,
            "file": bool(infos), "mid_write": any(l.startswith("killed mid-write") for l in lines),
            "states": states}


# -- the tests -------------------------------------------------------------------------
def test_committed_state_leaves_out_the_stroke_in_progress(ramp):
    """The copy an autosave takes mid-drag is the map before the drag, with that version."""
    from viewer.core.editing import Stroke
    from viewer.core.labels import LabelMap
    from viewer.core.mpr import native_geometry

    vol = ramp(shape=(6, 40, 48))
    lm = LabelMap(vol)
    lm.add_label("liver")
    lm.mark_saved()
    assert not lm.committed_state().dirty
    g = native_geometry(vol)
    with Stroke(lm, vol, g, 2, 3.0, 1) as s:
        s.add(10, 10)
    before = lm.committed_state()
    assert before.dirty and before.array.any() and before.version == lm.version
    s = Stroke(lm, vol, g, 2, 3.0, 1)
    s.add(20, 5)
    s.add(20, 30)  # half a stroke on screen...
    mid = lm.committed_state()
    assert not np.array_equal(mid.array, lm.array)  # ...not in the snapshot
    np.testing.assert_array_equal(mid.array, before.array)
    assert mid.version == before.version and mid.dirty and [lb.name for lb in mid.labels] == ["liver"]
    s.add(30, 30)
    s.finish()
    after = lm.committed_state()
    np.testing.assert_array_equal(after.array, lm.array)
    assert after.version == lm.version > before.version
    lm.undo()
    np.testing.assert_array_equal(lm.committed_state().array, before.array)


def test_snapshots_from_another_thread_are_never_torn(ramp):
    """The edit lock: copies taken on another thread while edits land (four writes each, as a drag
    makes) are always a state between two edits, never one with part of an edit."""
    from viewer.core.labels import LabelMap

    lm = LabelMap(ramp(shape=(8, 32, 32)))
    lm.add_label("a")
    lm.add_label("b")
    states = {_digest(lm.array)}
    seen, errors, done = set(), [], threading.Event()

    def reader():
        try:
            while not done.is_set():
                seen.add(_digest(lm.committed_state().array))
        except Exception as exc:  # noqa: BLE001 - e.g. the edit's blocks changing under the copy
            errors.append(exc)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        for k in range(150):
            with lm.edit("drag") as e:
                for q in range(4):
                    e.write((k % 8, k % 8 + 1, 8 * q, 8 * q + 8, 0, 32), None, 1 + (k + q) % 2)
                    time.sleep(0.0002)  # the reader gets its turn in the middle of the edit
            states.add(_digest(lm.array))
    finally:
        done.set()
        t.join(10)
    assert not errors and len(seen) > 1 and seen <= states, (errors, f"{len(seen - states)} torn copies")


def test_sigkill_loses_at_most_one_edit_and_never_restores_half_a_stroke(tmp_path):
    from viewer.core.synthetic import write_ct_study

    study = tmp_path / "ct"
    write_ct_study(study, shape=SHAPE, spacing=(3.0, 1.0, 1.0), seed=2)
    results = []
    for i, kill in enumerate(SCENARIOS):
        results.append(run_scenario(study, tmp_path / f"cache{i}", kill, seed=i))
    rows = [f"{r['kill']:>14}: {r['edits']:2d} edits done, restored after edit {r['restored']}, lost {r['lost']}, "
            f"{'PARTIAL ' if r['partial'] else ''}{r['voxels']} voxels"
            + (", killed mid-write" if r["mid_write"] else "") + ("" if r["file"] else ", no recovery file")
            for r in results]
    print("\n" + "\n".join(rows))
    print(f"edits tried {sum(r['edits'] for r in results)}, kill points {len(results)}, "
          f"lost {sum(r['lost'] or 0 for r in results)}, partial {sum(r['partial'] for r in results)}")
    for r in results:
        assert not r["partial"], (f"{r['kill']}: restored a state the user never saw ({r['voxels']} voxels; "
                                  f"states: {[s[2] for s in r['states']]})")
        assert r["lost"] <= 1, f"{r['kill']}: {r['lost']} edits lost\n" + "\n".join(rows)
        assert r["version_ok"], r
    mid = next(r for r in results if r["kill"].startswith("mid"))
    assert mid["edits"] >= 4 and mid["restored"] == mid["edits"]  # the save asked mid-drag: the state before it


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    child(sys.argv[1], sys.argv[2])
