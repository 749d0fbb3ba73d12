"""Export (image, label map) pairs as a training dataset: nnU-Net v2 raw layout + a MONAI datalist.

Layout under ``root/<name>/`` (``name`` defaults to ``Dataset501_Lightbox``)::

    imagesTr/<CASE>_0000.nii.gz     the image (one channel), geometry of the source Volume
    labelsTr/<CASE>.nii.gz          uint8 label map on the same grid, in the dataset's label values
    dataset.json                    nnU-Net v2: channel_names, labels (background 0), numTraining,
                                    file_ending ".nii.gz" (other keys found there are kept)
    datalist.json                   MONAI: {"training": [{"image": "imagesTr/..", "label": "labelsTr/.."}]}
    provenance.jsonl                one JSON line per case: model, user edits, time (UTC), app version;
                                    a classified case's line has "kind": "classification" and its views
    imagesCls/<CASE>_<VIEW>.nii.gz  a classified view's pixels as the viewer holds them ((1, rows, cols)
                                    for a mammogram, no display flips), e.g. CASE_0003_LCC.nii.gz
    classification.csv / .json      classifier labels, one row per labelled view or exam:
                                    case, view ("LCC" or "exam"), label, image (imagesCls/.. relative to
                                    the dataset folder, "" for none), chest_wall ("left"/"right"/"":
                                    the image side the chest wall is on); .json = {"classification": [rows]}

The writer APPENDS: an existing dataset.json is read, its labels are kept and a new label name gets
the next free value (nnU-Net wants consecutive values); every label map is remapped to the
dataset's values. Existing cases are never rewritten; new case ids continue the numbering (cases that
exist only as classification rows or imagesCls images count too). A classification row given again for
the same (case, view) replaces the old one: that is a correction.

One call is one commit (``.commit``): every file it writes (image, label, provenance line,
dataset.json, datalist, classification rows) is staged in a hidden folder inside the dataset and
moved into place only when all of it was written; a failure, or a kill at any point, leaves either
the whole case or none of it (an interrupted commit is finished or undone, and stale temp files
swept, when the dataset is next opened: ``DatasetWriter()``, ``existing_datasets``). Several calls
can share one commit (``with writer.transaction():``), as one exported case with its SEG and rows
does. Every provenance line of a segmentation case keeps a ``content_key`` (a hash of the pixels and
the label map written: nothing that is not in the dataset already), which makes re-exporting the
same image with the same labels idempotent (``add_case(..., replace_same=True)``). Paths are checked
to stay inside ``root``. Errors a user can act on (read-only folder, full disk, incompatible dataset) raise
:class:`ExportError` naming the folder or file.

Nothing here knows patients: identity enters only through ``case_id`` (sanitized) and
``uid_mapper`` (applied to the source series UID in the provenance; pass a de-identifying mapper).
The NIfTI headers carry no UID.
"""
from __future__ import annotations

import csv
import errno
import gzip
import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..atomic import SHARED_MODE, flush_to_disk
from ..errors import LightboxError
from ..io.itk import to_sitk
from ..model_id import split_model_id
from ..volume import Volume
from . import commit as _commit

FILE_ENDING = ".nii.gz"
CHANNEL = "0000"
DEFAULT_NAME = "Dataset501_Lightbox"
CLS_FOLDER = "imagesCls"
CLASSIFICATION_COLUMNS = ("case", "view", "label", "image", "chest_wall")
CHEST_WALL_SIDES = ("left", "right", "")
EXAM_VIEW = "exam"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NIFTI_NOTE_LIMIT = 79
# modalities a Volume may carry that name an nnU-Net channel (nnU-Net normalizes "CT" specially)
_KNOWN_CHANNELS = {"CT", "MR", "MRI", "PT", "MG", "CR", "DX", "US", "NM"}


class ExportError(LightboxError, ValueError):
    """An export that could not be done (unwritable folder, a path outside it, ...); ``str()`` says
    what and where in plain words. A ValueError too: a bad destination is a bad argument."""


@dataclass(frozen=True)
class ClassifiedView:
    """One view of a case for the classifiers: its label ("" = image only, no row), its pixels
    (written to imagesCls/) and the image side its chest wall is on ("left", "right", "" unknown)."""

    view: str
    label: str = ""
    image: Volume | None = None
    chest_wall: str = ""


