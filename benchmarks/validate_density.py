"""Validate inference.density on phantom mammograms whose true fibroglandular fraction is known.

Generates N breasts (CC and MLO each) with a fibroglandular bias spread evenly over fatty .. extremely
dense, estimates percent density per view and per breast, and prints the mean absolute error in
percentage points, the BI-RADS category agreement (percent and Cohen's kappa), a confusion table and the
time per view. The truth is the generator's own (inference.phantoms.mammo_image_with_truth).

    .venv/bin/python benchmarks/validate_density.py [--n 40] [--size 832 640] [--seed 5000]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.density import CATEGORIES, breast_density, category, view_density  # noqa: E402
from inference.phantoms import mammo_image_with_truth, mammo_spacing  # noqa: E402

BIAS_RANGE = (-1.6, 2.0)  # fibroglandular bias: ~5 % .. ~90 % true density on these phantoms


def run(n: int, size=(832, 640), seed0: int = 5000, sides=("R", "L")) -> dict:
    """Per view and per breast: (true percent, estimated percent); seconds per view."""
    spacing = mammo_spacing(size)
    views, breasts, seconds, pect = [], [], [], []
    for i in range(n):
        bias = BIAS_RANGE[0] + (BIAS_RANGE[1] - BIAS_RANGE[0]) * i / max(n - 1, 1)
        side = sides[i % len(sides)]
        truth_b, est_b = [], {}
        for view in ("CC", "MLO"):
            img, _m, truth = mammo_image_with_truth(side, view, size, seed0 + i, density_bias=bias)
            t0 = time.perf_counter()
            est = view_density(img, spacing, mlo=view == "MLO")
            seconds.append(time.perf_counter() - t0)
            views.append((view, truth["percent_dense"], est.percent))
            if view == "MLO":
                pect.append(bool(est.pectoralis_removed))
            truth_b.append(truth["percent_dense"])
            est_b[side + view] = est
        breasts.append((float(np.mean(truth_b)), breast_density(est_b).percent))
    return {"views": views, "breasts": breasts, "seconds": seconds, "pectoralis_removed": pect}


def kappa(a: list[str], b: list[str]) -> float:
    """Cohen's kappa of two category lists."""
    idx = {c: i for i, c in enumerate(CATEGORIES)}
    m = np.zeros((len(CATEGORIES),) * 2)
    for x, y in zip(a, b):
        m[idx[x], idx[y]] += 1
    total = m.sum()
    po = np.trace(m) / total
    pe = float((m.sum(0) * m.sum(1)).sum()) / total ** 2
    return float((po - pe) / (1 - pe)) if pe < 1 else 1.0


def table(pairs: list[tuple[float, float]], title: str) -> dict:
    truth = np.array([t for t, _ in pairs])
    est = np.array([e for _, e in pairs])
    ct, ce = [category(t) for t in truth], [category(e) for e in est]
    out = {"n": len(pairs), "mae_pp": float(np.mean(np.abs(est - truth))), "bias_pp": float(np.mean(est - truth)),
           "max_err_pp": float(np.max(np.abs(est - truth))), "r": float(np.corrcoef(truth, est)[0, 1]),
           "agreement": float(np.mean([a == b for a, b in zip(ct, ce)])), "kappa": kappa(ct, ce)}
    print(f"\n{title}: n={out['n']}  MAE {out['mae_pp']:.1f} pp  bias {out['bias_pp']:+.1f} pp  "
          f"max {out['max_err_pp']:.1f} pp  r {out['r']:.3f}  category agreement {100 * out['agreement']:.0f} %  "
          f"kappa {out['kappa']:.2f}")
    print("  true\\est " + " ".join(f"{c:>4}" for c in CATEGORIES))
    for c in CATEGORIES:
        print(f"  {c:>8} " + " ".join(f"{sum(1 for a, b in zip(ct, ce) if a == c and b == d):>4}" for d in CATEGORIES))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="breasts (each CC + MLO)")
    ap.add_argument("--size", type=int, nargs=2, default=(832, 640), help="rows cols")
    ap.add_argument("--seed", type=int, default=5000)
    args = ap.parse_args(argv)
    res = run(args.n, tuple(args.size), args.seed)
    print(f"density validation on {args.n} phantom breasts at {args.size[0]}x{args.size[1]}, "
          f"true density {min(t for _, t, _ in res['views']):.0f}-{max(t for _, t, _ in res['views']):.0f} %")
    for view in ("CC", "MLO"):
        table([(t, e) for v, t, e in res["views"] if v == view], f"{view} views")
    table([(t, e) for _, t, e in res["views"]], "all views")
    table(res["breasts"], "per breast (mean of CC and MLO)")
    print(f"\npectoralis found and removed on {sum(res['pectoralis_removed'])}/{len(res['pectoralis_removed'])} "
          "MLO views (else counted as breast tissue)")
    s = np.array(res["seconds"])
    print(f"\ntime per view: median {1000 * np.median(s):.0f} ms, max {1000 * s.max():.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
