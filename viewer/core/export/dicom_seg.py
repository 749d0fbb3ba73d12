"""Label maps as DICOM Segmentation (SEG) objects that reference their source images.

highdicom builds the IOD; our job is the correspondence. A SEG frame is tied to
a source image by the source's SOP Instance UID (and frame number inside an
enhanced multi-frame file), never by storage order, so we pass highdicom the
source headers in the order of our volume's z axis (``plan_series(...).slots``)
and let it copy plane positions, orientation and pixel spacing from them. That
keeps the SEG exactly on the source geometry even when files were shuffled on
disk or the stack is reversed or oblique. Reading goes the same way back: each
frame's referenced SOP UID (+ frame number) picks its z index, and only a SEG
without references falls back to its plane positions.

Projection images (mammograms) have no ImagePositionPatient. highdicom treats
such a source as having no patient coordinate system: the single SEG frame
then carries no plane position or orientation, only a reference to the image
(Spatial Locations Preserved = YES), the pixel spacing when the source has
PixelSpacing, and the FrameOfReferenceUID if the source has one.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.sr.coding import Code

from ..atomic import replacing
from ..errors import describe
from ..io.dicom import plan_series
from ..model_id import split_model_id
from ..study import Series
from ..volume import Volume
from .nifti import label_dtype

SEG_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"}  # SEG, Label Map SEG
ALGORITHM_TYPES = ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL")
POSITION_TOL = 0.01  # voxel fraction for placing a frame by its plane position (fallback only)
ORIENTATION_TOL = 1e-3

# SNOMED CT / DICOM codes (values from pydicom's code dictionary, CID 7150 / 7151).
ANATOMY = Code("91723000", "SCT", "Anatomical Structure")
ABNORMAL = Code("49755003", "SCT", "Morphologically Abnormal Structure")
TISSUE = Code("85756007", "SCT", "Tissue")
LESION = Code("52988006", "SCT", "Lesion")
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")
_KNOWN: dict[str, tuple[Code, Code]] = {
    "body": (ANATOMY, Code("38266002", "SCT", "Entire body")),
    "head": (ANATOMY, Code("69536005", "SCT", "Head")),
    "brain": (ANATOMY, Code("12738006", "SCT", "Brain")),
    "ventricle": (ANATOMY, Code("35764002", "SCT", "Brain ventricle")),
    "lung": (ANATOMY, Code("39607008", "SCT", "Lung")),
    "liver": (ANATOMY, Code("10200004", "SCT", "Liver")),
    "spleen": (ANATOMY, Code("78961009", "SCT", "Spleen")),
    "kidney": (ANATOMY, Code("64033007", "SCT", "Kidney")),
    "pancreas": (ANATOMY, Code("15776009", "SCT", "Pancreas")),
    "heart": (ANATOMY, Code("80891009", "SCT", "Heart")),
    "aorta": (ANATOMY, Code("15825003", "SCT", "Aorta")),
    "breast": (ANATOMY, Code("76752008", "SCT", "Breast")),
    "nipple": (ANATOMY, Code("24142002", "SCT", "Nipple")),
    "vertebra": (ANATOMY, Code("51282000", "SCT", "Vertebra")),
    "bone": (TISSUE, Code("272673000", "SCT", "Bone")),
    "muscle": (TISSUE, Code("71616004", "SCT", "Muscle")),
    "fat": (TISSUE, Code("256674009", "SCT", "Fat")),
    "tissue": (TISSUE, TISSUE),
    "mass": (ABNORMAL, Code("4147007", "SCT", "Mass")),
    "calcification": (ABNORMAL, Code("18115005", "SCT", "Pathologic calcification")),
    "calcification cluster": (ABNORMAL, Code("129769006", "SCT", "Calcification Cluster")),
    "lesion": (ABNORMAL, LESION),
    "nodule": (ABNORMAL, Code("27925004", "SCT", "Nodule")),
    "cyst": (ABNORMAL, Code("367643001", "SCT", "Cyst")),
    "neoplasm": (ABNORMAL, Code("108369006", "SCT", "Neoplasm")),
    "tumor": (ABNORMAL, Code("108369006", "SCT", "Neoplasm")),
    "tumour": (ABNORMAL, Code("108369006", "SCT", "Neoplasm")),
}
_ABNORMAL_WORDS = ("lesion", "mass", "tumo", "nodul", "metast", "cancer", "carcinoma", "calcif", "abnormal")


class MissingSliceWarning(UserWarning):
    """Labels on a slice that has no source image (a gap kept blank) were left out of the SEG."""


class SegReadWarning(UserWarning):
    """Something in a SEG could not be represented in a label map (overlap, unplaceable frame)."""


def property_codes(label: str) -> tuple[Code, Code]:
    """(category, type) codes for a segment name; generic Tissue or Lesion when unknown."""
    key = " ".join(label.lower().replace("_", " ").replace("-", " ").split())
    side = key.removeprefix("left ").removeprefix("right ")
    for candidate in (key, key.removesuffix("s"), key.removesuffix("es"), side, side.removesuffix("s")):
        if candidate in _KNOWN:
            return _KNOWN[candidate]
    if any(word in key for word in _ABNORMAL_WORDS):
        return ABNORMAL, LESION
    return TISSUE, TISSUE


@dataclass
class Segment:
    """One label value of a label map, described the way DICOM SEG wants it.

    ``category``/``type`` default to codes looked up from ``label`` (generic
    Tissue / Lesion when the name is unknown), so callers need no coding skills.
    """

    number: int
    label: str
    color: tuple[int, int, int] = (255, 0, 0)
    algorithm_type: str = "AUTOMATIC"
    algorithm_name: str = "Lightbox"
    algorithm_version: str = ""
    category: Code | None = None
    type: Code | None = None
    algorithm_family: Code | None = None  # default: Artificial Intelligence

    def codes(self) -> tuple[Code, Code]:
        guess = property_codes(self.label)
        return self.category or guess[0], self.type or guess[1]


def edited_segments(labels: np.ndarray, names: Mapping[int, str], colors: Mapping[int, tuple[int, int, int]],
                    original: np.ndarray | None = None, model: str = "",
                    opened: tuple[np.ndarray, Mapping[int, Segment]] | None = None) -> list[Segment]:
    """Segments whose SegmentAlgorithmType says how each label was made, per PS3.3 C.8.20.4:
    AUTOMATIC when the voxels are exactly the model's (``original``, same values), SEMIAUTOMATIC
    when the model's label was edited, MANUAL when the model never produced that label (or there
    was no model). ``model`` ("name version") identifies the algorithm.

    ``opened`` = (voxels as opened, {value: Segment}) of a label file made by another tool: a label
    still carrying the file's name keeps the file's codes, and its algorithm when its voxels are
    untouched; edited, a MANUAL segment stays MANUAL and any other becomes SEMIAUTOMATIC."""
    name, version = split_model_id(model)
    first, described = opened if opened is not None else (None, {})
    out = []
    for value, label in names.items():
        if not value:
            continue
        mine = labels == value
        source = described.get(value)
        if source is not None and source.label.strip().lower() == str(label).strip().lower():
            same = first is not None and first.shape == labels.shape and np.array_equal(mine, first == value)
            kind = str(source.algorithm_type).upper()
            seg = replace(source, number=int(value), label=str(label), color=tuple(colors[value]))
            if kind != "MANUAL" and not seg.algorithm_name:
                seg.algorithm_name = "unnamed algorithm"
            if not same:
                if kind == "MANUAL":
                    seg.algorithm_name, seg.algorithm_version = "Lightbox segment editor", ""
                else:
                    seg.algorithm_type = "SEMIAUTOMATIC"
                    seg.algorithm_name = f"{source.algorithm_name or 'algorithm'} + Lightbox segment editor"
            out.append(seg)
            continue
        theirs = original == value if original is not None and original.shape == labels.shape else None
        if theirs is None or not theirs.any():
            kind, algorithm, algorithm_version = "MANUAL", "Lightbox segment editor", ""
        elif np.array_equal(mine, theirs):
            kind, algorithm, algorithm_version = "AUTOMATIC", name or "Lightbox", version
        else:
            kind, algorithm, algorithm_version = "SEMIAUTOMATIC", f"{name or 'model'} + Lightbox segment editor", version
        out.append(Segment(int(value), str(label), tuple(colors[value]), algorithm_type=kind,
                           algorithm_name=algorithm, algorithm_version=algorithm_version))
    return out


def _software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lightbox")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0"


# -- writing --------------------------------------------------------------------------
def compact_segments(labels: np.ndarray, segments) -> tuple[np.ndarray, list[Segment]]:
    """Label values in use (any numbers, e.g. 1, 3, 7) -> SEG segment numbers 1..N, and the
    segments renumbered to match; segments whose value is absent are dropped."""
    labels = np.asarray(labels)
    by_value = {int(s.number): s for s in segments}
    counts = np.bincount(labels.ravel(), minlength=max(by_value, default=0) + 1)
    used = [v for v in sorted(by_value) if v < len(counts) and counts[v]]
    undescribed = [int(v) for v in np.nonzero(counts)[0] if v and v not in by_value]
    if undescribed:
        raise ValueError(f"label values {undescribed[:10]} have no Segment describing them")
    lut = np.zeros(len(counts), label_dtype(labels))
    for i, v in enumerate(used, start=1):
        lut[v] = i
    return lut[labels], [replace(by_value[v], number=i) for i, v in enumerate(used, start=1)]


def _check_segments(segments, labels: np.ndarray) -> list[Segment]:
    segments = sorted(segments, key=lambda s: int(s.number))
    if not segments:
        raise ValueError("no segments described: a SEG needs at least one")
    numbers = [int(s.number) for s in segments]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"segment numbers must be 1..N without gaps or repeats (DICOM SEG), got {numbers}")
    present = np.unique(labels)
    undescribed = [int(v) for v in present if v and v > len(numbers)]
    if undescribed:
        raise ValueError(f"label values {undescribed[:10]} have no Segment describing them")
    return segments


def _description(seg: Segment):
    import highdicom as hd

    category, ptype = seg.codes()
    kind = str(seg.algorithm_type).upper()
    algorithm = None
    if kind != "MANUAL":
        algorithm = hd.AlgorithmIdentificationSequence(
            name=seg.algorithm_name or "Lightbox", family=seg.algorithm_family or ARTIFICIAL_INTELLIGENCE,
            version=seg.algorithm_version or _software_version())
    color = hd.color.CIELabColor.from_rgb(*(int(c) for c in seg.color))
    return hd.seg.SegmentDescription(
        segment_number=int(seg.number), segment_label=seg.label, segmented_property_category=category,
        segmented_property_type=ptype, algorithm_type=kind, algorithm_identification=algorithm,
        display_color=color)


# Patient and General Study attributes of Type 2 (present, may be empty) that highdicom copies
# from the source into the SEG; real archives' files often lack some of them.
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "StudyID", "AccessionNumber", "ReferringPhysicianName")


def _prepared(ds: pydicom.Dataset) -> pydicom.Dataset:
    """A source header made fit for highdicom, changing only our in-memory copy.

    Missing Type 2 attributes become empty (as the standard allows), instead of
    highdicom failing on them. A one-component Patient's Name gets the trailing
    caret that PS3.5 6.2.1 treats as the same name: highdicom warns about such
    names and its warning quotes the name, which would put PHI on the terminal.
    """
    for keyword in TYPE2_COPIED:
        if keyword not in ds or ds[keyword].value is None:
            setattr(ds, keyword, "")
    name = str(ds.PatientName or "")
    if name and "^" not in name:
        ds.PatientName = name + "^"
    return ds


def _source_headers(paths) -> list[pydicom.Dataset]:
    """Headers only: highdicom takes its metadata from them and never touches Pixel Data.

    Reading without pixels keeps a 300-slice series at a few MB instead of the
    whole image in memory twice.
    """
    return [_prepared(pydicom.dcmread(p, stop_before_pixels=True)) for p in paths]


def _plan(volume: Volume, series: Series):
    """The series' slice plan, after checking that ``volume`` is what the series loads to."""
    if series.kind != "dicom":
        raise ValueError(f"DICOM SEG needs a DICOM source series; {series.label()} is a {series.kind} series")
    plan = plan_series(series)
    if tuple(plan.shape) != volume.shape:
        raise ValueError(f"the volume {volume.shape} is not series {series.label()} {tuple(plan.shape)}")
    if not (np.allclose(plan.spacing, volume.spacing, atol=1e-3) and np.allclose(plan.origin, volume.origin, atol=1e-3)
            and np.allclose(plan.direction, volume.direction, atol=1e-4)):
        raise ValueError(f"the volume's geometry is not that of series {series.label()}: "
                         "labels must be on the grid the series loads to")
    return plan