def existing_datasets(root) -> list[str]:
    """Names of the datasets under ``root`` (sub-folders with a dataset.json), sorted. Opening them
    here finishes or undoes an interrupted commit first (a new dataset's first case may be one
    rename away from its dataset.json)."""
    try:
        folders = [p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    for p in folders:
        _commit.recover(p)
    return sorted(p.name for p in folders if (p / "dataset.json").is_file())


def identity(uid: str) -> str:
    return uid


def app_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lightbox")
    except PackageNotFoundError:
        return "unknown"


def safe_name(text: str, fallback: str = "case") -> str:
    """A file-name-safe version of ``text``: no separators, no leading dots, <= 80 chars."""
    name = _SAFE.sub("_", str(text).strip()).strip("._")
    return name[:80] or fallback


def inside(folder: Path, name: str) -> Path:
    """folder / name, refusing anything that would land outside ``folder``."""
    root = Path(folder).resolve()
    path = (root / name).resolve()
    if root != path and root not in path.parents:
        raise ExportError(f"{name!r} would be written outside {root}")
    return path


# -- errors -------------------------------------------------------------------------------------
_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the folder is on a read-only file system",
    errno.ENOSPC: "the disk is full",
    getattr(errno, "EDQUOT", -1): "the disk quota is exceeded",
}


def _os_error(exc: OSError, folder: Path, what: str) -> ExportError:
    reason = _REASONS.get(exc.errno) or (exc.strerror or str(exc))
    return ExportError(f"cannot write {what} in {folder}: {reason}")


def _folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot take a file (for writers such as ITK that do not give an errno)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    try:
        st = os.statvfs(folder)
        if st.f_flag & getattr(os, "ST_RDONLY", 1):
            return "the folder is on a read-only file system"
        if st.f_bavail * st.f_frsize < 1 << 20:
            return "the disk is full"
    except (OSError, AttributeError):
        pass
    return None


# -- staged writes ------------------------------------------------------------------------------
def _temp_path(final: Path) -> Path:
    """A fresh name in the open commit's staging folder for what becomes ``final`` (its name ends in
    ``.part``: a listing of ``*.nii.gz`` or ``*_0000.nii.gz`` never picks it up)."""
    tx = _commit.active()
    if tx is None:
        raise RuntimeError(f"{final.name}: staged outside a commit")  # a bug, not a user error
    return tx.new_path()


@contextmanager
def _staging(final: Path) -> Iterator[Path]:
    """A staged file for ``final`` for the block to fill, flushed and shared-readable afterwards; on
    any failure it is removed and I/O errors become ExportErrors naming the file and folder. The caller
    adds it to the commit, which renames it into place together with the case's other files."""
    tmp = _temp_path(final)
    try:
        yield tmp
        flush_to_disk(tmp)
        os.chmod(tmp, SHARED_MODE)
    except RuntimeError as exc:  # ITK reports I/O failures as RuntimeError without an errno
        tmp.unlink(missing_ok=True)
        reason = _folder_problem(final.parent) or str(exc).strip().splitlines()[-1]
        raise ExportError(f"cannot write {final.name} in {final.parent}: {reason}") from exc
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _os_error(exc, final.parent, final.name) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _stage_bytes(data: bytes, final: Path) -> Path:
    with _staging(final) as tmp:
        tmp.write_bytes(data)
    return tmp


def _stage_image(volume: Volume, final: Path, note: str) -> Path:
    """``volume`` as a gzipped NIfTI. ITK picks the format by the file's ending, so it writes a plain
    ``.nii`` in the staging folder, gzipped here into the staged ``.part`` (mtime 0: the same image
    gives the same bytes; level 1: as fast as ITK's own gzip, about 3 % larger on a CT)."""
    with _staging(final) as tmp:
        image = to_sitk(volume)
        image.SetMetaData("ITK_FileNotes", note[:_NIFTI_NOTE_LIMIT])
        plain = tmp.with_name(tmp.name + ".nii")
        try:
            sitk.WriteImage(image, str(plain), useCompression=False)
            with open(plain, "rb") as src, open(tmp, "wb") as raw, \
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        finally:
            plain.unlink(missing_ok=True)
    return tmp


def _json_bytes(data) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except OSError as exc:
        raise ExportError(f"{path}: cannot read ({exc.strerror or exc})") from exc


# -- provenance ---------------------------------------------------------------------------------
def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _pop_model(provenance: dict) -> dict:
    """{"name", "version"} from provenance's "model" (a mapping or "name version") or
    "model_name"/"model_version", removed from ``provenance``."""
    model = provenance.pop("model", None)
    if isinstance(model, Mapping):
        return {"name": model.get("name"), "version": model.get("version")}
    name = model or provenance.pop("model_name", None)
    version = provenance.pop("model_version", None)
    if isinstance(name, str) and version is None:  # "ct-organs 1.2", as the analysis names models
        name, version = split_model_id(name)
        version = version or None
    return {"name": name, "version": version}


def _with_extra(record: dict, provenance: Mapping) -> dict:
    """``record`` plus the caller's other facts under "extra" (refusing what JSON cannot hold)."""
    extra = {str(k): v for k, v in provenance.items() if k not in record}
    if extra:
        try:
            json.dumps(extra)
        except TypeError as exc:
            raise ExportError(f"provenance holds something that is not JSON: {exc}") from exc
        record["extra"] = extra
    return record


