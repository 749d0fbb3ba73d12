"""Time to the first slice on screen while a CT is retrieved, as a fraction of the whole retrieve.

A real Orthanc (tests/orthanc_server.py) holds a synthetic 512x512xN CT (uncompressed); the Remote
panel of an offscreen main window retrieves the series into an empty cache, as a user would. Printed:
the whole retrieve (first request to last file in the cache), the first slice on screen (the partial
folder opened after the panel's first files), the full volume on screen (the last re-read), and
the old way for reference: retrieve everything, then open the folder.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_first_slice.py --slices 300
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def wait(app, condition, timeout=600.0, what="") -> float:
    start = time.perf_counter()
    while not condition():
        app.processEvents()
        time.sleep(0.002)
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"timed out waiting for {what}")
    return time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512, help="rows = columns")
    ap.add_argument("--protocol", choices=("dicomweb", "dimse"), default="dicomweb")
    ap.add_argument("--first", type=int, default=None, help="files before the partial folder opens "
                    "(default: the panel's own)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-first-slice-") as tmp:
        tmp = Path(tmp)
        os.environ["XDG_CONFIG_HOME"] = str(tmp / "config")
        os.environ["LIGHTBOX_CACHE_DIR"] = str(tmp / "lbcache")
        from PySide6.QtCore import QSettings
        from PySide6.QtWidgets import QApplication

        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp / "settings"))
        import orthanc_server

        from viewer.core.synthetic import write_ct_study
        from viewer.remote import servers as store_mod
        from viewer.remote.base import parse_address
        from viewer.remote.cache import RetrieveCache
        from viewer.ui.main_window import MainWindow
        from viewer.ui.remote_panel import RemotePanel

        t = time.perf_counter()
        ct = write_ct_study(tmp / "ct", shape=(args.slices, args.size, args.size), spacing=(1.0, 0.7, 0.7), seed=1)
        info = ct.volume.info
        mb = sum(p.stat().st_size for p in ct.files) / 1e6
        print(f"CT {args.size}x{args.size}x{args.slices}: {mb:.0f} MB written in {time.perf_counter() - t:.1f} s")
        server = orthanc_server.OrthancServer(tmp / "orthanc").start()
        try:
            server.upload(ct.files)
            app = QApplication.instance() or QApplication([])
            store = store_mod.ServerStore(tmp / "servers.json")
            url = server.dicomweb_url if args.protocol == "dicomweb" else server.dimse_url
            store.put(parse_address(url, name="bench"))

            rows = []
            # a first retrieve, not counted, so both modes read the files from Orthanc's warm storage
            for mode in ("warm-up", "early display", "retrieve, then open", "early display"):
                w = MainWindow()
                w.resize(1200, 800)
                w.show()
                w.remote.shutdown()
                panel = RemotePanel(w, store, RetrieveCache(tmp / f"cache-{mode}-{len(rows)}"))
                w.remote_dock.setWidget(panel)
                if args.first:
                    panel.early_first = args.first
                panel.reload_servers("bench")
                marks: dict[str, float] = {}
                panel.retrieved.connect(lambda _r: marks.setdefault("retrieved", time.perf_counter()))
                panel.failed.connect(lambda m: sys.exit(f"retrieve failed: {m}"))
                w.image_shown.connect(lambda: marks.setdefault("first", time.perf_counter()))
                start = time.perf_counter()
                if mode in ("early display", "warm-up"):
                    panel.retrieve(info.study_uid, info.series_uid)
                    full = wait(app, lambda: panel.early is not None and panel.early.done, what="the full volume")
                    wait(app, lambda: "retrieved" in marks, what="the retrieve's end")
                else:
                    panel.retrieve(info.study_uid, info.series_uid, open_when_done=False)
                    wait(app, lambda: "retrieved" in marks, what="the retrieve")
                    marks.pop("first", None)
                    w.open_path(panel.cache.series_dir(info.study_uid, info.series_uid))
                    wait(app, lambda: "first" in marks and not w.busy, what="the opened folder")
                    full = marks["first"]
                shown = w.slice_view.volume.shape[0] if w.slice_view.volume is not None else 0
                if shown != args.slices:
                    raise SystemExit(f"{mode}: {shown} slices on screen at the end, expected {args.slices}")
                retrieve = marks["retrieved"] - start
                if mode != "warm-up":
                    rows.append((mode, retrieve, marks["first"] - start, full - start))
                w.shutdown()
                w.close()
                w.deleteLater()
                app.processEvents()
        finally:
            server.stop()

    print(f"\n{'mode':22} {'retrieve s':>11} {'first slice s':>14} {'fraction':>9} {'all slices s':>13}")
    for mode, retrieve, first, full in rows:
        print(f"{mode:22} {retrieve:11.2f} {first:14.2f} {first / retrieve:9.3f} {full:13.2f}")
    early = [r for r in rows if r[0] == "early display"]
    fraction = sorted(r[2] / r[1] for r in early)[len(early) // 2]
    print(f"\ntime to first slice on screen = {fraction:.3f} of the whole retrieve ({args.protocol}, "
          f"{args.slices} slices of {args.size}x{args.size}, early display runs before and after the "
          f"reference); without early display {rows[1][2] / rows[1][1]:.2f}")


if __name__ == "__main__":
    main()