def _sources(labels: np.ndarray, volume: Volume, series: Series):
    """Source headers and the SEG pixel array in the correspondence highdicom expects.

    Single-frame images: frame i of the array belongs to source_images[i], so we
    list the images in z order. One multi-frame image: frame i belongs to source
    frame i + 1, so we put each z slice at its frame's storage index.
    """
    plan = _plan(volume, series)
    missing = [k for k, f in enumerate(plan.slots) if f is None]
    lost = [k for k in missing if labels[k].any()]
    if lost:
        voxels = int(sum(np.count_nonzero(labels[k]) for k in lost))
        warnings.warn(MissingSliceWarning(
            f"{voxels} labelled voxel(s) on slice(s) {lost[:10]} were left out of the DICOM SEG: those slices "
            "are missing from the series (shown blank) so no source image can be referenced; "
            "the NIfTI export keeps them"), stacklevel=3)
    placed = [(k, f) for k, f in enumerate(plan.slots) if f is not None]
    instances = {id(f.instance): f.instance for _, f in placed}
    if any(i.frames > 1 for i in instances.values()):
        if len(instances) > 1:
            raise ValueError(f"series {series.label()} mixes several multi-frame files; "
                             "a DICOM SEG can reference only one multi-frame source")
        inst = next(iter(instances.values()))
        array = np.zeros((inst.frames, *volume.shape[1:]), dtype=labels.dtype)
        for k, f in placed:
            array[f.index] = labels[k]
        header = _source_headers([inst.path])[0]
        if not header.get("PerFrameFunctionalGroupsSequence"):
            raise ValueError(f"{inst.path}: multi-frame image without per-frame plane positions (legacy "
                             "multi-frame); a DICOM SEG cannot place its frames (export NIfTI instead)")
        shared = header.get("SharedFunctionalGroupsSequence")
        measures = shared[0].get("PixelMeasuresSequence") if shared else None
        if measures and "SliceThickness" not in measures[0]:  # see below: highdicom needs it
            measures[0].SliceThickness = f"{float(volume.spacing[0]):.6g}"
        return [header], array
    if len(placed) > 1 and any(f.position is None for _, f in placed):
        raise ValueError(f"series {series.label()} has several images without ImagePositionPatient; "
                         "a DICOM SEG cannot place them (export NIfTI instead)")
    headers = _source_headers([f.instance.path for _, f in placed])
    for ds in headers:
        # highdicom copies Pixel Measures from the source: for a stack it fails without
        # SliceThickness, and for a mammogram it writes measures that its own reader (segread)
        # then refuses. Our nominal slice spacing stands in (1 mm for a projection).
        if "SliceThickness" not in ds or ds.SliceThickness in (None, ""):
            ds.SliceThickness = f"{float(volume.spacing[0]):.6g}"
    if len(placed) == labels.shape[0]:
        return headers, labels  # every slice has its image: no copy of a big label map
    return headers, labels[[k for k, _ in placed]]


