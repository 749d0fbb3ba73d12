"""Find images under a path and group them into patients -> studies -> series.

Only headers are read (pixel data is deferred, its byte offset remembered), so
a big folder is browsable long before any volume is decoded. Bad files become
FileProblems naming the file; they never stop the scan.
"""
from __future__ import annotations

import os
from collections import defaultdict
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

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima"}
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT structure set",
    "1.2.840.10008.5.1.4.1.1.11.1": "presentation state",
}
PROJECTION_MODALITIES = {"MG", "CR", "DX", "PX", "IO", "RG", "XA", "RF"}  # one image = one view
PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = (0x7FE00008, 0x7FE00009)  # parametric maps: decoded by pydicom, kept as float
DEFER_BYTES = 4096  # larger values (pixel data, big private blobs) are not read during a scan
ORIENTATION_TOL = 1e-3

Progress = Callable[[int, int], None]
StopCheck = Callable[[], bool]


class NotDicom(Exception):
    """Raised for files that are plainly something else (README, PNG...)."""


class BadFile(Exception):
    """A file meant to be DICOM that cannot be used; the message is for the user."""


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
    """Files referenced by a DICOMDIR, with problems for references that are missing."""
    from pydicom.fileset import FileSet

    files, problems = [], []
    try:
        fs = FileSet(pydicom.dcmread(path))
    except Exception as exc:  # a broken DICOMDIR is just another bad file
        return [], [FileProblem(str(path), f"unreadable DICOMDIR ({describe(exc)})")]
    for inst in fs:
        p = Path(inst.path)
        if p.is_file():
            files.append(p)
        else:
            problems.append(FileProblem(str(p), "listed in DICOMDIR but missing on disk"))
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
    try:
        return pydicom.dcmread(path, defer_size=DEFER_BYTES)
    except InvalidDicomError:
        if not _looks_like_dicom_name(path):
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


def _incomplete_header(ds) -> str | None:
    """pydicom stops quietly at a premature end of file; catch what that leaves behind."""
    meta_class = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    sop_class = ds.get("SOPClassUID", None) or meta_class
    if "SOPClassUID" not in ds and "SeriesInstanceUID" not in ds:
        return "incomplete DICOM header (no SOP Class or Series UID): file truncated or damaged"
    name = getattr(pydicom.uid.UID(str(sop_class or "")), "name", "")
    if "Image Storage" in name and not ("Rows" in ds and "Columns" in ds):
        return f"incomplete DICOM header ({name} without Rows/Columns): file truncated or damaged"
    return None


def _float(ds, keyword, default=None):
    v = ds.get(keyword)
    try:
        return float(v) if v not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _floats(ds, keyword, n):
    v = ds.get(keyword) if ds is not None else None
    if v is None or v == "":
        return None
    try:
        arr = np.array([float(x) for x in (v if isinstance(v, (list, tuple, pydicom.multival.MultiValue)) else [v])])
    except (TypeError, ValueError):
        return None
    return arr if arr.size == n and np.all(np.isfinite(arr)) else None


def _first(value, cast=float):
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
    try:
        return cast(value)
    except (TypeError, ValueError):
        return None


def _in_group(fg, shared, sequence: str, keyword: str, n: int):
    """A value from a per-frame functional group, else from the shared one."""
    for group in (fg, shared):
        items = group.get(sequence) if group is not None else None
        if items:
            found = _floats(items[0], keyword, n)
            if found is not None:
                return found
    return None


def source_info(ds) -> SourceInfo:
    orient = ds.get("PatientOrientation")
    orient_t = tuple(str(x) for x in orient) if orient is not None and len(orient) == 2 else None
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    return SourceInfo(
        patient_id=str(ds.get("PatientID", "") or ""),
        patient_name=str(ds.get("PatientName", "") or ""),
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        study_date=str(ds.get("StudyDate", "") or ""),
        study_description=str(ds.get("StudyDescription", "") or ""),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        series_number=_first(ds.get("SeriesNumber"), int),
        series_description=str(ds.get("SeriesDescription", "") or ""),
        modality=str(ds.get("Modality", "") or ""),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip(),
        window=(center, width) if center is not None and width and width > 0 else None,
        view_position=str(ds.get("ViewPosition", "") or "").strip().upper(),
        laterality=str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").strip().upper(),
        patient_orientation=orient_t,
    )


def _transfer_syntax(ds) -> str:
    """From the file meta, or for meta-less files from how pydicom had to read them."""
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if ts:
        return ts
    implicit, little = ds.original_encoding
    if implicit:
        return "1.2.840.10008.1.2"
    return "1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2"


