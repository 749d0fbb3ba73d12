"""ONNX Runtime vs PyTorch on the CPU for the four shipped demo models, the way the app runs them.

Each model is exported with inference.onnx_backend.export and run through the app's own code
with the torch module, then with an OrtModule in its place (same thread count for both):

  model                 call timed (as viewer/analysis/run.py makes it)
  ct-organs-unet3d      inference.segment.segment_volume on a demo-size CT phantom (120x256x256,
                        2.5x1.4x1.4 mm), probabilities on the source grid
  mammo-lesion-unet2d   inference.segment.segment_image on a 1664x1280 phantom view with a mass
  mammo-patch           inference.heatmap.dense_heatmap on that view, prepared (crop, 0.42 mm)
  mammo-exam            inference.classify.view_probability on the prepared view (no Grad-CAM:
                        Grad-CAM needs gradients, so the app keeps torch for it)

Every call runs inside inference.domain.watch (the domain check's embedding hook), as in the app;
the exported graph returns that embedding as a second output (onnx_backend.export(tap=...)).
Timings are medians of --runs alternating runs after one warm-up each. Agreement: max |diff| of
the probabilities (softmax / sigmoid), labels identical. The last columns give the rule
inference.onnx_backend.accelerate applies (measured on its probe input, not on this call):
ONNX Runtime only when its probabilities agree (< 1e-4) and it takes <= 0.9x torch's time.

    python benchmarks/bench_onnx.py [--runs 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference import classify, domain, heatmap, onnx_backend, phantoms  # noqa: E402
from inference.preprocess import mammo as mgp  # noqa: E402
from inference.registry import load_model, shipped_models_dir  # noqa: E402
from inference.segment import segment_image, segment_volume  # noqa: E402


def _case_ct(model, card):
    volume, _ = phantoms.ct_phantom(shape=(120, 256, 256), spacing=(2.5, 1.4, 1.4), seed=1000)

    return lambda m: segment_volume(m, card, volume, (2.5, 1.4, 1.4), device="cpu", probabilities="full")


def _mammo_view():
    size = (1664, 1280)
    image, _ = phantoms.mammo_image("R", "CC", size=size, seed=1000, mass=True)
    return image, phantoms.mammo_spacing(size)


def _case_lesion(model, card):
    image, spacing = _mammo_view()
    return lambda m: segment_image(m, card, image, spacing, "R", "CC", device="cpu")


def _prepared(card):
    image, spacing = _mammo_view()
    inp = card.input
    return mgp.prepare(image, spacing, "R", "CC", target_spacing=float(inp.get("spacing_mm", 0.42)),
                       margin=int(inp.get("crop_margin_px", 26)), normalization=card.normalization or None)


def _case_patch(model, card):
    prepared = _prepared(card)
    return lambda m: (None, heatmap.dense_heatmap(m, prepared.image, device="cpu"))


def _case_exam(model, card):
    prepared = _prepared(card)
    return lambda m: (None, np.array([classify.view_probability(m, prepared.image, device="cpu")]))


CASES = {"ct-organs-unet3d": _case_ct, "mammo-lesion-unet2d": _case_lesion, "mammo-patch": _case_patch,
         "mammo-exam": _case_exam}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import onnxruntime

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} thread(s), "
          f"median of {args.runs}")
    head = (f"{'model':<20} {'torch s':>8} {'ORT s':>8} {'ORT/torch':>9} {'max|dp|':>9} {'labels':>7}   "
            f"{'probe ORT/torch':>15} {'accelerate':>11}")
    print(head)
    print("-" * len(head))
    with tempfile.TemporaryDirectory() as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        for name, make in CASES.items():
            model, card = load_model(shipped_models_dir() / f"{name}.json")
            path = onnx_backend.cached_onnx(card)
            t0 = time.perf_counter()
            onnx_backend.export(model, onnx_backend.probe_input(model, card)[:2], path,
                                tap=onnx_backend.embedding_tap(card, model))
            export_s = time.perf_counter() - t0
            kept = {k: getattr(model, k) for k in ("patch_size", "stride") if hasattr(model, k)}
            ortm = onnx_backend.OrtModule(path, "cpu", threads=args.threads, attributes=kept)
            call = make(model, card)

            def run(m, call=call, card=card):
                with domain.watch(card, m):  # the app watches the embedding on every analysis
                    return call(m)

            t_torch, t_ort = [], []
            out_torch = out_ort = None
            run(model)
            run(ortm)  # warm-up of both before the alternating timed runs
            for _ in range(args.runs):
                t0 = time.perf_counter()
                out_torch = run(model)
                t_torch.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                out_ort = run(ortm)
                t_ort.append(time.perf_counter() - t0)
            tt, to = statistics.median(t_torch), statistics.median(t_ort)
            p_torch, p_ort = (np.asarray(o[1], dtype=np.float32) for o in (out_torch, out_ort))
            diff = float(np.abs(p_torch - p_ort).max())
            labels = "-" if out_torch[0] is None else ("same" if np.array_equal(out_torch[0], out_ort[0]) else "DIFFER")
            record = onnx_backend._decision(card, model, path, args.runs)
            print(f"{name:<20} {tt:8.3f} {to:8.3f} {to / tt:9.2f} {diff:9.1e} {labels:>7}   "
                  f"{record['ratio']:15.2f} {record['backend']:>11}   (export {export_s:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
