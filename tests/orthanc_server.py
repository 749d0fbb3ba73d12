"""A real Orthanc PACS for the tests: Debian's ``orthanc`` with the ``orthanc-dicomweb`` plugin.

Each server gets its own temporary configuration and storage, listens on 127.0.0.1 only, on free
ports picked at start, and is stopped (or killed, to test interrupted transfers) by the test.
``restart()`` brings the same server back on the same ports with the same storage.

The ``orthanc`` fixture in conftest.py skips when the binary or the plugin is missing, unless
LIGHTBOX_REQUIRE_ORTHANC=1 (set by .ci/run, where scripts/system_deps.sh installs both).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

PLUGIN_NAMES = ("libOrthancDicomWeb.so",)
PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc", "/usr/local/share/orthanc/plugins")


def orthanc_binary() -> str | None:
    return os.environ.get("LIGHTBOX_ORTHANC") or shutil.which("Orthanc")


def dicomweb_plugin() -> str | None:
    explicit = os.environ.get("LIGHTBOX_ORTHANC_DICOMWEB")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for folder in PLUGIN_DIRS:
        for name in PLUGIN_NAMES:
            if (Path(folder) / name).is_file():
                return str(Path(folder) / name)
    return None


def missing() -> str | None:
    """Why no Orthanc can be started here (None when it can)."""
    if orthanc_binary() is None:
        return "Orthanc is not installed (Debian package 'orthanc')"
    if dicomweb_plugin() is None:
        return "the Orthanc DICOMweb plugin is not installed (Debian package 'orthanc-dicomweb')"
    return None


def require():
    """For a test or fixture: skip when no Orthanc can start here, or fail under LIGHTBOX_REQUIRE_ORTHANC=1
    (CI, where scripts/system_deps.sh installed it)."""
    import pytest

    why = missing()
    if why:
        if os.environ.get("LIGHTBOX_REQUIRE_ORTHANC") == "1":
            pytest.fail(f"LIGHTBOX_REQUIRE_ORTHANC=1 but {why}")
        pytest.skip(why)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OrthancServer:
    """One Orthanc process. ``users`` = {name: password} turns HTTP basic auth on;
    ``modalities`` = {name: (AE title, host, port)} are the C-MOVE destinations it knows."""

    aet = "ORTHANC"

    def __init__(self, root: Path, users: dict[str, str] | None = None,
                 modalities: dict[str, tuple[str, str, int]] | None = None):
        self.root = Path(root)
        self.storage = self.root / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.users = dict(users or {})
        self.modalities = dict(modalities or {})
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = self.root / "orthanc.log"

    # -- addresses ------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    @property
    def dimse_url(self) -> str:
        """The DIMSE address in Lightbox's URL form: dicom://AET@host:port."""
        return f"dicom://{self.aet}@127.0.0.1:{self.dicom_port}"

    # -- life ---------------------------------------------------------------------
    def config(self) -> dict:
        return {
            "Name": "lightbox-test",
            "StorageDirectory": str(self.storage), "IndexDirectory": str(self.storage),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": self.aet,
            "RemoteAccessAllowed": False, "HttpServer": {"BindAddresses": ["127.0.0.1"]},
            "AuthenticationEnabled": bool(self.users), "RegisteredUsers": self.users,
            "Plugins": [dicomweb_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
            "DicomModalities": {k: list(v) for k, v in self.modalities.items()},
            "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True, "DicomAlwaysAllowGet": True, "DicomAlwaysAllowMove": True,
            "DicomCheckCalledAet": False, "DicomCheckModalityHost": False,
            "UnknownSopClassAccepted": True, "StableAge": 1, "HttpCompressionEnabled": False,
            "StorageCompression": False, "OverwriteInstances": True,
        }

    def start(self, timeout: float = 30.0) -> "OrthancServer":
        why = missing()
        if why:
            raise RuntimeError(why)
        cfg = self.root / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=1))
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen([orthanc_binary(), str(cfg)], stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=self.root, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.process.returncode}): {self.log_tail()}")
            try:
                self.rest("/system")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout:.0f} s: {self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL, as a crashed or unplugged server: connections drop mid-transfer."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.stop()

    def restart(self) -> "OrthancServer":
        self.stop()
        return self.start()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # -- REST helpers (test setup only; Lightbox itself talks DICOMweb / DIMSE) ----------
    def _request(self, path: str, data: bytes | None = None, method: str | None = None,
                 content_type: str = "application/dicom") -> bytes:
        req = urllib.request.Request(self.http_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self.users:
            user, password = next(iter(self.users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read()

    def rest(self, path: str):
        return json.loads(self._request(path) or b"null")

    def upload(self, paths) -> list[str]:
        """POST each file to /instances; returns Orthanc's instance ids."""
        ids = []
        for p in paths:
            answer = json.loads(self._request("/instances", Path(p).read_bytes()))
            ids.append(answer["ID"])
        return ids

    def instance_count(self) -> int:
        return int(self.rest("/statistics")["CountInstances"])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
