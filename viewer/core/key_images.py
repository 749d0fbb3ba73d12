"""Key images: the slices a reader marks as the ones that matter, kept per study and captioned without PHI.

A key image is a pointer, not pixels: series UID, the SOP Instance UID (and frame) of the slice
where the slice is an acquired image, the slice index of the view's plane, the view kind
(native / axial / coronal / sagittal, or the mammography cell such as ``RCC``), the window and a
note. A study's key images live in one JSON file, ``<folder>/<study>.key-images.json``, written
atomically (``core.atomic``) so a crash leaves the previous list, never half of one; the UI puts
the folder beside the measurement autosaves, so everything the reader added to a study sits together.

Captions go on exported PNGs, which leave the hospital: ``caption`` uses only attributes that the
project's de-identification profile (``export.deid``, PS3.15 Basic Profile) keeps. Series
Description is *removed* by that profile (free text often holds names), so it is not captioned;
nor are patient name, ID, birth date, accession number, institution or dates.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .atomic import write_bytes
from .export.deid import profile_action
from .study import study_file_stem

FORMAT = "lightbox-key-images"
VERSION = 1
SUFFIX = ".key-images.json"
PLANES = ("native", "axial", "coronal", "sagittal")

# caption field -> the DICOM tag it shows (checked against the de-identification profile)
CAPTION_TAGS = {
    "modality": 0x00080060,
    "body_part": 0x00180015,
    "laterality": 0x00200062,
    "view_position": 0x00185101,
    "series_description": 0x0008103E,
}


class KeyImageError(ValueError):
    """A key-image file that cannot be read; the message names it."""


def caption_allows(field_name: str) -> bool:
    """True when the de-identification profile keeps the attribute behind a caption field."""
    return profile_action(CAPTION_TAGS[field_name]) in (None, "K")


@dataclass
class KeyImage:
    """One marked slice of one series, as the reader saw it."""

    series_uid: str
    slice_index: int
    slice_count: int
    view: str = "native"  # PLANES, or a mammography cell name ("RCC", "LMLO", ...)
    window: tuple[float, float] = (0.0, 1.0)  # (center, width) in modality units
    sop_uid: str = ""  # the acquired image shown ("" for a reformat or a non-DICOM file)
    frame: int | None = None  # 0-based frame inside a multi-frame SOP instance
    note: str = ""
    modality: str = ""
    body_part: str = ""
    laterality: str = ""
    view_position: str = ""
    position_mm: float | None = None  # along the stack, relative to its first slice
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.slice_index, self.slice_count = int(self.slice_index), int(self.slice_count)
        self.window = (float(self.window[0]), float(self.window[1]))
        if not 0 <= self.slice_index < max(self.slice_count, 1):
            raise ValueError(f"slice {self.slice_index} outside a stack of {self.slice_count}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["window"] = list(self.window)
        return d

    @classmethod
    def from_json(cls, d: dict) -> KeyImage:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.4g}"


def caption(key: KeyImage) -> str:
    """One de-identified line: modality, body part, view, plane, slice k/N, relative position, W/L, note.

    Only fields the de-identification profile keeps are used; the note is the reader's own text
    (they typed it for this caption)."""
    parts = []
    for name in ("modality", "body_part"):
        value = getattr(key, name)
        if value and caption_allows(name):
            parts.append(value)
    view = "".join(getattr(key, n) for n in ("laterality", "view_position") if caption_allows(n))
    if view:
        parts.append(view)
    if key.view != "native" and key.view != view:
        parts.append(key.view.capitalize() if key.view in PLANES else key.view)
    parts.append(f"Im {key.slice_index + 1}/{key.slice_count}")
    if key.position_mm is not None and key.slice_count > 1:
        parts.append(f"{key.position_mm:+.1f} mm")
    center, width = key.window
    parts.append(f"W/L {_fmt(width)}/{_fmt(center)}")
    text = "  ·  ".join(parts)
    return f"{text}  ·  {key.note.strip()}" if key.note.strip() else text


def png_name(index: int, key: KeyImage) -> str:
    """``key-03-CT-axial-im012.png``: order, modality, view, slice; only [A-Za-z0-9-], no UIDs, no PHI."""
    bits = [key.modality or "img", key.view, f"im{key.slice_index + 1:03d}"]
    safe = [re.sub(r"[^A-Za-z0-9]+", "", b)[:24] or "x" for b in bits]
    return "-".join([f"key-{int(index):02d}", *safe]) + ".png"


def inside(folder: Path, name: str) -> Path:
    """``folder/name``, refused (ValueError) unless it is a plain file name directly inside ``folder``."""
    folder = Path(folder).resolve()
    if not name or name != Path(name).name or name in (".", "..") or "\\" in name or "\x00" in name:
        raise ValueError(f"{name!r} is not a plain file name")
    target = (folder / name).resolve()
    if target.parent != folder:
        raise ValueError(f"{name!r} would be written outside {folder}")
    return target


def study_key(study_uid: str, source: str | Path | None = None) -> str:
    """The StudyInstanceUID; for a non-DICOM image (no study UID) its folder stands for the study."""
    if study_uid:
        return str(study_uid)
    if source:
        return "folder:" + str(Path(source).expanduser().resolve().parent)
    return ""


def study_file(folder: Path, key: str) -> Path:
    """``<folder>/<uid>.key-images.json``; a key that is no plain UID (a folder) is hashed."""
    return Path(folder) / f"{study_file_stem(key)}{SUFFIX}"


def read_study(path: Path) -> list[KeyImage]:
    """The key images saved at ``path`` ([] when there is no file); KeyImageError names a bad one."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        return [KeyImage.from_json(d) for d in doc["images"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyImageError(f"{path}: key images not readable ({exc})") from exc


