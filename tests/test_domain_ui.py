"""Out of its depth: a result whose model saw images unlike its training data says so in the results
panel and on the heatmap's colour bar; an in-domain result does not alarm."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from qt_helpers import close_quietly, editor_window, shown

from viewer.analysis.results import AnalysisResult, Overlay, SeriesResult
from viewer.core.volume import SourceInfo, Volume
from viewer.ui.analysis_controller import HEAT_LAYER
from viewer.ui.analysis_panel import OUT_OF_DOMAIN, AnalysisPanel
from viewer.ui.legend import WARNING_RED

OUT = {"in_domain": False, "score": 7.25, "threshold": 3.0, "model": "ct-organs-unet3d 1",
       "reason": "embedding far from the training phantoms"}
IN = {"in_domain": True, "score": 1.1, "threshold": 3.0, "model": "ct-organs-unet3d 1"}


def ct_result(domain: dict, uid: str = "1.2.3.4") -> AnalysisResult:
    rng = np.random.default_rng(0)
    volume = Volume(rng.normal(0, 100, (6, 40, 48)).astype(np.float32), np.array([3.0, 1.0, 1.0]),
                    info=SourceInfo(series_uid=uid, study_uid="1.2.3", modality="CT"))
    prob = np.zeros(volume.shape, np.float32)
    prob[:, 10:30, 12:36] = np.linspace(0.2, 1.0, 24, dtype=np.float32)
    labels = (prob > 0.5).astype(np.uint8) * 3
    sr = SeriesResult("ct-1", uid, "CT chest", volume, domain=dict(domain),
                      overlays=[Overlay("segmentation", "labels", labels, "ct-organs-unet3d 1",
                                        ["background", "lungs", "liver", "lesions"]),
                                Overlay("lesions probability", "probability", prob, "ct-organs-unet3d 1")],
                      scores={"lesions mL": 12.5})
    return AnalysisResult("ct", "1.2.3", {"ct-1": sr}, models={"segmentation": "ct-organs-unet3d 1"})


def test_panel_warns_for_an_out_of_domain_result_and_not_for_an_in_domain_one(qtbot):
    panel = shown(qtbot, AnalysisPanel(), (360, 600))
    panel.show_result(ct_result(OUT))
    assert panel.domain_warning.isVisible()
    assert OUT_OF_DOMAIN in panel.domain_warning.text()
    tip = panel.domain_warning.toolTip()
    assert "7.25" in tip and "3" in tip and "ct-organs-unet3d 1" in tip and "above threshold" in tip
    assert panel.domain_texts() == {"CT chest": "out of domain"}

    panel.show_result(ct_result(IN))
    assert not panel.domain_warning.isVisible() and panel.domain_warning.text() == ""
    assert panel.domain_texts() == {"CT chest": "in domain"}

    panel.show_result(ct_result({"in_domain": None, "reason": "no training statistics in the card"}))
    assert not panel.domain_warning.isVisible()
    assert panel.domain_texts() == {"CT chest": "domain unknown"}
    assert panel.score_texts() == {"CT chest/lesions mL": "12.5"}  # the domain word is no score

    panel.show_result(None)
    assert not panel.domain_warning.isVisible()


def test_one_view_out_of_domain_names_that_view(qtbot):
    panel = shown(qtbot, AnalysisPanel(), (360, 600))
    result = ct_result(IN)
    other = ct_result(OUT, uid="1.2.3.5").series["ct-1"]
    other.title = "CT abdomen"
    result.series["ct-2"] = other
    panel.show_result(result)
    assert panel.domain_warning.isVisible()
    assert panel.domain_warning.text().startswith("⚠ CT abdomen: ")
    assert "CT chest" not in panel.domain_warning.text()
    assert panel.domain_texts() == {"CT chest": "in domain", "CT abdomen": "out of domain"}


def _red_rows(legend) -> int:
    """Rows of the colour bar widget whose middle pixel is the warning red."""
    image = legend.grab().toImage()
    red = WARNING_RED.rgb() & 0xFFFFFF
    return sum((image.pixel(image.width() // 2, y) & 0xFFFFFF) == red for y in range(image.height()))


def test_colour_bar_carries_the_warning_in_the_window(qtbot):
    w = editor_window(qtbot)
    try:
        bad, good = ct_result(OUT), ct_result(IN, uid="1.2.3.9")
        view = w.slice_view
        w.analysis.cache.update({"series:bad": bad, "series:good": good})  # as Analyze keeps them
        view.set_volume(bad.series["ct-1"].volume)
        w.analysis.show_result(bad)
        assert view.layer(HEAT_LAYER) is not None and view.legend.isVisible()
        assert view.legend.warning == "out of domain"
        assert view.legend.heading().startswith("⚠ out of domain") and "lesions probability" in view.legend.heading()
        assert "7.25" in view.legend.toolTip()
        assert _red_rows(view.legend) >= 10  # the red line above the title is drawn
        assert w.analysis.panel.domain_warning.isVisible()
        assert OUT_OF_DOMAIN in w.message.text()

        view.set_volume(good.series["ct-1"].volume)
        w.analysis.show_result(good)
        assert view.legend.isVisible() and view.legend.warning == ""
        assert view.legend.heading() == "lesions probability"
        assert _red_rows(view.legend) == 0
        assert not w.analysis.panel.domain_warning.isVisible()
        assert OUT_OF_DOMAIN not in w.message.text()

        view.set_volume(bad.series["ct-1"].volume)  # back to the analysed-out-of-domain image
        w.analysis.refresh_overlays()
        assert view.legend.warning == "out of domain"
    finally:
        close_quietly(w)
