"""Load a 512x512x300 synthetic CT: Lightbox's loader vs SimpleITK ImageSeriesReader.

Both measured the way a user waits for them, from a folder path to a numpy
array: ours = scan (headers) + load_series; SimpleITK = GetGDCMSeriesFileNames +
Execute + a zero-copy array view. Files are read once first so both run from
the page cache. Runs alternate between the two; medians are compared as a
ratio (goal <= 1.0). Peak memory of our load is measured in a fresh process.

    python benchmarks/bench_load.py [--runs 7] [--data DIR] [--shape 300 512 512]
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

import numpy as np
import SimpleITK as sitk

from viewer.core.io import load_series, scan


def ensure_data(folder: Path, shape) -> Path:
    marker = folder / ".complete"
    if marker.exists() and marker.read_text().strip() == str(list(shape)):
        return folder
    from viewer.core.synthetic import write_ct_study

    print(f"writing synthetic CT {shape} to {folder} ...", file=sys.stderr)
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.glob("*.dcm"):
        f.unlink()
    write_ct_study(folder, shape=tuple(shape), spacing=(1.0, 0.7, 0.7), seed=0)
    marker.write_text(str(list(shape)))
    return folder


def ours(folder: Path):
    t0 = time.perf_counter()
    result = scan(folder)
    t1 = time.perf_counter()
    vol = load_series(max(result.series, key=lambda s: len(s.frames)))
    t2 = time.perf_counter()
    return vol.array, t2 - t0, {"scan": t1 - t0, "pixels": t2 - t1}


def simpleitk(folder: Path):
    t0 = time.perf_counter()
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))
    t1 = time.perf_counter()
    reader.SetFileNames(names)
    image = reader.Execute()
    array = sitk.GetArrayViewFromImage(image)
    t2 = time.perf_counter()
    return (array, image), t2 - t0, {"scan": t1 - t0, "pixels": t2 - t1}


PEAK_SNIPPET = """
import json, re, resource, sys
from viewer.core.io import load_series, scan

def high_water_bytes():
    # VmHWM is per address space (reset by exec); ru_maxrss would inherit the parent's peak.
    try:
        text = open("/proc/self/status").read()
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", text).group(1)) * 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

base = high_water_bytes()
vol = load_series(max(scan(sys.argv[1]).series, key=lambda s: len(s.frames)))
print(json.dumps({"peak_delta": high_water_bytes() - base, "volume_bytes": vol.array.nbytes}))
"""


def peak_memory(folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PEAK_SNIPPET, str(folder)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "lightbox-bench" / "ct")
    ap.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512], metavar=("Z", "Y", "X"))
    args = ap.parse_args()
    folder = ensure_data(args.data / "x".join(map(str, args.shape)), args.shape)
    for f in folder.iterdir():  # page cache warm for both readers
        f.read_bytes()

    ours_arr, _, _ = ours(folder)
    (sitk_arr, _image), _, _ = simpleitk(folder)
    same = bool(np.array_equal(ours_arr, sitk_arr))
    del ours_arr, sitk_arr, _image

    times = {"lightbox": [], "simpleitk": []}
    parts = {"lightbox": [], "simpleitk": []}
    for i in range(args.runs):
        order = (("lightbox", ours), ("simpleitk", simpleitk))
        for name, fn in (order if i % 2 == 0 else order[::-1]):
            arr, seconds, split = fn(folder)
            del arr
            times[name].append(seconds)
            parts[name].append(split)
    med = {k: statistics.median(v) for k, v in times.items()}
    split_med = {k: {p: statistics.median(s[p] for s in v) for p in ("scan", "pixels")} for k, v in parts.items()}
    mem = peak_memory(folder)
    ratio = med["lightbox"] / med["simpleitk"]
    mem_ratio = mem["peak_delta"] / mem["volume_bytes"]

    files = sum(1 for f in folder.iterdir() if f.suffix == ".dcm")
    print(f"\nLoad {'x'.join(map(str, args.shape[::-1]))} CT ({files} files, "
          f"{mem['volume_bytes'] / 2**20:.0f} MiB as int16), median of {args.runs} runs, page cache warm, "
          f"{os.cpu_count()} CPUs")
    print(f"{'reader':<12}{'median s':>10}{'headers s':>11}{'pixels s':>10}{'min s':>8}{'max s':>8}")
    for name in ("lightbox", "simpleitk"):
        print(f"{name:<12}{med[name]:>10.3f}{split_med[name]['scan']:>11.3f}{split_med[name]['pixels']:>10.3f}"
              f"{min(times[name]):>8.3f}{max(times[name]):>8.3f}")
    print(f"\nratio lightbox / simpleitk: {ratio:.2f}x  (goal <= 1.00x)  {'PASS' if ratio <= 1.0 else 'MISS'}")
    print(f"identical arrays: {same}")
    print(f"peak memory of our load: {mem['peak_delta'] / 2**20:.0f} MiB = {mem_ratio:.2f}x the volume "
          f"(goal <= 2.00x)  {'PASS' if mem_ratio <= 2.0 else 'MISS'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
