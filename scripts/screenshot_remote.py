"""The README's PACS screenshot: a real Orthanc (tests/orthanc_server.py) holding the demo CT and MR,
the main window's Remote panel searching it, the CT retrieved and shown.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshot_remote.py [OUT.png]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main(out: Path) -> None:
    import orthanc_server
    from PySide6.QtWidgets import QApplication

    from viewer.core.synthetic import write_ct_study, write_mr_study
    from viewer.remote import servers as store_mod
    from viewer.remote.base import parse_address
    from viewer.remote.cache import RetrieveCache
    from viewer.ui.main_window import MainWindow
    from viewer.ui.remote_panel import RemotePanel

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ct = write_ct_study(tmp / "ct", seed=0)
        mr = write_mr_study(tmp / "mr", seed=0)
        with orthanc_server.OrthancServer(tmp / "pacs") as pacs:
            pacs.upload([*ct.files, *mr.files])
            store = store_mod.ServerStore(tmp / "servers.json")
            store.put(parse_address(pacs.dicomweb_url, name="Orthanc (local)"))
            w = MainWindow()
            w.remote.shutdown()
            w.remote = RemotePanel(w, store, RetrieveCache(tmp / "cache"))
            w.remote_dock.setWidget(w.remote)
            w.resize(1500, 900)
            w.show()
            w.show_remote()
            panel = w.remote

            def wait(signal_done, seconds=60):
                end = time.monotonic() + seconds
                while not signal_done() and time.monotonic() < end:
                    app.processEvents()
                    time.sleep(0.02)

            found = []
            panel.searched.connect(found.append)
            panel.patient_name.setText("PHANTOM*")
            panel.search()
            wait(lambda: found)
            listed = []
            panel.series_listed.connect(lambda *a: listed.append(a))
            info = ct.volume.info
            panel.study_item(info.study_uid).setExpanded(True)
            wait(lambda: listed)
            panel.tree.setCurrentItem(panel.series_item(info.series_uid))
            got = []
            panel.retrieved.connect(got.append)
            panel.retrieve_selected()
            wait(lambda: got and panel.early.done, 120)
            for _ in range(50):
                app.processEvents()
                time.sleep(0.02)
            w.slice_view.set_slice(w.slice_view.volume.shape[0] // 2)
            app.processEvents()
            assert w.grab().save(str(out)), out
            w.shutdown()
            w.close()
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "resources" / "screenshots" / "remote-panel.png")
