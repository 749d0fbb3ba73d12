"""Do the device-resident paths give the CPU's outputs? Same models, same inputs, --device vs cpu.

    python benchmarks/gpu_agreement.py [--device cuda] [--precision auto|fp16|bf16|fp32] [--quick]

Rows: the lesion U-Net on a full-field view (label agreement, Dice of the lesion masks, max |probability
difference|), the patch heatmap and Grad-CAM mapped onto the source grid (max |difference|), the view
probability, and the CT U-Net on a 300 x 512 x 512 phantom (label agreement, over all voxels and over
the organs). The reference is the CPU in fp32; the other run is --device at --precision (auto: the
app's choice, fp16 on a GPU), so ``--device cpu --precision bf16`` shows on a CPU what a reduced
precision alone does. The numbers are agreements, not equalities; the tests hold the CPU path to the
old outputs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


REFERENCE = ("cpu", "fp32")


def _runs(dev: str, precision: str):
    """(key, device) for the reference and the candidate, each with LIGHTBOX_PRECISION set as it asks."""
    for key, (d, p) in (("ref", REFERENCE), ("dev", (dev, precision))):
        os.environ["LIGHTBOX_PRECISION"] = p
        yield key, d
    os.environ.pop("LIGHTBOX_PRECISION", None)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0


def mammo_rows(dev: str, size, precision: str = "auto") -> list[tuple[str, str]]:
    from inference.classify import analyze_view
    from inference.phantoms import mammo_image, mammo_spacing
    from inference.registry import find_model, load_model
    from inference.segment import segment_image

    image = mammo_image("L", "CC", size, seed=3, mass=True, calcifications=True)[0]
    spacing = mammo_spacing(size)
    out = {}
    for key, d in _runs(dev, precision):
        seg, seg_card = load_model(find_model("mammo-lesion-unet2d"), d)
        patch, patch_card = load_model(find_model("mammo-patch"), d)
        exam, _ = load_model(find_model("mammo-exam"), d)
        t = time.perf_counter()
        va = analyze_view("LCC", image, spacing, patch, patch_card, exam, "left", d, True)
        maps = {c: va.heatmap_on_source(c) for c in patch_card.classes}
        cam = va.cam_on_source()
        labels, prob = segment_image(seg, seg_card, image, spacing, "L", "CC", device=d, chest_wall="left",
                                     prepared=va.prepared)
        out[key] = dict(p=va.probability, maps=maps, cam=cam, labels=labels, prob=prob, s=time.perf_counter() - t)
    a, b = out["ref"], out["dev"]
    return [("view probability |cpu - dev|", f"{abs(a['p'] - b['p']):.2e}"),
            ("heat maps on source grid, max |diff|", f"{max(np.abs(a['maps'][c] - b['maps'][c]).max() for c in a['maps']):.2e}"),
            ("Grad-CAM on source grid, max |diff|", f"{np.abs(a['cam'] - b['cam']).max():.2e}"),
            ("lesion U-Net labels agree", f"{100 * (a['labels'] == b['labels']).mean():.3f} % "
                                          f"(lesion pixels cpu {int((a['labels'] > 0).sum())}, dev {int((b['labels'] > 0).sum())})"),
            ("lesion masks Dice", f"{_dice(a['labels'] > 0, b['labels'] > 0):.4f}"),
            ("lesion probability max |diff|", f"{np.abs(a['prob'] - b['prob']).max():.2e}"),
            ("one view, seconds cpu / dev (first run)", f"{a['s']:.2f} / {b['s']:.2f}")]


def ct_rows(dev: str, shape, precision: str = "auto") -> list[tuple[str, str]]:
    from inference.phantoms import ct_phantom
    from inference.registry import find_model, load_model
    from inference.segment import segment_volume

    spacing = (1.0, 0.7, 0.7)
    vol = ct_phantom(shape=shape, spacing=spacing, seed=7)[0]
    labels = {}
    for key, d in _runs(dev, precision):
        net, card = load_model(find_model("ct-organs-unet3d"), d)
        labels[key] = segment_volume(net, card, vol, spacing, d, probabilities="none")[0]
    a, b = labels["ref"], labels["dev"]
    organs = (a > 0) | (b > 0)
    size = 'x'.join(map(str, shape[::-1]))
    return [(f"CT {size} labels agree", f"{100 * (a == b).mean():.3f} %"),
            (f"CT {size} labels agree over the organs", f"{100 * (a[organs] == b[organs]).mean():.2f} %")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp16", "bf16", "fp32"),
                    help="the candidate's autocast (LIGHTBOX_PRECISION); the reference is the CPU in fp32")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    size = (832, 640) if args.quick else (3328, 2560)
    shape = (40, 128, 128) if args.quick else (300, 512, 512)
    rows = mammo_rows(args.device, size, args.precision) + ct_rows(args.device, shape, args.precision)
    print(f"\nCPU fp32 vs {args.device} {args.precision}: same models, same inputs")
    for label, value in rows:
        print(f"  {label:44s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
