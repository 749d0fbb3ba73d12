"""Files appear whole or not at all: write to a temp file beside the target, flush it to disk, rename.

A crash, a full disk or an exception in the writer (ITK, pydicom, highdicom, json) then leaves the
previous file, or none, never half of one. The temp file lives in the target's folder (so
``os.replace`` is atomic), is hidden (leading dot, so folder listings skip it) and ends with the
target's name (ITK picks the format by the ending, e.g. ``.nii.gz``). Every writer in ``viewer``
uses this; ``inference.registry`` keeps its own copy because ``inference`` never imports ``viewer``.
(Recovery snapshots add a folder fsync and test seams: ``core.recovery``.)
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SHARED_MODE = 0o644  # mkstemp makes owner-only files; exports are meant to be read by others


def temp_beside(final: Path) -> Path:
    """A new, empty, hidden temp file in ``final``'s folder whose name ends with ``final``'s name."""
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=f".partial.{final.name}", dir=final.parent)
    os.close(fd)
    return Path(tmp)


def flush_to_disk(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def sync_quietly(path: Path) -> None:
    """fsync a file or a folder (so a rename in it survives a power cut), as far as the platform
    allows: folders cannot be opened or fsynced everywhere, and that is not an error."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def replacing(final, mode: int = SHARED_MODE) -> Iterator[Path]:
    """``with replacing(path) as tmp: write(tmp)``: ``path`` is replaced only when the block succeeds;
    the temp file is removed whatever happens."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(final)
    try:
        yield tmp
        flush_to_disk(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(final, data: bytes, mode: int = SHARED_MODE) -> Path:
    with replacing(final, mode) as tmp:
        tmp.write_bytes(data)
    return Path(final)
