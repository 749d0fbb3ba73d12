"""The user's rulers, ROIs, angles and annotations as a DICOM TID 1500 Measurement Report (highdicom.sr), and back.

Why SR: another viewer (OHIF, Slicer, Weasis) pointed at the same PACS then shows the same
measurements, and Lightbox puts them back on the same slices when the study is reopened.

Encoding (PS3.16 TID 1500), observer = the person (Person Observer), never an algorithm:

- ruler: a TID 1501 measurement group with a Length (mm) measurement INFERRED FROM an SCOORD
  POLYLINE of its two end points, SELECTED FROM the exact image (SOP Instance UID + frame);
- rectangle / ellipse ROI: a TID 1410 planar ROI group whose Image Region is an SCOORD closed
  POLYLINE (SCOORD's polygon: 5 points, last = first) / ELLIPSE on that image, with Area (mm2),
  Mean and Standard Deviation (in the image's modality units: UCUM Hounsfield unit for CT, else
  "no units");
- angle: a TID 1501 group with an Angle (SCT 1483009, UCUM "deg") INFERRED FROM an SCOORD POLYLINE
  of 3 points (arm end, vertex, arm end); Cobb angle: a Cobb angle (SCT 285285000, "deg") INFERRED
  FROM two 2-point POLYLINEs, one per end-plate line;
- arrow / text: no measurement, so a TID 1410 planar ROI group (the one TID 1500 group that holds
  coordinates without a value) whose Image Region is the arrow's open 2-point POLYLINE (tail, head)
  or the text's POINT, with the words as a TEXT Comment (DCM 121106); a TEXT Comment is a plain
  content item every SR reader shows, where a CODE would need a code per sentence;
- drawn on an MPR reformat that is no acquired image (a coronal cut of an axial CT): the same
  groups with SCOORD3D (POLYLINE, POLYGON, ELLIPSE) in patient coordinates (the series' Frame of
  Reference); the document is then a Comprehensive 3D SR (Comprehensive SR cannot hold
  SCOORD3D), else a Comprehensive SR.

Each group's Tracking Identifier carries the measurement's own UID, so a measurement saved twice
(autosave, a copy retrieved from the PACS) is recognised as one. Reading takes any TID 1500
document and keeps the groups it can place: lengths with a 2-point polyline, angles with a 3-point one, Cobb angles
with two lines, planar ROIs with a polygon or ellipse region (2D or 3D), arrows (open 2-point
polyline region) and texts (point region); an AI report's segment-based groups are not measurements.
"""
from __future__ import annotations

import getpass
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from ..atomic import replacing
from ..errors import describe
from ..measure_records import POINT_COUNTS, MeasurementRecord
from ..study import Series
from .dicom_seg import _prepared

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SR_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.88.22", COMPREHENSIVE_SR,
                  COMPREHENSIVE_3D_SR, "1.2.840.10008.5.1.4.1.1.88.35"}
DESCRIPTION = "Lightbox measurements"
HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
NO_UNITS = Code("1", "UCUM", "no units")
_PROCEDURES = {
    "CT": Code("25045-6", "LN", "CT unspecified body region"),
    "MR": Code("25056-3", "LN", "MRI unspecified body region"),
    "MG": Code("71651007", "SCT", "Mammography"),
}
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")
DEGREE = Code("deg", "UCUM", "degree")
ANGLE = Code("1483009", "SCT", "Angle")
COBB_ANGLE = Code("285285000", "SCT", "Cobb angle")
COMMENT = Code("121106", "DCM", "Comment")
_NAMES = {"ruler": "Ruler", "rect": "Rectangle ROI", "ellipse": "Ellipse ROI", "angle": "Angle",
          "cobb": "Cobb angle", "arrow": "Arrow", "text": "Text"}


class MeasurementSRError(ValueError):
    """A measurement SR could not be written or read; ``str()`` names the file and the problem."""


def default_observer() -> str:
    """The person who measured: the login name (DICOM PN), or 'UNKNOWN' when there is none."""
    try:
        name = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name on this platform
        name = ""
    name = "".join(ch for ch in name if ch.isprintable() and ch not in "\\^=")[:60]
    return f"{name or 'UNKNOWN'}^"  # one component = the family name (PS3.5 6.2.1.2)


