"""An imported nnU-Net v2 model vs nnU-Net's own predictor: same folder, volume and settings, CPU.

    python benchmarks/bench_nnunet.py [--shape 64 128 128] [--repeats 3] [--features 16 32 64 128]

Builds a model folder with nnunetv2 (randomly initialised, one short epoch; see
tests/model_fixtures/nnunet_folder.py), installs it with Lightbox's importer and times, per thread
setting, nnUNetPredictor.predict_single_npy_array (probabilities returned) against the Lightbox
runner's predict (labels and probabilities), median of the repeats, the runners taking turns. Two
Lightbox rows: "exact" (one window per network call, as nnU-Net: the default) and several windows per
call (card input windows_per_batch). Prints one table: seconds, the ratio (goal <= 1.0) and whether
labels are identical / the largest probability difference.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def alternate(fns, repeats: int):
    """Median seconds and last output of each function, run in turn, forwards then backwards (A B B A
    ...), so a machine whose load changes, or the first call after a thread-count change, slows all alike."""
    times, outs = [[] for _ in fns], [None] * len(fns)
    for r in range(repeats):
        order = list(enumerate(fns))
        for i, fn in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            outs[i] = fn()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times], outs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128])
    ap.add_argument("--spacing", type=float, nargs=3, default=[1.5, 0.9, 0.9])
    ap.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--patch", type=int, nargs=3, default=[32, 64, 64])
    ap.add_argument("--folds", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-mirroring", action="store_true")
    ap.add_argument("--batch", type=int, default=4, help="windows per network call of the second Lightbox row")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch thread counts to measure (default: 1 and the default count); one count per process "
                         "avoids the slow first calls after a thread-count change")
    args = ap.parse_args(argv)

    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from inference import formats, registry
    from inference.formats.base import VolumeImage
    from tests.model_fixtures.nnunet_folder import build_model_folder, synthetic_case

    mirroring = not args.no_mirroring
    with tempfile.TemporaryDirectory(prefix="bench-nnunet-") as tmp:
        tmp = Path(tmp)
        folder = build_model_folder(tmp / "nnunet", folds=tuple(range(args.folds)), patch_size=tuple(args.patch),
                                    features=tuple(args.features))
        os.environ["LIGHTBOX_MODELS_DIR"] = str(tmp / "models")
        card = formats.install(formats.inspect(folder))
        card.input["mirroring"] = mirroring
        image, _ = synthetic_case(tuple(args.shape), tuple(args.spacing), "CT", np.random.default_rng(0))
        spacing = tuple(args.spacing)
        print(f"volume {tuple(args.shape)} at {spacing} mm -> target {card.input['spacing_mm']} mm, "
              f"patch {card.input['patch_size']}, features {args.features}, {args.folds} fold(s), "
              f"mirroring {'on' if mirroring else 'off'}, median of {args.repeats}")
        rows = []
        default_threads = torch.get_num_threads()
        for threads in (args.threads or sorted({1, default_threads})):
            torch.set_num_threads(threads)
            predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                        device=torch.device("cpu"), perform_everything_on_device=False,
                                        allow_tqdm=False)
            with contextlib.redirect_stdout(io.StringIO()):
                predictor.initialize_from_trained_model_folder(str(folder), None)

            def reference():
                with contextlib.redirect_stdout(io.StringIO()):
                    return predictor.predict_single_npy_array(image[None], {"spacing": list(spacing)},
                                                              None, None, True)

            runners = {}
            for label, batch in (("exact", 1), (f"{args.batch} windows", args.batch)):
                card.input["windows_per_batch"] = batch
                runners[label] = registry.load_model(card)[0]

            def lightbox(runner):
                def run():
                    torch.set_num_threads(threads)  # as the caller sets it; nnU-Net's export restores its own
                    return runner.predict(VolumeImage(image, spacing))
                return run

            times, outs = alternate([reference] + [lightbox(r) for r in runners.values()], args.repeats)
            ref_labels, ref_probs = outs[0]
            for label, t_lbx, pred in zip(runners, times[1:], outs[1:]):
                same = bool(np.array_equal(pred.labels, ref_labels))
                diff = float(np.abs(pred.probabilities - ref_probs).max())
                rows.append((threads, label, times[0], t_lbx, t_lbx / times[0], same, diff))
        torch.set_num_threads(default_threads)
    print(f"{'threads':>7} {'Lightbox':>10} {'nnU-Net s':>10} {'Lightbox s':>11} {'ratio':>6} {'labels':>9} "
          f"{'max |dp|':>9}")
    for threads, label, t_ref, t_lbx, ratio, same, diff in rows:
        print(f"{threads:>7} {label:>10} {t_ref:>10.2f} {t_lbx:>11.2f} {ratio:>6.2f} "
              f"{'identical' if same else 'DIFFER':>9} {diff:>9.1e}")
    return 0 if all(r[5] for r in rows if r[1] == "exact") else 1


if __name__ == "__main__":
    raise SystemExit(main())
