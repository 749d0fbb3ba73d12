"""Choices the app makes by timing this machine (ONNX Runtime or torch, channels-last or not), and
their cache: a decision is measured once per model version, device and library versions, and read
back on later starts (``$LIGHTBOX_CACHE_DIR/<kind>``, else ``$XDG_CACHE_HOME/lightbox/<kind>``).
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def cache_dir(kind: str) -> Path:
    """Beside the app's other caches: $LIGHTBOX_CACHE_DIR/<kind>, else $XDG_CACHE_HOME/lightbox/<kind>."""
    own = os.environ.get("LIGHTBOX_CACHE_DIR")
    if own:
        return Path(own).expanduser() / kind
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "lightbox" / kind


def model_stem(card) -> str:
    """A file name for one model version and its weights: '<name>-<version>-<sha256[:12]>'."""
    safe = "".join(c if c.isalnum() or c in "._+-" else "-" for c in f"{card.name}-{card.version}")
    return f"{safe}-{(card.sha256 or 'nosha')[:12]}"


def atomic_target(path: Path) -> Path:
    """A temporary file beside ``path`` to write and then os.replace: the file appears whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def read_record(path: Path, environment: dict) -> dict | None:
    """The decision stored at ``path`` when it was measured in this same environment, else None."""
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(record, dict) and record.get("environment") == environment:
            return record
    return None


def write_record(path: Path, record: dict) -> None:
    tmp = atomic_target(path)
    try:
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def median_seconds(fn, x, repeats: int, device: torch.device | str = "cpu") -> float:
    """Median wall time of fn(x) after one untimed call (first calls allocate, plan, autotune); a CUDA
    device is synchronised around each call so its queued kernels are counted."""
    cuda = torch.device(device).type == "cuda"

    def once() -> float:
        t0 = time.perf_counter()
        fn(x)
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    once()
    return statistics.median(once() for _ in range(max(1, repeats)))
