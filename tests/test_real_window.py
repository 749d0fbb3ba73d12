"""The real viewer window on a real X server (Xvfb), not Qt's offscreen platform.

Each study is opened twice by `python -m viewer.cli view` with QT_QPA_PLATFORM=xcb:
  * with --screenshot: the app grabs its own window once the first image shows and exits 0;
  * without it, as a user would run it: the X screen is captured from outside the app
    (ImageMagick `import -window root`) to prove a window was really mapped and shows the image.
Screenshots land in a folder named in pytest's terminal summary (and are copied to
$LIGHTBOX_SCREENSHOT_DIR when set).

Skipped when Xvfb (or `import`) is not installed, unless LIGHTBOX_REQUIRE_XVFB=1 (CI sets it after
scripts/system_deps.sh installs them), in which case the missing tool is a failure.
"""
from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from viewer.core.synthetic import write_demo_studies
from viewer.ui.app import WINDOW_SIZE  # the module imports Qt lazily

REPO = Path(__file__).resolve().parents[1]
SCREEN = (max(1280, WINDOW_SIZE[0]), max(800, WINDOW_SIZE[1]))  # the whole window fits on the X screen
DEMO_SCALE = 0.25  # CT 64x64x30, MG 320x416: the same anatomy as the full demo, quick to write and load
RUN_TIMEOUT_S = 60
LIVE_TIMEOUT_S = 30
DEPS_HINT = "`bash scripts/system_deps.sh` installs the system packages (Debian/Ubuntu)"
REQUIRED = os.environ.get("LIGHTBOX_REQUIRE_XVFB") == "1"


def _missing(what: str) -> None:
    """Skip, or fail when the environment promises the tool (CI)."""
    if REQUIRED:
        pytest.fail(f"{what}, but LIGHTBOX_REQUIRE_XVFB=1; {DEPS_HINT}", pytrace=False)
    pytest.skip(f"{what} (needed for the real-window test); {DEPS_HINT}")


# -- image checks -----------------------------------------------------------------------------------------
def load_rgb(png: Path) -> np.ndarray:
    """(h, w, 3) uint8 array of a PNG, read with Qt (no extra dependency)."""
    from PySide6.QtGui import QImage

    img = QImage(str(png))
    assert not img.isNull(), f"{png}: not a readable image"
    img = img.convertToFormat(QImage.Format.Format_RGB888)
    h, w, stride = img.height(), img.width(), img.bytesPerLine()
    buf = np.frombuffer(img.constBits(), np.uint8, count=stride * h).reshape(h, stride)
    return buf[:, :w * 3].reshape(h, w, 3).copy()


def image_area(rgb: np.ndarray, block: int = 8) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the viewer's image area: the bounding box of the large connected regions of
    black (the viewport background, on a grid of block x block tiles). Chrome is light; its text makes
    only small dark specks."""
    hb, wb = rgb.shape[0] // block, rgb.shape[1] // block
    dark = rgb[:hb * block, :wb * block].max(axis=2) < 24
    dark = dark.reshape(hb, block, wb, block).mean(axis=(1, 3)) >= 0.5
    seen = np.zeros_like(dark)
    box = [hb, 0, wb, 0]
    for start in zip(*np.nonzero(dark)):
        if seen[start]:
            continue
        seen[start] = True
        stack, cells = [start], []
        while stack:
            y, x = stack.pop()
            cells.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < hb and 0 <= nx < wb and dark[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if len(cells) >= 0.01 * hb * wb:
            ys, xs = zip(*cells)
            box = [min(box[0], min(ys)), max(box[1], max(ys) + 1), min(box[2], min(xs)), max(box[3], max(xs) + 1)]
    y0, y1, x0, x1 = (v * block for v in box)
    assert y1 - y0 > rgb.shape[0] // 3 and x1 - x0 > rgb.shape[1] // 3, \
        f"no image area (black viewport background) found: rows {y0}..{y1}, columns {x0}..{x1}"
    return y0, y1, x0, x1


def image_stats(region: np.ndarray) -> dict:
    grey = region.astype(np.int16)
    luma = grey.mean(axis=2)
    return {
        "levels": int(np.unique(luma.astype(np.uint8)).size),
        "mid": float(((luma > 25) & (luma < 230)).mean()),  # neither background black nor chrome white
        "std": float(luma.std()),
        "grey": float((np.abs(grey[..., 0] - grey[..., 1]) + np.abs(grey[..., 1] - grey[..., 2]) < 12).mean()),
    }


def looks_like_medical_image(region: np.ndarray) -> tuple[bool, dict]:
    """A greyscale picture with many grey levels over much of the region: a CT slice or a mammogram,
    not an empty black viewport, a flat fill, or window chrome (light background + text)."""
    s = image_stats(region)
    return (s["levels"] >= 24 and s["mid"] >= 0.25 and s["std"] >= 12 and s["grey"] >= 0.9), s


def probe_regions(rgb: np.ndarray, study: str) -> dict[str, np.ndarray]:
    """Where the image must be: the middle of the CT view; for the 4-view MG, next to the centre line
    of each quadrant's row (the chest walls meet in the middle: R on screen left, L on screen right)."""
    y0, y1, x0, x1 = image_area(rgb)
    h, w = y1 - y0, x1 - x0
    cx, cy = x0 + w // 2, y0 + h // 2
    if study == "CT":
        return {"CT": rgb[y0 + int(0.3 * h):y0 + int(0.7 * h), x0 + int(0.3 * w):x0 + int(0.7 * w)]}
    near, far = int(0.02 * w), int(0.15 * w)
    rows = {"CC": slice(y0 + int(0.15 * h), cy - int(0.15 * h)),
            "MLO": slice(cy + int(0.15 * h), y1 - int(0.15 * h))}
    return {f"{side}{view}": rgb[rs, cx - far:cx - near] if side == "R" else rgb[rs, cx + near:cx + far]
            for view, rs in rows.items() for side in "RL"}


