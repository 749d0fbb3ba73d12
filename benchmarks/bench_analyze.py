"""Whole 4-view mammography exam, all models (patch heatmaps, whole-image classifier + Grad-CAM,
lesion U-Net), on a full-field exam (3328 x 2560 at 0.07 mm), against the 10 s goal.

    python benchmarks/bench_analyze.py [--repeats 3] [--device auto]

Times `viewer.analysis.run.analyze_mammo_exam` on views already decoded (what the Analyze button
does); the first (cold) run includes loading the weights. Prints a table with ratios to the goal
and where the time goes (per model, from a profiled run).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_S = 10.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: the app's, all cores but one)")
    ap.add_argument("--size", type=int, nargs=2, default=None, help="rows cols (default: full field 3328 2560)")
    args = ap.parse_args()

    import torch

    from viewer.analysis import run
    from viewer.core.io import load_series, scan
    from viewer.core.mammo import four_view
    from viewer.core.synthetic import MG_FULL_SIZE, write_mammo_exam

    size = tuple(args.size) if args.size else MG_FULL_SIZE
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_mammo_exam(Path(tmp), size, seed=11, lesion_side="L")
        print(f"exam {size[0]}x{size[1]} x 4 views written in {time.perf_counter() - t:.1f} s")
        result = scan(Path(tmp))
        study = result.studies[0]
        views = {n: (s, load_series(s)) for n, s in four_view(study).items() if s is not None}

    device = run.resolve_device(args.device)  # also sets torch's threads as the app does
    if args.threads:
        os.environ["LIGHTBOX_TORCH_THREADS"] = str(args.threads)
    rows = []
    t = time.perf_counter()
    res = run.analyze_mammo_exam(views, study.uid, device)
    rows.append(("cold (incl. loading weights)", time.perf_counter() - t))
    warm = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        res = run.analyze_mammo_exam(views, study.uid, device)
        warm.append(time.perf_counter() - t)
    rows.append((f"warm, median of {args.repeats}", statistics.median(warm)))

    # where the time goes: the same steps one by one
    from inference.classify import analyze_view
    from inference.preprocess.mammo import chest_wall_from_orientation
    from inference.segment import segment_image

    cards = run.mammo_models()
    pm, pc = run.load(cards["patch"], device)
    em, ec = run.load(cards["exam"], device)
    parts = {"preprocess + heatmap + classifier + Grad-CAM": 0.0, "lesion U-Net": 0.0}
    for name, (series, vol) in views.items():
        img, sp = vol.array[0], (float(vol.spacing[1]), float(vol.spacing[2]))
        cw = chest_wall_from_orientation(vol.info.patient_orientation)
        t = time.perf_counter()
        analyze_view(name, img, sp, pm, pc, em, cw, device, True)
        parts["preprocess + heatmap + classifier + Grad-CAM"] += time.perf_counter() - t
        if cards["segmentation"] is not None:
            sm, sc = run.load(cards["segmentation"], device)
            t = time.perf_counter()
            segment_image(sm, sc, img, sp, name[0], name[1:], device=device, chest_wall=cw)
            parts["lesion U-Net"] += time.perf_counter() - t

    print(f"\n4-view exam analysis, all models ({', '.join(res.models.values())}), device {device}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"{'run':34s} {'seconds':>8s} {'vs 10 s goal':>13s}")
    for label, s in rows:
        print(f"{label:34s} {s:8.2f} {s / GOAL_S:12.2f}x")
    print("\nwhere the time goes (4 views, summed):")
    for label, s in parts.items():
        print(f"  {label:48s} {s:6.2f} s")
    print(f"\nexam scores: {res.exam_scores}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