def _unit(unit: str) -> Code:
    return HU if unit.upper() == "HU" else NO_UNITS


def _source(rec: MeasurementRecord):
    frames = [int(rec.frame)] if _multiframe(rec) else None
    return rec.sop_class_uid, rec.sop_uid, frames


def _multiframe(rec: MeasurementRecord) -> bool:
    """Frame numbers belong in a reference only to an image of a multi-frame IOD."""
    try:  # highdicom's IOD table (private: guarded, with a plain fallback)
        from highdicom._standard_utils import is_attribute_in_iod

        return bool(is_attribute_in_iod("NumberOfFrames", rec.sop_class_uid))
    except Exception:  # noqa: BLE001 - moved in another highdicom, or an unknown SOP class
        return int(rec.frame) > 1


def _coordinates(hd, rec: MeasurementRecord, lo: int, hi: int):
    """The SCOORD (or SCOORD3D) POLYLINE of points ``lo:hi`` of a record, that a value is INFERRED FROM."""
    if rec.points:
        cls, uid, frames = _source(rec)
        return hd.sr.CoordinatesForMeasurement(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=np.asarray(rec.points[lo:hi], dtype=float),
            source_image=hd.sr.SourceImageForRegion(cls, uid, frames))
    return hd.sr.CoordinatesForMeasurement3D(
        graphic_type=hd.sr.GraphicTypeValues3D.POLYLINE, graphic_data=np.asarray(rec.world[lo:hi], dtype=float),
        frame_of_reference_uid=rec.frame_of_reference_uid)


def _line_group(hd, rec: MeasurementRecord, tracking):
    """TID 1501: ruler (Length), angle (Angle) or Cobb angle, each with the polylines it was measured on."""
    if rec.kind == "ruler":
        name, unit, where = codes.SCT.Length, codes.UCUM.Millimeter, [_coordinates(hd, rec, 0, 2)]
    elif rec.kind == "angle":
        name, unit, where = ANGLE, DEGREE, [_coordinates(hd, rec, 0, 3)]
    else:
        name, unit, where = COBB_ANGLE, DEGREE, [_coordinates(hd, rec, 0, 2), _coordinates(hd, rec, 2, 4)]
    value = hd.sr.Measurement(name=name, value=float(rec.value), unit=unit, referenced_coordinates=where)
    images = None
    if rec.points:
        cls, uid, frames = _source(rec)
        images = [hd.sr.SourceImageForMeasurementGroup(cls, uid, frames)]
    return hd.sr.MeasurementsAndQualitativeEvaluations(tracking_identifier=tracking, measurements=[value],
                                                       source_images=images)


def _region(hd, rec: MeasurementRecord, shape: str):
    """The Image Region (SCOORD on the image, else SCOORD3D) of a planar group."""
    if rec.points:  # SCOORD has no POLYGON: a closed POLYLINE is its polygon (PS3.3 C.18.6.1.2)
        cls, uid, frames = _source(rec)
        return hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues["POLYLINE" if shape == "POLYGON" else shape],
                                 graphic_data=np.asarray(rec.points, dtype=float),
                                 source_image=hd.sr.SourceImageForRegion(cls, uid, frames))
    return hd.sr.ImageRegion3D(graphic_type=hd.sr.GraphicTypeValues3D[shape],
                               graphic_data=np.asarray(rec.world, dtype=float),
                               frame_of_reference_uid=rec.frame_of_reference_uid)


