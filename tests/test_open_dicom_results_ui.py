"""Lightbox opens its own Parametric Map and analysis report SR and shows them as they were written.

The folder holds a CT, a Parametric Map of a probability blob on it and a TID 1500 analysis
report (both written by core.export, as `lightbox analyze` writes them); opening the folder
draws the map as a heatmap layer on the CT (values back within the map's 16-bit precision) and
AI > Show DICOM report lists the report's scores and volume as written.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")
dicom_pm = pytest.importorskip("viewer.core.export.dicom_pm")
dicom_sr = pytest.importorskip("viewer.core.export.dicom_sr")

from PySide6.QtWidgets import QTreeWidget  # noqa: E402

from qt_helpers import close_quietly, editor_window, open_and_wait  # noqa: E402
from viewer.analysis.results import AnalysisResult, SeriesResult  # noqa: E402
from viewer.core.io import load_series, scan  # noqa: E402
from viewer.core.synthetic import write_ct_study  # noqa: E402
from viewer.ui.overlays import ProbabilityLayer  # noqa: E402


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path / "cache"))
    study = tmp_path / "study"
    write_ct_study(study / "ct", shape=(12, 48, 48), spacing=(4.0, 2.0, 2.0), seed=6, file_order="shuffled")
    (series,) = [s for s in scan(study).series if s.kind == "dicom"]
    volume = load_series(series)
    z, y, x = np.mgrid[:12, :48, :48]
    prob = np.exp(-((z - 6) ** 2 / 8 + (y - 20) ** 2 / 50 + (x - 28) ** 2 / 30)).astype(np.float32)
    dicom_pm.write_parametric_map(prob, volume, series, study / "pm.dcm", name="lesion", model="demo-ct 1.2")
    result = AnalysisResult(kind="ct", study_uid=volume.info.study_uid, models={"segmentation": "demo-ct 1.2"},
                            series={series.key: SeriesResult(series.key, series.uid, "CT Axial", volume,
                                                             scores={"liver mL": 1234.5, "malignancy": 0.25})})
    dicom_sr.write_analysis_report(result, {series.key: series}, {}, study / "report.sr.dcm")
    return study, series, prob


def test_parametric_map_and_report_of_the_folder_are_shown(qtbot, folder):
    study, series, prob = folder
    w = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w, study)
        if w.slice_view.volume is None or w.slice_view.volume.info.series_uid != series.uid:
            with qtbot.waitSignal(w.image_shown, timeout=30000):
                w.load_series(next(s for s in w.scan_result.series if s.uid == series.uid))
        view = w.slice_view
        name = "dicom-pm:pm.dcm"
        qtbot.waitUntil(lambda: view.layer(name) is not None, timeout=20000)
        layer = view.layer(name)
        assert isinstance(layer, ProbabilityLayer) and "lesion" in layer.title
        np.testing.assert_allclose(layer.array, prob, atol=2.0 / 65535)
        assert w.dicom_results.report_action.isEnabled()
        dlg = w.dicom_results.show_report()
        (tree,) = dlg.findChildren(QTreeWidget)
        rows = []
        stack = [tree.invisibleRootItem()]
        while stack:
            item = stack.pop()
            rows.extend((item.child(i).text(0), item.child(i).text(1)) for i in range(item.childCount()))
            stack.extend(item.child(i) for i in range(item.childCount()))
        values = {v for _, v in rows}
        assert "1234.5 mL" in values or "1234.5" in values, rows
        assert "0.25" in values, rows
        assert any("demo-ct" in v for v in values), rows
        dlg.close()
    finally:
        close_quietly(w)