def assert_shows_study(rgb: np.ndarray, study: str, png: Path) -> None:
    for name, region in probe_regions(rgb, study).items():
        ok, stats = looks_like_medical_image(region)
        assert ok, f"{png}: the {name} image area looks blank or not like an image: {stats}"


# -- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def xvfb(tmp_path_factory):
    """A private Xvfb server; yields its DISPLAY string (':N', number chosen by Xvfb via -displayfd)."""
    exe = shutil.which("Xvfb")
    if exe is None:
        _missing("Xvfb is not installed")
    log = tmp_path_factory.mktemp("xvfb") / "xvfb.log"
    read_fd, write_fd = os.pipe()
    with open(log, "wb") as log_file:
        proc = subprocess.Popen([exe, "-displayfd", str(write_fd), "-screen", "0", "{}x{}x24".format(*SCREEN),
                                 "-nolisten", "tcp", "-noreset"],
                                pass_fds=(write_fd,), stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        number = b""
        deadline = time.monotonic() + 15
        while not number.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([read_fd], [], [], 0.2)
            if ready:
                chunk = os.read(read_fd, 64)
                if not chunk:
                    break  # Xvfb closed the pipe: it exited
                number += chunk
        if not number.strip().isdigit():
            proc.kill()
            proc.wait()
            pytest.fail(f"Xvfb did not start (exit {proc.returncode}): {log.read_text(errors='replace')[-2000:]}",
                        pytrace=False)
        yield f":{int(number)}"
    finally:
        os.close(read_fd)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    write_demo_studies(out, scale=DEMO_SCALE)
    return out


@pytest.fixture(scope="module")
def shots(tmp_path_factory, request) -> Path:
    """Where the PNGs go; printed when the module is done, copied to $LIGHTBOX_SCREENSHOT_DIR if set."""
    folder = tmp_path_factory.mktemp("real-window-screenshots")
    yield folder
    pngs = sorted(folder.glob("*.png"))
    target = os.environ.get("LIGHTBOX_SCREENSHOT_DIR")
    if target and pngs:
        Path(target).mkdir(parents=True, exist_ok=True)
        for p in pngs:
            shutil.copy2(p, Path(target) / p.name)
    if pngs:
        line = f"real-window screenshots ({len(pngs)}): {folder}" + (f" (copied to {target})" if target else "")
        request.config.pluginmanager.register(_SummaryLine(line), f"real-window-screenshots-{folder}")


class _SummaryLine:
    """A plugin registered at run time: adds one line to pytest's terminal summary."""

    def __init__(self, line: str):
        self.line = line

    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.write_line(self.line)


@pytest.fixture(scope="module")
def x_env(xvfb, tmp_path_factory) -> dict[str, str]:
    """Environment of the viewer subprocesses: the private X display, and user state (settings, demo cache,
    fontconfig cache, runtime dir) in temporary folders (conftest's isolated_user_state set the first two)."""
    state = tmp_path_factory.mktemp("x-user-state")
    runtime = state / "runtime"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "QT_QPA_PLATFORMTHEME")}
    env.update(QT_QPA_PLATFORM="xcb", DISPLAY=xvfb, XDG_RUNTIME_DIR=str(runtime),
               XDG_CACHE_HOME=str(state / "cache"), PYTHONUNBUFFERED="1")
    for var in ("LIGHTBOX_CACHE_DIR", "XDG_CONFIG_HOME"):
        assert var in env, f"{var} not isolated by conftest"
    # its own recovery folder: an autosave another test left in the session's cache would open the
    # window with a "restore unsaved edits?" box, which is not the initial state compared below
    env["LIGHTBOX_CACHE_DIR"] = str(state / "lightbox-cache")
    return env