def _annotation_group(hd, rec: MeasurementRecord, tracking):
    """TID 1410 for an arrow (open POLYLINE tail -> head) or a text (POINT), the words as a TEXT Comment."""
    region = _region(hd, rec, "POLYLINE" if rec.kind == "arrow" else "POINT")
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(tracking_identifier=tracking, referenced_region=region)
    if rec.text:
        group[0].ContentSequence.append(hd.sr.TextContentItem(
            name=COMMENT, value=rec.text[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return group


def _group(hd, rec: MeasurementRecord, number: int):
    tracking = hd.sr.TrackingIdentifier(uid=rec.uid, identifier=rec.label or f"{_NAMES[rec.kind]} {number}")
    if rec.kind in ("ruler", "angle", "cobb"):
        return _line_group(hd, rec, tracking)
    if rec.kind in ("arrow", "text"):
        return _annotation_group(hd, rec, tracking)
    region = _region(hd, rec, "POLYGON" if rec.kind == "rect" else "ELLIPSE")
    values = [hd.sr.Measurement(name=codes.SCT.Area, value=float(rec.value), unit=codes.UCUM.SquareMillimeter)]
    for name, v in ((codes.SCT.Mean, rec.mean), (codes.SCT.StandardDeviation, rec.std)):
        if v is not None and np.isfinite(v):
            values.append(hd.sr.Measurement(name=name, value=float(v), unit=_unit(rec.unit)))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(tracking_identifier=tracking,
                                                                referenced_region=region, measurements=values)


def _instances(series_list: Sequence[Series]) -> dict[str, object]:
    return {inst.sop_uid: inst for s in series_list for inst in s.instances if inst.sop_uid}


def _header(inst) -> pydicom.Dataset:
    """The source's header as the SEG writer prepares it: Type 2 attributes an archive left out are
    present and empty, and a one-component Patient's Name gets its caret (highdicom's warning about
    it would quote the name, PHI, on the terminal)."""
    try:
        return _prepared(pydicom.dcmread(inst.path, stop_before_pixels=True))
    except Exception as exc:  # noqa: BLE001 - named, never a traceback
        raise MeasurementSRError(f"{inst.path}: cannot read the source image header ({describe(exc)})") from exc


def write_measurements_sr(records: Iterable[MeasurementRecord], series: Series | Sequence[Series], path, *,
                          observer: str | None = None, series_uid: str | None = None, series_number: int = 9901,
                          instance_number: int = 1, description: str = DESCRIPTION) -> Path:
    """Write ``records`` (of the given source series, one study) as one TID 1500 SR at ``path``.

    ``series`` are the source series the records were drawn on (their files give the referenced
    images' headers: patient, study and evidence). ``series_uid``: keep one SR series across
    saves (autosave), default a new UID. The file appears whole or not at all. Raises
    MeasurementSRError naming the problem (no records, an image not in ``series``, ...).
    """
    import highdicom as hd

    records = list(records)
    series_list = [series] if isinstance(series, Series) else list(series)
    path = Path(path)
    if not records:
        raise MeasurementSRError(f"{path}: no measurements to save")
    by_sop = _instances(series_list)
    evidence: dict[str, pydicom.Dataset] = {}
    for rec in records:
        if rec.points:
            inst = by_sop.get(rec.sop_uid)
            if inst is None:
                raise MeasurementSRError(f"{path}: the image {rec.sop_uid} of a {rec.kind} is not in the given series")
        else:
            members = [s for s in series_list if s.uid == rec.series_uid and s.instances] or \
                      [s for s in series_list if s.instances]
            if not members:
                raise MeasurementSRError(f"{path}: no source image for a {rec.kind} on series {rec.series_uid}")
            instances = members[0].instances
            inst = instances[len(instances) // 2]
        if inst.sop_uid not in evidence:
            evidence[inst.sop_uid] = _header(inst)
    sources = list(evidence.values())
    studies = {str(getattr(ds, "StudyInstanceUID", "")) for ds in sources}
    if len(studies) > 1:
        raise MeasurementSRError(f"{path}: measurements from {len(studies)} studies; one SR holds one study")
    modality = str(getattr(sources[0], "Modality", "")).upper()
    person = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=observer or default_observer()))
    groups = [_group(hd, rec, i) for i, rec in enumerate(records, start=1)]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=person),
        procedure_reported=_PROCEDURES.get(modality, IMAGING_PROCEDURE),
        imaging_measurements=groups)
    three_d = any(r.is_3d for r in records)
    cls = hd.sr.Comprehensive3DSR if three_d else hd.sr.ComprehensiveSR
    try:
        doc = cls(evidence=sources, content=report[0], series_instance_uid=series_uid or generate_uid(),
                  series_number=int(series_number), sop_instance_uid=generate_uid(),
                  instance_number=int(instance_number), manufacturer="Lightbox", series_description=description,
                  is_complete=True)
    except Exception as exc:  # noqa: BLE001 - highdicom's refusal, named
        raise MeasurementSRError(f"{path}: cannot build the measurement SR ({describe(exc)})") from exc
    if any(r.text and not r.text.isascii() for r in records):
        doc.SpecificCharacterSet = "ISO_IR 192"  # a text annotation's words in any language (UTF-8)
    with replacing(path) as tmp:
        doc.save_as(tmp, enforce_file_format=True)
    return path


