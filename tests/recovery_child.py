"""Child process for the autosave kill tests (tests/test_recovery.py).

Edits a label map deterministically (edit k is :func:`apply_edit` (k), the map's version is
the number of edits) while an Autosaver runs, and prints ``saved V`` each time a snapshot of
version V is on disk. The test SIGKILLs it and checks the recovery file against
:func:`state_at`. ``--slow`` makes every write pause halfway (after printing ``writing``) so a
kill can land in the middle of a save.

    python tests/recovery_child.py FOLDER INTERVAL_S [--slow]
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np

SHAPE = (48, 160, 160)
SERIES_UID = "1.2.826.0.1.3680043.8.498.777"
LABELS = [{"value": v, "name": f"label {v}", "color": (40 * v, 255 - 40 * v, 90), "opacity": 0.5,
           "visible": True, "locked": v == 3} for v in (1, 2, 3, 4)]


def apply_edit(array: np.ndarray, k: int) -> None:
    """Edit number k (1, 2, ...): paint a square, and now and then erase a slice."""
    z = (k * 5) % SHAPE[0]
    y = (k * 13) % (SHAPE[1] - 12)
    x = (k * 29) % (SHAPE[2] - 12)
    array[z, y:y + 12, x:x + 12] = k % 4 + 1
    if k % 7 == 0:
        array[(k * 3) % SHAPE[0], : SHAPE[1] // 2] = 0


def state_at(version: int) -> np.ndarray:
    array = np.zeros(SHAPE, np.uint8)
    for k in range(1, version + 1):
        apply_edit(array, k)
    return array


def main(argv: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from viewer.core import recovery

    folder, interval = argv[0], float(argv[1])
    if "--slow" in argv:
        real = recovery._write_file

        def slow_write(fh, data):
            real(fh, data[: len(data) // 2])
            fh.flush()
            print("writing", flush=True)
            time.sleep(0.5)
            real(fh, data[len(data) // 2:])

        recovery._write_file = slow_write

    lock = threading.Lock()
    array = np.zeros(SHAPE, np.uint8)
    version = 0

    def snapshot():
        with lock:  # array and version read together: a consistent copy
            return recovery.RecoverySnapshot(array.copy(), LABELS, SERIES_UID, study_uid="1.2.3",
                                             source_path="/data/study", spacing=(2.0, 0.5, 0.5),
                                             version=version)

    def saved(info):
        print(f"saved {info.version}", flush=True)

    saver = recovery.Autosaver(snapshot, interval_s=interval, folder=folder, on_saved=saved,
                               on_error=lambda e: print(f"error {e}", flush=True), debounce_s=0.02)
    saver.start()
    deadline = time.monotonic() + 60.0  # the test kills us long before
    while time.monotonic() < deadline:
        with lock:
            version += 1
            apply_edit(array, version)
        if version % 5 == 0:
            saver.request_save()
        time.sleep(0.005)
    saver.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
