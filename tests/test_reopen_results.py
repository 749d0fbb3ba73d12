"""Issue 14, "AI results on reopen": a reopened study shows its stored AI results before A is pressed (never
stale ones), the first edit starts from them, and an MG exam without a classifier still gets its density."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from qt_helpers import close_quietly, editor_window, open_and_wait

from viewer.core.synthetic import write_ct_study, write_mammo_exam
from viewer.ui.analysis_controller import LABEL_LAYER
from viewer.ui.editor_controller import EDIT_LAYER


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct")
    write_ct_study(out, shape=(32, 72, 72), spacing=(7.5, 4.48, 4.48), seed=6)
    return out


@pytest.fixture(scope="module")
def other_ct_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct2")
    write_ct_study(out, shape=(32, 72, 72), spacing=(7.5, 4.48, 4.48), seed=7)
    return out


@pytest.fixture(scope="module")
def mg_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mg")
    write_mammo_exam(out, (416, 320), seed=4, lesion_side="R")
    return out


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """This test's own disk cache (the stored results a later session finds)."""
    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def analysed_in_an_earlier_session(qtbot, path):
    """Open ``path`` in a window, press A, close the window: the result is on disk only."""
    w = editor_window(qtbot)
    try:
        open_and_wait(qtbot, w, path)
        with qtbot.waitSignal(w.analysis.analysis_finished, timeout=120000) as blocker:
            w.analysis.action.trigger()
        qtbot.waitUntil(lambda: not w.busy, timeout=30000)
        return blocker.args[0]
    finally:
        close_quietly(w)


def no_model_may_run(monkeypatch):
    from viewer.analysis import run

    def must_not_run(*_args, **_kwargs):
        raise AssertionError("a model ran although only stored results were to be shown")

    for name in ("analyze_ct", "analyze_volume", "analyze_mammo_exam"):
        monkeypatch.setattr(run, name, must_not_run)


def open_and_check_store(qtbot, w, path):
    """Open ``path`` and wait for the disk look-up of what is shown; its answer (AnalysisResult or None)."""
    with qtbot.waitSignal(w.analysis.stored_checked, timeout=30000) as blocker:
        open_and_wait(qtbot, w, path)
    return blocker.args[0]


@pytest.fixture
def new_session(qtbot):
    w = editor_window(qtbot)
    yield w
    close_quietly(w)


def test_a_reopened_ct_shows_its_stored_results_before_a_is_pressed(qtbot, cache, ct_dir, new_session,
                                                                    monkeypatch):
    old = analysed_in_an_earlier_session(qtbot, ct_dir)
    no_model_may_run(monkeypatch)
    w = new_session
    assert w.analysis.cache == {}
    open_and_wait(qtbot, w, ct_dir)  # no A pressed
    qtbot.waitUntil(lambda: w.slice_view.layer(LABEL_LAYER) is not None, timeout=30000)
    shown = w.analysis.current
    (key,) = shown.series
    sr = shown.series[key]
    assert sr.volume is w.slice_view.volume and sr.scores == old.series[key].scores
    np.testing.assert_array_equal(sr.overlay("segmentation").array, old.series[key].overlay("segmentation").array)
    assert w.slice_view.layer(LABEL_LAYER).array is sr.overlay("segmentation").array
    assert w.analysis.dock.isVisible() and "cache" in w.analysis.panel.title.text()
    assert w.analysis.panel.score_texts()  # the scores are listed too
    w.grab().save("/tmp/d1-reopened-ct.png")


def test_a_reopened_mammo_exam_shows_its_stored_maps_in_every_cell(qtbot, cache, mg_dir, new_session, monkeypatch):
    old = analysed_in_an_earlier_session(qtbot, mg_dir)
    no_model_may_run(monkeypatch)
    w = new_session
    found = open_and_check_store(qtbot, w, mg_dir)
    assert found is not None and set(found.series) == set(old.series) and found.exam_scores == old.exam_scores
    for name, cell in w.mammo_layout.cells.items():
        assert cell.layer(LABEL_LAYER).array is found.series[name].overlay("segmentation").array, name
        assert found.series[name].volume is cell.volume
    texts = w.analysis.panel.score_texts()
    assert texts["Exam score per breast/Right breast"] == f"{old.exam_scores['R']:.3f}"
    w.grab().save("/tmp/d1-reopened-mammo.png")


def test_no_stale_results_after_clearing_another_study_or_another_model_version(
        qtbot, cache, ct_dir, other_ct_dir, new_session, tmp_path, monkeypatch):
    from inference.registry import shipped_models_dir

    analysed_in_an_earlier_session(qtbot, ct_dir)
    no_model_may_run(monkeypatch)
    w = new_session
    assert open_and_check_store(qtbot, w, other_ct_dir) is None  # another study: nothing stored for it
    assert w.slice_view.layer(LABEL_LAYER) is None and w.analysis.current is None

    # another version of the CT model is what Analyze would run now: the stored maps are not its
    user = tmp_path / "my-models"
    user.mkdir()
    card = json.loads((shipped_models_dir() / "ct-organs-unet3d.json").read_text())
    card["version"] = "9.0.0"
    shutil.copy(shipped_models_dir() / card["weights"], user / card["weights"])
    (user / "ct-organs-unet3d.json").write_text(json.dumps(card))
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(user))
    assert open_and_check_store(qtbot, w, ct_dir) is None
    assert w.slice_view.layer(LABEL_LAYER) is None
    monkeypatch.delenv("LIGHTBOX_MODELS_DIR")
    assert open_and_check_store(qtbot, w, ct_dir) is not None  # the version that made them: shown
    assert w.slice_view.layer(LABEL_LAYER) is not None

    # Clear cached results, then the same study again: nothing comes back from disk
    w.analysis.clear_cache_action.trigger()
    assert open_and_check_store(qtbot, w, other_ct_dir) is None
    assert open_and_check_store(qtbot, w, ct_dir) is None
    assert w.slice_view.layer(LABEL_LAYER) is None and w.analysis.current is None


