"""Application entry point: ``run(path=None, screenshot=None)``."""
from __future__ import annotations

import sys
import traceback
from pathlib import Path

SCREENSHOT_TIMEOUT_MS = 10 * 60 * 1000  # give up (exit 1) if nothing shows by then
SCREENSHOT_SETTLE_MS = 300  # let layouts and the first paint settle before grabbing
WINDOW_SIZE = (1280, 800)


def run(path: str | None = None, screenshot: str | None = None) -> int:
    """Open the viewer on ``path`` (None: the demo studies) and run the event loop.

    With ``screenshot``: save the window as PNG once the first series is shown,
    then quit (exit code 0; 1 if nothing could be shown or saved).
    """
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "lightbox"])
    app.setApplicationName("Lightbox")
    app.setApplicationDisplayName("Lightbox")

    window = MainWindow()
    window.resize(*WINDOW_SIZE)
    window.show()

    previous_hook = sys.excepthook

    def excepthook(exc_type, exc, tb):  # a bug in a slot: report it, keep running
        traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
        try:
            window.show_message(f"Internal error: {exc_type.__name__}: {exc}", "error")
        except Exception as inner:  # noqa: BLE001 - the hook itself must never raise
            print(f"lightbox: could not report the error: {inner}", file=sys.stderr)

    sys.excepthook = excepthook
    outcome: dict[str, int] = {}
    if screenshot:
        _arm_screenshot(app, window, Path(screenshot), outcome)

    def start() -> None:
        if not screenshot:
            window.editor.offer_recovery()  # edits a crash left unsaved: ask to restore them
        if path:
            window.open_path(path)
        else:
            window.open_demo()
        if not screenshot:
            window.analysis.start_warm_up()  # models loaded and run once while the user reads

    QTimer.singleShot(0, start)
    try:
        rc = app.exec()
    finally:
        window.shutdown()
        sys.excepthook = previous_hook
    return outcome.get("rc", rc)


def _arm_screenshot(app, window, out: Path, outcome: dict) -> None:
    from PySide6.QtCore import QTimer

    def shoot(ok: bool, why: str = "") -> None:
        if "rc" in outcome:
            return
        app.processEvents()
        saved = False
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            saved = window.grab().save(str(out), "PNG")
        except OSError as exc:
            why = why or f"{out}: {exc}"
        if not saved and not why:
            why = f"{out}: could not write the PNG"
        if why:
            print(f"lightbox: screenshot: {why}", file=sys.stderr)
        outcome["rc"] = 0 if ok and saved else 1
        window.close()
        app.exit(outcome["rc"])

    window.image_shown.connect(lambda: QTimer.singleShot(SCREENSHOT_SETTLE_MS, lambda: shoot(True)))
    window.task_failed.connect(lambda msg: QTimer.singleShot(SCREENSHOT_SETTLE_MS, lambda: shoot(False, msg)))
    window.task_cancelled.connect(lambda: QTimer.singleShot(0, lambda: shoot(False, "cancelled")))
    QTimer.singleShot(SCREENSHOT_TIMEOUT_MS, lambda: shoot(False, "timed out waiting for an image"))
