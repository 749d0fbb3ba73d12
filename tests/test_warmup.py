"""The start-up warm-up: the models Analyze would pick are loaded and run once, in the background, never
crashing the app; a later Analyze reuses them; the setting turns it off."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading

import pytest

from viewer.analysis import run
from viewer.analysis.warmup import roles, warm_up

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def fresh_models(monkeypatch):
    """An empty per-process model cache for this test (the real one is restored afterwards)."""
    monkeypatch.setattr(run, "_MODELS", {})
    return run._MODELS


def test_warm_up_loads_every_model_analyze_would_pick_and_analyze_reuses_them(fresh_models):
    report = warm_up("cpu")
    assert not report.problems and not report.stopped
    expected = [run.model_id(run.pick_card(task, modality)) for task, modality in roles()
                if run.pick_card(task, modality) is not None]
    assert report.ready == expected and len(expected) >= 4  # the shipped MG trio and the CT U-Net
    assert {f"{name} {version}" for name, version, _sha, _dev in fresh_models} == set(expected)
    assert {"load weights", "first pass", "full-size view"} <= set(report.steps)
    loaded = dict(fresh_models)
    card = run.volume_model("CT")
    assert run.load(card, "cpu")[0] is loaded[(card.name, card.version, card.sha256, "cpu")][0]  # no reload


def test_a_model_that_fails_is_reported_not_raised(fresh_models, monkeypatch):
    def broken(card, device):
        raise RuntimeError(f"weights of {card.name} unreadable")

    monkeypatch.setattr(run, "load", broken)
    report = warm_up("cpu")
    assert not report.ready and len(report.problems) >= 4
    assert all("unreadable" in p for p in report.problems)
    assert "no model to prepare" in report.summary()


def test_warm_up_stops_when_asked(fresh_models):
    report = warm_up("cpu", should_stop=lambda: True)
    assert report.stopped and not report.ready and not fresh_models


def test_concurrent_loads_build_a_model_once(fresh_models, monkeypatch):
    from inference import registry

    built = []
    real = registry.load_model

    def counting(card, device="cpu"):
        built.append(card.name)
        return real(card, device=device)

    monkeypatch.setattr(registry, "load_model", counting)
    card = run.volume_model("CT")
    results = []
    threads = [threading.Thread(target=lambda: results.append(run.load(card, "cpu"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == [card.name] and len({id(m) for m, _c in results}) == 1


def test_the_window_warms_up_in_the_background_when_the_setting_is_on(qtbot, fresh_models, monkeypatch):
    pytest.importorskip("pytestqt")
    from qt_helpers import shown

    from viewer.ui.main_window import MainWindow
    from viewer.ui.settings import warm_up_enabled

    monkeypatch.setenv("LIGHTBOX_WARMUP", "1")
    w = shown(qtbot, MainWindow(), (1100, 700))
    try:
        assert warm_up_enabled() and w.analysis.warm_action.isChecked()
        assert any(w.analysis.warm_action in m.menu().actions() for m in w.menuBar().actions() if m.menu())
        assert w.analysis.start_warm_up()
        qtbot.waitUntil(lambda: w.analysis.warm_report is not None, timeout=120000)
        report = w.analysis.warm_report
        assert report.ready and not report.problems
        assert "AI models ready" in w.message.text()
        w.analysis.warm_action.setChecked(False)  # the user turns it off: remembered, and nothing starts
        assert not warm_up_enabled() and not w.analysis.start_warm_up()
    finally:
        w.analysis.warm_action.setChecked(True)
        w.shutdown()


def test_lightbox_warmup_0_keeps_it_off(qtbot, monkeypatch):
    pytest.importorskip("pytestqt")
    from qt_helpers import shown

    from viewer.ui.main_window import MainWindow

    monkeypatch.setenv("LIGHTBOX_WARMUP", "0")
    w = shown(qtbot, MainWindow(), (900, 600))
    try:
        assert w.analysis.warm_action.isChecked() and not w.analysis.start_warm_up()
    finally:
        w.shutdown()
