"""The Analyze button: overlays on every view of the analysed image, scores, cache, H/S and the controls."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from qt_helpers import open_and_wait, shown

from viewer.core.synthetic import write_ct_study, write_mammo_exam
from viewer.ui.analysis_controller import HEAT_LAYER, LABEL_LAYER
from viewer.ui.main_window import MainWindow
from viewer.ui.overlays import LabelLayer, ProbabilityLayer


@pytest.fixture(scope="module")
def mg_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mg")
    write_mammo_exam(out, (832, 640), seed=4, lesion_side="R")
    return out


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct")
    write_ct_study(out, shape=(40, 80, 80), spacing=(7.5, 4.48, 4.48), seed=6)
    return out


@pytest.fixture
def window(qtbot):
    w = shown(qtbot, MainWindow(), (1300, 850))
    yield w
    w.shutdown()


def analyze(qtbot, w):
    with qtbot.waitSignal(w.analysis.analysis_finished, timeout=120000) as blocker:
        w.analysis.action.trigger()
    return blocker.args[0]


def test_analyze_mammo_exam_overlays_each_view_and_lists_scores(qtbot, window, mg_dir):
    w = window
    open_and_wait(qtbot, w, mg_dir)
    assert w.views.currentWidget() is w.mammo_layout
    result = analyze(qtbot, w)
    assert result.kind == "mammo-exam" and set(result.series) == {"RCC", "LCC", "RMLO", "LMLO"}
    assert result.exam_scores["R"] > result.exam_scores["L"]
    texts = w.analysis.panel.score_texts()
    assert texts["Exam score per breast/Right breast"] == f"{result.exam_scores['R']:.3f}"
    assert texts["RCC/malignancy"] == f"{result.series['RCC'].scores['malignancy']:.3f}"
    assert w.analysis.dock.isVisible()
    for name, cell in w.mammo_layout.cells.items():
        sr = result.series[name]
        heat, labels = cell.layer(HEAT_LAYER), cell.layer(LABEL_LAYER)
        assert isinstance(heat, ProbabilityLayer) and isinstance(labels, LabelLayer)
        assert heat.shape == cell.volume.shape
        assert heat.array is sr.overlay(w.analysis.chosen_heatmap).array
        assert labels.array is sr.overlay("segmentation").array
        assert cell.legend.isVisible()
    # the heatmap drawn on the RCC cell is the source-grid map, windowed by the panel's threshold
    rcc = w.mammo_layout.cells["RCC"]
    heat = rcc.layer(HEAT_LAYER)
    assert heat.image is not None and heat.image.shape[:2] == rcc.volume.shape[1:]

    # choose another map, and restyle
    w.analysis.panel.heatmap_combo.setCurrentText("Grad-CAM")
    assert rcc.layer(HEAT_LAYER).array is result.series["RCC"].overlay("Grad-CAM").array
    w.analysis.panel.threshold.setValue(70)
    assert rcc.layer(HEAT_LAYER).threshold == pytest.approx(0.70)
    w.analysis.panel.outline.setChecked(True)
    assert rcc.layer(LABEL_LAYER).outline

    # H hides the heatmaps, the segmentation stays
    w.set_heatmaps_visible(False)
    assert not rcc.layer(HEAT_LAYER).visible and rcc.layer(LABEL_LAYER).visible

    # the same exam again: from the cache, at once
    again = analyze(qtbot, w)
    assert again is result and "cache" in w.analysis.panel.title.text()


def test_analyze_ct_shows_segmentation_in_all_mpr_planes(qtbot, window, ct_dir):
    w = window
    open_and_wait(qtbot, w, ct_dir)
    result = analyze(qtbot, w)
    assert result.kind == "ct"
    (sr,) = result.series.values()
    seg = sr.overlay("segmentation")
    assert seg.array.shape == w.slice_view.volume.shape and seg.array.max() >= 1
    assert w.slice_view.layer(LABEL_LAYER).array is seg.array
    assert any(k.endswith("mL") for k in sr.scores)
    w.set_layout("mpr")
    for plane, view in w.mpr_layout.views.items():
        layer = view.layer(LABEL_LAYER)
        assert layer is not None and layer.array is seg.array, plane
        np.testing.assert_array_equal(layer.image[..., 3] > 0, view._shown(view._cut(seg.array, view.slice_index)) > 0)


def test_analyze_explains_when_there_is_nothing_to_analyse(qtbot, window):
    window.analysis.action.trigger()
    assert "nothing to analyse" in window.message.text()


def test_a_users_model_appears_in_the_models_dialog_and_wins_for_analyze(qtbot, window, tmp_path, monkeypatch):
    import json
    import shutil

    from inference.registry import shipped_models_dir
    from viewer.analysis.run import pick_card

    user = tmp_path / "my-models"
    user.mkdir()
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(user))
    shipped = shipped_models_dir()
    card = json.loads((shipped / "mammo-exam.json").read_text())
    card["version"] = "9.0.0"
    shutil.copy(shipped / card["weights"], user / card["weights"])
    (user / "mammo-exam.json").write_text(json.dumps(card))
    (user / "broken.json").write_text("{not json")

    dialog = window.analysis.show_models()
    qtbot.waitExposed(dialog)
    rows = [dialog.tree.topLevelItem(i) for i in range(dialog.tree.topLevelItemCount())]
    mine = [r for r in rows if r.text(0) == "mammo-exam" and r.text(1) == "9.0.0"]
    assert len(mine) == 1 and mine[0].text(4) == "yours"
    assert any(r.text(0) == "mammo-patch" and r.text(4) == "shipped" for r in rows)
    assert any("broken.json" in r.text(0) for r in rows)  # a bad card is named, the rest still listed
    dialog.tree.setCurrentItem(mine[0])
    assert "synthetic phantoms" in dialog.details.toPlainText() and card["sha256"] in dialog.details.toPlainText()
    assert pick_card("exam-classifier", "MG").version == "9.0.0"
    dialog.close()


def test_reopening_an_analysed_series_shows_its_results_at_once(qtbot, window, ct_dir, mg_dir):
    w = window
    open_and_wait(qtbot, w, ct_dir)
    result = analyze(qtbot, w)
    (sr,) = result.series.values()
    open_and_wait(qtbot, w, mg_dir)  # something else, not analysed: the panel says so
    assert w.analysis.current is None and "No analysis" in w.analysis.panel.title.text()
    assert w.analysis.panel.score_texts() == {}
    with qtbot.waitSignal(w.image_shown, timeout=30000):
        w.open_path(ct_dir)  # ... then the CT again: a new scan, a newly loaded volume
    qtbot.waitUntil(lambda: not w.busy, timeout=30000)
    assert w.slice_view.volume is not sr.volume
    layer = w.slice_view.layer(LABEL_LAYER)
    assert layer is not None and layer.array is sr.overlay("segmentation").array
    assert "cache" in w.analysis.panel.title.text()


def test_a_new_session_shows_the_stored_results_without_running_the_models(qtbot, ct_dir, tmp_path, monkeypatch):
    from viewer.analysis import run
    from viewer.analysis.cache import AnalysisCache

    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path / "cache"))
    first = shown(qtbot, MainWindow(), (1300, 850))
    try:
        open_and_wait(qtbot, first, ct_dir)
        result = analyze(qtbot, first)
        assert "cache" not in first.analysis.panel.title.text()
        qtbot.waitUntil(lambda: not first.busy, timeout=30000)
    finally:
        first.shutdown()
    assert AnalysisCache().size()[0] == 1

    ran = []

    def must_not_run(*args, **kwargs):
        ran.append(args)
        raise AssertionError("the models ran although the result is on disk")

    monkeypatch.setattr(run, "analyze_ct", must_not_run)
    monkeypatch.setattr(run, "analyze_volume", must_not_run)
    monkeypatch.setattr(run, "analyze_mammo_exam", must_not_run)
    second = shown(qtbot, MainWindow(), (1300, 850))  # a new session: an empty in-memory cache
    try:
        assert second.analysis.cache == {}
        open_and_wait(qtbot, second, ct_dir)
        again = analyze(qtbot, second)
        assert ran == [] and again is not result
        assert "cache" in second.analysis.panel.title.text() and "(cached)" in second.message.text()
        assert again.models == result.models and again.series.keys() == result.series.keys()
        (key,) = again.series
        sr, old = again.series[key], result.series[key]
        assert sr.scores == old.scores and sr.volume is second.slice_view.volume
        for new_map, old_map in zip(sr.overlays, old.overlays, strict=True):
            assert new_map.name == old_map.name and new_map.array.dtype == old_map.array.dtype
            np.testing.assert_array_equal(new_map.array, old_map.array)
        assert second.slice_view.layer(LABEL_LAYER).array is sr.overlay("segmentation").array

        ai_menu = next(a.menu() for a in second.menuBar().actions() if a.text() == "&AI")
        qtbot.waitUntil(lambda: second.analysis.clear_cache_action in ai_menu.actions(), timeout=5000)
        second.analysis.clear_cache_action.trigger()
        assert "Cleared 1 cached AI result" in second.message.text() and "MB" in second.message.text()
        assert AnalysisCache().size() == (0, 0) and second.analysis.cache == {}
    finally:
        second.shutdown()
