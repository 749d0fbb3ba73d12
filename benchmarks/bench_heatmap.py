"""Dense (one pass) vs naive (patch by patch) heatmap on a full-size mammogram, and a 4-view exam.

    python benchmarks/bench_heatmap.py [--threads 2] [--device cpu] [--naive-batch 256]

The image is the demo's full-field view (3328 x 2560 at 0.07 mm, with a mass and
calcifications), prepared to the model grid as at inference. Both heatmaps come from
the shipped mammo-patch model; the table gives times, the speed-up and the largest
difference between the two maps. The exam line times everything the mammography
side does for 4 views: preprocessing, heatmap, view probability with Grad-CAM, and
putting the mass heatmap and the Grad-CAM back on the 3328 x 2560 source grids.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from inference import classify, registry
from inference import heatmap as hm
from inference.phantoms import MG_FULL_SIZE, MG_VIEWS, mammo_image, mammo_spacing
from inference.preprocess import mammo as pm


def best_of(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--naive-batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    patch, patch_card = registry.load_model(registry.find_model("mammo-patch"), args.device)
    exam, exam_card = registry.load_model(registry.find_model("mammo-exam"), args.device)
    spacing = mammo_spacing(MG_FULL_SIZE)
    images = {name: mammo_image(name[0], name[1:], MG_FULL_SIZE, seed=0, mass=name[0] == "L",
                                calcifications=name[0] == "L")[0] for name in MG_VIEWS}
    prepared = pm.prepare(images["LCC"], spacing, normalization=patch_card.normalization)
    x = prepared.image
    print(f"image: LCC {MG_FULL_SIZE[0]}x{MG_FULL_SIZE[1]} at {spacing[0]:.2f} mm -> model grid "
          f"{x.shape[0]}x{x.shape[1]} at {prepared.geometry.spacing[0]:.3f} mm; patch {patch.patch_size}, "
          f"stride {patch.stride}, {np.prod(hm.grid_shape(x.shape, patch.patch_size, patch.stride))} positions; "
          f"{args.threads} threads, {args.device}")

    hm.dense_heatmap(patch, x, device=args.device)  # warm-up (allocator, kernels)
    t_dense, dense = best_of(lambda: hm.dense_heatmap(patch, x, device=args.device), args.repeats)
    t_naive, naive = best_of(lambda: hm.naive_heatmap(patch, x, device=args.device,
                                                      batch_size=args.naive_batch), 1)
    t_single, single = best_of(lambda: hm.naive_heatmap(patch, x, device=args.device, batch_size=1), 1)
    diff = float(np.abs(dense - naive).max())
    print(f"load average before timing: {' '.join(f'{v:.2f}' for v in os.getloadavg())} "
          f"(other processes on the same cores slow the multi-threaded dense pass most)")
    print()
    print(f"{'method':<36}{'seconds':>10}{'dense is x faster':>19}{'max |diff| to dense':>21}")
    print(f"{'naive, one patch per call':<36}{t_single:>10.3f}{t_single / t_dense:>19.1f}"
          f"{float(np.abs(dense - single).max()):>21.2e}")
    batched = f"naive, batches of {args.naive_batch} patches"
    print(f"{batched:<36}{t_naive:>10.3f}{t_naive / t_dense:>19.1f}"
          f"{diff:>21.2e}")
    print(f"{'dense, one pass':<36}{t_dense:>10.3f}{1.0:>19.1f}{0.0:>21.2e}")

    def run_exam():
        res = classify.analyze_exam({n: (im, spacing) for n, im in images.items()}, patch, patch_card,
                                    exam, exam_card, device=args.device)
        return res

    def run_exam_with_maps():
        res = run_exam()
        for v in res.views.values():
            v.heatmap_on_source("mass")
            v.cam_on_source()
        return res

    run_exam()  # warm-up
    t_exam, res = best_of(run_exam, args.repeats)
    t_maps, _ = best_of(run_exam_with_maps, args.repeats)
    print()
    print(f"4-view exam (preprocess + heatmap + probability + Grad-CAM): {t_exam:.2f} s")
    print(f"  + mass heatmap and Grad-CAM mapped onto the 4 source grids:  {t_maps:.2f} s")
    print("  view probabilities: " + ", ".join(f"{n} {v.probability:.3f}" for n, v in res.views.items()))
    print("  breast scores (" + res.combine + " of CC+MLO): "
          + ", ".join(f"{k} {s:.3f}" for k, s in res.breast_scores.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
