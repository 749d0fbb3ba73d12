"""Domain check: separation of held-out phantoms from real images, and its cost in an analysis.

Part 1, per demo model: the domain score (1 = a typical training image) of held-out phantoms
(seeds no training used) and of real images from pydicom's and pydicom-data's test sets, fed
the way Analyze feeds them (viewer.core.io; a single slice repeated to 8 slices, an image under
60 mm tiled in-plane, MONOCHROME1 inverted, a radiograph's missing spacing estimated as for a
mammogram). Printed: min/max of each group, the card's threshold, and the margins
threshold / max(held-out) and min(real) / threshold (both > 1 means every image is on its side).

Part 2, overhead: the analysis calls with and without ``inference.domain.watch`` around them, in
the same process, alternating, median of --runs: segment_volume on a 120x256x256 CT phantom, and
one mammography view (analyze_view with Grad-CAM + segment_image) at 1109x853. Goal < 5 %.
The end-to-end ratio carries run-to-run noise of a few per cent on a busy machine, so the time
spent inside the check itself (the hook's pooling and result()'s scoring) is printed too.

    python benchmarks/bench_domain.py [--runs 5] [--threads 2] [--quick]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from inference import domain as dom
from inference import phantoms
from inference.registry import load_model, shipped_models_dir

CT_REAL = ["CT_small.dcm", "eCT_Supplemental.dcm", "693_UNCR.dcm", "693_J2KR.dcm",
           "MR_small.dcm", "MR2_UNCR.dcm", "emri_small.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm"]
CR_REAL = ["RG1_UNCR.dcm", "RG3_UNCR.dcm", "RG1_J2KR.dcm", "RG3_J2KR.dcm"]


def load_real(name: str):
    from pydicom.data import get_testdata_file

    from viewer.core.io import load_series, scan

    series = [s for s in scan(Path(get_testdata_file(name))).series if s.kind in ("dicom", "file")][0]
    return load_series(series), series


def thin_volume(array, spacing, slices: int = 8, min_mm: float = 60.0):
    a = np.asarray(array, dtype=np.float32)
    if a.shape[0] < slices:
        a = np.repeat(a, math.ceil(slices / a.shape[0]), axis=0)[:slices]
    reps = [1] + [max(1, math.ceil(min_mm / (n * float(s)))) for n, s in zip(a.shape[1:], spacing[1:])]
    return np.tile(a, reps)


def radiograph(name: str):
    from viewer.core.mammo import bright_is_dense, estimate_spacing

    volume, series = load_real(name)
    est = estimate_spacing(series, volume.shape)
    spacing = (est.mm, est.mm) if est else tuple(float(s) for s in volume.spacing[1:])
    return bright_is_dense(volume, series)[0], spacing


class Models:
    def __init__(self):
        self.m = {n: load_model(shipped_models_dir() / f"{n}.json", device="cpu")
                  for n in ("ct-organs-unet3d", "mammo-patch", "mammo-exam", "mammo-lesion-unet2d")}

    def ct(self, hu, spacing, check=True):
        from inference.segment import segment_volume

        module, card = self.m["ct-organs-unet3d"]
        if not check:
            segment_volume(module, card, hu, spacing, device="cpu", probabilities="none")
            return None
        with dom.watch(card, module) as w:
            segment_volume(module, card, hu, spacing, device="cpu", probabilities="none")
        return w.result()

    def mammo(self, image, spacing, name, check=True):
        from inference.classify import analyze_view
        from inference.segment import segment_image

        (pm, pc), (em, ec), (sm, sc) = (self.m[n] for n in ("mammo-patch", "mammo-exam", "mammo-lesion-unet2d"))
        if not check:
            analyze_view(name, image, spacing, pm, pc, em, None, "cpu", True)
            segment_image(sm, sc, image, spacing, name[0], name[1:], device="cpu")
            return None
        with dom.watch(pc, pm) as wp, dom.watch(ec, em) as we:
            analyze_view(name, image, spacing, pm, pc, em, None, "cpu", True)
        with dom.watch(sc, sm) as ws:
            segment_image(sm, sc, image, spacing, name[0], name[1:], device="cpu")
        return {"mammo-patch": wp.result(), "mammo-exam": we.result(), "mammo-lesion-unet2d": ws.result()}


def separation(models: Models, quick: bool) -> None:
    scores: dict[str, dict[str, list[tuple[str, float]]]] = {}

    def add(model, group, what, r):
        scores.setdefault(model, {"held-out": [], "real": []})[group].append((what, r.score))

    ct_held = [((60, 128, 128), (5.0, 2.8, 2.8)), ((120, 256, 256), (2.5, 1.4, 1.4)),
               ((96, 192, 192), (3.0, 1.8, 1.8))]
    for i, (shape, spacing) in enumerate(ct_held[:1] if quick else ct_held):
        for seed in ((1000,) if quick else (1000, 1001)):
            hu, _ = phantoms.ct_phantom(shape=shape, spacing=spacing, seed=seed + 2 * i)
            add("ct-organs-unet3d", "held-out", f"phantom {seed + 2 * i}", models.ct(hu, spacing))
    for name in CT_REAL[:3] + CT_REAL[4:7] if quick else CT_REAL:
        volume, _ = load_real(name)
        spacing = tuple(float(s) for s in volume.spacing)
        add("ct-organs-unet3d", "real", name, models.ct(thin_volume(volume.array, spacing), spacing))
    sizes = [(1109, 853), (832, 640), (1664, 1280)]
    for seed in ((900_000,) if quick else (900_000, 900_001, 900_002)):
        for view in phantoms.MG_VIEWS:
            size = sizes[(seed + len(view)) % len(sizes)]
            img, _ = phantoms.mammo_image(view[0], view[1:], size=size, seed=seed, mass=seed % 2 == 0)
            for model, r in models.mammo(img, phantoms.mammo_spacing(size), view).items():
                add(model, "held-out", f"phantom {seed} {view} {size[0]}x{size[1]}", r)
    for name in CR_REAL[:2] if quick else CR_REAL:
        image, spacing = radiograph(name)
        for view in ("RCC", "LMLO"):
            for model, r in models.mammo(image, spacing, view).items():
                add(model, "real", f"{name} as {view}", r)

    print("\nDomain scores (1 = a typical training image; flagged when > threshold)")
    print(f"{'model':22s} {'held-out n':>10s} {'min':>7s} {'max':>7s} | {'real n':>6s} {'min':>8s} {'max':>10s} | "
          f"{'threshold':>9s} {'thr/held':>8s} {'real/thr':>8s}")
    for model, groups in scores.items():
        h = [s for _, s in groups["held-out"]]
        r = [s for _, s in groups["real"]]
        thr = float(models.m[model][1].domain["threshold"])
        print(f"{model:22s} {len(h):10d} {min(h):7.2f} {max(h):7.2f} | {len(r):6d} {min(r):8.1f} {max(r):10.1f} | "
              f"{thr:9.2f} {thr / max(h):8.2f} {min(r) / thr:8.2f}")
    print("\nreal images, lowest score per model:")
    for model, groups in scores.items():
        what, s = min(groups["real"], key=lambda t: t[1])
        print(f"  {model:22s} {s:8.2f}  {what}")


def overhead(models: Models, runs: int) -> None:
    hu, _ = phantoms.ct_phantom(shape=(120, 256, 256), spacing=(2.5, 1.4, 1.4), seed=1003)
    img, _ = phantoms.mammo_image("L", "CC", size=(1109, 853), seed=900_004, mass=True)
    mg_spacing = phantoms.mammo_spacing((1109, 853))
    cases = {"CT segment_volume 120x256x256": lambda check: models.ct(hu, (2.5, 1.4, 1.4), check),
             "MG view: analyze_view + segment_image": lambda check: models.mammo(img, mg_spacing, "LCC", check)}
    # the check's own work, timed where it happens (free of run-to-run noise): pooling in the hook
    # and scoring in result()
    spent = [0.0]

    def timed(fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t0
        return wrapper

    dom.FeatureWatch._hook = timed(dom.FeatureWatch._hook)
    dom.FeatureWatch.result = timed(dom.FeatureWatch.result)
    print(f"\nOverhead of the domain check (median of {runs}, alternating, same process)")
    print(f"{'analysis':40s} {'without s':>9s} {'with s':>9s} {'ratio':>7s} {'check s':>8s} {'check %':>8s}")
    for what, fn in cases.items():
        fn(False)  # warm-up
        times = {False: [], True: []}
        inside = []
        for i in range(runs):
            for check in ((False, True) if i % 2 == 0 else (True, False)):  # neither always goes first
                spent[0] = 0.0
                t0 = time.perf_counter()
                fn(check)
                times[check].append(time.perf_counter() - t0)
                if check:
                    inside.append(spent[0])
        a, b, c = statistics.median(times[False]), statistics.median(times[True]), statistics.median(inside)
        print(f"{what:40s} {a:9.3f} {b:9.3f} {b / a:7.3f} {c:8.4f} {100 * c / a:7.2f}%  (goal < 5 %)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer images (a smoke run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = Models()
    separation(models, args.quick)
    overhead(models, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
