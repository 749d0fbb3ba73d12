"""Shared fixtures: small synthetic series written as real DICOM in tmp folders."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

from viewer.core.volume import SourceInfo, Volume


def rotation(ax_deg: float, ay_deg: float, az_deg: float) -> np.ndarray:
    """Right-handed rotation (ITK column order x, y, z)."""
    ax, ay, az = np.radians([ax_deg, ay_deg, az_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


# Array-order direction matrices (columns: slice, row, column axes).
AXIAL = np.eye(3)[:, ::-1].copy()
# Slice axis = row cosine x column cosine, as a DICOM stack sorted along its normal is.
CORONAL = np.column_stack([[0, 1, 0], [0, 0, -1], [1, 0, 0]]).astype(float)  # rows go to feet
SAGITTAL = np.column_stack([[-1, 0, 0], [0, 0, -1], [0, 1, 0]]).astype(float)
OBLIQUE = rotation(20, -15, 30)[:, ::-1].copy()


def ramp_volume(shape=(12, 40, 48), spacing=(2.5, 0.7, 0.9), origin=(-30.0, -20.0, 15.5),
                direction=AXIAL, modality="CT", seed=0, **info) -> Volume:
    """A volume whose every voxel is distinct enough to catch any flip or transposition."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    arr = (z * 97 + y * 13 + x * 3) % 2000 - 1000 + rng.integers(0, 5, shape)
    info.setdefault("patient_name", "TEST^GEOMETRY")
    info.setdefault("patient_id", "T-1")
    info.setdefault("series_description", "ramp")
    return Volume(arr.astype(np.int16), spacing, origin, direction, SourceInfo(modality=modality, **info))


@pytest.fixture(scope="session", autouse=True)
def isolated_user_state(tmp_path_factory):
    """Tests never touch the user's settings (recent studies) or demo cache."""
    root = tmp_path_factory.mktemp("user-state")
    os.environ["LIGHTBOX_CACHE_DIR"] = str(root / "cache")
    # Analyze keeps the demo models on torch unless a test asks for the measured ONNX Runtime choice
    # (tests/test_onnx_default.py): exporting and timing each model costs tens of seconds per session.
    os.environ.setdefault("LIGHTBOX_ONNXRUNTIME", "0")
    # Channels-last weights everywhere Analyze loads a model: what "auto" measures to be faster on these
    # CPUs, fixed so no test depends on a timing (tests/test_layout.py tests the measured choice)
    os.environ.setdefault("LIGHTBOX_CHANNELS_LAST", "1")
    # nor does each window load every model in the background at start (tests/test_warmup.py does)
    os.environ.setdefault("LIGHTBOX_WARMUP", "0")
    os.environ["XDG_CONFIG_HOME"] = str(root / "config")  # also for the GUI subprocesses' QSettings
    try:
        from PySide6.QtCore import QSettings
    except ImportError:
        yield root
        return
    for fmt in (QSettings.IniFormat, QSettings.NativeFormat):
        QSettings.setPath(fmt, QSettings.UserScope, str(root / "settings"))
    yield root


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An empty user model folder of this test's own (imports, fine-tuned versions, pins land there)."""
    folder = tmp_path / "models"
    monkeypatch.setenv("LIGHTBOX_MODELS_DIR", str(folder))
    return folder


@pytest.fixture
def ramp():
    return ramp_volume


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small convolutions on one thread: with the cores shared (parallel test runs, CI
    neighbours) OpenMP barriers stall for whole scheduler slices, making a 0.1 s pass 5 s.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _orthanc_or_skip():
    import orthanc_server as orthanc_mod
    orthanc_mod.require()
    return orthanc_mod


@pytest.fixture
def orthanc_factory(tmp_path):
    """Start real Orthanc servers (tests/orthanc_server.py): ``orthanc_factory(users=..., modalities=...)``;
    every one started is stopped at the end of the test."""
    orthanc_mod = _orthanc_or_skip()
    started = []

    def start(users=None, modalities=None):
        server = orthanc_mod.OrthancServer(tmp_path / f"orthanc{len(started)}", users=users, modalities=modalities)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def orthanc(orthanc_factory):
    """One real Orthanc (DICOMweb at ``.dicomweb_url``, DIMSE at ``.dimse_url``), no authentication."""
    return orthanc_factory()
