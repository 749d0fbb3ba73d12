"""3D segmentation of a 512x512x300 CT: Lightbox's path vs a MONAI pipeline, same network.

Both paths take the HU volume on its own grid (300x512x512 at 1.0x0.7x0.7 mm, a
ct_phantom; --random uses random HU instead, which only saves the ~15 s of
phantom rendering) to a uint8 label map on that grid, with the shipped
ct-organs-unet3d card's spacing, patch and overlap:

  stage       ours                                       MONAI
  to model    slab-wise z band matrix + antialiased       monai.transforms.Resize (trilinear) of the
  grid        bilinear, float32 per slab, then HU         whole volume as float32, then the same HU
              windows on the small grid                  windows
  windows     inference.segment.sliding_window           monai.inferers.sliding_window_inference
              (gaussian, same windows, sw_batch_size)    (gaussian, same roi/overlap/sw_batch_size)
  to source   probabilities resampled slab by slab,      monai.transforms.Resize (trilinear) of all
  grid        argmax per slab (labels only; per-class    class probabilities to the full grid, then
              probabilities stay lazy)                   AsDiscrete(argmax=True)

What differs: only the downsampling filter (ours antialiased, MONAI's Resize
point-samples; a row also times MONAI's Resize(anti_aliasing=True), which is not
part of the MONAI pipeline's total), so the window stage is ALSO timed on one identical input tensor
(ours) for both inferers, and their logits' max difference is printed; the
label agreement of the two complete pipelines is printed too. Timings are
medians of --runs alternating runs, with torch.set_num_threads(--threads).

    python benchmarks/bench_segment.py [--runs 3] [--threads 2] [--random] [--sw-batch 4]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from inference.preprocess import ct as ctp
from inference.registry import find_model, load_model
from inference.segment import monai_sliding_window, segment_volume, sliding_window


def make_volume(shape, spacing, random: bool) -> np.ndarray:
    if random:
        return np.random.default_rng(0).integers(-1024, 1500, shape, dtype=np.int16)
    from inference.phantoms import ct_phantom
    return ct_phantom(shape=shape, spacing=spacing, seed=7)[0]


def ours(net, card, vol, spacing, sw_batch):
    times = {}
    t0 = time.perf_counter()
    x = ctp.to_model_grid(vol, spacing, card.input["spacing_mm"], card.normalization)
    t1 = time.perf_counter()
    logits = sliding_window(net, x[None], card.input["patch_size"], overlap=card.input["overlap"],
                            sw_batch_size=sw_batch, pad_value=-1.0)
    probs = torch.softmax(logits[0], 0)
    t2 = time.perf_counter()
    labels = ctp.labels_to_grid(probs, vol.shape)
    t3 = time.perf_counter()
    times.update(to_model=t1 - t0, windows=t2 - t1, to_source=t3 - t2, total=t3 - t0)
    return labels, x, logits, times


def monai_path(net, card, vol, spacing, sw_batch):
    from monai.transforms import AsDiscrete, Resize

    times = {}
    grid = ctp.grid_shape(vol.shape, spacing, card.input["spacing_mm"])
    t0 = time.perf_counter()
    hu = Resize(grid, mode="trilinear")(torch.from_numpy(vol)[None].float())
    x = ctp.normalize_hu(hu.as_tensor()[0] if hasattr(hu, "as_tensor") else hu[0], card.normalization)
    t1 = time.perf_counter()
    logits = monai_sliding_window(net, x[None], card.input["patch_size"], overlap=card.input["overlap"],
                                  sw_batch_size=sw_batch, pad_value=-1.0)
    probs = torch.softmax(logits[0], 0)
    t2 = time.perf_counter()
    full = Resize(vol.shape, mode="trilinear")(probs)
    labels = torch.as_tensor(AsDiscrete(argmax=True)(full))[0].to(torch.uint8).numpy()
    del full
    t3 = time.perf_counter()
    times.update(to_model=t1 - t0, windows=t2 - t1, to_source=t3 - t2, total=t3 - t0)
    return labels, times


def monai_antialiased_resize(vol, grid) -> float:
    """Seconds of MONAI Resize(anti_aliasing=True): the same kind of filter as ours (float32 cast included)."""
    from monai.transforms import Resize

    t0 = time.perf_counter()
    Resize(grid, mode="trilinear", anti_aliasing=True)(torch.from_numpy(vol)[None].float())
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sw-batch", type=int, default=4)
    p.add_argument("--random", action="store_true", help="random HU instead of a phantom")
    p.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512))
    p.add_argument("--spacing", type=float, nargs=3, default=(1.0, 0.7, 0.7))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    shape, spacing = tuple(a.shape), tuple(a.spacing)
    t = time.perf_counter()
    vol = make_volume(shape, spacing, a.random)
    print(f"volume {vol.shape} {vol.dtype} at {spacing} mm ({'random HU' if a.random else 'ct_phantom'}) "
          f"made in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    net, card = load_model(find_model("ct-organs-unet3d"), "cpu")
    grid = ctp.grid_shape(shape, spacing, card.input["spacing_mm"])
    print(f"model {card.name} v{card.version}: grid {grid} at {card.input['spacing_mm']} mm, "
          f"patch {card.input['patch_size']}, overlap {card.input['overlap']}, sw_batch {a.sw_batch}, "
          f"{a.threads} threads", file=sys.stderr)

    o_runs, m_runs, w_ours, w_monai, aa_monai = [], [], [], [], []
    for r in range(a.runs):
        lab_o, x, logits_o, to = ours(net, card, vol, spacing, a.sw_batch)
        o_runs.append(to)
        lab_m, tm = monai_path(net, card, vol, spacing, a.sw_batch)
        m_runs.append(tm)
        # window stage alone on the identical input
        t0 = time.perf_counter()
        same_o = sliding_window(net, x[None], card.input["patch_size"], overlap=card.input["overlap"],
                                sw_batch_size=a.sw_batch, pad_value=-1.0)
        t1 = time.perf_counter()
        same_m = monai_sliding_window(net, x[None], card.input["patch_size"], overlap=card.input["overlap"],
                                      sw_batch_size=a.sw_batch, pad_value=-1.0)
        t2 = time.perf_counter()
        w_ours.append(t1 - t0)
        w_monai.append(t2 - t1)
        aa_monai.append(monai_antialiased_resize(vol, grid))
        print(f"run {r + 1}/{a.runs}: ours {to['total']:.2f} s, MONAI {tm['total']:.2f} s", file=sys.stderr)
    t0 = time.perf_counter()
    lab_api, probs_api = segment_volume(net, card, vol, spacing, device="cpu", sw_batch_size=a.sw_batch)
    t_api = time.perf_counter() - t0
    assert np.array_equal(lab_api, lab_o), "segment_volume differs from the staged path"
    max_diff = float((same_o - same_m).abs().max())
    agree = float((lab_o == lab_m).mean())

    def med(runs, k):
        return statistics.median(r[k] for r in runs)

    rows = [("resample to model grid", med(o_runs, "to_model"), med(m_runs, "to_model")),
            ("  same, MONAI Resize anti_aliasing", med(o_runs, "to_model"), statistics.median(aa_monai)),
            ("sliding window (pipeline input)", med(o_runs, "windows"), med(m_runs, "windows")),
            ("sliding window (identical input)", statistics.median(w_ours), statistics.median(w_monai)),
            ("labels back to source grid", med(o_runs, "to_source"), med(m_runs, "to_source")),
            ("total (volume -> labels)", med(o_runs, "total"), med(m_runs, "total"))]
    print(f"\n3D segmentation, {shape[2]}x{shape[1]}x{shape[0]} CT -> {grid[2]}x{grid[1]}x{grid[0]} model grid, "
          f"median of {a.runs} runs")
    print(f"{'stage':36s} {'ours s':>9s} {'MONAI s':>9s} {'ratio':>7s}")
    for name, t_o, t_m in rows:
        print(f"{name:36s} {t_o:9.2f} {t_m:9.2f} {t_o / t_m:6.2f}x")
    print(f"\nidentical-input logits max |ours - MONAI| = {max_diff:.2e}; "
          f"label agreement of the two pipelines = {100 * agree:.3f}%")
    print(f"segment_volume() end to end (same path, lazy probabilities {probs_api.shape}): {t_api:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