# -- reading ---------------------------------------------------------------------------------
def _uid_of(group) -> str:
    uid = group.tracking_uid
    return str(uid) if uid else generate_uid()


def _label_of(group) -> str:
    return str(group.tracking_identifier or "")


def _image_ref(item) -> tuple[str, str, int]:
    """(SOP class, SOP instance, frame) of an SCOORD's SELECTED FROM image."""
    src = item.ContentSequence[0].ReferencedSOPSequence[0]
    frames = getattr(src, "ReferencedFrameNumber", None)
    if frames is not None and not isinstance(frames, int):
        frames = list(frames)[0] if len(frames) else None
    return str(src.ReferencedSOPClassUID), str(src.ReferencedSOPInstanceUID), int(frames or 1)


def _place(item) -> dict:
    """The geometry fields of a record from an SCOORD or SCOORD3D content item."""
    data = np.asarray(item.GraphicData, dtype=float)
    if item.ValueType == "SCOORD3D":
        pts = data.reshape(-1, 3)
        return dict(frame_of_reference_uid=str(item.ReferencedFrameOfReferenceUID),
                    world=tuple(tuple(float(v) for v in p) for p in pts))
    cls, sop, frame = _image_ref(item)
    pts = data.reshape(-1, 2)
    return dict(sop_class_uid=cls, sop_uid=sop, frame=frame, points=tuple(tuple(float(v) for v in p) for p in pts))


def _is_box(points) -> bool:
    """Four corners of a rectangle, closed (5 points, last = first) or not."""
    pts = np.asarray(points, dtype=float)
    if len(pts) == 5 and np.allclose(pts[0], pts[4], atol=1e-4):
        pts = pts[:4]
    if len(pts) != 4:
        return False
    e0, e1 = pts[1] - pts[0], pts[2] - pts[1]
    scale = max(float(np.linalg.norm(e0) * np.linalg.norm(e1)), 1e-12)
    return bool(np.allclose(pts[3], pts[0] + e1, atol=1e-3) and abs(float(np.dot(e0, e1))) / scale < 1e-3)


def _code_is(concept, code: Code) -> bool:
    return str(concept.value) == code.value and str(concept.scheme_designator) == code.scheme_designator


def _unit_text(concept) -> str:
    return "HU" if _code_is(concept, HU) else ""


def read_measurements_sr(path) -> list[MeasurementRecord]:
    """The rulers, angles, ROIs and annotations of a TID 1500 SR, rulers and angles first;
    MeasurementSRError naming the file when it is no readable SR. Groups that are none of the
    shapes our tools draw are skipped."""
    import highdicom as hd

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
        if str(getattr(ds, "SOPClassUID", "")) not in SR_SOP_CLASSES:
            raise MeasurementSRError(f"{path}: not a structured report (SOP class {getattr(ds, 'SOPClassUID', '?')})")
        sr = hd.sr.srread(path) if hasattr(hd.sr, "srread") else hd.sr.Comprehensive3DSR.from_dataset(ds)
    except MeasurementSRError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged or foreign file, named
        raise MeasurementSRError(f"{path}: cannot read as a DICOM SR ({describe(exc)})") from exc
    study = str(getattr(ds, "StudyInstanceUID", ""))
    refs = {}
    for ev in getattr(ds, "CurrentRequestedProcedureEvidenceSequence", []):
        for se in getattr(ev, "ReferencedSeriesSequence", []):
            for item in getattr(se, "ReferencedSOPSequence", []):
                refs[str(item.ReferencedSOPInstanceUID)] = str(se.SeriesInstanceUID)
    only = set(refs.values())
    refs[""] = only.pop() if len(only) == 1 else ""  # a 3D shape names no image: the SR's one series
    out: list[MeasurementRecord] = []
    try:
        content = sr.content
        groups = list(content.get_image_measurement_groups()) + list(content.get_planar_roi_measurement_groups())
    except Exception as exc:  # noqa: BLE001 - not a TID 1500 document
        raise MeasurementSRError(f"{path}: no TID 1500 measurement report ({describe(exc)})") from exc
    for group in groups:
        try:
            rec = _record(group, study, refs)
        except Exception:  # noqa: BLE001 - one odd group never loses the others
            rec = None
        if rec is not None:
            out.append(rec)
    return out


