"""Do the device-resident paths give the CPU's outputs? Same models, same inputs, --device vs cpu.

    python benchmarks/gpu_agreement.py [--device cuda] [--quick]

Rows: the lesion U-Net on a full-field view (label agreement, max |probability difference|), the
patch heatmap and Grad-CAM mapped onto the source grid (max |difference|), the view probability, and
the CT U-Net on a 300 x 512 x 512 phantom (label agreement). A GPU runs under bf16/fp16 autocast, so
the numbers are agreements, not equalities; the tests hold the CPU path to the old outputs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def mammo_rows(dev: str, size) -> list[tuple[str, str]]:
    from inference.classify import analyze_view
    from inference.phantoms import mammo_image, mammo_spacing
    from inference.registry import find_model, load_model
    from inference.segment import segment_image

    image = mammo_image("L", "CC", size, seed=3, mass=True, calcifications=True)[0]
    spacing = mammo_spacing(size)
    out = {}
    for d in ("cpu", dev):
        seg, seg_card = load_model(find_model("mammo-lesion-unet2d"), d)
        patch, patch_card = load_model(find_model("mammo-patch"), d)
        exam, _ = load_model(find_model("mammo-exam"), d)
        t = time.perf_counter()
        va = analyze_view("LCC", image, spacing, patch, patch_card, exam, "left", d, True)
        maps = {c: va.heatmap_on_source(c) for c in patch_card.classes}
        cam = va.cam_on_source()
        labels, prob = segment_image(seg, seg_card, image, spacing, "L", "CC", device=d, chest_wall="left",
                                     prepared=va.prepared)
        out[d] = dict(p=va.probability, maps=maps, cam=cam, labels=labels, prob=prob, s=time.perf_counter() - t)
    a, b = out["cpu"], out[dev]
    return [("view probability |cpu - dev|", f"{abs(a['p'] - b['p']):.2e}"),
            ("heat maps on source grid, max |diff|", f"{max(np.abs(a['maps'][c] - b['maps'][c]).max() for c in a['maps']):.2e}"),
            ("Grad-CAM on source grid, max |diff|", f"{np.abs(a['cam'] - b['cam']).max():.2e}"),
            ("lesion U-Net labels agree", f"{100 * (a['labels'] == b['labels']).mean():.3f} % "
                                          f"(lesion pixels cpu {int((a['labels'] > 0).sum())}, dev {int((b['labels'] > 0).sum())})"),
            ("lesion probability max |diff|", f"{np.abs(a['prob'] - b['prob']).max():.2e}"),
            ("one view, seconds cpu / dev (first run)", f"{a['s']:.2f} / {b['s']:.2f}")]


def ct_rows(dev: str, shape) -> list[tuple[str, str]]:
    from inference.phantoms import ct_phantom
    from inference.registry import find_model, load_model
    from inference.segment import segment_volume

    spacing = (1.0, 0.7, 0.7)
    vol = ct_phantom(shape=shape, spacing=spacing, seed=7)[0]
    labels = {}
    for d in ("cpu", dev):
        net, card = load_model(find_model("ct-organs-unet3d"), d)
        labels[d] = segment_volume(net, card, vol, spacing, d, probabilities="none")[0]
    agree = (labels["cpu"] == labels[dev]).mean()
    return [(f"CT {'x'.join(map(str, shape[::-1]))} labels agree", f"{100 * agree:.3f} %")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    size = (832, 640) if args.quick else (3328, 2560)
    shape = (40, 128, 128) if args.quick else (300, 512, 512)
    rows = mammo_rows(args.device, size) + ct_rows(args.device, shape)
    print(f"\nCPU vs {args.device}: same models, same inputs")
    for label, value in rows:
        print(f"  {label:44s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