def viewer_cmd(study_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "viewer.cli", "view", str(study_dir), *extra]


STUDIES = ["CT", "MG"]


# -- the app's own screenshot -----------------------------------------------------------------------------
@pytest.mark.parametrize("study", STUDIES)
def test_real_window_screenshot(study, x_env, demo, shots):
    png = shots / f"{study}_app_grab.png"
    proc = subprocess.run(viewer_cmd(demo / study, "--screenshot", str(png)), env=x_env, cwd=REPO,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, (f"viewer exited {proc.returncode} on DISPLAY={x_env['DISPLAY']} "
                                  f"(if the xcb plugin failed to load: {DEPS_HINT}):\n{proc.stderr[-3000:]}")
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png}: no PNG written"
    rgb = load_rgb(png)
    h, w = rgb.shape[:2]
    assert abs(w - WINDOW_SIZE[0]) <= 0.1 * WINDOW_SIZE[0] and abs(h - WINDOW_SIZE[1]) <= 0.1 * WINDOW_SIZE[1], \
        f"{png}: {w}x{h}, expected about {WINDOW_SIZE[0]}x{WINDOW_SIZE[1]}"
    assert_shows_study(rgb, study, png)
    # The check must not pass on window chrome alone: the series browser beside the image area fails it.
    y0, y1, x0, _ = image_area(rgb)
    if x0 >= 100:
        assert not looks_like_medical_image(rgb[y0:y1, :x0])[0], "image check accepts the series browser"


# -- the X server's view of the window, captured from outside the app ---------------------------------------
@pytest.mark.parametrize("study", STUDIES)
def test_real_window_is_mapped_on_x_screen(study, x_env, demo, shots, tmp_path):
    grabber = shutil.which("import")
    if grabber is None:
        _missing("ImageMagick's `import` is not installed (needed to capture the X screen)")
    root_png = shots / f"{study}_x_root.png"
    app_png = shots / f"{study}_app_grab.png"  # written by test_real_window_screenshot, when it ran first
    reference = load_rgb(app_png) if app_png.is_file() else None

    def check(rgb: np.ndarray) -> None:
        assert rgb.shape[:2] == (SCREEN[1], SCREEN[0]), f"X screen is {rgb.shape[1]}x{rgb.shape[0]}"
        assert_shows_study(rgb, study, root_png)
        if reference is not None:
            # No window manager: the window sits at the screen's origin, so the screen's image area shows
            # what the app grabbed of the same study in the same initial state.
            y0, y1, x0, x1 = image_area(reference)
            diff = np.abs(rgb[y0:y1, x0:x1].astype(np.int16) - reference[y0:y1, x0:x1].astype(np.int16)).mean()
            assert diff < 10, f"the X screen's image area differs from the app's grab (mean |diff| {diff:.1f})"

    log = tmp_path / "viewer.log"
    with open(log, "wb") as out:  # a file, not a pipe: nobody reads it while the viewer runs
        app = subprocess.Popen(viewer_cmd(demo / study), env=x_env, cwd=REPO, stdout=out,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    last = "nothing captured"
    try:
        deadline = time.monotonic() + LIVE_TIMEOUT_S
        while True:
            time.sleep(0.3)
            assert app.poll() is None, \
                f"viewer exited {app.returncode} before showing the study:\n{log.read_text(errors='replace')[-3000:]}"
            grab = subprocess.run([grabber, "-display", x_env["DISPLAY"], "-window", "root", str(root_png)],
                                  capture_output=True, text=True, timeout=20)
            if grab.returncode == 0 and root_png.is_file():
                try:
                    check(load_rgb(root_png))
                    break
                except AssertionError as exc:
                    last = str(exc)
            else:
                last = f"import exited {grab.returncode}: {grab.stderr[-500:]}"
            assert time.monotonic() < deadline, \
                f"the X screen did not show the {study} study within {LIVE_TIMEOUT_S} s: {last}"
    finally:
        if app.poll() is None:
            app.terminate()
            try:
                app.wait(timeout=5)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
