"""Retrieve an uncompressed CT series from a local Orthanc over DIMSE: DCMTK's getscu (the baseline)
vs Lightbox's C-GET and C-MOVE through the retrieve cache, in one run, median of --repeat runs.

    .venv/bin/python benchmarks/bench_retrieve_dimse.py [--slices 300] [--repeat 3]

Goal (issue 13): Lightbox C-GET <= 1.2x getscu's time. The baseline is getscu with TCP_NODELAY=1
(DCMTK's switch for Nagle's algorithm): without it, each C-STORE response waits for a delayed ACK
(~40 ms a file on Linux), which would make any client look fast. Plain getscu is listed too.
--orthanc-nagle leaves Orthanc as installed (Nagle on): getscu then takes seconds and varies a lot,
while Lightbox, which acknowledges each segment at once (TCP_QUICKACK), stays near its usual time.
"""
from __future__ import annotations

import argparse
import os
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

from orthanc_server import OrthancServer, free_port, missing  # noqa: E402

from viewer.core import synthetic  # noqa: E402
from viewer.remote import parse_address  # noqa: E402
from viewer.remote.cache import RetrieveCache  # noqa: E402
from viewer.remote.dimse import DimseClient  # noqa: E402


def run_getscu(orthanc: OrthancServer, study: str, series: str, out: Path, nodelay: bool = True) -> int:
    out.mkdir(parents=True)
    cmd = ["getscu", "-aet", "GETSCU", "-aec", orthanc.aet, "-S", "-k", "QueryRetrieveLevel=SERIES",
           "-k", f"StudyInstanceUID={study}", "-k", f"SeriesInstanceUID={series}", "-od", str(out),
           "127.0.0.1", str(orthanc.dicom_port)]
    env = {**os.environ, "TCP_NODELAY": "1" if nodelay else "0"}
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return sum(1 for p in out.iterdir() if p.is_file())


def run_lightbox(orthanc: OrthancServer, retrieve: str, move_port: int, study: str, series: str, out: Path) -> int:
    server = parse_address(orthanc.dimse_url, name="bench")
    server.retrieve, server.move_port = retrieve, move_port
    report = RetrieveCache(out).retrieve(DimseClient(server), study, series)
    return report.fetched


def run_bare_sink(orthanc: OrthancServer, study: str, series: str, out: Path) -> int:
    """C-GET with a sink that only writes each file: what the DIMSE client costs without the cache."""
    out.mkdir(parents=True)
    count = [0]

    def sink(data: bytes) -> None:
        count[0] += 1
        (out / f"{count[0]}.dcm").write_bytes(data)

    return DimseClient(parse_address(orthanc.dimse_url)).fetch(study, series, None, sink)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-nagle-row", action="store_true", help="skip the slow plain-getscu row")
    ap.add_argument("--orthanc-nagle", action="store_true",
                    help="leave Nagle's algorithm on in Orthanc too (its default; timings then vary a lot)")
    args = ap.parse_args(argv)
    why = missing() or (None if shutil.which("getscu") else "DCMTK's getscu is not installed")
    if why:
        print(f"skipped: {why}")
        return 0
    with tempfile.TemporaryDirectory(prefix="lightbox-bench-dimse-") as tmp:
        tmp = Path(tmp)
        move_port = free_port()
        orthanc = OrthancServer(tmp / "orthanc", modalities={"lightbox": ("LIGHTBOX", "127.0.0.1", move_port)})
        if not args.orthanc_nagle:
            os.environ["TCP_NODELAY"] = "1"  # read by Orthanc's DCMTK at start
        orthanc.start()
        try:
            t = time.perf_counter()
            ct = synthetic.write_ct_study(tmp / "src", shape=(args.slices, args.size, args.size))
            orthanc.upload(ct.files)
            mb = sum(Path(p).stat().st_size for p in ct.files) / 1e6
            print(f"{args.slices} slices of {args.size}x{args.size} uncompressed ({mb:.0f} MB) on Orthanc "
                  f"in {time.perf_counter() - t:.1f} s")
            study, series = str(ct.volume.info.study_uid), str(ct.volume.info.series_uid)
            runs = {
                "getscu (DCMTK)": lambda out: run_getscu(orthanc, study, series, out),
                "getscu, Nagle on": lambda out: run_getscu(orthanc, study, series, out, nodelay=False),
                "Lightbox C-GET": lambda out: run_lightbox(orthanc, "get", move_port, study, series, out),
                "Lightbox C-MOVE": lambda out: run_lightbox(orthanc, "move", move_port, study, series, out),
                "C-GET, bare sink": lambda out: run_bare_sink(orthanc, study, series, out),
            }
            if args.no_nagle_row:
                del runs["getscu, Nagle on"]
            times: dict[str, list[float]] = {name: [] for name in runs}
            for r in range(args.repeat):
                names = list(runs)
                names = names[r % len(names):] + names[:r % len(names)]  # rotate the order each round
                for name in names:
                    out = tmp / f"out-{r}-{names.index(name)}"
                    t = time.perf_counter()
                    n = runs[name](out)
                    times[name].append(time.perf_counter() - t)
                    if n != args.slices:
                        print(f"{name}: got {n} of {args.slices} instances")
                        return 1
                    shutil.rmtree(out, ignore_errors=True)
        finally:
            orthanc.stop()
    base = statistics.median(times["getscu (DCMTK)"])
    base_min = min(times["getscu (DCMTK)"])
    print(f"{'retrieve':<20}{'median s':>10}{'MB/s':>8}{'x getscu':>10}{'min s':>8}{'x (min)':>9}   runs")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<20}{med:>10.2f}{mb / med:>8.0f}{med / base:>10.2f}{min(ts):>8.2f}{min(ts) / base_min:>9.2f}   "
              + " ".join(f"{x:.2f}" for x in ts))
    ratio = statistics.median(times["Lightbox C-GET"]) / base
    print(f"goal: Lightbox C-GET <= 1.2x getscu: {'met' if ratio <= 1.2 else 'NOT met'} ({ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
