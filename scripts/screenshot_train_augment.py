"""Make resources/screenshots/train_dialog_augment.png: the Train dialog with an augmentation preview shown.

    QT_QPA_PLATFORM=offscreen python scripts/screenshot_train_augment.py [cgan|classic] [OUT.png]

A small phantom dataset (masses and normal views, written by the app's exporter) in a temporary folder;
the lesion U-Net chosen; Preview run on its worker exactly as a click does. Nothing is trained."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    method = sys.argv[1] if len(sys.argv) > 1 else "cgan"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "resources" / "screenshots" / "train_dialog_augment.png"
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from test_train_augment_ui import normal_view, phantom_view, write_views

    from viewer.ui.train_dialog import TrainDialog

    with tempfile.TemporaryDirectory(prefix="lightbox-shot-") as tmp:
        os.environ["LIGHTBOX_MODELS_DIR"] = str(Path(tmp) / "models")
        views = [phantom_view(2200 + i) for i in range(8)] + [normal_view(3200 + i) for i in range(4)]
        folder = write_views(Path(tmp) / "export", views, name="Dataset601_MammoFewMasses")[0]
        dialog = TrainDialog()
        dialog.resize(760, 780)
        dialog.show()
        dialog.select_model("mammo-lesion-unet2d")
        dialog.dataset.setText(str(folder))
        dialog.check()
        dialog.augment.setCurrentIndex(dialog.augment.findData(method))
        done = []
        dialog.preview_finished.connect(done.append)
        dialog.start_preview()
        start = time.monotonic()
        while not done and time.monotonic() - start < 300:
            app.processEvents()
            time.sleep(0.02)
        for _ in range(20):
            app.processEvents()
            time.sleep(0.01)
        if done != [True]:
            print(f"preview did not finish: {dialog.status.text()}", file=sys.stderr)
            dialog.shutdown()
            return 1
        out.parent.mkdir(parents=True, exist_ok=True)
        dialog.grab().save(str(out))
        dialog.shutdown()
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