def make_instance(path: Path, ds) -> Instance:
    """Header facts, frame geometry and the pixel data's location for one file."""
    spacing = _floats(ds, "PixelSpacing", 2)
    if spacing is None:
        spacing = _floats(ds, "ImagerPixelSpacing", 2)
    if spacing is None:
        spacing = _floats(ds, "NominalScannedPixelSpacing", 2)
    inst = Instance(
        path=path,
        sop_uid=str(ds.get("SOPInstanceUID", "")),
        sop_class=str(ds.get("SOPClassUID", "")),
        instance_number=_first(ds.get("InstanceNumber"), int),
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        frames=max(1, _first(ds.get("NumberOfFrames"), int) or 1),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
        bits_allocated=int(ds.get("BitsAllocated", 16) or 16),
        bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16),
        pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip(),
        transfer_syntax=_transfer_syntax(ds),
        pixel_spacing=tuple(spacing) if spacing is not None else None,
        slice_thickness=_float(ds, "SliceThickness"),
        spacing_between_slices=_float(ds, "SpacingBetweenSlices"),
        rescale=(_float(ds, "RescaleSlope", 1.0) or 1.0, _float(ds, "RescaleIntercept", 0.0)),
    )
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
    inst.float_pixels = any(ds.get_item(t, keep_deferred=True) is not None for t in FLOAT_PIXEL_DATA)
    inst.has_pixels = raw is not None or inst.float_pixels
    if raw is not None and not getattr(raw, "is_undefined_length", False):
        length = getattr(raw, "length", None)
        tell = getattr(raw, "value_tell", None)
        if length is not None and tell is not None:
            inst.pixel_offset, inst.pixel_length = int(tell), int(length)
    _add_frames(inst, ds)
    return inst


def _add_frames(inst: Instance, ds) -> None:
    per = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
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
def _split_series(uid: str, info: SourceInfo, members: list[tuple[Instance, object]]) -> list[Series]:
    """One Series per consistent stack: same orientation, size, echo/time; projections alone."""
    groups: list[dict] = []
    for inst, ds in members:
        fr = inst.frame_list[0] if inst.frame_list else None
        ori = fr.orientation if fr is not None else None
        is_projection = (fr is None or fr.position is None) and info.modality in PROJECTION_MODALITIES
        sig = {
            "size": (inst.rows, inst.columns, inst.samples_per_pixel),
            "echo": _first(ds.get("EchoNumbers"), int),
            "time": _first(ds.get("TemporalPositionIdentifier"), int),
            "multiframe": inst.sop_uid if inst.frames > 1 else None,
            "projection": inst.sop_uid if is_projection else None,
        }
        for g in groups:
            same_ori = (g["ori"] is None and ori is None) or (
                g["ori"] is not None and ori is not None and np.allclose(g["ori"], ori, atol=ORIENTATION_TOL))
            if same_ori and g["sig"] == sig:
                g["members"].append((inst, ds))
                break
        else:
            groups.append({"ori": ori, "sig": sig, "members": [(inst, ds)]})
    if len(groups) == 1:
        return [_series(uid, info, groups[0]["members"], "")]
    out = []
    varying = [k for k in groups[0]["sig"] if len({str(g["sig"][k]) for g in groups}) > 1]
    ori_varies = len({None if g["ori"] is None else tuple(np.round(g["ori"], 3)) for g in groups}) > 1
    for i, g in enumerate(groups, 1):
        bits = []
        if ori_varies:
            bits.append(f"orientation {i}/{len(groups)}")
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


def _series(uid: str, info: SourceInfo, members, part: str) -> Series:
    first_ds = members[0][1]
    s_info = source_info(first_ds)
    instances = [inst for inst, _ in members]
    kind = "dicom"
    problems = []
    if not any(i.has_pixels or (i.rows and i.columns) for i in instances):
        kind = "non-image"
    elif instances[0].sop_class in NON_IMAGE_SOP_CLASSES:
        kind = "non-image"
        problems.append(f"{NON_IMAGE_SOP_CLASSES[instances[0].sop_class]} object, not an image to display")
    return Series(uid=uid, info=s_info, instances=instances, kind=kind, part=part, problems=problems)


def _group(entries: list[tuple[Instance, object]]) -> list[Patient]:
    by_series: dict[str, list] = defaultdict(list)
    for inst, ds in entries:
        uid = str(ds.get("SeriesInstanceUID", "") or f"no-series-uid:{inst.path.parent}")
        by_series[uid].append((inst, ds))
    patients: dict[str, Patient] = {}
    studies: dict[str, Study] = {}
    for uid, members in by_series.items():
        ds = members[0][1]
        info = source_info(ds)
        pid = info.patient_id or info.patient_name or "(no patient ID)"
        patient = patients.setdefault(pid, Patient(id=info.patient_id, name=info.patient_name))
        st_uid = info.study_uid or f"no-study-uid:{pid}"
        study = studies.get(st_uid)
        if study is None:
            study = Study(uid=st_uid, date=info.study_date, description=info.study_description,
                          accession=str(ds.get("AccessionNumber", "") or ""))
            studies[st_uid] = study
            patient.studies.append(study)
        study.series.extend(_split_series(uid, info, members))
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
    entries: list[tuple[Instance, object]] = []
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
            continue
        except Exception as exc:  # the boundary: any reader failure becomes a message
            result.problems.append(FileProblem(str(f), f"unreadable DICOM header ({describe(exc)})"))
            continue
        if str(ds.get("SOPClassUID", "")) == DICOMDIR_SOP_CLASS:
            result.ignored += 1  # the folder walk finds the referenced files itself
            continue
        incomplete = _incomplete_header(ds)
        if incomplete:
            result.problems.append(FileProblem(str(f), incomplete))
            continue
        try:
            inst = make_instance(f, ds)
        except Exception as exc:
            result.problems.append(FileProblem(str(f), f"inconsistent DICOM header ({describe(exc)})"))
            continue
        half_geometry = _half_geometry(inst)
        if half_geometry:
            result.problems.append(FileProblem(str(f), half_geometry))
            continue
        entries.append((inst, ds))
    result.patients = _group(entries)
    file_patients, file_problems = _file_series(image_files)
    result.patients.extend(file_patients)
    result.problems.extend(file_problems)
    return result
