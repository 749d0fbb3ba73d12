"""The Qt-free workspace model: what is open and which viewport shows what."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from viewer.core.workspace import Workspace


def series(key, projection=False, result=False):
    return SimpleNamespace(key=key, is_projection=projection, is_result=result)


def test_a_new_scan_forgets_what_was_found_beside_the_old_one(tmp_path):
    ws = Workspace()
    ws.beside["a"] = [tmp_path / "seg.dcm"]
    scan = SimpleNamespace(studies=[], series=[])
    ws.set_scan(str(tmp_path), scan)
    assert ws.source == Path(tmp_path) and ws.scan_result is scan and ws.beside == {}


def test_layout_is_checked():
    ws = Workspace()
    ws.set_layout("mpr")
    assert ws.layout_mode == "mpr"
    with pytest.raises(ValueError, match="unknown layout"):
        ws.set_layout("3x3")


def test_on_screen_counts_only_shown_viewports_or_the_hanging():
    ws = Workspace()
    left, right, hidden = object(), object(), object()
    ws.cell_series = {left: series("a"), hidden: series("b")}
    assert ws.on_screen({"a"}, [left, right])
    assert not ws.on_screen({"b"}, [left, right])  # in a viewport the layout hides
    ws.shown_mammo = SimpleNamespace(series=[series("mg1"), series("mg2")])
    assert ws.on_screen({"mg2"}, []) and not ws.on_screen({"a"}, [left])


def test_study_lookup_and_unshown_candidates():
    a, b, c, mip = series("a"), series("b"), series("c"), series("mip", projection=True)
    study = SimpleNamespace(series=[a, b])
    ws = Workspace(scan_result=SimpleNamespace(studies=[study], series=[a, b, c]))
    assert ws.study_of(b) is study and ws.study_of(c) is None
    assert ws.study_with_key("a") is study and ws.study_with_key("") is None
    ws.cell_series = {object(): a}
    assert [s.key for s in ws.unshown([a, b, c, mip], exclude=c)] == ["b"]


def test_the_workspace_imports_no_qt():
    code = "import sys, viewer.core.workspace; print(any(m.startswith('PySide6') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