def write_study(path: Path, study: str, images: list[KeyImage]) -> Path:
    """Replace the study's file atomically; a study left without key images loses its file."""
    path = Path(path)
    if not images:
        path.unlink(missing_ok=True)
        return path
    doc = {"format": FORMAT, "version": VERSION, "study": study, "images": [k.to_json() for k in images]}
    return write_bytes(path, json.dumps(doc, indent=1).encode("utf-8"))


class KeyImageStore:
    """Key images per study, read from ``folder`` the first time a study is asked for."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self._studies: dict[str, list[KeyImage]] = {}

    def path(self, study: str) -> Path:
        return study_file(self.folder, study)

    def images(self, study: str) -> list[KeyImage]:
        """The study's key images in marking order (read once; KeyImageError for a bad file)."""
        if study not in self._studies:
            self._studies[study] = read_study(self.path(study))
        return list(self._studies[study])

    def start_over(self, study: str) -> None:
        """Forget an unreadable file's list: the next save replaces the file with the new marks."""
        self._studies[study] = []

    def add(self, study: str, key: KeyImage) -> bool:
        """Append ``key``; False (nothing added) when the same slice of that view is already marked."""
        images = self._studies.setdefault(study, self.images(study))
        if any(_same_slice(k, key) for k in images):
            return False
        images.append(key)
        return True

    def remove(self, study: str, uid: str) -> bool:
        images = self._studies.setdefault(study, self.images(study))
        kept = [k for k in images if k.uid != uid]
        self._studies[study] = kept
        return len(kept) != len(images)

    def set_note(self, study: str, uid: str, note: str) -> bool:
        for k in self._studies.setdefault(study, self.images(study)):
            if k.uid == uid:
                k.note = str(note)
                return True
        return False

    def snapshot(self, study: str) -> tuple[Path, list[KeyImage]]:
        """(file, copy of the list) to write on another thread while the UI goes on changing it."""
        return self.path(study), [KeyImage.from_json(k.to_json()) for k in self.images(study)]

    def save(self, study: str) -> Path:
        path, images = self.snapshot(study)
        return write_study(path, study, images)


def _same_slice(a: KeyImage, b: KeyImage) -> bool:
    return (a.series_uid, a.view, a.slice_index) == (b.series_uid, b.view, b.slice_index)


def slice_source(plan, plane_axis: int, k: int) -> tuple[str, int | None]:
    """(SOP Instance UID, frame or None) of slice ``k`` when it is an acquired image of ``plan``
    (``io.dicom.SlicePlan``) cut along the acquisition axis; ("", None) for a reformat or a gap."""
    if plan is None or plane_axis != 0 or not 0 <= k < len(plan.slots) or plan.slots[k] is None:
        return "", None
    frame = plan.slots[k]
    return frame.instance.sop_uid, (frame.index if frame.instance.frames > 1 else None)
