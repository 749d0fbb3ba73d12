"""Retrieve an uncompressed 512x512x300 CT over WADO-RS from a local Orthanc, three ways, in one run:

  curl         the same multipart/related answer written to one file (the baseline)
  lightbox     RetrieveCache.retrieve(DicomWebClient): QIDO the instance list (for resume), one
               streamed WADO-RS request, each instance written under its SOP UID the moment it is whole
  lightbox fetch   DicomWebClient.fetch alone, each part written to a numbered file (the transport)
  dicomweb-client  DICOMwebClient.iter_series, each Dataset written with pydicom (what that
               library gives: decoded Datasets, to encode again)

Runs alternate between the three (after one warm-up each, so Orthanc's storage is in the page
cache); the median of --repeat runs is compared with curl's (goal <= 1.2x). Also printed: when the
first instance was on disk, as a fraction of the whole retrieve.

    python benchmarks/bench_retrieve_dicomweb.py [--slices 300] [--size 512] [--repeat 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import pydicom  # noqa: E402

from orthanc_server import OrthancServer, missing  # noqa: E402
from viewer.core.synthetic import write_ct_study  # noqa: E402
from viewer.remote import Server  # noqa: E402
from viewer.remote.cache import RetrieveCache  # noqa: E402
from viewer.remote.dicomweb import ACCEPT_DICOM, DicomWebClient  # noqa: E402


def run_curl(url: str, out: Path) -> tuple[float, float | None]:
    started = time.perf_counter()
    subprocess.run(["curl", "-s", "-f", "-o", str(out), "-H", f"Accept: {ACCEPT_DICOM}", url], check=True)
    return time.perf_counter() - started, None


def run_lightbox(server: Server, study: str, series: str, out: Path, n: int) -> tuple[float, float | None]:
    first = []
    started = time.perf_counter()

    def on_file(path, done, total):
        if not first:
            first.append(time.perf_counter() - started)

    report = RetrieveCache(out).retrieve(DicomWebClient(server), study, series, on_file=on_file)
    elapsed = time.perf_counter() - started
    assert report.fetched == n and len(report.files) == n, report
    return elapsed, first[0]


def run_fetch(server: Server, study: str, series: str, out: Path, n: int) -> tuple[float, float | None]:
    """The client alone: one streamed WADO-RS request, each part written to its own file (no listing,
    no header parsing, no rename: what RetrieveCache adds on top)."""
    first = []
    count = 0
    started = time.perf_counter()

    def sink(data: bytes) -> None:
        nonlocal count
        count += 1
        with open(out / f"{count:05d}.dcm", "wb") as fh:
            fh.write(data)
        if not first:
            first.append(time.perf_counter() - started)

    assert DicomWebClient(server).fetch(study, series, None, sink) == n
    return time.perf_counter() - started, first[0]


def run_dicomweb_client(url: str, study: str, series: str, out: Path, n: int) -> tuple[float, float | None]:
    from dicomweb_client import DICOMwebClient

    first = []
    started = time.perf_counter()
    out.mkdir(parents=True)
    count = 0
    # the same Accept as ours (its default asks for explicit VR little endian)
    for ds in DICOMwebClient(url).iter_series(study, series, media_types=(("application/dicom", "*"),)):
        ds.save_as(out / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        count += 1
        if not first:
            first.append(time.perf_counter() - started)
    elapsed = time.perf_counter() - started
    assert count == n, count
    return elapsed, first[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default=None, help="where the retrieved files go (default: the temp folder; "
                                                 "/dev/shm takes the disk's writeback out of the comparison)")
    args = ap.parse_args(argv)
    why = missing()
    if why:
        print(f"bench_retrieve_dicomweb: {why}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="lightbox-bench-wado-"))
    try:
        print(f"writing a {args.slices}x{args.size}x{args.size} CT ...", file=sys.stderr)
        files = write_ct_study(tmp / "src", shape=(args.slices, args.size, args.size), spacing=(1.0, 0.7, 0.7)).files
        size_mb = sum(Path(f).stat().st_size for f in files) / 1e6
        head = pydicom.dcmread(files[0], stop_before_pixels=True)
        study, series = str(head.StudyInstanceUID), str(head.SeriesInstanceUID)
        with OrthancServer(tmp / "orthanc") as orthanc:
            print(f"uploading {len(files)} files ({size_mb:.0f} MB) to Orthanc ...", file=sys.stderr)
            orthanc.upload(files)
            url = orthanc.dicomweb_url
            server = Server("bench", "dicomweb", url=url, timeout=120)
            wado = f"{url}/studies/{study}/series/{series}"
            n = len(files)
            methods = {
                "curl": lambda out: run_curl(wado, out / "answer.multipart"),
                "lightbox": lambda out: run_lightbox(server, study, series, out, n),
                "lightbox fetch": lambda out: run_fetch(server, study, series, out, n),
                "dicomweb-client": lambda out: run_dicomweb_client(url, study, series, out, n),
            }
            times: dict[str, list[float]] = {k: [] for k in methods}
            firsts: dict[str, list[float]] = {k: [] for k in methods}
            for run in range(args.repeat + 1):  # run 0 warms the page cache and is not counted
                for name, method in methods.items():
                    out = (Path(args.out) if args.out else tmp) / f"lightbox-bench-out-{name}-{run}"
                    out.mkdir(parents=True, exist_ok=True)
                    if name == "dicomweb-client":
                        out.rmdir()
                    seconds, first = method(out)
                    shutil.rmtree(out, ignore_errors=True)
                    if run:
                        times[name].append(seconds)
                        if first is not None:
                            firsts[name].append(first / seconds)
        base = statistics.median(times["curl"])
        rows = []
        for name in methods:
            med = statistics.median(times[name])
            rows.append({"method": name, "seconds": round(med, 3), "ratio_to_curl": round(med / base, 2),
                         "MB_per_s": round(size_mb / med, 1),
                         "first_instance_fraction": round(statistics.median(firsts[name]), 3) if firsts[name] else None,
                         "runs": [round(t, 3) for t in times[name]]})
        if args.json:
            print(json.dumps({"instances": n, "MB": round(size_mb, 1), "rows": rows}, indent=1))
        else:
            print(f"WADO-RS retrieve of {n} instances ({size_mb:.0f} MB), median of {args.repeat} runs")
            print(f"{'method':<17}{'seconds':>9}{'x curl':>8}{'MB/s':>8}{'first instance':>16}")
            for r in rows:
                frac = "-" if r["first_instance_fraction"] is None else f"{r['first_instance_fraction']:.1%}"
                print(f"{r['method']:<17}{r['seconds']:>9.2f}{r['ratio_to_curl']:>8.2f}{r['MB_per_s']:>8.0f}{frac:>16}")
            goal = next(r for r in rows if r["method"] == "lightbox")["ratio_to_curl"]
            print(f"goal: lightbox <= 1.2x curl: {'met' if goal <= 1.2 else 'NOT met'} ({goal:.2f}x)")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
