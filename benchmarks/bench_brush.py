"""Brush latency on a CT-sized label map: core only, and with the overlay redraw.

A 512x512x300 int16 volume (0.7 x 0.7 x 1 mm) and a uint8 LabelMap. Strokes of
~30 mouse moves with a 20-pixel (14 mm) brush on axial slices; one *step* =
one mouse move = ``Stroke.add`` (capsule footprint, lazy undo snapshot,
notification). Then the same strokes in a SliceView (offscreen) showing the
volume with a ``LabelLayer`` of the map: each step also refreshes the layer for
the shown slice and paints the viewport synchronously (processEvents +
viewport().repaint()), which is what a user waits for. Also reported: the
commit (end of drag) time, the undo memory of 100 strokes against one volume,
undo/redo time, stats() and a 3D flood fill on the whole map.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_brush.py [--strokes 40] [--moves 30] [--radius-px 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np

from viewer.core.editing import Stroke, flood_fill
from viewer.core.labels import Label, LabelMap
from viewer.core.mpr import plane_geometry
from viewer.core.volume import SourceInfo, Volume

GOAL_MS = 16.0
SHAPE = (300, 512, 512)
SPACING = (1.0, 0.7, 0.7)


def make_volume() -> Volume:
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    body = ((y - 256) / 200.0) ** 2 + ((x - 256) / 230.0) ** 2 < 1
    arr = np.where(body, np.int16(40), np.int16(-1000)) + ((x * 7 + y * 3 + z) % 50).astype(np.int16)
    return Volume(arr, SPACING, info=SourceInfo(modality="CT", series_uid="bench"))


def paths(n: int, moves: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        start = rng.uniform(100, 400, 2)
        yield int(rng.integers(SHAPE[0])), start + np.cumsum(rng.normal(0, 6, (moves, 2)), axis=0)


def pct(values, p):
    return float(np.percentile(values, p))


def run_core(vol, lm, g, n, moves, radius_mm):
    steps, commits = [], []
    for k, path in paths(n, moves):
        s = Stroke(lm, vol, g, k, radius_mm, 1)
        for r, c in path:
            t0 = time.perf_counter()
            s.add(r, c)
            steps.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        s.finish()
        commits.append(time.perf_counter() - t0)
    return steps, commits


def run_view(vol, lm, g, n, moves, radius_mm):
    from PySide6.QtWidgets import QApplication

    from viewer.ui.overlays import LabelLayer
    from viewer.ui.slice_view import SliceView

    app = QApplication.instance() or QApplication(sys.argv)
    view = SliceView(plane="axial")
    view.resize(900, 900)
    view.show()
    view.set_volume(vol)
    layer = view.add_layer("seg", LabelLayer(lm.array, colors=lm.colors(), opacity=0.5))
    app.processEvents()
    idle = []  # the same synchronous repaint with nothing changed: the compositing floor
    for _ in range(30):
        t0 = time.perf_counter()
        app.processEvents()
        view.canvas.viewport().repaint()
        idle.append(time.perf_counter() - t0)
    total, split = [], {"paint (core)": [], "layer.refresh": [], "repaint": [], "repaint, nothing changed": idle}
    for k, path in paths(n, moves, seed=1):
        view.set_slice(k)
        app.processEvents()
        s = Stroke(lm, vol, g, k, radius_mm, 2)
        for r, c in path:
            t0 = time.perf_counter()
            s.add(r, c)
            t1 = time.perf_counter()
            layer.refresh()
            t2 = time.perf_counter()
            app.processEvents()
            view.canvas.viewport().repaint()
            t3 = time.perf_counter()
            total.append(t3 - t0)
            split["paint (core)"].append(t1 - t0)
            split["layer.refresh"].append(t2 - t1)
            split["repaint"].append(t3 - t2)
        s.finish()
    view.close()
    return total, split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strokes", type=int, default=40)
    ap.add_argument("--moves", type=int, default=30)
    ap.add_argument("--radius-px", type=float, default=20.0)
    ap.add_argument("--no-view", action="store_true", help="skip the Qt redraw part")
    args = ap.parse_args()
    radius_mm = args.radius_px * SPACING[1]

    t0 = time.perf_counter()
    vol = make_volume()
    lm = LabelMap(vol, labels=[Label(1, "liver"), Label(2, "tumour")])
    g = plane_geometry(vol, "axial")
    print(f"volume {SHAPE} int16 + label map uint8 ({lm.array.nbytes / 1e6:.1f} MB) in "
          f"{time.perf_counter() - t0:.1f} s; brush {args.radius_px:g} px = {radius_mm:g} mm, "
          f"{args.strokes} strokes x {args.moves} moves", file=sys.stderr)

    steps, commits = run_core(vol, lm, g, args.strokes, args.moves, radius_mm)
    rows = [("core: paint + undo bookkeeping", steps)]
    split = {}
    if not args.no_view:
        total, split = run_view(vol, lm, g, args.strokes, args.moves, radius_mm)
        rows.append(("with redraw (paint + layer.refresh + repaint)", total))

    print(f"\n{'per mouse move (one stroke step)':48s} {'median ms':>10s} {'p95 ms':>8s} {'goal':>6s}  ok")
    for name, vals in rows:
        med = statistics.median(vals) * 1e3
        print(f"{name:48s} {med:10.2f} {pct(vals, 95) * 1e3:8.2f} {GOAL_MS:6.0f}  {'yes' if med < GOAL_MS else 'NO'}")
    for name, vals in split.items():
        print(f"  {name:46s} {statistics.median(vals) * 1e3:10.2f} {pct(vals, 95) * 1e3:8.2f}")
    print(f"{'end of drag (commit: one undo step)':48s} {statistics.median(commits) * 1e3:10.2f} "
          f"{pct(commits, 95) * 1e3:8.2f}")

    # memory of 100 strokes' undo steps
    lm2 = LabelMap(vol, labels=[Label(1, "a")])
    run_core(vol, lm2, g, 100, args.moves, radius_mm)
    mem, vol_bytes = lm2.history.nbytes, lm2.array.nbytes
    sparse = sum(s.sparse for s in lm2.history._done)
    print(f"\nundo memory, 100 strokes: {mem / 1e6:.2f} MB = {mem / vol_bytes:.2%} of one label volume "
          f"({vol_bytes / 1e6:.1f} MB); {sparse}/100 steps stored sparse")
    t0 = time.perf_counter()
    for _ in range(100):
        lm2.undo()
    t1 = time.perf_counter()
    for _ in range(100):
        lm2.redo()
    t2 = time.perf_counter()
    print(f"undo x100: {(t1 - t0) * 10:.2f} ms/step, redo x100: {(t2 - t1) * 10:.2f} ms/step")

    t0 = time.perf_counter()
    lm.stats(vol)
    print(f"stats(volume) on 512x512x300: {(time.perf_counter() - t0) * 1e3:.0f} ms")
    lm3 = LabelMap(vol, labels=[Label(1, "body")])
    t0 = time.perf_counter()
    n = flood_fill(lm3, vol, g, 150, 256, 256, 1, tolerance=60, three_d=True)
    print(f"3D flood fill of the body ({n / 1e6:.1f} M voxels): {time.perf_counter() - t0:.2f} s "
          f"(undo step {lm3.history.nbytes / 1e6:.1f} MB)")
    t0 = time.perf_counter()
    n = flood_fill(lm3, vol, g, 150, 256, 256, 1, tolerance=60, erase=True)
    print(f"2D flood fill (erase) of one slice ({n} voxels): {(time.perf_counter() - t0) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
