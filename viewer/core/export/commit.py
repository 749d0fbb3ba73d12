"""One commit of a dataset folder: every file staged first, then all moved into place, or none.

Why: one exported case is several files (image, label, SEG, provenance, dataset.json, ...). Renaming
temp files that sat beside their targets one by one meant that a kill between two renames left a
case without its SEG, and a kill while writing left hidden partial files, named like cases, that
nothing removed.

Here every file of a commit is written into one hidden staging folder inside the dataset folder
(``.lightbox-commit-XXXX``: same file system, so renames are atomic; staged names end in ``.part``,
never in ``.nii.gz``). Then a journal listing (staged, final) is written atomically, and only then
are the files renamed, in an order that keeps readers consistent: case files first, then the files
that list cases (``labelsTr/``, classification rows, ``datalist.json``, ``dataset.json`` last).

The journal decides the outcome of a commit that was interrupted. Without it nothing had been moved
and the staging folder is deleted (rolled back); with it the remaining renames are done (rolled
forward); a ``rollback.json`` (a rename failed, the commit was being undone) finishes the undo from
the backups of the replaced files. :func:`recover` does this on the next open of the dataset and
also sweeps the temp files that older versions left (``.*.partial.*``, ``segTr/.seg-*``).

An exclusive ``flock`` on the dataset folder serialises writers (the app and the CLI exporting into
one dataset) and tells :func:`recover` that a staging folder belongs to a live writer. (Without
``fcntl``, e.g. on Windows, there is no lock: one writer at a time is then the user's affair.)
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from ..atomic import sync_quietly

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

STAGING_PREFIX = ".lightbox-commit-"
JOURNAL = "journal.json"
ROLLBACK = "rollback.json"
# files that say which cases exist: renamed after the case files they list, dataset.json last
_LISTS = {"datalist.json": 2, "dataset.json": 3, "classification.csv": 1, "classification.json": 1}
_LIST_FOLDERS = {"labelsTr": 1}

ErrorFactory = Callable[[OSError, Path, str], Exception]  # (error, folder, file name) -> what to raise

_ACTIVE: ContextVar[Commit | None] = ContextVar("lightbox_dataset_commit", default=None)


def active() -> Commit | None:
    """The commit open in this thread (files staged now belong to it), or None."""
    return _ACTIVE.get()


class Commit:
    """The staged files of one commit; made by :func:`committing`."""

    def __init__(self, folder: Path, staging: Path, error: ErrorFactory):
        self.folder = folder
        self.staging = staging
        self.error = error
        self.entries: dict[Path, Path] = {}  # final -> staged, in the order first staged
        self.decided = False  # the journal is written: only recover() may end this commit now
        self._n = 0

    def new_path(self, suffix: str = ".part") -> Path:
        """A fresh name in the staging folder (not created)."""
        self._n += 1
        return self.staging / f"{self._n:03d}{suffix}"

    def add(self, staged: Path, final: Path) -> None:
        """``staged`` becomes ``final`` when the commit applies; staging ``final`` again replaces it."""
        old = self.entries.pop(Path(final), None)
        if old is not None and old != staged:
            old.unlink(missing_ok=True)
        self.entries[Path(final)] = Path(staged)

    def staged_for(self, final: Path) -> Path | None:
        return self.entries.get(Path(final))

    def finals(self) -> list[Path]:
        return list(self.entries)

    # -- applying --
    def _ordered(self) -> list[tuple[Path, Path]]:
        def rank(final: Path) -> int:
            return _LISTS.get(final.name, 0) if final.parent == self.folder else _LIST_FOLDERS.get(final.parent.name, 0)
        return sorted(((s, f) for f, s in self.entries.items()), key=lambda sf: rank(sf[1]))

    def apply(self) -> None:
        """Journal, then rename everything into place; a failed rename undoes the renames done."""
        order = self._ordered()
        if not order:
            return
        for _s, final in order:  # a folder we may not write: say so before anything moves
            parent = final.parent
            if parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):
                raise self.error(PermissionError(errno.EACCES, "Permission denied"), parent, final.name)
        made: list[Path] = []
        for _s, final in order:
            try:
                made += _make_parents(final.parent, self.folder)
            except OSError as exc:
                _remove_dirs(made)
                raise self.error(exc, final.parent.parent, final.parent.name + "/") from exc
        entries = []
        try:
            for i, (staged, final) in enumerate(order):
                backup = None
                if final.exists():
                    backup = self.staging / f"{i:03d}.old"
                    _link_or_copy(final, backup)
                entries.append({"staged": staged.name, "final": final.relative_to(self.folder).as_posix(),
                                "backup": backup.name if backup else None})
            journal = {"version": 1, "entries": entries,
                       "dirs": [d.relative_to(self.folder).as_posix() for d in made]}
            tmp = self.staging / "journal.tmp"
            tmp.write_text(json.dumps(journal, indent=1), encoding="utf-8")
            _fsync(tmp)
            os.replace(tmp, self.staging / JOURNAL)  # the commit point
            _fsync(self.staging)
        except OSError as exc:
            _remove_dirs(made)
            raise self.error(exc, self.folder, "the commit journal") from exc
        self.decided = True
        for staged, final in order:
            try:
                os.replace(staged, final)
            except OSError as exc:
                try:
                    os.replace(self.staging / JOURNAL, self.staging / ROLLBACK)
                    _roll_back(self.folder, self.staging, journal)
                except (OSError, ValueError):
                    pass  # rollback.json stays: recover() finishes the undo on the next open
                else:
                    shutil.rmtree(self.staging, ignore_errors=True)
                raise self.error(exc, final.parent, final.name) from exc
        for parent in {f.parent for _s, f in order}:
            _fsync(parent)
        shutil.rmtree(self.staging, ignore_errors=True)

    def discard(self) -> None:
        """Drop the staged files; after the commit point (an interrupt between two renames) the
        journal stays for :func:`recover` to finish the commit on the next open."""
        if not self.decided:
            shutil.rmtree(self.staging, ignore_errors=True)


@contextmanager
def committing(folder, error: ErrorFactory) -> Iterator[Commit]:
    """``with committing(dataset_folder, error) as c:`` stage files (``c.new_path``, ``c.add``); they
    are moved into place when the block ends, and discarded if it raises. Creates the dataset folder
    when needed (and removes it again, if it stays empty, when the commit fails). Raises what
    ``error`` makes of an OSError."""
    folder = Path(folder)
    try:
        made = _make_parents(folder, None)
    except OSError as exc:
        raise error(exc, folder.parent, folder.name + "/") from exc
    fd = None
    commit = None
    try:
        try:
            fd = _lock(folder, blocking=True)
        except OSError as exc:
            raise error(exc, folder.parent, folder.name + "/") from exc
        _recover_locked(folder)
        try:
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
        except OSError as exc:
            raise error(exc, folder.parent, folder.name + "/") from exc
        commit = Commit(folder, staging, error)
        token = _ACTIVE.set(commit)
        try:
            yield commit
            commit.apply()
        finally:
            _ACTIVE.reset(token)
    except BaseException:
        if commit is not None:
            commit.discard()
        _unlock(fd)
        fd = None
        _remove_dirs(made)
        raise
    finally:
        _unlock(fd)


# -- recovery -----------------------------------------------------------------------------------
def recover(folder) -> None:
    """Finish or undo an interrupted commit of the dataset ``folder`` and sweep stale temp files.

    Best effort and silent (a read-only dataset is left as it is); skipped while another process
    is writing the dataset (it holds the lock)."""
    folder = Path(folder)
    if not folder.is_dir() or not _needs_recovery(folder):
        return
    try:
        fd = _lock(folder, blocking=False)
    except OSError:
        return
    if fd is None:
        return
    try:
        _recover_locked(folder)
    finally:
        _unlock(fd)


def _needs_recovery(folder: Path) -> bool:
    try:
        return next(_candidates(folder), None) is not None
    except OSError:
        return False


def _candidates(folder: Path) -> Iterator[Path]:
    """Staging folders and stale temp files in the dataset folder and its (visible) sub-folders."""
    subfolders = []
    for p in folder.iterdir():
        if p.name.startswith(STAGING_PREFIX) and p.is_dir():
            yield p
        elif _is_stale_temp(p):
            yield p
        elif not p.name.startswith(".") and p.is_dir():
            subfolders.append(p)
    for sub in subfolders:
        for p in sub.iterdir():
            if _is_stale_temp(p) or (p.name.startswith(".seg-") and p.is_dir()):
                yield p


def _is_stale_temp(p: Path) -> bool:
    """A temp file of ``viewer.core.atomic`` (``.XXXX.partial.NAME``) that its writer never renamed."""
    return p.name.startswith(".") and ".partial." in p.name and p.is_file()


def _recover_locked(folder: Path) -> None:
    try:
        found = list(_candidates(folder))
    except OSError:
        return
    for path in found:
        try:
            if path.name.startswith(STAGING_PREFIX):
                if (path / JOURNAL).is_file():
                    _roll_forward(folder, path, _read_journal(path / JOURNAL))
                elif (path / ROLLBACK).is_file():
                    _roll_back(folder, path, _read_journal(path / ROLLBACK))
                shutil.rmtree(path)
            elif path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except (OSError, ValueError):
            continue  # leave it: a later open may manage (e.g. a folder that is read-only now)


def _read_journal(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ValueError(f"{path}: not a commit journal")
    return data


def _within(folder: Path, rel: str) -> Path:
    """folder / rel, refusing a journal entry that points outside the dataset folder."""
    path = Path(os.path.normpath(folder / rel))
    if folder != path and folder not in path.parents:
        raise ValueError(f"{rel!r} is outside {folder}")
    return path


def _roll_forward(folder: Path, staging: Path, journal: dict) -> None:
    for e in journal["entries"]:
        staged = staging / Path(e["staged"]).name
        if staged.exists():  # not moved yet
            final = _within(folder, e["final"])
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)


def _roll_back(folder: Path, staging: Path, journal: dict) -> None:
    for e in journal["entries"]:
        if (staging / Path(e["staged"]).name).exists():
            continue  # never moved: the old file (or none) is still in place
        final = _within(folder, e["final"])
        if e.get("backup"):
            backup = staging / Path(e["backup"]).name
            if backup.exists():
                os.replace(backup, final)
        else:
            final.unlink(missing_ok=True)
    _remove_dirs([_within(folder, d) for d in journal.get("dirs", [])])


# -- helpers ------------------------------------------------------------------------------------
def _make_parents(path: Path, stop: Path | None) -> list[Path]:
    """mkdir -p ``path``; returns the folders it made, outermost first."""
    missing = []
    p = path
    while not p.exists() and p != stop and p.parent != p:
        missing.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _remove_dirs(made: list[Path]) -> None:
    for d in reversed(made):
        try:
            d.rmdir()
        except OSError:
            pass  # not empty (someone else's files) or gone


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # no hard links here (FAT, some network shares, protected_hardlinks)
        shutil.copy2(src, dst)


def _fsync(path: Path) -> None:
    sync_quietly(path)


def _lock(folder: Path, blocking: bool) -> int | None:
    """An open descriptor holding the dataset's exclusive lock; None when another process holds it
    (non-blocking); -1 where there is no flock."""
    if fcntl is None:
        return -1
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:  # a file system without flock (some network mounts): go on unlocked
        os.close(fd)
        return -1
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        os.close(fd)  # closing releases the flock
