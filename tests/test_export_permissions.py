"""Export into a folder the user may not write: `lightbox export` fails with a message naming the
folder, exit 2, and leaves nothing behind.

Permissions do not stop root, and CI runs as root: then the export runs as the unprivileged user
`nobody` (``setpriv``), so the check is the real operating-system one, not a simulated error.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from viewer.core.io import load_series
from viewer.core.io.scan import scan
from viewer.core.synthetic import write_ct_study

NOBODY = 65534


def _as_unprivileged() -> list[str]:
    """Command prefix that runs without the right to ignore permissions."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop the right to ignore permissions")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


@pytest.fixture
def world_readable_tmp():
    """pytest's tmp_path is private to root; `nobody` needs to read the study and label map."""
    path = Path(tempfile.mkdtemp(prefix="lightbox-perm-"))
    path.chmod(0o755)
    yield path
    for p in [path, *path.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(path)


def _export(prefix, study, labels, out, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home), "QT_QPA_PLATFORM": "offscreen"}
    code = "import sys; from viewer.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([*prefix, sys.executable, "-c", code, "export", str(study), "--labels", str(labels),
                           "--names", "liver", "--out", str(out)],
                          check=False, capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1],
                          timeout=300)


def test_export_into_a_read_only_folder_fails_cleanly(world_readable_tmp):
    from viewer.core.export.nifti import write_label_map

    prefix = _as_unprivileged()
    tmp = world_readable_tmp
    study = tmp / "ct"
    write_ct_study(study, shape=(12, 24, 24), spacing=(10.0, 14.0, 14.0), seed=3)
    volume = load_series(scan(study).series[0])
    labels = np.zeros(volume.shape, np.uint8)
    labels[4:8, 6:14, 6:14] = 1
    seg = write_label_map(labels, volume, tmp / "edited.nii.gz")
    home = tmp / "home"
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    for p in tmp.rglob("*"):
        p.chmod(p.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0))

    read_only = tmp / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    run = _export(prefix, study, seg, read_only, home)
    assert run.returncode == 2, run.stderr
    message = run.stderr.strip().splitlines()[-1]
    assert str(read_only) in message and "permission denied" in message.lower(), message
    assert "Traceback" not in run.stderr
    assert list(read_only.rglob("*")) == []

    # the same command into a writable folder works, so the failure above was the folder's
    writable = tmp / "writable"
    writable.mkdir(mode=0o777)
    writable.chmod(0o777)
    ok = _export(prefix, study, seg, writable, home)
    assert ok.returncode == 0, ok.stderr
    written = list(writable.glob("*/labelsTr/*.nii.gz"))
    assert len(written) == 1
    if prefix:  # it really ran unprivileged
        assert written[0].stat().st_uid == NOBODY

    # the dataset's labelsTr becomes read-only: the second case's image must not be left behind
    dataset = written[0].parents[1]
    before = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    (dataset / "labelsTr").chmod(0o555)
    try:
        again = _export(prefix, study, seg, writable, home)
    finally:
        (dataset / "labelsTr").chmod(0o755)
    assert again.returncode == 2 and "labelsTr" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr
    after = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    assert after == before  # no second image, no temp files, dataset.json and provenance unchanged
