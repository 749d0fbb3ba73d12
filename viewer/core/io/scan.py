"""Find images under a path and group them into patients -> studies -> series.

Only headers are read (pixel data is deferred, its byte offset remembered), so
a big folder is browsable long before any volume is decoded. Bad files become
FileProblems naming the file; they never stop the scan. pydicom parses values
lazily, so every value a later step needs is read inside the file's own guard;
lengths (frames, rows x columns) are checked against the bytes really present,
and non-DICOM files are turned away before any forced read.
"""
from __future__ import annotations

import math
import os
import struct
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ..errors import Cancelled, describe
from ..geometry import slice_normal
from ..study import FileProblem, Frame, Instance, Patient, ScanResult, Series, Study
from ..volume import SourceInfo
from . import itk
from .dicom import NATIVE_SYNTAXES

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima"}
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation",
    "1.2.840.10008.5.1.4.1.1.66.7": "label map segmentation",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT structure set",
    "1.2.840.10008.5.1.4.1.1.11.1": "presentation state",
}
PROJECTION_MODALITIES = {"MG", "CR", "DX", "PX", "IO", "RG", "XA", "RF"}  # one image = one view
PIXEL_DATA = 0x7FE00010
# Type 1 attributes of the Image Pixel module: pydicom refuses pixels without them, and so do we
PIXEL_MODULE = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "PhotometricInterpretation",
                "PixelRepresentation")