def write_dicom_seg(labels, volume: Volume, series: Series, segments, path, *,
                    series_description: str = "AI segmentation", series_number: int | None = None,
                    manufacturer: str = "Lightbox", software_version: str | None = None,
                    device_serial: str = "0", content_creator: str | None = None) -> Path:
    """Write a BINARY DICOM SEG of integer ``labels`` (z, y, x) on ``volume`` = ``series`` loaded.

    Segment numbers are the label values (1..N). Empty frames are omitted.
    Slices missing from the series are dropped with a MissingSliceWarning if
    they hold labels. The file appears complete or not at all.
    """
    import highdicom as hd

    path = Path(path)
    labels = np.asarray(labels)
    if labels.ndim == 2 and volume.shape[0] == 1:
        labels = labels[np.newaxis]
    if labels.shape != volume.shape:
        raise ValueError(f"label map has shape {labels.shape} (z, y, x) but the image has {volume.shape}")
    labels = labels.astype(label_dtype(labels), copy=False)
    segments = _check_segments(segments, labels)
    descriptions = []
    for s in segments:
        try:
            descriptions.append(_description(s))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"segment {s.number} {s.label!r} cannot be described in DICOM: {describe(exc)}") from exc
    sources, array = _sources(labels, volume, series)
    grid = _resampled_grid(volume, series)
    if grid:
        array = labels  # the SEG's frames are the regular grid's slices, placed by their own positions
    if series_number is None:
        series_number = 1000 + int(series.info.series_number or 0)
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=array, segmentation_type="BINARY",
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=int(series_number),
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer=manufacturer,
            manufacturer_model_name="Lightbox", software_versions=software_version or _software_version(),
            device_serial_number=str(device_serial), content_description=series_description[:64],
            content_creator_name=content_creator, omit_empty_frames=True, **grid)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ValueError(f"cannot build a DICOM SEG for series {series.label()}: {describe(exc)}") from exc
    seg.SeriesDescription = series_description[:64]
    if not _has_plane_orientation(seg):  # a projection source: General Image needs it (Type 2C)
        seg.PatientOrientation = _patient_orientation(sources[0].get("PatientOrientation"))
    with replacing(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return path


def _patient_orientation(value) -> list[str] | str:
    """The source's PatientOrientation when it is two direction strings (A/P/L/R/H/F letters);
    otherwise empty (Type 2): public datasets write the view there ('CC', 'MLO'), which is not valid."""
    parts = [str(v).strip().upper() for v in (value or [])] if not isinstance(value, str) else \
        [p.strip().upper() for p in value.split("\\")]
    if len(parts) == 2 and all(p and set(p) <= set("APLRHF") for p in parts):
        return parts
    return ""


def _resampled_grid(volume: Volume, series: Series) -> dict:
    """highdicom's explicit geometry for a series the loader resampled (gantry tilt): the labels lie
    on the regular grid, not on the source images' pixels, so every frame carries its own position
    (the sources stay referenced at series level). {} when the grid is the sources' own."""
    import highdicom as hd

    if _plan(volume, series).shear is None:
        return {}
    patient = hd.CoordinateSystemNames.PATIENT
    row_dir, col_dir = volume.direction[:, 2], volume.direction[:, 1]  # along a row, down the rows
    positions = [hd.PlanePositionSequence(patient, volume.origin + k * volume.spacing[0] * volume.direction[:, 0])
                 for k in range(volume.shape[0])]
    return {
        "plane_positions": positions,
        "plane_orientation": hd.PlaneOrientationSequence(patient, [*row_dir, *col_dir]),
        "pixel_measures": hd.PixelMeasuresSequence(pixel_spacing=[float(volume.spacing[1]), float(volume.spacing[2])],
                                                   slice_thickness=float(volume.spacing[0])),
    }


def _has_plane_orientation(ds) -> bool:
    shared = ds.get("SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    return _group(per_frame[0] if per_frame else None, shared[0] if shared else None,
                  "PlaneOrientationSequence") is not None


# -- reading ----------------------------------------------------------------------------
def _code(item) -> Code | None:
    seq = item if item is not None else []
    if not seq:
        return None
    c = seq[0]
    return Code(str(c.CodeValue), str(c.CodingSchemeDesignator), str(c.CodeMeaning))


def _segment_from(item) -> Segment:
    import highdicom as hd

    color = (255, 0, 0)
    if "RecommendedDisplayCIELabValue" in item:
        color = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb(clip=True)
    algo = item.get("SegmentationAlgorithmIdentificationSequence")
    algo = algo[0] if algo else None
    return Segment(
        number=int(item.SegmentNumber), label=str(item.get("SegmentLabel", "")),
        color=tuple(int(c) for c in color), algorithm_type=str(item.get("SegmentAlgorithmType", "MANUAL")),
        algorithm_name=str(item.get("SegmentAlgorithmName", "") or (algo.get("AlgorithmName", "") if algo else "")),
        algorithm_version=str(algo.get("AlgorithmVersion", "")) if algo else "",
        category=_code(item.get("SegmentedPropertyCategoryCodeSequence")),
        type=_code(item.get("SegmentedPropertyTypeCodeSequence")),
        algorithm_family=_code(algo.get("AlgorithmFamilyCodeSequence")) if algo else None)


def _group(fg, shared, name: str):
    for group in (fg, shared):
        if group is not None and name in group and len(group[name].value):
            return group[name].value[0]
    return None


def _frame_numbers(ref) -> list[int | None]:
    value = ref.get("ReferencedFrameNumber")
    if value is None or value == "":
        return [None]
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [int(v) for v in value]
    return [int(value)]


def slot_index(volume: Volume, series: Series):
    """(the series' plan, {(SOP Instance UID, frame number or None for a single-frame file): z index}):
    how a derived object's frame that references a source image finds its slice (SEG, Parametric Map)."""
    plan = _plan(volume, series)
    where: dict[tuple[str, int | None], int] = {}
    for k, f in enumerate(plan.slots):
        if f is None:
            continue
        where[(f.instance.sop_uid, f.index + 1)] = k
        if f.instance.frames == 1:
            where[(f.instance.sop_uid, None)] = k
    return plan, where


def read_dicom_seg(path, volume: Volume, series: Series) -> tuple[np.ndarray, list[Segment]]:
    """A SEG (ours or another tool's) as a label map on ``volume``'s grid, plus its segments.

    Frames find their slice through the referenced source SOP Instance UID and
    frame number; only frames without usable references fall back to their
    plane position. Overlapping segments (allowed in BINARY and FRACTIONAL SEG)
    cannot live in one label map: frames are written in segment-number order, so
    the later (higher-numbered) segment wins and a SegReadWarning counts the voxels.
    FRACTIONAL segments count where the value is at least half the maximum.
    """
    path = Path(path)
    ds = pydicom.dcmread(path)
    if str(ds.get("SOPClassUID", "")) not in SEG_SOP_CLASSES:
        raise ValueError(f"{path}: not a DICOM Segmentation (SOP class {ds.get('SOPClassUID', 'missing')})")
    if (int(ds.Rows), int(ds.Columns)) != volume.shape[1:]:
        raise ValueError(f"{path}: frames are {ds.Rows}x{ds.Columns} (rows x columns) but the image is "
                         f"{volume.shape[1]}x{volume.shape[2]}: the SEG was made on another grid")
    plan, where = slot_index(volume, series)
    segments = [_segment_from(item) for item in ds.SegmentSequence if int(item.SegmentNumber) > 0]
    kind = str(ds.get("SegmentationType", "BINARY")).upper()
    top = max([s.number for s in segments], default=1)
    out = np.zeros(volume.shape, dtype=np.uint8 if top <= 255 else np.uint16)
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    _check_orientation(path, shared, per_frame, volume)
    same_frame = str(ds.get("FrameOfReferenceUID", "")) == series.info.frame_of_reference_uid
    frames = _frames(ds)
    threshold = 1
    if kind == "FRACTIONAL":
        threshold = max(1, (int(ds.get("MaximumFractionalValue", 255)) + 1) // 2)
    unplaced, overlap, placed = 0, 0, 0
    order = []
    for i in range(n_frames):
        fg = per_frame[i] if i < len(per_frame) else None
        z = _z_of(fg, shared, where, volume, same_frame, plan.shape[0] == 1 and len(where) > 0, ds, series)
        number = None
        ident = _group(fg, shared, "SegmentIdentificationSequence")
        if ident is not None:
            number = int(ident.ReferencedSegmentNumber)
        order.append((z, number, i))
    for z, number, i in sorted(order, key=lambda t: (t[1] or 0)):
        frame = frames(i)
        if z is None:
            unplaced += int(np.any(frame))
            continue
        placed += 1
        if kind == "LABELMAP":
            values = frame
            mask = values > 0
        else:
            mask = frame >= threshold if kind == "FRACTIONAL" else frame > 0
            values = number
        overlap += int(np.count_nonzero(out[z][mask]))
        out[z][mask] = values[mask] if kind == "LABELMAP" else values
    if n_frames and not placed:
        raise ValueError(f"{path}: none of its frames refers to an image of series {series.label()} "
                         "(by reference or position): it belongs to other images")
    if unplaced:
        warnings.warn(SegReadWarning(f"{path}: {unplaced} frame(s) with labels refer to no image of this "
                                     "series and were skipped"), stacklevel=2)
    if overlap and kind != "LABELMAP":
        warnings.warn(SegReadWarning(f"{path}: segments overlap on {overlap} voxel(s); a label map keeps "
                                     "the higher segment number there"), stacklevel=2)
    return out, segments


def _frames(ds):
    """frame(i) -> 2D array, decoded one at a time so a big SEG is never expanded all at once."""
    from pydicom.pixels import pixel_array

    rows, cols = int(ds.Rows), int(ds.Columns)
    if int(ds.BitsAllocated) == 1 and not ds.file_meta.TransferSyntaxUID.is_encapsulated:
        # Native 1-bit frames follow each other bit by bit, so frame i may start mid-byte
        # (pydicom's per-frame index does not handle that); unpack just the bytes of frame i.
        packed = np.frombuffer(ds.PixelData, dtype=np.uint8)
        size = rows * cols

        def frame(i: int) -> np.ndarray:
            start = i * size
            chunk = packed[start // 8:(start + size + 7) // 8 + 1]
            bits = np.unpackbits(chunk, bitorder="little")[start % 8:start % 8 + size]
            return bits.reshape(rows, cols)
        return frame
    if int(ds.get("NumberOfFrames", 1) or 1) == 1:
        whole = pixel_array(ds)
        return lambda i: whole
    return lambda i: pixel_array(ds, index=i)


def _check_orientation(path, shared, per_frame, volume: Volume) -> None:
    plane = _group(per_frame[0] if per_frame else None, shared, "PlaneOrientationSequence")
    if plane is None or "ImageOrientationPatient" not in plane:
        return
    iop = np.array([float(v) for v in plane.ImageOrientationPatient])
    if not (np.allclose(iop[:3], volume.direction[:, 2], atol=ORIENTATION_TOL)
            and np.allclose(iop[3:], volume.direction[:, 1], atol=ORIENTATION_TOL)):
        raise ValueError(f"{path}: the SEG's image orientation {np.round(iop, 4).tolist()} is not the image's; "
                         "it was made on another grid")


def _z_of(fg, shared, where, volume: Volume, same_frame: bool, single: bool, ds, series: Series) -> int | None:
    """Slice index of one SEG frame: by referenced SOP UID + frame number, else by position."""
    for group in (fg, shared):
        for derivation in (group.get("DerivationImageSequence") or []) if group is not None else []:
            for ref in derivation.get("SourceImageSequence") or []:
                uid = str(ref.get("ReferencedSOPInstanceUID", ""))
                for number in _frame_numbers(ref):
                    if (uid, number) in where:
                        return where[(uid, number)]
    pos = _group(fg, shared, "PlanePositionSequence")
    if pos is not None and "ImagePositionPatient" in pos and same_frame:
        idx = volume.world_to_index([float(v) for v in pos.ImagePositionPatient])
        z = int(np.rint(idx[0]))
        if (np.all(np.abs(idx - [z, 0, 0]) < POSITION_TOL) and 0 <= z < volume.shape[0]):
            return z
        return None
    if single and pos is None:
        # one projection image: a frame without references or position can only be that image,
        # provided the SEG names it at all
        ours = {key[0] for key in where}
        named = {str(r.ReferencedSOPInstanceUID) for s in ds.get("ReferencedSeriesSequence") or []
                 for r in s.get("ReferencedInstanceSequence") or []}
        named |= {str(r.ReferencedSOPInstanceUID) for r in ds.get("SourceImageSequence") or []}
        if ours & named:
            return 0
    return None
