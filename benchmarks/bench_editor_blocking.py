"""How long a 3D flood fill of the CT body blocks the UI thread: on the UI thread (the old path)
against the segment editor's background effect (compute on a worker, one copy on the UI thread).

A CT phantom study (default: the demo CT, 120x256x256) is written as DICOM, opened in the window
(offscreen), and the body is filled in 3D from the centre of the middle slice. A QTimer ticks every
10 ms meanwhile; the longest gap between two ticks is how long the window could not react (repaint,
clicks, Cancel). *sync*: ``core.editing.flood_fill`` + ``session.edited()`` run from the event loop,
as the fill tool did before; *background*: a click of the fill tool with "3D" on, as now. Both
include the redraw of the views after the change.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_editor_blocking.py [--shape 120 256 256] [--repeats 3]
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from viewer.core.editing import flood_fill
from viewer.core.synthetic import write_ct_study
from viewer.ui.editor_controller import map_key
from viewer.ui.main_window import MainWindow

TICK_MS = 10


def wait(app, cond, timeout_s=600.0) -> None:
    t0 = time.monotonic()
    while not cond():
        app.processEvents()
        time.sleep(0.001)
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError("timed out")


def measure(app, start, done) -> tuple[float, float]:
    """(longest gap between 10 ms ticks, total seconds) from ``start()`` until ``done()`` (+0.2 s)."""
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    wait(app, lambda: len(ticks) >= 3)
    t0 = time.perf_counter()
    QTimer.singleShot(0, start)
    wait(app, lambda: len(ticks) > 4 and ticks[-1] > t0 and done())
    total = time.perf_counter() - t0
    t_end = time.perf_counter() + 0.2
    wait(app, lambda: time.perf_counter() > t_end)
    timer.stop()
    seen = [t for t in ticks if t >= t0 - TICK_MS / 1000]
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    return max(gaps), total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(120, 256, 256), metavar=("Z", "Y", "X"))
    ap.add_argument("--tolerance", type=float, default=900.0, help="HU around the seed (900: the body, not air)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    app = QApplication.instance() or QApplication(sys.argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LIGHTBOX_CACHE_DIR"] = str(Path(tmp) / "cache")
        t = time.perf_counter()
        write_ct_study(Path(tmp) / "ct", shape=tuple(args.shape))
        print(f"CT {tuple(args.shape)} written in {time.perf_counter() - t:.1f} s")
        w = MainWindow()
        w.resize(1300, 850)
        w.show()
        w.open_path(Path(tmp) / "ct")
        wait(app, lambda: w.slice_view.volume is not None and not w.busy)
        view, s = w.slice_view, w.editor.session
        view.set_slice(view.slice_count // 2)
        w.set_tool("fill")
        p = w.editor.panel
        p.fill_3d.setChecked(True)
        p.fill_unlabelled.setChecked(True)
        p.tolerance.setValue(args.tolerance)
        rows, cols = view.volume.shape[1:]
        x_mm, y_mm = view.pixel_center(rows // 2, cols // 2)
        lm, vol = s.labelmap_for(view)
        r, c = view.tool.plane_pixel(x_mm, y_mm)

        def sync_fill():  # the fill tool before: core call + notification on the UI thread
            flood_fill(lm, vol, view.plane_geometry, view.slice_index, r, c, lm.active, args.tolerance,
                       three_d=True, over=0)
            s.edited()

        results = {"sync (UI thread, before)": [], "background (worker, now)": []}
        voxels = 0
        for _ in range(args.repeats):
            steps = len(lm.history)
            results["sync (UI thread, before)"].append(measure(app, sync_fill, lambda n=steps: len(lm.history) > n))
            voxels = int((lm.array != 0).sum())
            lm.undo()
            steps = len(lm.history)
            results["background (worker, now)"].append(measure(
                app, lambda: view.tool.click(x_mm, y_mm),
                lambda n=steps: len(lm.history) > n and not s.effects.busy_with(map_key(vol)) and not w.busy))
            assert int((lm.array != 0).sum()) == voxels, "the two paths filled different voxels"
            lm.undo()
        print(f"3D fill of the body: {voxels / 1e6:.2f} M voxels of {lm.array.size / 1e6:.1f} M; "
              f"median of {args.repeats}, QTimer every {TICK_MS} ms")
        print(f"{'path':28s} {'longest UI block ms':>20s} {'total s':>9s}")
        base = statistics.median(g for g, _ in results["sync (UI thread, before)"])
        for name, rows_ in results.items():
            gap = statistics.median(g for g, _ in rows_)
            total = statistics.median(t for _, t in rows_)
            print(f"{name:28s} {gap * 1e3:20.0f} {total:9.2f}   block x{gap / base:.2f}")
        w.shutdown()
        w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
