"""The GPU issue's three rows side by side, on whatever device is here (no code change for a GPU).

    python benchmarks/bench_gpu.py [--device auto] [--repeats 3] [--quick] [--memory] [--json PATH]

1. Heatmap: the patch classifier run densely (one pass) vs naively (batches of 256 patches) on one
   full-field view; the ratio is the dense speed-up.
2. 4-view full-field exam (3328 x 2560, every model: heatmaps, classifier + Grad-CAM, lesion U-Net):
   warm (median of --repeats in one process) against the 1.0 s goal; cold (the first Analyze of a
   fresh process: model code imported, weights read, CUDA started) against the 3 s goal, once as
   the app used to and once after the start-up warm-up (viewer.analysis.warmup) had run while the
   user was reading. Each cold run is its own subprocess.
3. CT 300 x 512 x 512 (ct_phantom, 1.0 x 0.7 x 0.7 mm), sw_batch 4 and 32: Lightbox's
   segment_volume against a MONAI-on-device reference that keeps every stage on the device
   (F.interpolate in, sliding_window_inference under the same autocast, softmax, F.interpolate
   back, argmax; only uint8 labels come back), the same network, roi and overlap. Ratio = ours /
   reference (goal <= 1.0) and the share of voxels whose labels agree (goal >= 99.5 %).

Peak accelerator memory (torch.cuda.max_memory_allocated) is printed per row on CUDA; --memory adds
a 512 x 512 x 1000 CT and an exam of four 4096 x 3328 views (their peaks, for a 16 GB card).
--quick shrinks every input (the test suite runs it on the CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

WARM_GOAL_S, COLD_GOAL_S, CT_GOAL_RATIO, CT_AGREEMENT = 1.0, 3.0, 1.0, 0.995


def _sync(dev) -> None:
    if torch.device(dev).type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(dev) -> None:
    if torch.device(dev).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(dev) -> float | None:
    if torch.device(dev).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return None


def _timed(fn, dev):
    _sync(dev)
    t = time.perf_counter()
    out = fn()
    _sync(dev)
    return time.perf_counter() - t, out


# --------------------------------------------------------------------------
# 1. heatmap
# --------------------------------------------------------------------------
def heatmap_row(dev, size, repeats) -> dict:
    from inference import heatmap as hm
    from inference import registry
    from inference.phantoms import mammo_image, mammo_spacing
    from inference.preprocess import mammo as pm

    patch, card = registry.load_model(registry.find_model("mammo-patch"), dev)
    image = mammo_image("L", "CC", size, seed=0, mass=True, calcifications=True)[0]
    x = pm.prepare(image, mammo_spacing(size), normalization=card.normalization).image
    hm.dense_heatmap(patch, x, device=dev)
    _reset_peak(dev)
    dense = min(_timed(lambda: hm.dense_heatmap(patch, x, device=dev), dev)[0] for _ in range(repeats))
    naive = _timed(lambda: hm.naive_heatmap(patch, x, device=dev, batch_size=256), dev)[0]
    return {"dense_s": dense, "naive_s": naive, "speedup": naive / dense, "peak_mb": _peak_mb(dev)}


# --------------------------------------------------------------------------
# 2. the 4-view exam, warm in this process and cold in fresh ones
# --------------------------------------------------------------------------
def load_exam(folder: Path) -> tuple[dict, str]:
    from viewer.core.io import load_series, scan
    from viewer.core.mammo import four_view

    study = scan(folder).studies[0]
    return {n: (s, load_series(s)) for n, s in four_view(study).items() if s is not None}, study.uid


_COLD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
t = time.perf_counter(); import torch; t_torch = time.perf_counter() - t
from pathlib import Path
from benchmarks.bench_gpu import load_exam
views, uid = load_exam(Path({folder!r}))
warm_s = None
if {warm}:
    from viewer.analysis.warmup import warm_up
    t = time.perf_counter(); report = warm_up({dev!r}); warm_s = time.perf_counter() - t
t = time.perf_counter()
from viewer.analysis import run
run.analyze_mammo_exam(views, uid, {dev!r})
if torch.device(run.resolve_device({dev!r})).type == "cuda":
    torch.cuda.synchronize()
print(json.dumps({{"first_analyze_s": time.perf_counter() - t, "import_torch_s": t_torch, "warm_up_s": warm_s}}))
"""


