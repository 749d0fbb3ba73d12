"""Probability overlays as DICOM Parametric Maps that reference their source images.

One map per file, built by highdicom on the same correspondence as our SEG
(dicom_seg): the source headers go in the order of the volume's z axis
(``plan_series(...).slots``), so each frame is tied to its source image by SOP
Instance UID whatever the file order on disk; a mammogram (no
ImagePositionPatient) gives one frame that only references its image.

Encoding: unsigned 16-bit integers with a Real World Value Mapping (slope
1/65535), not float pixels. Half the size of float32 (Parametric Maps are
stored uncompressed), precision 1.5e-5 (far finer than any model's), and
integer Pixel Data is what every DICOM toolkit and archive handles, where Float
Pixel Data is newer and skipped by some generic readers; viewers that know
Parametric Maps (Slicer/dcmqi, OHIF's pmap extension) read the mapping. The
mapping's LUT label / explanation name the map ("probability of mass") with a
UCUM unit, and the model that made it is the Contributing Equipment
(Processing Equipment: model name as ManufacturerModelName, its version as
SoftwareVersions).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.sr.coding import Code

from ..atomic import replacing
from ..errors import describe
from ..model_id import split_model_id
from ..study import Series
from ..volume import Volume
from . import dicom_seg as _seg

PM_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.30"
STORED_MAX = 65535  # uint16 full scale = probability 1.0
PROBABILITY_UNIT = Code("{probability}", "UCUM", "probability")
NO_UNITS = Code("1", "UCUM", "no units")
PROBABILITY = Code("122157", "DCM", "Probability")
PROCESSING_EQUIPMENT = Code("109102", "DCM", "Processing Equipment")
LIGHTBOX = "Lightbox"


class MissingSliceWarning(_seg.MissingSliceWarning):
    """Values on a slice with no source image (a gap kept blank) were left out of the Parametric Map."""


def _nominal_plane(header: pydicom.Dataset, volume: Volume) -> None:
    """Give a projection source (no ImagePositionPatient) the nominal plane Lightbox loads it on,
    in our in-memory copy of its header only.

    The Parametric Map IOD requires a frame of reference and each frame's plane position and
    orientation (PS3.3 A.75), which a mammogram does not have. The map's single frame then
    carries the geometry the viewer and the NIfTI export give the image (origin, axes from
    PatientOrientation, pixel spacing) in a frame of reference of its own, so it claims no
    registration to anything; what ties it to the image is the SOP Instance reference with
    Spatial Locations Preserved = YES, and readers place it by that (as read_parametric_map does)."""
    import highdicom as hd

    header.ImagePositionPatient = [f"{float(v):.6g}" for v in volume.origin]
    header.ImageOrientationPatient = [f"{float(v):.6g}" for v in (*volume.direction[:, 2], *volume.direction[:, 1])]
    if "PixelSpacing" not in header or not header.PixelSpacing:
        header.PixelSpacing = [f"{float(volume.spacing[1]):.6g}", f"{float(volume.spacing[2]):.6g}"]
    header.FrameOfReferenceUID = hd.UID()
    header.PositionReferenceIndicator = ""


def _is_saliency(name: str) -> bool:
    return "cam" in name.lower().replace("-", " ").split() or "grad-cam" in name.lower()


def describe_map(name: str) -> tuple[str, str, Code]:
    """(LUT label <= 16 chars, LUT explanation <= 64 chars, unit) for a map called ``name``.

    "mass" -> "probability of mass"; a name that already says probability is kept;
    a Grad-CAM map is a 0..1 saliency, not a probability, and says so (unit "1")."""
    name = " ".join(str(name).split()) or "map"
    if _is_saliency(name):
        return name[:16], f"{name} saliency, 0 to 1 (not a probability)"[:64], NO_UNITS
    explanation = name if "probab" in name.lower() else f"probability of {name}"
    return name[:16], explanation[:64], PROBABILITY_UNIT


def _content_label(name: str) -> str:
    """ContentLabel (CS, 16 chars: A-Z 0-9 _ space)."""
    text = "".join(c if c.isalnum() and c.isascii() else "_" for c in name.upper()).strip("_")
    return (text or "MAP")[:16]


def write_parametric_map(prob, volume: Volume, series: Series, path, *, name: str, model: str,
                         series_description: str | None = None, series_number: int | None = None,
                         manufacturer: str = LIGHTBOX, software_version: str | None = None,
                         device_serial: str = "0") -> Path:
    """Write one probability overlay (float 0..1, shape = ``volume.shape``; (1, rows, cols) or
    (rows, cols) for a mammogram) as a Parametric Map referencing ``series``' images.

    ``name`` names the map ("mass"), ``model`` is the "name version" id of the model that made
    it. Values outside 0..1 are clipped; NaN is refused. The file appears complete or not at all.
    """
    import highdicom as hd

    path = Path(path)
    if series.kind != "dicom":
        raise ValueError(f"a DICOM Parametric Map needs a DICOM source series; {series.label()} is a "
                         f"{series.kind} series")
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim == 2 and volume.shape[0] == 1:
        prob = prob[np.newaxis]
    if prob.shape != volume.shape:
        raise ValueError(f"map {name!r} has shape {prob.shape} (z, y, x) but the image has {volume.shape}")
    if not np.isfinite(prob).all():
        raise ValueError(f"map {name!r} holds NaN or infinite values; a probability map must be 0..1")
    stored = np.rint(np.clip(prob, 0.0, 1.0) * STORED_MAX).astype(np.uint16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", _seg.MissingSliceWarning)
        sources, array = _seg._sources(stored, volume, series)
    for w in caught:
        if issubclass(w.category, _seg.MissingSliceWarning):
            warnings.warn(MissingSliceWarning(str(w.message).replace("labelled voxel", "non-zero value").replace(
                "DICOM SEG", "DICOM Parametric Map")), stacklevel=2)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    grid = _seg._resampled_grid(volume, series)
    if grid:
        array = stored
    if len(sources) == 1 and "ImagePositionPatient" not in sources[0] and not sources[0].get(
            "PerFrameFunctionalGroupsSequence"):
        _nominal_plane(sources[0], volume)
    label, explanation, unit = describe_map(name)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=label, lut_explanation=explanation, unit=unit, value_range=(0, STORED_MAX),
        slope=1.0 / STORED_MAX, intercept=0.0,
        quantity_definition=None if unit is NO_UNITS else PROBABILITY)
    model_name, model_version = split_model_id(model)
    equipment = hd.ContributingEquipment(
        manufacturer=LIGHTBOX, purpose_of_reference=PROCESSING_EQUIPMENT,
        manufacturer_model_name=(model_name or "unnamed model")[:64], software_versions=model_version or "unknown",
        contribution_description=f"AI model {model}"[:64])
    if series_number is None:
        series_number = 2000 + int(series.info.series_number or 0)
    description = (series_description or f"Lightbox AI {name}")[:64]
    try:
        pm = hd.pm.ParametricMap(
            source_images=sources, pixel_array=array, series_instance_uid=hd.UID(),
            series_number=int(series_number), sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer=manufacturer, manufacturer_model_name=LIGHTBOX,
            software_versions=software_version or _seg._software_version(), device_serial_number=str(device_serial),
            contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
            voi_lut_transformations=[hd.VOILUTTransformation(window_center=STORED_MAX / 2,
                                                             window_width=STORED_MAX + 1)],
            content_label=_content_label(name), content_description=description,
            contributing_equipment=[equipment], **grid)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ValueError(f"cannot build a DICOM Parametric Map for series {series.label()}: {describe(exc)}") from exc
    pm.SeriesDescription = description
    _anatomy(pm, sources[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        pm.save_as(tmp, enforce_file_format=True)
    return path


def _anatomy(pm: pydicom.Dataset, source: pydicom.Dataset) -> None:
    """Laterality (General Series, Type 2C: needed for a paired body part unless the image says
    its laterality) from the source's, and the source's Body Part Examined, which tells a
    checker whether the part is paired; empty Laterality only when neither is known."""
    side = str(source.get("ImageLaterality", "") or source.get("Laterality", "") or "").strip().upper()
    if side in ("L", "R"):
        pm.Laterality = side
    part = str(source.get("BodyPartExamined", "") or "").strip()
    if part:
        pm.BodyPartExamined = part[:16]
    elif side not in ("L", "R"):
        pm.Laterality = ""


# -- reading ----------------------------------------------------------------------------
def _mapping(ds, shared, per_frame) -> tuple[float, float, str]:
    """(slope, intercept, LUT explanation or label) of the first Real World Value Mapping."""
    group = _seg._group(per_frame[0] if per_frame else None, shared, "RealWorldValueMappingSequence")
    if group is None:
        return 1.0, 0.0, ""
    if "RealWorldValueLUTData" in group:
        raise ValueError("its real world value mapping is a lookup table; only linear mappings are read")
    slope = float(group.get("RealWorldValueSlope", 1.0) or 1.0)
    intercept = float(group.get("RealWorldValueIntercept", 0.0) or 0.0)
    text = str(group.get("LUTExplanation", "") or group.get("LUTLabel", "") or "")
    return slope, intercept, text


def _map_name(ds, explanation: str) -> str:
    label = str(ds.get("SeriesDescription", "") or "")
    if label.startswith("Lightbox AI "):
        return label.removeprefix("Lightbox AI ")
    if explanation.startswith("probability of "):
        return explanation.removeprefix("probability of ")
    return explanation or label or str(ds.get("ContentLabel", "") or "map")


def _model_of(ds) -> str:
    for item in ds.get("ContributingEquipmentSequence") or []:
        purpose = item.get("PurposeOfReferenceCodeSequence") or []
        if purpose and str(purpose[0].get("CodeValue", "")) == PROCESSING_EQUIPMENT.value \
                and str(item.get("Manufacturer", "")) == LIGHTBOX:
            name = str(item.get("ManufacturerModelName", "") or "")
            version = str(item.get("SoftwareVersions", "") or "")
            return f"{name} {version}".strip() if version and version != "unknown" else name
    return ""


def read_parametric_map(path, volume: Volume, series: Series) -> tuple[np.ndarray, str, str]:
    """A Parametric Map (ours or another tool's, one channel) as a float32 array on ``volume``'s
    grid, with its name and the model that made it ("" when it does not say).

    Frames find their slice through the referenced source SOP Instance UID (and frame number),
    as read_dicom_seg does; only frames without references fall back to their plane position.
    Stored values go through the Real World Value Mapping (linear). Anything unreadable is a
    ValueError whose one line names the file."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - one line naming the file
        raise ValueError(f"{path}: not readable as DICOM ({describe(exc)})") from exc
    try:
        return _read(path, ds, volume, series)
    except (TypeError, AttributeError, KeyError, IndexError) as exc:  # a damaged header
        raise ValueError(f"{path}: {describe(exc)}") from exc


def _read(path: Path, ds: pydicom.Dataset, volume: Volume, series: Series) -> tuple[np.ndarray, str, str]:
    from pydicom.pixels import pixel_array

    if str(ds.get("SOPClassUID", "")) != PM_SOP_CLASS:
        raise ValueError(f"{path}: not a DICOM Parametric Map (SOP class {ds.get('SOPClassUID', 'missing')})")
    if (int(ds.Rows), int(ds.Columns)) != volume.shape[1:]:
        raise ValueError(f"{path}: frames are {ds.Rows}x{ds.Columns} (rows x columns) but the image is "
                         f"{volume.shape[1]}x{volume.shape[2]}: the map was made on another grid")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise ValueError(f"{path}: {ds.SamplesPerPixel} channels per pixel; only one-channel maps are read")
    plan, where = _seg.slot_index(volume, series)
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    try:
        slope, intercept, explanation = _mapping(ds, shared, per_frame)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    _seg._check_orientation(path, shared, per_frame, volume)
    same_frame = str(ds.get("FrameOfReferenceUID", "")) == series.info.frame_of_reference_uid
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        pixels = pixel_array(ds)
    except Exception as exc:  # noqa: BLE001 - a damaged file gets one line
        raise ValueError(f"{path}: pixel data unreadable ({describe(exc)})") from exc
    if n_frames == 1:
        pixels = pixels[np.newaxis]
    out = np.zeros(volume.shape, dtype=np.float32)
    placed = unplaced = 0
    single = plan.shape[0] == 1 and len(where) > 0
    for i in range(n_frames):
        fg = per_frame[i] if i < len(per_frame) else None
        z = _seg._z_of(fg, shared, where, volume, same_frame, single, ds, series)
        if z is None:
            unplaced += 1
            continue
        placed += 1
        out[z] = pixels[i].astype(np.float32) * slope + intercept
    if n_frames and not placed:
        raise ValueError(f"{path}: none of its frames refers to an image of series {series.label()} "
                         "(by reference or position): it belongs to other images")
    if unplaced:
        warnings.warn(_seg.SegReadWarning(f"{path}: {unplaced} frame(s) refer to no image of this series "
                                          "and were skipped"), stacklevel=2)
    return out, _map_name(ds, explanation), _model_of(ds)


def parametric_map_summary(ds) -> dict:
    """``{"kind": "parametric-map", "references": [series UIDs], "maps": [names]}`` from a header."""
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    names = []
    for group in [shared] + list(ds.get("PerFrameFunctionalGroupsSequence") or [])[:1]:
        for item in (group.get("RealWorldValueMappingSequence") or []) if group is not None else []:
            names.append(str(item.get("LUTExplanation", "") or item.get("LUTLabel", "")))
    refs = [str(s.get("SeriesInstanceUID", "")) for s in ds.get("ReferencedSeriesSequence") or []]
    return {"kind": "parametric-map", "references": list(dict.fromkeys(u for u in refs if u)),
            "maps": list(dict.fromkeys(n for n in names if n)), "model": _model_of(ds)}
