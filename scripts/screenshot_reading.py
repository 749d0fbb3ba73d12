"""The README's reading-tool screenshots (issue 14), made in the real main window, offscreen:

- reading_tools.png: the demo CT with angle, Cobb angle, arrow and text annotations, the value under the
  cursor (HU, patient position, voxel) and the key image list;
- mammo_prior.png: the current-vs-prior mammography hanging (8 cells, dated, the prior's missing view named);
- shortcuts.png: Help ▸ Keyboard shortcuts, read from the window's actions.

    .venv/bin/python scripts/screenshot_reading.py [OUT_DIR]   (default resources/screenshots)
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def wait(app, done, seconds=120.0) -> None:
    end = time.monotonic() + seconds
    while not done():
        if time.monotonic() > end:
            raise SystemExit("timed out")
        app.processEvents()
        time.sleep(0.01)


def open_and_wait(app, w, path) -> None:
    shown = []
    w.image_shown.connect(lambda: shown.append(1))
    w.open_path(path)
    wait(app, lambda: shown and not w.busy)


def reading_tools(app, tmp: Path, out: Path) -> None:
    from viewer.core.synthetic import write_ct_study
    from viewer.ui.main_window import MainWindow
    from viewer.ui.measure_tools import restore_measurement

    ct = write_ct_study(tmp / "ct", seed=0)
    w = MainWindow()
    w.resize(1500, 900)
    w.show()
    open_and_wait(app, w, ct.files[0].parent)
    view = w.slice_view
    k = view.volume.shape[0] // 2
    view.set_slice(k)
    rows, cols = view.volume.shape[1:]
    r, c = rows / 128, cols / 128  # the points below are drawn for 128x128 and scale with the image
    pts = {"angle": [(30, 28), (62, 34), (40, 58)], "cobb": [(78, 28), (74, 58), (96, 30), (100, 60)],
           "arrow": [(20, 100), (52, 80)], "text": [(56, 96)]}
    for n, (kind, p) in enumerate(pts.items()):
        restore_measurement(view, kind, k, [(y * r, x * c) for y, x in p], uid=f"shot-{n}",
                            text="Lesion A" if kind == "text" else "")
    w.key_images.mark()
    view.set_slice(k + 2)
    w.key_images.mark()
    view.set_slice(k)
    w.key_images.dock.show()
    view.set_cursor(view.pixel_center(60 * r, 70 * c))
    app.processEvents()
    w.grab().save(str(out / "reading_tools.png"))
    from viewer.ui.shortcuts import show_shortcut_sheet

    sheet = show_shortcut_sheet(w)
    sheet.resize(560, 820)
    app.processEvents()
    sheet.grab().save(str(out / "shortcuts.png"))
    sheet.close()
    w.shutdown()
    w.close()


def mammo_prior(app, tmp: Path, out: Path) -> None:
    from prior_fixtures import two_mg_exams_and_a_stranger

    from viewer.ui.main_window import MainWindow

    root = two_mg_exams_and_a_stranger(tmp / "mg")
    w = MainWindow()
    w.resize(1500, 900)
    w.show()
    open_and_wait(app, w, root)
    study = next(st for st in w.scan_result.studies if st.series and "2024" in str(st.date or ""))
    w.load_mammo(study)
    wait(app, lambda: w.hanging_shown() and not w.busy)
    w.compare_with_prior()
    wait(app, lambda: w.mammo_layout.comparing and not w.busy)
    app.processEvents()
    w.grab().save(str(out / "mammo_prior.png"))
    w.shutdown()
    w.close()


def main() -> None:
    from PySide6.QtWidgets import QApplication

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "resources" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LIGHTBOX_CACHE_DIR"] = str(Path(tmp) / "cache")  # key images and autosaves stay out of ~
        reading_tools(app, Path(tmp), out)
        mammo_prior(app, Path(tmp), out)
    print(f"wrote reading_tools.png, shortcuts.png, mammo_prior.png in {out}")


if __name__ == "__main__":
    main()