def cold_run(folder: Path, dev: str, warm: bool) -> dict:
    code = _COLD.format(root=str(ROOT), folder=str(folder), dev=dev, warm=bool(warm))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"cold run failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def exam_rows(dev, size, repeats, cold: bool) -> dict:
    from viewer.analysis import run
    from viewer.core.synthetic import write_mammo_exam

    with tempfile.TemporaryDirectory() as tmp:
        write_mammo_exam(Path(tmp), size, seed=11, lesion_side="L")
        views, uid = load_exam(Path(tmp))
        out = {}
        if cold:  # fresh processes first, while nothing of this one is loaded
            out["cold"] = cold_run(Path(tmp), dev, warm=False)
            out["cold_after_warm_up"] = cold_run(Path(tmp), dev, warm=True)
        run.analyze_mammo_exam(views, uid, dev)
        _reset_peak(dev)
        warm = [_timed(lambda: run.analyze_mammo_exam(views, uid, dev), dev)[0] for _ in range(repeats)]
        out.update(warm_s=statistics.median(warm), peak_mb=_peak_mb(dev))
    return out


# --------------------------------------------------------------------------
# 3. CT: segment_volume vs a MONAI pipeline kept on the device
# --------------------------------------------------------------------------
def monai_on_device(net, card, vol: np.ndarray, spacing, sw_batch: int, dev) -> np.ndarray:
    """The reference: every stage on `dev`, only uint8 labels come back to the host."""
    from monai.inferers import sliding_window_inference

    from inference.device import autocast
    from inference.preprocess import ct as ctp

    grid = ctp.grid_shape(vol.shape, spacing, card.input["spacing_mm"])
    hu = torch.from_numpy(vol).to(dev)[None, None].float()
    x = F.interpolate(hu, size=grid, mode="trilinear", align_corners=False)[0, 0]
    del hu
    x = ctp.normalize_hu(x, card.normalization)[None]
    with torch.inference_mode(), autocast(dev):
        logits = sliding_window_inference(x, tuple(card.input["patch_size"]), sw_batch, net,
                                          overlap=card.input["overlap"], mode="gaussian", sigma_scale=0.125,
                                          cval=-1.0)
    probs = torch.softmax(logits.float(), dim=1)
    del logits, x
    full = F.interpolate(probs, size=vol.shape, mode="trilinear", align_corners=False)
    return full.argmax(1)[0].to(torch.uint8).cpu().numpy()


def ct_rows(dev, shape, spacing, batches, repeats) -> list[dict]:
    from inference.phantoms import ct_phantom
    from inference.registry import find_model, load_model
    from inference.segment import segment_volume

    vol = ct_phantom(shape=shape, spacing=spacing, seed=7)[0]
    net, card = load_model(find_model("ct-organs-unet3d"), dev)
    rows = []
    for batch in batches:
        def ours():
            return segment_volume(net, card, vol, spacing, dev, probabilities="none", sw_batch_size=batch)[0]

        def ref():
            return monai_on_device(net, card, vol, spacing, batch, dev)

        ours(), ref()  # kernels chosen, allocator warm
        t_o, t_r = [], []
        for _ in range(repeats):  # alternating, so machine load hits both alike
            _reset_peak(dev)
            t, lab_o = _timed(ours, dev)
            t_o.append(t)
            peak_o = _peak_mb(dev)
            _reset_peak(dev)
            t, lab_r = _timed(ref, dev)
            t_r.append(t)
            peak_r = _peak_mb(dev)
        o, r = statistics.median(t_o), statistics.median(t_r)
        rows.append({"sw_batch": batch, "ours_s": o, "monai_s": r, "ratio": o / r,
                     "agreement": float((lab_o == lab_r).mean()), "peak_mb": peak_o, "monai_peak_mb": peak_r})
    return rows


def memory_rows(dev) -> dict:
    """Peak memory of the two large inputs the issue names (CT 512x512x1000, four 4096x3328 views)."""
    from inference.phantoms import mammo_image, mammo_spacing
    from inference.registry import find_model, load_model
    from inference.segment import segment_image, segment_volume
    from viewer.analysis import run

    out = {}
    vol = np.random.default_rng(0).integers(-1000, 1500, (1000, 512, 512), dtype=np.int16)
    net, card = load_model(find_model("ct-organs-unet3d"), dev)
    _reset_peak(dev)
    out["ct_1000_s"] = _timed(lambda: segment_volume(net, card, vol, (0.8, 0.7, 0.7), dev,
                                                     probabilities="none"), dev)[0]
    out["ct_1000_peak_mb"] = _peak_mb(dev)
    vol = None  # 500 MB on the host, not needed for the exam
    size = (4096, 3328)
    cards = run.mammo_models()
    seg, seg_card = run.load(cards["segmentation"], dev)
    images = [mammo_image(n[0], n[1:], size, seed=1)[0] for n in ("RCC", "LCC", "RMLO", "LMLO")]
    _reset_peak(dev)
    t = time.perf_counter()
    for n, im in zip(("RCC", "LCC", "RMLO", "LMLO"), images):
        segment_image(seg, seg_card, im, mammo_spacing(size), n[0], n[1:], device=dev)
    _sync(dev)
    out["exam_4096_lesion_unet_s"] = time.perf_counter() - t
    out["exam_4096_peak_mb"] = _peak_mb(dev)
    return out