# -- edits --------------------------------------------------------------------------------------
def edit_summary(original: np.ndarray, edited: np.ndarray, names: Mapping[int, str]) -> dict:
    """Voxels added / removed per label between the model's map and the user's edited map.

    Returns ``{"voxels_changed": n, "labels": {name: {"value": v, "added": a, "removed": r}}}`` for
    every non-zero label named in ``names`` or present in either map (unnamed ones as "label v").
    "added" counts voxels that became v, "removed" voxels that were v and are no longer.
    """
    original = np.asarray(original)
    edited = np.asarray(edited)
    if original.shape != edited.shape:
        raise ValueError(f"original map {original.shape} and edited map {edited.shape} differ in shape")
    diff = original != edited
    was = original[diff].astype(np.int64, copy=False)
    now = edited[diff].astype(np.int64, copy=False)
    n = int(max(was.max(initial=0), now.max(initial=0), max(names, default=0))) + 1
    added = np.bincount(now, minlength=n)
    removed = np.bincount(was, minlength=n)
    values = {int(v) for v in names if int(v) > 0}
    values |= {int(v) for v in np.unique(original) if v > 0} | {int(v) for v in np.unique(edited) if v > 0}
    labels = {}
    for v in sorted(values):
        labels[str(names.get(v, f"label {v}"))] = {"value": v, "added": int(added[v]), "removed": int(removed[v])}
    return {"voxels_changed": int(diff.sum()), "labels": labels}


def values_present(labels: np.ndarray) -> set[int]:
    """The label values that have at least one voxel."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return set()
    if labels.dtype.kind in "ub" and labels.dtype.itemsize <= 2:  # uint8/uint16 maps: a count per slice, no sort
        counts = np.zeros(int(labels.max()) + 1, np.int64)
        for plane in labels.reshape(-1, labels.shape[-1]) if labels.ndim < 3 else labels:
            counts += np.bincount(plane.ravel(), minlength=counts.size)
        return {int(v) for v in np.flatnonzero(counts)}
    return {int(v) for v in np.unique(labels)}


def content_key(image: Volume, labels: np.ndarray) -> str:
    """A hash of exactly what a case writes: the image's pixels and grid and the label map in the
    dataset's values. Re-exporting the same source with the same labels gives the same key. It is
    made of the dataset's own contents (no UID, no secret), so keeping it reveals nothing new."""
    h = hashlib.sha256(b"lightbox-case-v1\0")
    arr = np.ascontiguousarray(image.array)
    grid = [str(arr.dtype), list(arr.shape), [round(float(x), 6) for x in image.spacing],
            [round(float(x), 6) for x in image.origin], [round(float(x), 9) for x in np.ravel(image.direction)]]
    h.update(json.dumps(grid).encode())
    h.update(memoryview(arr).cast("B"))
    h.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    return "sha256:" + h.hexdigest()


