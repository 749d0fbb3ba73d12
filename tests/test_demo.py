"""The built-in demo: generated once into the cache, then reused; `lightbox view` opens it."""
import os
import subprocess
import sys

from viewer.core.demo import ensure_demo_studies
from viewer.core.io import scan


def test_demo_generated_once_and_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path))
    folder = ensure_demo_studies()
    assert (folder / ".complete").exists()
    result = scan(folder)
    assert sorted(s.modality for s in result.series) == ["CT", "MG", "MG", "MG", "MG", "MR"]
    assert not result.problems
    stamp = (folder / "CT").stat().st_mtime_ns
    assert ensure_demo_studies() == folder
    assert (folder / "CT").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_interrupted_generation_is_redone(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTBOX_CACHE_DIR", str(tmp_path))
    half = tmp_path / "demo-v1" / "CT"
    half.mkdir(parents=True)
    (half / "IM00001.dcm").write_bytes(b"half written")
    folder = ensure_demo_studies()
    assert (folder / ".complete").exists() and not scan(folder).problems


def test_view_without_path_opens_the_demo(tmp_path):
    shot = tmp_path / "demo.png"
    env = {**os.environ, "LIGHTBOX_CACHE_DIR": str(tmp_path / "cache"), "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, "-m", "viewer.cli", "view", "--screenshot", str(shot)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "cache" / "demo-v1" / ".complete").exists()