def _text_of(group) -> str:
    """The TEXT Comment of a group ('' when it has none)."""
    for item in getattr(group[0], "ContentSequence", []):
        name = item.ConceptNameCodeSequence[0]
        if item.ValueType == "TEXT" and (name.CodeValue, name.CodingSchemeDesignator) == (COMMENT.value, "DCM"):
            return str(item.TextValue)
    return ""


def _polylines(m) -> list[dict]:
    return [_place(c) for c in (m.referenced_coordinates or []) if str(c.GraphicType) == "POLYLINE"]


def _joined(places: list[dict]) -> dict:
    """One record's geometry from several polylines on the same image (a Cobb angle's two lines)."""
    key = "points" if "points" in places[0] else "world"
    out = dict(places[0])
    out[key] = tuple(p for place in places for p in place[key])
    return out


def _line_record(group, measurements, common: dict, refs: dict[str, str]) -> MeasurementRecord | None:
    """A ruler (Length, 2 points), angle (Angle, 3 points) or Cobb angle (two 2-point lines)."""
    for m in measurements:
        lines = _polylines(m)
        if not lines:
            continue
        if _code_is(m.name, codes.SCT.Length):
            kind, place = "ruler", lines[0]
        elif _code_is(m.name, ANGLE) or _code_is(m.name, codes.DCM.Angle):
            kind, place = "angle", lines[0]
        elif _code_is(m.name, COBB_ANGLE):
            kind, place = "cobb", _joined(lines[:2])
        else:
            continue
        if len(place.get("points") or place.get("world")) != POINT_COUNTS[kind]:
            continue
        return MeasurementRecord(kind=kind, value=float(m.value), series_uid=refs.get(place.get("sop_uid", ""), ""),
                                 **common, **place)
    return None


def _record(group, study: str, refs: dict[str, str]) -> MeasurementRecord | None:
    measurements = group.get_measurements()
    roi = getattr(group, "roi", None)
    common = dict(uid=_uid_of(group), study_uid=study, label=_label_of(group))
    if roi is None:  # TID 1501: a ruler or an angle, with the lines it was measured on
        return _line_record(group, measurements, common, refs)
    shape = str(roi.GraphicType)
    place = _place(roi)
    pts = place.get("points") or place.get("world")
    series_uid = refs.get(place.get("sop_uid", ""), "")
    if shape == "POINT" or (shape == "POLYLINE" and len(pts) == 2):  # a text, an arrow: no values
        kind = "text" if shape == "POINT" else "arrow"
        return MeasurementRecord(kind=kind, value=0.0, series_uid=series_uid, text=_text_of(group), **common,
                                 **place)
    kind = {"POLYGON": "rect", "POLYLINE": "rect", "ELLIPSE": "ellipse"}.get(shape)
    if kind is None:
        return None
    if kind == "rect" and not _is_box(pts):
        return None  # a freehand outline (another viewer's): no shape our tools draw
    values = {"area": None, "mean": None, "std": None}
    unit = ""
    for m in measurements:
        if _code_is(m.name, codes.SCT.Area):
            values["area"] = float(m.value)
        elif _code_is(m.name, codes.SCT.Mean):
            values["mean"], unit = float(m.value), _unit_text(m.unit)
        elif _code_is(m.name, codes.SCT.StandardDeviation):
            values["std"] = float(m.value)
    if values["area"] is None:
        return None
    return MeasurementRecord(kind=kind, value=values["area"], mean=values["mean"], std=values["std"], unit=unit,
                             series_uid=series_uid, **common, **place)


def is_measurement_sr(path) -> bool:
    """A cheap header check: an SR document (no content parsed)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001
        return False
    return str(getattr(ds, "SOPClassUID", "")) in SR_SOP_CLASSES