PIXEL_MODULE_FLOAT = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "PhotometricInterpretation")
FLOAT_PIXEL_DATA = (0x7FE00008, 0x7FE00009)
PHOTOMETRIC = {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422",
               "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "HSV", "ARGB", "CMYK", "XYB"}  # parametric maps: decoded by pydicom, kept as float
DEFLATED = "1.2.840.10008.1.2.1.99"
RLE = "1.2.840.10008.1.2.5"
JPEG_FAMILY = {"1.2.840.10008.1.2.4." + n for n in ("50", "51", "57", "70", "80", "81", "90", "91",
                                                      "201", "202", "203")}  # streams end with FF D9
MAX_EXTRA_FRAGMENTS = 1 << 16  # fragments walked beyond one per frame
RLE_WALK_BYTES = 32 << 10  # last RLE segments up to this size have their run headers counted
DEFER_BYTES = 4096  # larger values (pixel data, big private blobs) are not read during a scan
ORIENTATION_TOL = 1e-3
# First groups a meta-less DICOM file can plausibly start with (a forced read of anything else,
# e.g. gigabytes of zeros, would parse for minutes).
# Decoded size a compressed frame may claim: no codec expands a frame's bytes beyond this factor
# in practice; small frames (up to FREE_FRAME_BYTES) are always allowed.
MAX_EXPANSION, FREE_FRAME_BYTES = 1000, 64 << 20
FIRST_GROUPS = {0x0002, 0x0004, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028}

Progress = Callable[[int, int], None]
StopCheck = Callable[[], bool]


class NotDicom(Exception):
    """Raised for files that are plainly something else (README, PNG...)."""


class BadFile(Exception):
    """A file meant to be DICOM that cannot be used; the message is for the user."""

    def __init__(self, message: str, series_uid: str | None = None):
        super().__init__(message)
        self.series_uid = series_uid  # when known, the series that loses this file names it too


# -- file discovery -------------------------------------------------------------
def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file under root, in a stable order; hidden files skipped."""
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def dicomdir_files(path: Path) -> tuple[list[Path], list[FileProblem]]:
    """Files referenced by a DICOMDIR, with problems for references that are missing or bad.

    The directory records are read directly (pydicom's FileSet drops missing files with only a
    warning); a reference may not leave the DICOMDIR's folder.
    """
    files, problems = [], []
    base = path.parent.resolve()
    try:
        records = pydicom.dcmread(path).DirectoryRecordSequence
    except Exception as exc:  # a broken DICOMDIR is just another bad file
        return [], [FileProblem(str(path), f"unreadable DICOMDIR ({describe(exc)})")]
    seen = set()
    for n, rec in enumerate(records, 1):
        try:
            ref = rec.get("ReferencedFileID")
            if ref is None or ref == "":
                continue
            parts = [str(ref)] if isinstance(ref, str) else [str(x) for x in ref]
            target = base.joinpath(*parts).resolve()
        except Exception as exc:
            problems.append(FileProblem(str(path), f"DICOMDIR record {n} unreadable ({describe(exc)})"))
            continue
        if target in seen:
            continue
        seen.add(target)
        if not target.is_relative_to(base):
            problems.append(FileProblem(str(path), f"DICOMDIR record {n} points outside its folder "
                                                   f"({'/'.join(parts)}): ignored"))
        elif target.is_file():
            files.append(target)
        else:
            problems.append(FileProblem(str(target), "listed in DICOMDIR but missing on disk"))
    return files, problems


def _looks_like_dicom_name(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in DICOM_SUFFIXES or suffix == "" or path.name.upper() == "DICOMDIR"


# -- header reading -------------------------------------------------------------
def read_header(path: Path) -> pydicom.Dataset:
    """Header with pixel data deferred. Raises NotDicom or another exception with a reason."""
    if path.stat().st_size == 0:
        if path.suffix.lower() in DICOM_SUFFIXES:
            raise BadFile("empty file (0 bytes)")
        raise NotDicom
    _check_after_marker(path)
    try:
        return pydicom.dcmread(path, defer_size=DEFER_BYTES)
    except InvalidDicomError:
        if not _looks_like_dicom_name(path):
            raise NotDicom
    if not _plausible_start(path):
        if path.suffix.lower() in DICOM_SUFFIXES:
            raise BadFile("not a DICOM file (no 'DICM' marker and no DICOM element at the start)")
        raise NotDicom
    # Files without the 128-byte preamble + 'DICM' exist in the wild; accept them
    # only if a forced read yields real image identifiers.
    try:
        ds = pydicom.dcmread(path, defer_size=DEFER_BYTES, force=True)
        ok = "SOPClassUID" in ds or ("Rows" in ds and "Columns" in ds and "SeriesInstanceUID" in ds)
    except Exception:
        ok = False
    if ok:
        return ds
    if path.suffix.lower() in DICOM_SUFFIXES:
        raise BadFile("not a DICOM file (no 'DICM' marker and no readable DICOM header)")
    raise NotDicom


def _check_after_marker(path: Path) -> None:
    """A 'DICM' marker followed by zeros (a zero-filled or wiped file) would parse for minutes."""
    with open(path, "rb") as fh:
        head = fh.read(144)
        if head[128:132] != b"DICM":
            return
        if not _plausible_element(head[132:140], path.stat().st_size, FIRST_GROUPS):
            raise BadFile("damaged DICOM file: no DICOM element after the 'DICM' marker")
        if head[132:138] == b"\x02\x00\x00\x00UL" and len(head) == 144:
            (meta_length,) = struct.unpack("<I", head[140:144])
            fh.seek(144 + meta_length)
            first = fh.read(4)
            if len(first) == 4 and first[:2] == b"\x00\x00":
                raise BadFile("damaged DICOM file: no data set after the file meta information")


def _plausible_start(path: Path) -> bool:
    """Does a file without preamble begin like a DICOM data set (a known group, a sane element)?"""
    with open(path, "rb") as fh:
        head = fh.read(8)
    return _plausible_element(head, path.stat().st_size, FIRST_GROUPS)


def _plausible_element(head: bytes, size: int, groups: set[int]) -> bool:
    if len(head) < 8:
        return False
    for order in "<>":
        group, _elem = struct.unpack(order + "HH", head[:4])
        if group not in groups:
            continue
        vr = head[4:6]
        if vr.isalpha() and vr.isupper():
            return True  # explicit VR
        (length,) = struct.unpack(order + "I", head[4:8])
        if length < size:
            return True  # implicit VR with a length the file can hold
    return False


def _is_dicomdir(ds) -> bool:
    meta_class = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    return DICOMDIR_SOP_CLASS in (str(ds.get("SOPClassUID", "") or ""), str(meta_class or ""))


def _incomplete_header(ds) -> str | None:
    """pydicom stops quietly at a premature end of file; catch what that leaves behind."""
    meta_class = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    sop_class = _get(ds, "SOPClassUID", None) or meta_class
    if "SOPClassUID" not in ds and "SeriesInstanceUID" not in ds:
        return "incomplete DICOM header (no SOP Class or Series UID): file truncated or damaged"
    name = getattr(pydicom.uid.UID(str(sop_class or "")), "name", "")
    if "Image Storage" in name and not ("Rows" in ds and "Columns" in ds):
        return f"incomplete DICOM header ({name} without Rows/Columns): file truncated or damaged"
    return None


# -- reading elements (pydicom parses each value lazily, on first access) -------
def _get(ds, keyword, default=None):
    """An element the file cannot be used without; a value that does not parse refuses the file."""
    try:
        return ds.get(keyword, default)
    except Exception as exc:
        raise BadFile(f"unreadable {keyword} ({describe(exc)})") from exc


def _optional(ds, keyword, notes: list[str] | None, default=None):
    """An element the file can do without; a value that does not parse is dropped with a note."""
    try:
        return ds.get(keyword, default)
    except Exception as exc:
        if notes is not None:
            notes.append(f"unreadable {keyword} ({describe(exc)}): ignored")
        return default


def _float(ds, keyword, default=None):
    v = _get(ds, keyword)
    try:
        return float(v) if v not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _floats(ds, keyword, n):
    v = _get(ds, keyword) if ds is not None else None
    if v is None or v == "":
        return None
    try:
        arr = np.array([float(x) for x in (v if isinstance(v, (list, tuple, pydicom.multival.MultiValue)) else [v])])
    except (TypeError, ValueError):
        return None
    return arr if arr.size == n and np.all(np.isfinite(arr)) else None


def _empty(value) -> bool:
    """Absent or without a value (a wrong VR can turn a number into an empty list)."""
    return value is None or (isinstance(value, (str, bytes, list, tuple, pydicom.multival.MultiValue))
                             and len(value) == 0)


def _int_or(value, default: int) -> int:
    """An integer element, the default when absent or empty (0 stays 0: it is checked, not hidden)."""
    return default if value is None or value == "" else int(value)


def _first(value, cast=float):
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
    try:
        return cast(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _in_group(fg, shared, sequence: str, keyword: str, n: int):
    """A value from a per-frame functional group, else from the shared one."""
    for group in (fg, shared):
        items = _get(group, sequence) if group is not None else None
        if items:
            found = _floats(items[0], keyword, n)
            if found is not None:
                return found
    return None


def source_info(ds, notes: list[str] | None = None) -> SourceInfo:
    """Series facts; identifiers must parse, descriptive values that do not are dropped into notes."""
    def opt(keyword, default=""):
        return _optional(ds, keyword, notes, default)

    orient = opt("PatientOrientation", None)
    orient_t = tuple(str(x) for x in orient) if orient is not None and not isinstance(orient, str) \
        and len(orient) == 2 else None  # one value such as 'CC' (CBIS-DDSM) is not two direction letters
    center, width = _first(opt("WindowCenter", None)), _first(opt("WindowWidth", None))
    if center is not None and not math.isfinite(center) or width is not None and not math.isfinite(width):
        center = width = None
    return SourceInfo(
        patient_id=str(_get(ds, "PatientID", "") or ""),
        patient_name=str(opt("PatientName") or ""),
        study_uid=str(_get(ds, "StudyInstanceUID", "") or ""),
        study_date=str(opt("StudyDate") or ""),
        study_description=str(opt("StudyDescription") or ""),
        series_uid=str(_get(ds, "SeriesInstanceUID", "") or ""),
        series_number=_first(opt("SeriesNumber", None), int),
        series_description=str(opt("SeriesDescription") or ""),
        modality=str(_get(ds, "Modality", "") or ""),
        frame_of_reference_uid=str(_get(ds, "FrameOfReferenceUID", "") or ""),
        photometric=str(_get(ds, "PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip(),
        window=(center, width) if center is not None and width and width > 0 else None,
        view_position=str(opt("ViewPosition") or "").strip().upper(),
        laterality=str(opt("ImageLaterality") or opt("Laterality") or "").strip().upper(),
        patient_orientation=orient_t,
        **_mammo_facts(ds, opt, orient),
    )


def _mammo_facts(ds, opt, orient) -> dict:
    """View code, modifiers, presentation intent and the PatientOrientation text (mammo_views.identify);
    a value that does not parse is left out, never refuses the file."""
    if str(_get(ds, "Modality", "") or "").upper() not in ("MG", "DX", "CR", "OT", ""):
        return {}
    out = {"orientation_text": "\\".join(str(x) for x in orient) if orient is not None and not isinstance(orient, str)
           else str(orient or "")}
    try:
        views = opt("ViewCodeSequence", None) or []
        item = views[0] if len(views) else None
        if item is not None:
            out["view_code"] = str(item.get("CodeValue", "") or "")
            out["view_meaning"] = str(item.get("CodeMeaning", "") or "")
        mods = list((item.get("ViewModifierCodeSequence", None) or []) if item is not None else [])
        mods += list(opt("ViewModifierCodeSequence", None) or [])
        out["view_modifiers"] = tuple(str(m.get("CodeValue", "") or "") for m in mods)
        out["presentation_intent"] = str(opt("PresentationIntentType") or "").strip().upper()
        image_type = opt("ImageType", None)
        out["image_type"] = tuple(str(v) for v in image_type) if image_type is not None and \
            not isinstance(image_type, str) else ((str(image_type),) if image_type else ())
    except Exception:  # noqa: BLE001 - descriptive only
        pass
    return out


@dataclass
class Header:
    """What grouping needs from one file, as plain values read inside the file's own guard."""

    info: SourceInfo
    accession: str = ""
    echo: int | None = None
    time: int | None = None
    notes: list[str] = field(default_factory=list)


def read_facts(ds) -> Header:
    notes: list[str] = []
    info = source_info(ds, notes)
    return Header(info=info, accession=str(_optional(ds, "AccessionNumber", notes, "") or ""),
                  echo=_first(_get(ds, "EchoNumbers"), int),
                  time=_first(_get(ds, "TemporalPositionIdentifier"), int), notes=notes)


def _transfer_syntax_problem(ds, inst: Instance) -> str | None:
    """pydicom decodes pixels only under a Transfer Syntax UID it knows, named in the file meta."""
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        return None if getattr(ds, "preamble", None) is None else \
            "Transfer Syntax UID (0002,0010) missing from the file meta: the pixels cannot be decoded"
    uid = pydicom.uid.UID(inst.transfer_syntax)
    if not uid.is_transfer_syntax:
        return f"unknown Transfer Syntax UID '{inst.transfer_syntax}' (0002,0010): the pixels cannot be decoded"
    return None


def _transfer_syntax(ds) -> str:
    """From the file meta, or for meta-less files from how pydicom had to read them."""
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if ts:
        return ts
    implicit, little = ds.original_encoding
    if implicit:
        return "1.2.840.10008.1.2"
    return "1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2"


def _positive(value: float | None, keyword: str, notes: list[str]) -> float | None:
    """A spacing must be a positive finite number; anything else is ignored with a note."""
    if value is None or (math.isfinite(value) and value > 0):
        return value
    notes.append(f"{keyword} = {value} is not a valid spacing: ignored")
    return None


def _check_orientation(ori, what: str = "ImageOrientationPatient (0020,0037)") -> None:
    if ori is None:
        return
    row, col = np.asarray(ori[:3]), np.asarray(ori[3:])
    if min(np.linalg.norm(row), np.linalg.norm(col)) < 0.5 or np.linalg.norm(np.cross(row, col)) < 1e-3:
        raise BadFile(f"invalid {what}: row and column directions are zero or parallel")


def make_instance(path: Path, ds, notes: list[str] | None = None) -> Instance:
    """Header facts, frame geometry and the pixel data's location for one file."""
    notes = [] if notes is None else notes
    spacing = _floats(ds, "PixelSpacing", 2)
    if spacing is None:
        spacing = _floats(ds, "ImagerPixelSpacing", 2)
    if spacing is None:
        spacing = _floats(ds, "NominalScannedPixelSpacing", 2)
    slope, icpt = _float(ds, "RescaleSlope", 1.0), _float(ds, "RescaleIntercept", 0.0)
    for keyword, value in (("RescaleSlope", slope), ("RescaleIntercept", icpt)):
        if value is not None and not math.isfinite(value):
            raise BadFile(f"{keyword} = {value}: pixel values cannot be computed")
    inst = Instance(
        path=path,
        sop_uid=str(_get(ds, "SOPInstanceUID", "")),
        sop_class=str(_get(ds, "SOPClassUID", "")),
        instance_number=_first(_optional(ds, "InstanceNumber", notes), int),
        rows=int(_get(ds, "Rows", 0) or 0),
        columns=int(_get(ds, "Columns", 0) or 0),
        frames=max(1, _first(_get(ds, "NumberOfFrames"), int) or 1),
        samples_per_pixel=int(_get(ds, "SamplesPerPixel", 1) or 1),
        bits_allocated=int(_get(ds, "BitsAllocated", 16) or 16),
        bits_stored=_int_or(_get(ds, "BitsStored"), _int_or(_get(ds, "BitsAllocated"), 16)),
        pixel_representation=int(_get(ds, "PixelRepresentation", 0) or 0),
        photometric=str(_get(ds, "PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip(),
        transfer_syntax=_transfer_syntax(ds),
        pixel_spacing=tuple(spacing) if spacing is not None else None,
        slice_thickness=_positive(_float(ds, "SliceThickness"), "SliceThickness", notes),
        spacing_between_slices=_positive(_float(ds, "SpacingBetweenSlices"), "SpacingBetweenSlices", notes),
        rescale=(slope or 1.0, icpt),
    )
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
    inst.float_pixels = any(ds.get_item(t, keep_deferred=True) is not None for t in FLOAT_PIXEL_DATA)
    inst.has_pixels = raw is not None or inst.float_pixels
    if raw is not None and not getattr(raw, "is_undefined_length", False):
        length = getattr(raw, "length", None)
        tell = getattr(raw, "value_tell", None)
        if length is not None and tell is not None:
            inst.pixel_offset, inst.pixel_length = int(tell), int(length)
    if inst.has_pixels:
        required = PIXEL_MODULE_FLOAT if inst.float_pixels else PIXEL_MODULE
        missing = [kw for kw in required if _empty(_get(ds, kw))]
        if missing:
            raise BadFile(f"{', '.join(missing)} missing: the pixels cannot be read without "
                          f"{'it' if len(missing) == 1 else 'them'}")
        if inst.samples_per_pixel not in (1, 3, 4):
            raise BadFile(f"SamplesPerPixel = {inst.samples_per_pixel}: must be 1 or 3")
        ts_problem = _transfer_syntax_problem(ds, inst)
        if ts_problem:
            raise BadFile(ts_problem)
        if inst.photometric not in PHOTOMETRIC:
            raise BadFile(f"PhotometricInterpretation '{inst.photometric}' is not a DICOM colour model")
        if inst.samples_per_pixel > 1 and "PlanarConfiguration" not in ds:
            raise BadFile(f"PlanarConfiguration missing for {inst.samples_per_pixel} samples per pixel")
        if inst.bits_allocated not in (1, 8, 16, 32, 64) or not 1 <= inst.bits_stored <= inst.bits_allocated:
            raise BadFile(f"BitsAllocated = {inst.bits_allocated}, BitsStored = {inst.bits_stored}: "
                          "not a valid pixel size")
        if inst.rows <= 0 or inst.columns <= 0:
            raise BadFile(f"image of {inst.columns} x {inst.rows} pixels (Columns x Rows): nothing to show")
        if raw is not None:
            _check_pixel_length(inst, raw)
    elif _is_image_class(ds, inst) or ("Rows" in ds and "Columns" in ds):
        # kept (its slot stays, the loader names it); the scan names it now
        inst.pixel_problem = "no pixel data (7FE0,0010): the file ends early or its header is damaged"
    _add_frames(inst, ds)
    for fr in inst.frame_list:
        _check_orientation(fr.orientation)
    return inst


def _is_image_class(ds, inst: Instance) -> bool:
    meta_class = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")
    return any("Image Storage" in getattr(pydicom.uid.UID(str(uid or "")), "name", "")
               for uid in (inst.sop_class, meta_class))


def _check_pixel_length(inst: Instance, raw) -> None:
    """Frame count against the bytes really there: refuse impossible headers, flag cut pixel data."""
    size = inst.path.stat().st_size
    tell = getattr(raw, "value_tell", None)
    samples = 2 if inst.photometric == "YBR_FULL_422" else inst.samples_per_pixel  # chroma halved
    bits_per_frame = inst.rows * inst.columns * samples * inst.bits_allocated
    per_frame = -(-bits_per_frame // 8)
    if inst.transfer_syntax == DEFLATED:
        return  # offsets are in the inflated stream, not in the file
    if getattr(raw, "is_undefined_length", False) or inst.transfer_syntax not in NATIVE_SYNTAXES:
        if tell is None:
            return
        items = _items(inst.path, int(tell), inst.frames + MAX_EXTRA_FRAGMENTS)
        found = max(0, len(items) - 1)  # the first item is the basic offset table
        if inst.frames > 1 and found < inst.frames:
            raise BadFile(f"NumberOfFrames = {inst.frames} but the compressed pixel data holds "
                          f"only {found} fragment(s)")
        compressed = max(1, size - int(tell)) / inst.frames
        if per_frame > max(MAX_EXPANSION * compressed, FREE_FRAME_BYTES):
            raise BadFile(f"{inst.columns} x {inst.rows} pixels (Columns x Rows) cannot come from "
                          f"{int(compressed)} bytes of compressed data per frame")
        if len(items) > 1 and inst.transfer_syntax in JPEG_FAMILY:
            size_found = _codestream_size(inst.path, *items[1])
            if size_found is not None and size_found != (inst.columns, inst.rows, inst.samples_per_pixel):
                raise BadFile("header says {} x {} pixels (Columns x Rows), {} sample(s); the compressed image is "
                              "{} x {}, {} component(s)".format(inst.columns, inst.rows, inst.samples_per_pixel,
                                                                *size_found))
        inst.pixel_problem = _stream_problem(inst, items) or ""
        return
    need = -(-bits_per_frame * inst.frames // 8)  # 1-bit frames are packed end to end
    declared = inst.pixel_length
    if declared is None:
        return
    if declared < need:
        what = f"NumberOfFrames = {inst.frames}" if inst.frames > 1 else \
            f"{inst.columns} x {inst.rows} pixels (Columns x Rows)"
        raise BadFile(f"{what} needs {need} bytes of pixel data, the file holds {declared}")
    have = min(declared, size - (inst.pixel_offset or 0))
    if have < need:
        inst.pixel_problem = f"pixel data truncated: {need} bytes expected, {max(0, have)} present"


def _items(path: Path, offset: int, limit: int) -> list[tuple[int, int]]:
    """(value offset, length) of the items of encapsulated pixel data; the first is the offset table."""
    items = []
    with open(path, "rb") as fh:
        fh.seek(offset)
        while len(items) <= limit:
            head = fh.read(8)
            if len(head) < 8:
                break
            group, elem, length = struct.unpack("<HHI", head)
            if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
                break
            items.append((fh.tell(), length))
            fh.seek(length, 1)
    return items


def _frame_fragments(inst: Instance, items, fh) -> list[list[tuple[int, int]]]:
    """Fragments of each frame: one each, all for one frame, else by the basic offset table."""
    frags = items[1:]
    if not frags:
        return []
    if len(frags) == inst.frames:
        return [[f] for f in frags]
    if inst.frames == 1:
        return [frags]
    bot_at, bot_len = items[0]
    if bot_len < 4 * inst.frames:
        return []  # no offset table: frame boundaries unknown without decoding
    fh.seek(bot_at)
    starts = struct.unpack(f"<{inst.frames}I", fh.read(4 * inst.frames))
    first_tag = frags[0][0] - 8
    index = {off - 8 - first_tag: i for i, (off, _) in enumerate(frags)}
    if any(s not in index for s in starts):
        return []
    bounds = [index[s] for s in starts] + [len(frags)]
    return [frags[a:b] for a, b in zip(bounds, bounds[1:])]


def _codestream_size(path: Path, offset: int, length: int) -> tuple[int, int, int] | None:
    """(columns, rows, components) from a JPEG / JPEG-LS frame header or a JPEG 2000 SIZ marker."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        buf = fh.read(min(length, 1 << 16))
    if buf[:4] == b"\xff\x4f\xff\x51" and len(buf) >= 42:  # J2K: SOC, then SIZ
        x, y, x0, y0 = struct.unpack(">4I", buf[8:24])
        return x - x0, y - y0, struct.unpack(">H", buf[40:42])[0]
    if buf[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 10 <= len(buf):
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7:
            y, x = struct.unpack(">HH", buf[pos + 5:pos + 9])
            return (x, y, buf[pos + 9]) if y else None  # y = 0: height comes later (DNL)
        pos += 2 + struct.unpack(">H", buf[pos + 2:pos + 4])[0]
    return None


def _rle_segment_length(data: bytes, want: int) -> int:
    """Bytes an RLE segment expands to, from its run headers alone (no pixels are made).

    A cut stream falls short of Rows x Columns; only the last segment of a frame can be cut
    while the segment table still fits, so only that one is walked."""
    i = out = 0
    n = len(data)
    while i < n and out < want:
        c = data[i]
        if c < 128:
            out += c + 1
            i += c + 2
        elif c > 128:
            out += 257 - c
            i += 2
        else:
            i += 1
    return out if i <= n else out - (i - n)  # a literal run cut in its middle counts what is there


def _stream_problem(inst: Instance, items) -> str | None:
    """Cheap signs of a cut or damaged compressed frame, without decoding it: a JPEG-family frame
    must end with its end-of-image marker, an RLE frame's segment table must fit its data."""
    ts = inst.transfer_syntax
    if ts != RLE and ts not in JPEG_FAMILY:
        return None
    with open(inst.path, "rb") as fh:
        for n, frags in enumerate(_frame_fragments(inst, items, fh), 1):
            if ts == RLE:
                fh.seek(frags[0][0])
                head = fh.read(64)
                total = sum(length for _, length in frags)
                count = struct.unpack("<I", head[:4])[0] if len(head) == 64 else -1
                offsets = list(struct.unpack("<15I", head[4:]))[:count] if count > 0 else []
                expected = inst.samples_per_pixel * -(-inst.bits_allocated // 8)
                if (count != expected or not offsets or offsets[0] != 64 or offsets[-1] >= total
                        or any(b <= a for a, b in zip(offsets, offsets[1:]))):
                    return f"RLE frame {n}: segment table does not fit the data (image data cut short or damaged)"
                if len(frags) == 1 and total <= RLE_WALK_BYTES:  # small frames: every segment
                    fh.seek(frags[0][0])
                    data = fh.read(total)
                    want = inst.rows * inst.columns
                    got = [_rle_segment_length(data[a:b], want + 2)
                           for a, b in zip(offsets, offsets[1:] + [total])]
                    if len(got) > 1 and len(set(got)) == 1 and not want <= got[0] <= want + 1:
                        raise BadFile(f"{inst.columns} x {inst.rows} pixels (Columns x Rows) in the header, "
                                      f"but the RLE data holds {got[0]} a frame")
                    for k, g in enumerate(got, 1):
                        if not want <= g <= want + 1:  # one byte of padding may follow
                            return (f"RLE frame {n}: segment {k} holds {g} of {want} pixels "
                                    "(image data cut short or damaged)")
                elif len(frags) == 1 and total - offsets[-1] <= RLE_WALK_BYTES:  # a cut ends in the last
                    fh.seek(frags[0][0] + offsets[-1])
                    got = _rle_segment_length(fh.read(total - offsets[-1]), inst.rows * inst.columns)
                    if got < inst.rows * inst.columns:
                        return (f"RLE frame {n}: last segment holds {got} of {inst.rows * inst.columns} "
                                "pixels (image data cut short or damaged)")
            else:
                at, length = frags[-1]
                fh.seek(at + max(0, length - 8))
                if not fh.read(min(8, length)).rstrip(b"\0\xff").endswith(b"\xff\xd9"):  # after padding
                    return (f"compressed frame {n} does not end with an end-of-image marker "
                            "(image data cut short or damaged)")
    return None


def _add_frames(inst: Instance, ds) -> None:
    per = _get(ds, "PerFrameFunctionalGroupsSequence")
    shared_seq = _get(ds, "SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if per is not None and len(per) >= inst.frames:
        measures = _in_group(None, shared, "PixelMeasuresSequence", "PixelSpacing", 2)
        if measures is not None:
            inst.pixel_spacing = tuple(measures)
        if shared is not None and "PixelMeasuresSequence" in shared and len(shared.PixelMeasuresSequence):
            pm = shared.PixelMeasuresSequence[0]
            inst.slice_thickness = _float(pm, "SliceThickness", inst.slice_thickness)
            inst.spacing_between_slices = _float(pm, "SpacingBetweenSlices", inst.spacing_between_slices)
        for i in range(inst.frames):
            fg = per[i]
            pos = _in_group(fg, shared, "PlanePositionSequence", "ImagePositionPatient", 3)
            ori = _in_group(fg, shared, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
            slope = _in_group(fg, shared, "PixelValueTransformationSequence", "RescaleSlope", 1)
            icpt = _in_group(fg, shared, "PixelValueTransformationSequence", "RescaleIntercept", 1)
            rescale = (float(slope[0]), float(icpt[0])) if slope is not None and icpt is not None else None
            inst.frame_list.append(Frame(inst, i, pos, ori, rescale))
        return
    pos = _floats(ds, "ImagePositionPatient", 3)
    ori = _floats(ds, "ImageOrientationPatient", 6)
    _check_orientation(ori)
    step = inst.spacing_between_slices or inst.slice_thickness
    for i in range(inst.frames):
        p = pos
        if i and pos is not None and ori is not None and step:
            p = pos + i * step * slice_normal(ori)
        elif i and pos is not None:
            p = None  # legacy multi-frame without a step: positions unknown beyond frame 0
        inst.frame_list.append(Frame(inst, i, p if (i == 0 or p is not None) else None, ori))


def _half_geometry(inst: Instance) -> str | None:
    """A slice with orientation but no position (or the reverse) cannot be placed."""
    fr = inst.frame_list[0] if inst.frame_list else None
    if fr is None or inst.frames > 1:
        return None
    if fr.orientation is not None and fr.position is None:
        return "missing ImagePositionPatient (0020,0032): slice cannot be placed, skipped"
    if fr.position is not None and fr.orientation is None:
        return "missing ImageOrientationPatient (0020,0037): slice cannot be placed, skipped"
    return None


# -- grouping ---------------------------------------------------------------------
def _split_series(uid: str, info: SourceInfo, members: list[tuple[Instance, Header]]) -> list[Series]:
    """One Series per consistent stack: same orientation, size, echo/time; projections alone."""
    groups: list[dict] = []
    for inst, hdr in members:
        fr = inst.frame_list[0] if inst.frame_list else None
        ori = fr.orientation if fr is not None else None
        is_projection = (fr is None or fr.position is None) and info.modality in PROJECTION_MODALITIES
        sig = {
            "size": (inst.rows, inst.columns, inst.samples_per_pixel),
            "echo": hdr.echo,
            "time": hdr.time,
            "multiframe": inst.sop_uid if inst.frames > 1 else None,
            "projection": inst.sop_uid if is_projection else None,
        }
        for g in groups:
            same_ori = (g["ori"] is None and ori is None) or (
                g["ori"] is not None and ori is not None and np.allclose(g["ori"], ori, atol=ORIENTATION_TOL))
            if same_ori and g["sig"] == sig:
                g["members"].append((inst, hdr))
                break
        else:
            groups.append({"ori": ori, "sig": sig, "members": [(inst, hdr)]})
    if len(groups) == 1:
        return [_series(uid, info, groups[0]["members"], "")]
    out = []
    varying = [k for k in groups[0]["sig"] if len({str(g["sig"][k]) for g in groups}) > 1]
    ori_varies = len({None if g["ori"] is None else tuple(np.round(g["ori"], 3)) for g in groups}) > 1
    planes = [_plane_of(g["ori"]) for g in groups]
    for i, g in enumerate(groups, 1):
        bits = []
        if ori_varies:
            # localizer parts by plane; a plane that repeats (two obliques) is numbered
            same = [k for k, p in enumerate(planes) if p == planes[i - 1]]
            plane = planes[i - 1] or "no orientation"
            bits.append(plane if len(same) == 1 else f"{plane} {same.index(i - 1) + 1}/{len(same)}")
        if "size" in varying:
            bits.append("{}x{}".format(*g["sig"]["size"][1::-1]))
        if "echo" in varying:
            bits.append(f"echo {g['sig']['echo']}")
        if "time" in varying:
            bits.append(f"time {g['sig']['time']}")
        if ("multiframe" in varying or "projection" in varying) and not bits:
            bits.append(f"image {i}/{len(groups)}")
        out.append(_series(uid, info, g["members"], ", ".join(bits) or f"part {i}/{len(groups)}"))
    return out


def _plane_of(ori) -> str | None:
    """'axial', 'coronal', 'sagittal' or 'oblique' from ImageOrientationPatient (None without one)."""
    from ..geometry import direction_from_iop, plane_name

    if ori is None:
        return None
    try:
        return plane_name(direction_from_iop(ori))
    except ValueError:
        return "oblique"


def _series(uid: str, info: SourceInfo, members, part: str) -> Series:
    s_info = members[0][1].info
    instances = [inst for inst, _ in members]
    kind = "dicom"
    problems = [f"{inst.path}: {note}" for inst in instances for note in inst.notes]
    if not any(i.has_pixels or (i.rows and i.columns) for i in instances):
        kind = "non-image"
    elif instances[0].sop_class in NON_IMAGE_SOP_CLASSES:
        kind = "non-image"
        problems.append(f"{NON_IMAGE_SOP_CLASSES[instances[0].sop_class]} object, not an image to display")
    return Series(uid=uid, info=s_info, instances=instances, kind=kind, part=part, problems=problems)


def _group(entries: list[tuple[Instance, Header]], refused: dict[str, list[FileProblem]]) -> list[Patient]:
    """Patients -> studies -> series; files refused by the scan are named in their series' problems
    (by series UID, or by folder when the UID could not be read), so the loader names them too."""
    by_series: dict[str, list] = defaultdict(list)
    for inst, hdr in entries:
        uid = hdr.info.series_uid or f"no-series-uid:{inst.path.parent}"
        by_series[uid].append((inst, hdr))
    patients: dict[str, Patient] = {}
    studies: dict[str, Study] = {}
    for uid, members in by_series.items():
        hdr = members[0][1]
        info = hdr.info
        pid = info.patient_id or info.patient_name or "(no patient ID)"
        patient = patients.setdefault(pid, Patient(id=info.patient_id, name=info.patient_name))
        st_uid = info.study_uid or f"no-study-uid:{pid}"
        study = studies.get(st_uid)
        if study is None:
            study = Study(uid=st_uid, date=info.study_date, description=info.study_description,
                          accession=hdr.accession)
            studies[st_uid] = study
            patient.studies.append(study)
        parts = _split_series(uid, info, members)
        for se in parts:
            # files refused from this series, and files in its folders whose series is unknown
            folders = sorted({f"dir:{i.path.parent}" for i in se.instances})
            for pr in [pr for key in [uid, *folders] for pr in refused.get(key, [])]:
                if str(pr) not in se.problems:
                    se.problems.append(str(pr))
        study.series.extend(parts)
    for p in patients.values():
        p.studies.sort(key=lambda s: (s.date, s.description))
        for st in p.studies:
            st.series.sort(key=lambda s: (s.info.series_number if s.info.series_number is not None else 1 << 30,
                                          s.info.series_description, s.part))
    return sorted(patients.values(), key=lambda p: (p.name, p.id))


def _file_series(paths: Iterable[Path]) -> tuple[list[Patient], list[FileProblem]]:
    """NIfTI / NRRD / MHA files: one series each under a 'files' patient."""
    series, problems = [], []
    for p in paths:
        try:
            hdr = itk.read_header(p)
        except Exception as exc:
            problems.append(FileProblem(str(p), f"unreadable image file ({describe(exc)})"))
            continue
        info = SourceInfo(series_uid=f"file:{p.resolve()}", series_description=p.name,
                          modality=hdr.get("modality", ""), patient_name="(image files)")
        series.append(Series(uid=info.series_uid, info=info, kind="file", path=p))
    if not series:
        return [], problems
    study = Study(uid="files", description="Image files", series=series)
    return [Patient(id="", name="(image files)", studies=[study])], problems


class _Ignored(Exception):
    """A DICOM file that is not an image to list (a DICOMDIR: the folder walk finds its files)."""


def _entry(f: Path, ds) -> tuple[Instance, Header]:
    """Everything the scan keeps from one file, read while its guard is up; BadFile when unusable."""
    if _is_dicomdir(ds):
        raise _Ignored
    incomplete = _incomplete_header(ds)
    if incomplete:
        _raise_if_pixels_cut(f)
        raise BadFile(incomplete)
    hdr = read_facts(ds)
    inst = make_instance(f, ds, hdr.notes)
    half_geometry = _half_geometry(inst)
    if half_geometry:
        raise BadFile(half_geometry)
    inst.notes = hdr.notes
    return inst, hdr


def _raise_if_pixels_cut(f: Path) -> None:
    """pydicom returns nothing at all for a file that ends inside encapsulated pixel data;
    read the header alone to tell that apart from a damaged header, and name its series."""
    try:
        hdr = pydicom.dcmread(f, defer_size=DEFER_BYTES, stop_before_pixels=True)
        uid = _series_uid_or_none(hdr)
    except Exception:
        return
    if uid and _incomplete_header(hdr) is None:
        raise BadFile("pixel data cut short or damaged: the file ends inside the compressed image data",
                      series_uid=uid)


def _series_uid_or_none(ds) -> str | None:
    try:
        return str(ds.get("SeriesInstanceUID", "") or "") or None
    except Exception:
        return None


def scan(path, progress: Progress | None = None, should_stop: StopCheck | None = None) -> ScanResult:
    """Scan a folder (recursively), a DICOMDIR, a DICOM file or a NIfTI/NRRD/MHA file."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    result = ScanResult()
    if root.is_file() and root.name.upper() == "DICOMDIR":
        files, result.problems = dicomdir_files(root)
    else:
        files = list(iter_files(root))
    entries: list[tuple[Instance, Header]] = []
    refused: dict[str, list[FileProblem]] = defaultdict(list)  # series UID or "dir:<folder>" -> problems
    image_files: list[Path] = []
    for n, f in enumerate(files, 1):
        if should_stop is not None and should_stop():
            raise Cancelled("scan cancelled")
        if progress is not None:
            progress(n, len(files))
        if itk.is_image_file(f):
            image_files.append(f)
            continue
        try:
            ds = read_header(f)
        except NotDicom:
            result.ignored += 1
            continue
        except BadFile as exc:
            result.problems.append(FileProblem(str(f), str(exc)))
            refused[f"dir:{f.parent}"].append(result.problems[-1])
            continue
        except Exception as exc:  # the boundary: any reader failure becomes a message
            result.problems.append(FileProblem(str(f), f"unreadable DICOM header ({describe(exc)})"))
            refused[f"dir:{f.parent}"].append(result.problems[-1])
            continue
        # pydicom parses values lazily: everything grouping needs is read here, inside the guard.
        try:
            entry = _entry(f, ds)
        except _Ignored:
            result.ignored += 1
            continue
        except BadFile as exc:
            problem, exc_uid = FileProblem(str(f), str(exc)), exc
        except Exception as exc:
            problem, exc_uid = FileProblem(str(f), f"inconsistent DICOM header ({describe(exc)})"), None
        else:
            entries.append(entry)
            if entry[0].pixel_problem:
                result.problems.append(FileProblem(str(f), entry[0].pixel_problem))
            continue
        result.problems.append(problem)
        uid = getattr(exc_uid, "series_uid", None) or _series_uid_or_none(ds)
        refused[uid or f"dir:{f.parent}"].append(problem)
    known = {hdr.info.series_uid for _, hdr in entries}
    for key in [k for k in refused if not k.startswith("dir:") and k not in known]:
        for pr in refused.pop(key):  # a UID no kept file has (e.g. cut short): name it by folder
            refused[f"dir:{Path(pr.path).parent}"].append(pr)
    result.patients = _group(entries, refused)
    file_patients, file_problems = _file_series(image_files)
    result.patients.extend(file_patients)
    result.problems.extend(file_problems)
    return result