# -- the writer ---------------------------------------------------------------------------------
class DatasetWriter:
    """Append cases to an nnU-Net v2 raw dataset (and its MONAI datalist) under ``root/name``.

    ``task_labels`` ({name: value}, background 0 implied) fixes the label values of a new dataset
    and must agree with an existing one; ``channel_names`` ({"0": "CT"}) likewise, and defaults to
    the existing dataset's or, for a new one, the first image's modality. ``create=False`` only reads
    (an export dialog asking :meth:`refusal` and :meth:`summary` must not make folders).
    """

    def __init__(self, root, name: str = DEFAULT_NAME, task_labels: Mapping[str, int] | None = None,
                 channel_names: Mapping[str, str] | None = None, case_prefix: str = "CASE",
                 uid_mapper: Callable[[str], str] = identity, description: str = "", create: bool = True):
        self.root = Path(root)
        self.name = safe_name(name, DEFAULT_NAME)
        self.case_prefix = safe_name(case_prefix, "CASE")
        self.uid_mapper = uid_mapper
        self.folder = inside(self.root, self.name)
        self.images = self.folder / "imagesTr"
        self.labels_dir = self.folder / "labelsTr"
        self._tx: _commit.Commit | None = None
        self._asked = ({str(k): str(v) for k, v in channel_names.items()} if channel_names else None,
                       dict(task_labels) if task_labels else None, description)
        for folder in (self.folder, self.images, self.labels_dir) if create else ():
            self._make_folder(folder)
        _commit.recover(self.folder)  # an interrupted commit: finish or undo it before reading
        self._load_meta()

    def _load_meta(self) -> None:
        """dataset.json as it is now (or a new one), with the constructor's channel and labels merged."""
        channel_names, task_labels, description = self._asked
        meta = self.dataset_json_path
        self.meta: dict = _read_json(meta) if meta.exists() else {}
        if self.meta:
            self._check_existing()
        else:
            self.meta = {"channel_names": {}, "labels": {"background": 0}, "numTraining": 0,
                         "file_ending": FILE_ENDING, "name": self.name,
                         "description": description or "exported by Lightbox",
                         "overwrite_image_reader_writer": "SimpleITKIO"}
        if channel_names:
            self._merge_channels(channel_names)
        if task_labels:
            self._merge_task_labels(task_labels)

    @contextmanager
    def transaction(self) -> Iterator[_commit.Commit]:
        """``with writer.transaction():`` every file the writer (or the caller, through the yielded
        commit's ``new_path``/``add``) writes in the block is one commit: all of it lands when the
        block ends, none of it if the block raises or the process dies. Re-entrant. Holds the
        dataset's lock (another export into the same dataset waits) and re-reads dataset.json
        under it."""
        if self._tx is not None:
            yield self._tx
            return
        saved = self.meta
        with _commit.committing(self.folder, _os_error) as tx:
            self._tx = tx
            try:
                self._load_meta()
                yield tx
            except BaseException:
                self.meta = saved
                raise
            finally:
                self._tx = None

    def transaction_open(self) -> _commit.Commit:
        """The commit open on this writer (for callers staging their own files into it)."""
        if self._tx is None:
            raise RuntimeError("no open transaction: use `with writer.transaction():`")
        return self._tx

    def _current(self, path: Path) -> Path | None:
        """Where ``path``'s current content is: its staged version in the open commit, else the file
        itself; None when neither exists."""
        staged = self._tx.staged_for(path) if self._tx is not None else None
        if staged is not None:
            return staged
        return path if path.exists() else None

    def _staged_names(self, folder: Path) -> list[str]:
        """Names of the files the open commit will add to ``folder``."""
        return [f.name for f in (self._tx.finals() if self._tx is not None else ()) if f.parent == folder]

    # -- paths --
    @property
    def dataset_json_path(self) -> Path:
        return self.folder / "dataset.json"

    @property
    def datalist_path(self) -> Path:
        return self.folder / "datalist.json"

    @property
    def provenance_path(self) -> Path:
        return self.folder / "provenance.jsonl"

    @property
    def labels(self) -> dict[str, int]:
        """The dataset's label table {name: value}, background 0 included."""
        return dict(self.meta["labels"])

    @property
    def channel_names(self) -> dict[str, str]:
        return dict(self.meta.get("channel_names", {}))

    def case_ids(self) -> list[str]:
        """Cases with a label file (or one staged in the open commit), sorted."""
        names = [p.name for p in self.labels_dir.glob("*" + FILE_ENDING)] + self._staged_names(self.labels_dir)
        return sorted({n[: -len(FILE_ENDING)] for n in names if n.endswith(FILE_ENDING) and not n.startswith(".")})

    def image_path(self, case_id: str) -> Path:
        return inside(self.images, f"{case_id}_{CHANNEL}{FILE_ENDING}")

    def label_path(self, case_id: str) -> Path:
        return inside(self.labels_dir, f"{case_id}{FILE_ENDING}")

    @property
    def cls_images(self) -> Path:
        """imagesCls/: the classified views' images (created with the first one)."""
        return self.folder / CLS_FOLDER

    def cls_image_path(self, case_id: str, view: str) -> Path:
        return inside(self.cls_images, f"{safe_name(case_id, 'case')}_{safe_name(view, 'view')}{FILE_ENDING}")

    @property
    def exists(self) -> bool:
        return self.dataset_json_path.exists()

    def summary(self) -> dict:
        """What the dataset holds: {"segmentation_cases", "classified_cases", "labels" (names, no
        background), "channel" ("" for a new dataset)}."""
        labels = sorted((n for n, v in self.labels.items() if v), key=lambda n: self.labels[n])
        return {"segmentation_cases": len(self.case_ids()),
                "classified_cases": len({r["case"] for r in self.classifications()}),
                "labels": labels, "channel": self.channel_names.get("0", "")}

    def refusal(self, image: Volume | None = None, label_names: Mapping[int, str] | None = None) -> str | None:
        """Why the dataset cannot take ``image`` (another channel/modality) with a map whose labels
        are ``label_names``, in the words an export would fail with; None when it can. Writes nothing."""
        try:
            if image is not None:
                self._check_channel(image)
            if label_names:
                self._dataset_values({int(k): str(v) for k, v in label_names.items()}, dict(self.meta["labels"]))
        except ExportError as exc:
            return str(exc)
        return None

    # -- compatibility --
    def _check_existing(self) -> None:
        where = self.dataset_json_path
        ending = self.meta.get("file_ending", FILE_ENDING)
        if ending != FILE_ENDING:
            raise ExportError(f"{where}: file_ending is {ending!r}; Lightbox appends only {FILE_ENDING} datasets")
        labels = self.meta.get("labels")
        if not isinstance(labels, dict) or any(not isinstance(v, int) or isinstance(v, bool) for v in labels.values()):
            raise ExportError(f"{where}: labels must map names to integer values "
                              "(region-based labels are not supported for appending)")
        if labels.get("background") != 0:
            raise ExportError(f"{where}: labels must have background = 0")
        channels = self.meta.get("channel_names") or self.meta.get("modality") or {}
        if len(channels) > 1:
            raise ExportError(f"{where}: has {len(channels)} channels {channels}; Lightbox writes single-channel cases")
        self.meta["channel_names"] = {str(k): str(v) for k, v in channels.items()}
        self.meta.pop("modality", None)

    def _merge_channels(self, channels: dict[str, str]) -> None:
        if list(channels) != ["0"]:
            raise ExportError(f"channel_names must be one channel '0', got {channels}")
        have = self.meta.get("channel_names") or {}
        if have and have != channels:
            raise ExportError(f"{self.dataset_json_path}: channel 0 is {have.get('0')!r}, "
                              f"this export has {channels['0']!r}; use another dataset name")
        self.meta["channel_names"] = dict(channels)

    def _merge_task_labels(self, task_labels: Mapping[str, int]) -> None:
        table = dict(self.meta["labels"])
        by_value = {v: k for k, v in table.items()}
        for name, value in task_labels.items():
            name, value = str(name).strip(), int(value)
            if name == "background" or value == 0:
                if (name, value) != ("background", 0):
                    raise ExportError(f"label {name!r} = {value}: value 0 is background only")
                continue
            if not 1 <= value <= 255:
                raise ExportError(f"label {name!r} = {value}: values must be 1..255 (uint8 label maps)")
            if name in table and table[name] != value:
                raise ExportError(f"{self.dataset_json_path}: label {name!r} is {table[name]} in the dataset, "
                                  f"not {value}")
            if value in by_value and by_value[value] != name:
                raise ExportError(f"{self.dataset_json_path}: value {value} is {by_value[value]!r} in the "
                                  f"dataset, not {name!r}")
            table[name] = value
            by_value[value] = name
        values = sorted(table.values())
        if values != list(range(len(values))):
            raise ExportError(f"labels must be consecutive 0..N for nnU-Net, got {values}")
        self.meta["labels"] = table

    def _dataset_values(self, label_names: Mapping[int, str], table: dict[str, int]) -> dict[int, int]:
        """Case value -> dataset value, adding new names to ``table`` with the next values."""
        lut: dict[int, int] = {0: 0}
        for value, name in sorted(label_names.items()):
            value, name = int(value), str(name).strip()
            if value == 0:
                continue
            if not name:
                raise ExportError(f"label value {value} has no name")
            if name == "background":
                raise ExportError(f"label value {value} is called 'background', which is value 0")
            if name not in table:
                table[name] = max(table.values()) + 1
                if table[name] > 255:
                    raise ExportError("more than 255 labels: the dataset's label maps are uint8")
            lut[value] = table[name]
        return lut

    # -- cases --
    def next_case_id(self) -> str:
        """The next free numbered id, counting every file and classification row that names a case
        (a classification-only case has no labelsTr file but must not be reused)."""
        pattern = re.compile(rf"^{re.escape(self.case_prefix)}_(\d+)(?:_.*)?$")
        names = [p.name for folder in (self.images, self.labels_dir, self.cls_images)
                 if folder.is_dir() for p in folder.glob("*" + FILE_ENDING)]
        names += [n for folder in (self.images, self.labels_dir, self.cls_images) for n in self._staged_names(folder)]
        stems = [n[: -len(FILE_ENDING)] for n in names if n.endswith(FILE_ENDING)]
        stems += [str(r.get("case", "")) for r in self.classifications()]
        numbers = [0] + [int(m.group(1)) for m in map(pattern.match, stems) if m]
        return f"{self.case_prefix}_{max(numbers) + 1:04d}"

    def _exists(self, case_id: str) -> bool:
        return any(self._current(p) is not None for p in (self.image_path(case_id), self.label_path(case_id)))

    def _case_with_key(self, key: str) -> str | None:
        """The segmentation case whose provenance has this content key (the latest), or None."""
        found = None
        for record in self.provenance():
            if record.get("content_key") == key and record.get("kind") is None and record.get("case"):
                found = str(record["case"])
        return found if found is not None and self._current(self.label_path(found)) is not None else None

    def provenance(self) -> list[dict]:
        """The provenance records (one per line; an unreadable line is skipped)."""
        path = self._current(self.provenance_path)
        if path is None:
            return []
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ExportError(f"{self.provenance_path}: cannot read ({exc})") from exc
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def add_case(self, volume: Volume, labels: np.ndarray, label_names: Mapping[int, str],
                 provenance: Mapping | None = None, case_id: str | None = None,
                 original_labels: np.ndarray | None = None, replace_same: bool = False,
                 keys: Mapping[str, str] | None = None) -> str:
        """Write one (image, label map) pair and its provenance; returns the case id.

        ``labels`` is an integer map on ``volume``'s grid whose values ``label_names`` names (0 is
        background); it is remapped to the dataset's values. ``provenance`` may hold ``model``
        ({"name", "version"}) or ``model_name`` / ``model_version``, ``original_labels`` (the
        model's map, same values as ``labels``) and any other JSON-able facts to keep. A given
        ``case_id`` is sanitized and must be new; without one the numbering continues.

        ``replace_same``: when the dataset already holds a case with the same image and the same
        label map (its provenance's ``content_key``), that case is written again under its id (its
        files and provenance line replaced, nothing added) instead of a new case: exporting twice,
        or re-running an export that was interrupted, gives one case and repairs a partial one. A
        different label map of the same image is still a new case: the dataset only grows, and two
        different corrections are two samples the user made; replacing would silently drop the
        earlier one. Without ``replace_same`` every call adds a case. ``keys``: more such keys for the
        provenance line's top level (an exam's ``exam_key``).
        """
        provenance = dict(provenance or {})
        if original_labels is None:
            original_labels = provenance.pop("original_labels", None)
        else:
            provenance.pop("original_labels", None)
        labels = self._check_labels(labels, volume, "label map")
        if original_labels is not None:
            original_labels = self._check_labels(original_labels, volume, "original label map")
        names = {int(k): str(v) for k, v in label_names.items()}
        present = values_present(labels)
        unnamed = sorted(present - set(names) - {0})
        if unnamed:
            raise ExportError(f"label values {unnamed} in the map have no name in label_names")
        # A label with no voxels here (one added in the editor and never painted: "Label 5") does not enter
        # dataset.json: new names get the next consecutive value, so dropping one leaves no gap.
        written = {v: n for v, n in names.items() if v in present}
        with self.transaction():
            channels = self._check_channel(volume)
            table = dict(self.meta["labels"])
            lut_map = self._dataset_values(written, table)
            lut = np.zeros(max(max(lut_map), int(labels.max(initial=0))) + 1, np.uint8)
            for k, v in lut_map.items():
                lut[k] = v
            remapped = lut[labels]
            image_array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
            image = volume.with_array(np.ascontiguousarray(image_array))
            key = content_key(image, remapped)

            same = self._case_with_key(key) if replace_same else None
            if same is not None and (case_id is None or safe_name(case_id, "case") == same):
                case_id = same
            elif case_id is None:
                case_id = self.next_case_id()
            else:
                wanted = case_id
                case_id = safe_name(case_id, "case")
                if self._exists(case_id):
                    raise ExportError(f"case {case_id!r} (from {wanted!r}) already exists in {self.folder}; "
                                      "existing cases are never overwritten")
            image_final, label_final = self.image_path(case_id), self.label_path(case_id)

            meta = {**self.meta, "channel_names": channels, "labels": table}
            record = self._record(case_id, volume, provenance, original_labels, labels, names, table, written)
            record.update({**(keys or {}), "content_key": key})
            tx = self._tx
            note = f"lightbox {self.name} {case_id}"
            tx.add(_stage_image(image, image_final, note), image_final)
            tx.add(_stage_image(volume.with_array(remapped), label_final, note), label_final)
            cases = sorted(set(self.case_ids()) | {case_id})
            meta["numTraining"] = len(cases)
            tx.add(_stage_bytes(_json_bytes(meta), self.dataset_json_path), self.dataset_json_path)
            tx.add(_stage_bytes(_json_bytes(self._datalist(cases)), self.datalist_path), self.datalist_path)
            self._stage_provenance(record, replace=same == case_id)
            self.meta = meta
        return case_id

    def add_labelmap(self, volume: Volume, labelmap, provenance: Mapping | None = None,
                     case_id: str | None = None, original_labels: np.ndarray | None = None) -> str:
        """:meth:`add_case` for a :class:`~viewer.core.labels.LabelMap` (names from its table)."""
        if not labelmap.grid.matches(volume):
            raise ExportError(f"the label map's grid {labelmap.shape} is not the image's {volume.shape}")
        names = {int(v): lb.name for v, lb in labelmap.labels.items()}
        return self.add_case(volume, labelmap.array, names, provenance, case_id=case_id,
                             original_labels=original_labels)

    def _check_labels(self, labels, volume: Volume, what: str) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.ndim == 2 and volume.shape[0] == 1:
            labels = labels[np.newaxis]
        if labels.shape != volume.shape:
            raise ExportError(f"{what} has shape {labels.shape} (z, y, x) but the image has {volume.shape}: "
                              "it must be on the image's own grid")
        if labels.dtype == bool:
            return labels.astype(np.uint8)
        if not np.issubdtype(labels.dtype, np.integer):
            raise ExportError(f"{what} must hold integers, not {labels.dtype}")
        if labels.size and int(labels.min()) < 0:
            raise ExportError(f"{what} has negative values")
        return labels

    def _check_channel(self, volume: Volume) -> dict[str, str]:
        """The dataset's channel names once this image is in (refusing another modality)."""
        modality = (volume.info.modality or "").upper()
        channels = dict(self.meta.get("channel_names") or {})
        if not channels:
            return {"0": modality or "image"}
        have = channels.get("0", "")
        if modality and have.upper() in _KNOWN_CHANNELS and modality != have.upper() and \
                {modality, have.upper()} != {"MR", "MRI"}:
            raise ExportError(f"{self.dataset_json_path}: channel 0 is {have!r} but this image is {modality}; "
                              "use another dataset name")
        return channels

    def _stage_provenance(self, record: dict, replace: bool = False) -> None:
        """provenance.jsonl plus ``record``'s line; ``replace``: drop the earlier lines of the same case
        and kind first (a repeated export)."""
        current = self._current(self.provenance_path)
        old = current.read_bytes() if current is not None else b""
        if replace:
            def other(line: bytes) -> bool:
                try:
                    r = json.loads(line)
                except ValueError:
                    return True
                return not (isinstance(r, dict) and r.get("case") == record["case"]
                            and r.get("kind") == record.get("kind"))
            old = b"".join(line for line in old.splitlines(keepends=True) if other(line))
        if old and not old.endswith(b"\n"):
            old += b"\n"
        line = (json.dumps(record, sort_keys=False) + "\n").encode("utf-8")
        self._tx.add(_stage_bytes(old + line, self.provenance_path), self.provenance_path)

    def _datalist(self, cases: list[str]) -> dict:
        current = self._current(self.datalist_path)
        old = _read_json(current) if current is not None else {}
        if not isinstance(old, dict):
            old = {}
        extra = {e.get("label"): e for e in old.get("training", []) if isinstance(e, dict)}
        training = []
        for c in cases:
            image = f"imagesTr/{c}_{CHANNEL}{FILE_ENDING}"
            label = f"labelsTr/{c}{FILE_ENDING}"
            training.append({**extra.get(label, {}), "image": image, "label": label})
        return {**old, "training": training}

    def _record(self, case_id, volume, provenance, original, labels, names, table, written) -> dict:
        """The provenance line: ``edits`` over every named label (one the user erased entirely counts),
        ``labels`` only those written (with voxels)."""
        model = _pop_model(provenance)
        series_uid = volume.info.series_uid or ""
        study_uid = volume.info.study_uid or ""
        record = {
            "case": case_id,
            "image": f"imagesTr/{case_id}_{CHANNEL}{FILE_ENDING}",
            "label": f"labelsTr/{case_id}{FILE_ENDING}",
            "model": model,
            "edits": edit_summary(original, labels, names) if original is not None else None,
            "labels": {n: table[n] for n in sorted(set(written.values()), key=lambda n: table[n])},
            "source_series_uid": self.uid_mapper(series_uid) if series_uid else None,
            "source_study_uid": self.uid_mapper(study_uid) if study_uid else None,
            "modality": volume.info.modality or None,
            "shape": list(volume.shape),
            "spacing": [float(s) for s in volume.spacing],
            "timestamp": _utc_now(),
            "app_version": app_version(),
        }
        return _with_extra(record, provenance)

    # -- classification --
    @property
    def classification_csv(self) -> Path:
        return self.folder / "classification.csv"

    @property
    def classification_json(self) -> Path:
        return self.folder / "classification.json"

    def classifications(self) -> list[dict]:
        """The rows, every one with all of CLASSIFICATION_COLUMNS (older 3-column rows get "")."""
        json_path, csv_path = self._current(self.classification_json), self._current(self.classification_csv)
        if json_path is not None:
            data = _read_json(json_path)
            rows = data.get("classification", []) if isinstance(data, dict) else []
        elif csv_path is not None:
            try:
                with open(csv_path, newline="", encoding="utf-8") as f:
                    rows = list(csv.DictReader(f))
            except OSError as exc:
                raise ExportError(f"{self.classification_csv}: cannot read ({exc.strerror or exc})") from exc
        else:
            rows = []
        return [_full_row(r) for r in rows if isinstance(r, Mapping)]

    def add_classification(self, case_id: str, view: str, label: str, image: Volume | None = None,
                           chest_wall: str = "") -> str:
        """Record a classifier label for (case, view) in classification.csv and .json, with the view's
        image in imagesCls/ when given (written in the same commit as the rows).

        A second label for the same (case, view) replaces the first (a correction). Returns the
        sanitized case id.
        """
        if not str(label).strip():
            raise ExportError("a classification needs a label")
        return self.add_classifications(case_id, [ClassifiedView(view, label, image, chest_wall)])

    def add_classifications(self, case_id: str, views: Iterable[ClassifiedView],
                            provenance: Mapping | None = None, replace_provenance: bool = False,
                            keys: Mapping[str, str] | None = None) -> str:
        """Several views of one case (e.g. a 4-view exam and its "exam" label) in one commit: every
        image, the rows of the labelled ones, dataset.json's channel when there are images, and a
        provenance line when ``provenance`` is given (``replace_provenance``: instead of the case's
        earlier classification line, for an exam exported again; ``keys`` go to its top level).
        Nothing is written if any of it fails."""
        case_id = safe_name(case_id, "case")
        views = [self._checked_view(v) for v in views]
        if not views:
            raise ExportError("nothing to classify: no views given")
        with self.transaction():
            old_rows = {(r["case"], r["view"]): r for r in self.classifications()}
            rows = dict(old_rows)
            images = [v for v in views if v.image is not None]
            meta = {**self.meta, "channel_names": self._check_channel(images[0].image)} if images else None
            for v in images[1:]:
                self._check_channel(v.image)
            for v in views:
                if v.label:
                    rows[(case_id, v.view)] = self._row(case_id, v, old_rows.get((case_id, v.view)))
            tx = self._tx
            for v in images:
                final = self.cls_image_path(case_id, v.view)
                tx.add(_stage_image(v.image, final, f"lightbox {self.name} {case_id} {v.view}"), final)
            if meta is not None:
                meta["numTraining"] = len(self.case_ids())
                tx.add(_stage_bytes(_json_bytes(meta), self.dataset_json_path), self.dataset_json_path)
            if rows != old_rows:
                self._stage_rows(sorted(rows.values(), key=lambda r: (r["case"], r["view"])))
            if provenance is not None:
                record = {**self._classification_record(case_id, views, dict(provenance)), **(keys or {})}
                self._stage_provenance(record, replace=replace_provenance)
            if meta is not None:
                self.meta = meta
        return case_id

    def _checked_view(self, v: ClassifiedView) -> ClassifiedView:
        view, label, side = safe_name(v.view, "view"), str(v.label).strip(), str(v.chest_wall or "").strip().lower()
        if side not in CHEST_WALL_SIDES:
            raise ExportError(f"chest_wall must be 'left', 'right' or '' (unknown), not {v.chest_wall!r}")
        image = v.image
        if image is not None:
            if view == EXAM_VIEW:
                raise ExportError("the 'exam' row has no image of its own: give the images with their views")
            if image.shape[0] != 1:
                raise ExportError(f"{view}: a classified image must be one 2D image (1, rows, cols), "
                                  f"got shape {image.shape}")
            if image.array.dtype == bool:
                image = image.with_array(image.array.astype(np.uint8))
        return ClassifiedView(view, label, image, side)

    def _row(self, case_id: str, v: ClassifiedView, old: dict | None) -> dict:
        """A row for ``v``; a correction without an image keeps the earlier row's image and side."""
        final = self.cls_image_path(case_id, v.view)
        image = f"{CLS_FOLDER}/{final.name}" if v.image is not None or self._current(final) is not None else ""
        side = v.chest_wall or (old or {}).get("chest_wall", "")
        return {**(old or {}), "case": case_id, "view": v.view, "label": v.label,
                "image": image or (old or {}).get("image", ""), "chest_wall": side}

    def _stage_rows(self, rows: list[dict]) -> None:
        text = io.StringIO()
        w = csv.DictWriter(text, fieldnames=list(CLASSIFICATION_COLUMNS), lineterminator="\n",
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        self._tx.add(_stage_bytes(text.getvalue().encode("utf-8"), self.classification_csv), self.classification_csv)
        self._tx.add(_stage_bytes(_json_bytes({"classification": rows}), self.classification_json),
                     self.classification_json)

    def _classification_record(self, case_id: str, views: list[ClassifiedView], provenance: dict) -> dict:
        model = _pop_model(provenance)
        entries = []
        study_uid = ""
        for v in views:
            entry = {"view": v.view, "label": v.label or None}
            if v.image is not None:
                info = v.image.info
                study_uid = study_uid or info.study_uid or ""
                entry.update({"image": f"{CLS_FOLDER}/{self.cls_image_path(case_id, v.view).name}",
                              "chest_wall": v.chest_wall,
                              "source_series_uid": self.uid_mapper(info.series_uid) if info.series_uid else None,
                              "modality": info.modality or None, "shape": list(v.image.shape),
                              "spacing": [float(x) for x in v.image.spacing]})
            entries.append(entry)
        record = {"case": case_id, "kind": "classification", "views": entries, "model": model,
                  "source_study_uid": self.uid_mapper(study_uid) if study_uid else None,
                  "timestamp": _utc_now(), "app_version": app_version()}
        return _with_extra(record, provenance)

    @staticmethod
    def _make_folder(folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, folder.parent, folder.name + "/") from exc


def _full_row(row: Mapping) -> dict:
    """A classification row with every column (missing ones "", as older exports wrote 3 columns)."""
    out = {k: str(row.get(k) or "") for k in CLASSIFICATION_COLUMNS}
    return {**out, **{str(k): v for k, v in row.items() if k not in out and k is not None}}
