"""Slice scrolling frame rate with overlay layers, against the same view without them.

A 512x512x300 int16 CT-like volume (``core.synthetic.ct_phantom``, or random
noise with ``--random``) in a SliceView, offscreen. Each frame goes through the
wheel's code path (``SliceView.wheel``: set_slice -> image + layer setImage)
and is then painted synchronously (``processEvents`` + ``viewport().repaint()``),
so pyqtgraph's image render and Qt's compositing are counted. Three configs in
the same run: no overlay (the baseline), + heatmap (ProbabilityLayer), +
heatmap + labels (LabelLayer). A second, instrumented pass times each step
of a frame with perf_counter.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_scroll.py [--frames 150] [--random] [--plane axial]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
from PySide6.QtWidgets import QApplication

from viewer.core.volume import SourceInfo, Volume
from viewer.ui.overlays import LabelLayer, ProbabilityLayer
from viewer.ui.slice_view import SliceView

TARGET_FPS = 60.0


def make_data(shape, random: bool):
    t0 = time.perf_counter()
    if random:
        rng = np.random.default_rng(0)
        arr = rng.integers(-1000, 1500, shape, dtype=np.int16)
        z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
        r = np.sqrt(((y - shape[1] / 2) / (shape[1] / 3)) ** 2 + ((x - shape[2] / 2) / (shape[2] / 3)) ** 2)
        labels = np.broadcast_to((r < 1).astype(np.uint8) + (r < 0.4), shape).copy()
    else:
        from viewer.core.synthetic import ct_phantom

        arr, masks = ct_phantom(shape, (1.0, 0.7, 0.7), seed=0)
        labels = np.zeros(shape, np.uint8)
        for value, key in enumerate(("lungs", "liver", "bone", "lesions"), start=1):
            if key in masks:
                labels[masks[key] > 0] = value
    # heatmap: a smooth float map in 0..1 (soft tissue brightness), ~half above threshold inside the body
    prob = np.clip((arr.astype(np.float32) + 200.0) / 400.0, 0.0, 1.0)
    print(f"data {shape} generated in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return arr, labels, prob


def frame(app, view: SliceView, delta: int) -> None:
    view.wheel(delta)  # what a wheel notch does
    app.processEvents()
    view.canvas.viewport().repaint()  # synchronous paint of this frame


def scroll(app, view: SliceView, n: int) -> list[float]:
    """n frames, bouncing between the stack ends; per-frame seconds."""
    times = []
    direction = -120  # toward the user: next slice
    for _ in range(n):
        if view.slice_index >= view.slice_count - 1:
            direction = 120
        elif view.slice_index <= 0:
            direction = -120
        t0 = time.perf_counter()
        frame(app, view, direction)
        times.append(time.perf_counter() - t0)
    return times


def breakdown(app, view: SliceView, n: int) -> dict[str, float]:
    """The steps of set_slice + paint, timed one by one (median ms)."""
    steps = {"slice extraction": [], "LUT / RGBA build": [], "setImage": [], "paint (render + composite)": []}
    layers = [lay for lay in view.layers.values() if lay.visible]
    k0 = view.slice_index
    for i in range(n):
        k = (k0 + i + 1) % view.slice_count
        t0 = time.perf_counter()
        img = view._shown(view._slice(k))
        cuts = [view._cut(lay.array, k) for lay in layers]
        t1 = time.perf_counter()
        rgbas = [view._shown(lay.rgba(c)) for lay, c in zip(layers, cuts)]
        t2 = time.perf_counter()
        view._k = k
        view.image_item.setImage(img, autoLevels=False, levels=view._levels())
        for lay, rgba in zip(layers, rgbas):
            lay.item.setImage(rgba, autoLevels=False, levels=None)
        t3 = time.perf_counter()
        app.processEvents()
        view.canvas.viewport().repaint()
        t4 = time.perf_counter()
        for key, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            steps[key].append(dt * 1e3)
    return {k: statistics.median(v) for k, v in steps.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512))
    ap.add_argument("--size", type=int, nargs=2, default=(900, 900), help="view size in pixels")
    ap.add_argument("--plane", choices=("axial", "coronal", "sagittal"), default=None,
                    help="MPR plane (default: the native stack, as the 1x1 view)")
    ap.add_argument("--random", action="store_true", help="random volume instead of the CT phantom (faster)")
    args = ap.parse_args(argv)

    app = QApplication.instance() or QApplication(sys.argv)
    arr, labels, prob = make_data(tuple(args.shape), args.random)
    vol = Volume(arr, (1.0, 0.7, 0.7), (0.0, 0.0, 0.0), np.eye(3)[:, ::-1].copy(),
                 SourceInfo(modality="CT", series_description="bench"))
    view = SliceView(plane=args.plane)
    view.resize(*args.size)
    view.show()
    view.set_volume(vol, window=(40.0, 400.0))
    for _ in range(5):
        app.processEvents()

    configs = [("no overlay (baseline)", None), ("+ heatmap", "heat"), ("+ heatmap + labels", "labels")]
    rows, parts = [], {}
    for name, step in configs:
        if step == "heat":
            view.add_layer("heat", ProbabilityLayer(prob, colormap="inferno", opacity=0.5, threshold=0.5))
        elif step == "labels":
            view.add_layer("labels", LabelLayer(labels, colors={1: (80, 160, 255), 2: (180, 110, 60),
                                                                3: (240, 240, 220), 4: (255, 40, 40)},
                                                opacity=0.4))
        scroll(app, view, 10)  # warm-up
        t = scroll(app, view, args.frames)
        ms = statistics.median(t) * 1e3
        rows.append((name, 1e3 / ms, ms, statistics.mean(t) * 1e3, max(t) * 1e3))
        parts[name] = breakdown(app, view, min(args.frames, 60))

    g = view.plane_geometry
    print(f"\nScroll benchmark: {args.shape[0]}x{args.shape[1]}x{args.shape[2]} int16, "
          f"{'random' if args.random else 'CT phantom'}, plane {args.plane or 'native'} "
          f"({g.n_rows}x{g.n_cols} px), view {args.size[0]}x{args.size[1]}, "
          f"{args.frames} frames, QPA {app.platformName()}")
    base_ms = rows[0][2]
    print(f"{'config':<24}{'fps':>8}{'ms/frame':>10}{'mean ms':>9}{'max ms':>8}{'vs base':>9}{'vs 60fps':>10}")
    for name, fps, ms, mean, mx in rows:
        print(f"{name:<24}{fps:>8.1f}{ms:>10.2f}{mean:>9.2f}{mx:>8.2f}{ms / base_ms:>8.2f}x{fps / TARGET_FPS:>9.2f}x")
    print("\nWhere a frame's time goes (median ms, instrumented pass):")
    keys = list(next(iter(parts.values())))
    print(f"{'config':<24}" + "".join(f"{k:>28}" for k in keys))
    for name in parts:
        print(f"{name:<24}" + "".join(f"{parts[name][k]:>28.2f}" for k in keys))
    print("(paint includes pyqtgraph's deferred image render: windowing/LUT of the int16 slice and "
          "RGBA -> QImage for each layer, then Qt compositing)")
    view.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