def _mb(v) -> str:
    return "-" if v is None else f"{v:,.0f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small inputs (seconds on a CPU): for tests")
    ap.add_argument("--no-cold", action="store_true", help="skip the two fresh-process runs")
    ap.add_argument("--memory", action="store_true", help="also the 512x512x1000 CT and 4096x3328 exam peaks")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from viewer.analysis import run
    from viewer.core.synthetic import MG_FULL_SIZE

    dev = run.resolve_device(args.device)  # the app's device and thread choice
    gpu = torch.cuda.get_device_name(0) if torch.device(dev).type == "cuda" else "none"
    size = (832, 640) if args.quick else MG_FULL_SIZE
    ct_shape = (40, 128, 128) if args.quick else (300, 512, 512)
    batches = (4,) if args.quick else (4, 32)
    print(f"device {dev} (GPU: {gpu}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    res = {"device": dev, "gpu": gpu, "quick": args.quick}
    res["heatmap"] = heatmap_row(dev, size, args.repeats)
    res["exam"] = exam_rows(dev, size, args.repeats, cold=not args.no_cold)
    res["ct"] = ct_rows(dev, ct_shape, (1.0, 0.7, 0.7), batches, args.repeats)
    if args.memory:
        res["memory"] = memory_rows(dev)

    h, e = res["heatmap"], res["exam"]
    print(f"\n{'row':58s} {'seconds':>9s} {'baseline':>9s} {'ratio':>7s} {'goal':>9s} {'peak MB':>9s}")
    print(f"{'heatmap, 1 view ' + 'x'.join(map(str, size)) + ': dense vs naive batched':58s} "
          f"{h['dense_s']:9.3f} {h['naive_s']:9.3f} {h['dense_s'] / h['naive_s']:6.3f}x {'keep':>9s} "
          f"{_mb(h['peak_mb']):>9s}")
    print(f"{'4-view exam ' + 'x'.join(map(str, size)) + ', warm (median)':58s} {e['warm_s']:9.2f} "
          f"{WARM_GOAL_S:9.2f} {e['warm_s'] / WARM_GOAL_S:6.2f}x {'< 1.0 s':>9s} {_mb(e['peak_mb']):>9s}")
    for key, label in (("cold", "cold: first Analyze of a fresh process"),
                       ("cold_after_warm_up", "cold: first Analyze after the start-up warm-up")):
        if key in e:
            s = e[key]["first_analyze_s"]
            print(f"{label:58s} {s:9.2f} {COLD_GOAL_S:9.2f} {s / COLD_GOAL_S:6.2f}x {'< 3 s':>9s} {'-':>9s}")
    if "cold_after_warm_up" in e:
        print(f"  (the warm-up itself took {e['cold_after_warm_up']['warm_up_s']:.2f} s in the background; "
              f"import torch {e['cold']['import_torch_s']:.2f} s before either)")
    for r in res["ct"]:
        label = f"CT {'x'.join(map(str, ct_shape[::-1]))} segment_volume vs MONAI-on-device, sw {r['sw_batch']}"
        print(f"{label:58s} {r['ours_s']:9.3f} {r['monai_s']:9.3f} {r['ratio']:6.2f}x {'<= 1.0x':>9s} "
              f"{_mb(r['peak_mb']):>9s}")
        print(f"  labels agree on {100 * r['agreement']:.2f} % of voxels (goal >= {100 * CT_AGREEMENT:.1f} %); "
              f"reference peak {_mb(r['monai_peak_mb'])} MB")
    if "memory" in res:
        m = res["memory"]
        print(f"\nCT 512x512x1000: {m['ct_1000_s']:.2f} s, peak {_mb(m['ct_1000_peak_mb'])} MB; "
              f"lesion U-Net on 4 views of 4096x3328: {m['exam_4096_lesion_unet_s']:.2f} s, "
              f"peak {_mb(m['exam_4096_peak_mb'])} MB (goal: both within a 16 GB card)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