def test_a_look_up_answered_after_clearing_is_dropped(qtbot, cache, ct_dir, new_session):
    analysed_in_an_earlier_session(qtbot, ct_dir)
    w = new_session
    with qtbot.waitSignal(w.image_shown, timeout=30000):
        w.open_path(ct_dir)
    # the look-up was asked before the clear; it may already have read the entry: its answer must not be shown
    with qtbot.waitSignal(w.analysis.stored_checked, timeout=30000) as blocker:
        w.analysis.clear_cache_action.trigger()
    assert blocker.args[0] is None and w.analysis.cache == {}
    qtbot.waitUntil(lambda: not w.busy, timeout=30000)
    assert w.slice_view.layer(LABEL_LAYER) is None


def test_the_first_edit_on_a_reopened_study_starts_from_the_stored_segmentation(qtbot, cache, ct_dir,
                                                                                new_session):
    analysed_in_an_earlier_session(qtbot, ct_dir)
    w = new_session
    assert open_and_check_store(qtbot, w, ct_dir) is not None
    view = w.slice_view
    ai = w.analysis.result_for(view).overlay("segmentation")
    w.set_tool("brush")
    view.tool.click(*view.pixel_center(5, 5))
    lm, _ = w.editor.session.labelmap_for(view)
    assert {lb.name for lb in lm.labels.values()} >= set(ai.classes[1:])
    assert (lm.array[ai.array > 0] == ai.array[ai.array > 0]).mean() > 0.99  # the AI's map, plus the stroke
    assert view.layer(EDIT_LAYER) is not None and view.layer(LABEL_LAYER) is None  # the edited map replaces it


def test_a_map_started_before_the_stored_result_arrived_starts_again_from_it(qtbot, cache, ct_dir, new_session):
    analysed_in_an_earlier_session(qtbot, ct_dir)
    w = new_session
    with qtbot.waitSignal(w.analysis.stored_checked, timeout=30000):
        with qtbot.waitSignal(w.image_shown, timeout=30000):
            w.open_path(ct_dir)
        view = w.slice_view
        blank, _ = w.editor.session.labelmap_for(view)  # e.g. a label key pressed before the look-up answered
        assert not blank.array.any() and view.layer(EDIT_LAYER) is not None
    ai = w.analysis.result_for(view).overlay("segmentation")
    lm, _ = w.editor.session.labelmap_for(view)
    assert lm is not blank and np.array_equal(lm.array, ai.array)
    assert w.editor.session.origins[next(iter(w.editor.session.maps))][0] is ai.array
    assert view.layer(EDIT_LAYER).labelmap is lm and view.layer(LABEL_LAYER) is None


def test_strokes_drawn_before_the_ai_result_do_not_hide_it(qtbot, cache, ct_dir, new_session):
    w = new_session
    open_and_wait(qtbot, w, ct_dir)  # nothing stored: the map starts empty
    view = w.slice_view
    w.set_tool("brush")
    view.tool.click(*view.pixel_center(5, 5))
    lm, _ = w.editor.session.labelmap_for(view)
    assert lm.array.any()
    with qtbot.waitSignal(w.analysis.analysis_finished, timeout=120000):
        w.analysis.action.trigger()
    ai, edit = view.layer(LABEL_LAYER), view.layer(EDIT_LAYER)
    assert ai is not None and ai.visible and edit is not None and edit.labelmap is lm  # the strokes are kept
    assert edit.item.zValue() > ai.item.zValue()  # and drawn above the AI's map
    w.analysis.refresh_overlays()
    assert view.layer(LABEL_LAYER) is not None


def test_density_without_a_mammo_model_in_the_window(qtbot, cache, mg_dir, new_session, monkeypatch):
    """Helper report: with no MG classifier Analyze said 'no mammography classifier' and showed nothing;
    the density needs no model, so the panel lists it per view and breast, as an estimate."""
    from viewer.analysis import run

    real = run.candidates
    monkeypatch.setattr(run, "candidates", lambda task, modality, problems=None:
                        [] if (modality or "").upper() == "MG" else real(task, modality, problems))
    w = new_session
    open_and_wait(qtbot, w, mg_dir)
    with qtbot.waitSignal(w.analysis.analysis_finished, timeout=60000) as blocker:
        w.analysis.action.trigger()
    result = blocker.args[0]
    assert result.models == {} and set(result.series) == {"RCC", "LCC", "RMLO", "LMLO"}
    for sr in result.series.values():
        assert 0 < sr.notes["density"]["percent"] < 100 and sr.overlays == []
    assert set(result.breast_density()) == {"R", "L"}
    panel_text = " ".join(f"{k} {v}" for k, v in w.analysis.panel.score_texts().items())
    assert "density" in panel_text.lower() and "%" in panel_text
    assert "density only" in w.message.toolTip() and "density (estimate) R " in w.message.text()
    tree = w.analysis.panel.scores
    rows = [tree.topLevelItem(i).text(0) for i in range(tree.topLevelItemCount())]
    assert rows and not any("domain" in r for r in rows), f"no model ran, so no domain words: {rows}"
