"""An analysis as a DICOM Structured Report: TID 1500 Measurement Report (Comprehensive 3D SR).

What goes in, one measurement group each (all built with highdicom.sr):
- per analysed image or series (TID 1501): its scores (a mammogram's malignancy as DCM
  "Probability of cancer") and the domain check (coded Yes/No + its score and threshold),
  with the image(s) as the group's source images and, for a mammogram, the breast as finding site;
- per breast (TID 1501): the exam score, finding site Breast + laterality, source images = its views;
- per class of a label map (TID 1410 on a 2D image: Area in mm2; TID 1411 on a volume: Volume in
  mL), finding type = the class's SNOMED code, referencing the DICOM SEG segment it was measured on
  (or, when no SEG was written, the source images only).
Every group names the model that made its values (Algorithm Identification: name + version from
the "name version" model id); the device observer is Lightbox.

Mammography CAD SR (TID 4000) was not used: see MAMMO_CAD_NOTE.

The building blocks (codes, observation context, algorithm identification, source-image
references, the document writer) are public for the measurement SR of user rulers/ROIs.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.sr.coding import Code

from ..atomic import replacing
from ..errors import describe
from ..io.dicom import plan_series
from ..model_id import split_model_id
from ..study import Series
from . import dicom_seg as _seg

MAMMO_CAD_NOTE = (
    "Mammography results are written as a TID 1500 Measurement Report, not the Mammography CAD SR "
    "(TID 4000). TID 4000 is built around CAD findings as single-image / composite features with "
    "image coordinates (SCOORD outlines or centre points) and a per-finding 'Rendering Intent' and "
    "'Certainty of Finding', and its overall assessment is a coded impression; our models give a "
    "probability per view and per breast, a heatmap and a pixel mask. Fitting them in would mean "
    "turning masks into outlines and probabilities into CAD certainty with thresholds the models were "
    "not calibrated for, and writing the whole template by hand (highdicom has no builder for it; "
    "dciodvfy checks its structure only loosely). TID 1500 carries exactly what we have: numeric "
    "measurements with algorithm identification, finding site (breast + laterality) and references to "
    "the SEG segments and source images, and highdicom builds and reads it.")

# -- codes ------------------------------------------------------------------------------
LIGHTBOX_SCHEME = "99LIGHTBOX"  # private coding scheme (PS3.16 8.2: designators starting "99")
PROBABILITY_OF_CANCER = Code("111047", "DCM", "Probability of cancer")
PROBABILITY_UNIT = Code("{probability}", "UCUM", "probability")
NO_UNITS = Code("1", "UCUM", "no units")
AREA = Code("42798000", "SCT", "Area")
VOLUME = Code("118565006", "SCT", "Volume")
MM2 = Code("mm2", "UCUM", "square millimeter")
ML = Code("mL", "UCUM", "milliliter")
MM = Code("mm", "UCUM", "millimeter")
BREAST = Code("76752008", "SCT", "Breast")
LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")
YES = Code("373066001", "SCT", "Yes")
NO = Code("373067005", "SCT", "No")
IN_DOMAIN = Code("IN-DOMAIN", LIGHTBOX_SCHEME, "Image within the model's domain")
DOMAIN_SCORE = Code("DOMAIN-SCORE", LIGHTBOX_SCHEME, "Domain check score")
DOMAIN_THRESHOLD = Code("DOMAIN-THRESHOLD", LIGHTBOX_SCHEME, "Domain check threshold")
PROCEDURES = {
    "MG": Code("71651007", "SCT", "Mammography"),
    "CT": Code("77477000", "SCT", "Computerized axial tomography"),
    "MR": Code("113091000", "SCT", "Magnetic resonance imaging"),
}
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")
ARTIFICIAL_INTELLIGENCE = _seg.ARTIFICIAL_INTELLIGENCE
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SR_SOP_CLASSES = {COMPREHENSIVE_3D_SR, "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.22"}
_SIDES = {"L": LEFT, "R": RIGHT}
_SCORE_CODES = {"malignancy": PROBABILITY_OF_CANCER}


def procedure_code(modality: str) -> Code:
    """Procedure Reported (TID 1500) for a modality; generic Imaging procedure otherwise."""
    return PROCEDURES.get(str(modality).upper(), IMAGING_PROCEDURE)


def score_code(name: str) -> Code:
    """A score's concept name: a standard code where one means it, else our private scheme."""
    if name in _SCORE_CODES:
        return _SCORE_CODES[name]
    value = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").upper()[:16] or "SCORE"
    return Code(value, LIGHTBOX_SCHEME, name[:64])


def unit_for(name: str) -> Code:
    """UCUM unit from a score name's suffix ("liver mL", "lesion area mm2"); probability otherwise."""
    low = name.lower()
    if low.endswith(" ml"):
        return ML
    if low.endswith(" mm2"):
        return MM2
    if low.endswith(" mm"):
        return MM
    return PROBABILITY_UNIT


def coding_schemes():
    """Coding Scheme Identification for our private scheme (the document must declare it)."""
    import highdicom as hd

    return [hd.coding_schemes.CodingSchemeIdentificationItem(
        designator=LIGHTBOX_SCHEME, name="Lightbox private codes", responsible_organization="Lightbox")]


def observation_context(device_uid: str | None = None, person: str | None = None,
                        software_version: str | None = None):
    """TID 1001: Lightbox as device observer (and ``person`` "Family^Given" when a user measured)."""
    import highdicom as hd

    device = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept.from_code(Code("121007", "DCM", "Device")),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid or hd.UID(), name="Lightbox", manufacturer_name="Lightbox",
            model_name=f"Lightbox {software_version or _seg._software_version()}"[:64]))
    person_ctx = None
    if person:
        person_ctx = hd.sr.ObserverContext(
            observer_type=hd.sr.CodedConcept.from_code(Code("121006", "DCM", "Person")),
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=person))
    return hd.sr.ObservationContext(observer_person_context=person_ctx, observer_device_context=device)


def algorithm_identification(model: str):
    """TID 4019 from a "name version" model id (version "unknown" when the id has none)."""
    import highdicom as hd

    name, version = split_model_id(model)
    return hd.sr.AlgorithmIdentification(name=(name or "unnamed model")[:64], version=version or "unknown",
                                         family=ARTIFICIAL_INTELLIGENCE)


def source_headers(series: Series) -> list[pydicom.Dataset]:
    """The series' image headers (no pixels) in the volume's z order, made fit for highdicom."""
    plan = plan_series(series)
    seen, paths = set(), []
    for f in plan.slots:
        if f is not None and id(f.instance) not in seen:
            seen.add(id(f.instance))
            paths.append(f.instance.path)
    return _seg._source_headers(paths)


def group_source_images(headers: Iterable[pydicom.Dataset]):
    """SourceImageForMeasurementGroup items for image headers."""
    import highdicom as hd

    return [hd.sr.SourceImageForMeasurementGroup(str(h.SOPClassUID), str(h.SOPInstanceUID)) for h in headers]


def measurement_source_images(headers: Iterable[pydicom.Dataset]):
    """SourceImageForMeasurement items (TID 300 "Source of Measurement") for image headers."""
    import highdicom as hd

    return [hd.sr.SourceImageForMeasurement(str(h.SOPClassUID), str(h.SOPInstanceUID)) for h in headers]


def finding_site(side: str | None, anatomy: Code = BREAST):
    """FindingSite anatomy (+ laterality "L"/"R")."""
    import highdicom as hd

    return hd.sr.FindingSite(anatomic_location=anatomy, laterality=_SIDES.get(str(side or "").upper()))


def write_report(measurement_report, evidence: Sequence[pydicom.Dataset], path, *,
                 series_description: str, series_number: int = 3000, software_version: str | None = None,
                 extra_coding_schemes: bool = True) -> Path:
    """A TID 1500 content tree as a Comprehensive 3D SR file (complete or not at all).

    ``evidence``: headers of every object the content references (images, SEGs) — all of one
    study, which the SR joins; the first gives patient and study. Headers are copied and made fit
    for highdicom (empty Type 2, no PHI quoted in warnings)."""
    import highdicom as hd

    path = Path(path)
    evidence = [_seg._prepared(pydicom.Dataset(ds)) for ds in evidence]
    if not evidence:
        raise ValueError("a report needs at least one referenced image")
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence, content=measurement_report, series_instance_uid=hd.UID(),
            series_number=int(series_number), sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="Lightbox", is_complete=True, is_final=False, is_verified=False,
            series_description=series_description[:64], manufacturer_model_name="Lightbox",
            software_versions=software_version or _seg._software_version(), device_serial_number="0",
            coding_schemes=coding_schemes() if extra_coding_schemes else None)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ValueError(f"cannot build the DICOM SR report: {describe(exc)}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return path


def conform_segment_references(content) -> None:
    """Drop ReferencedSegmentNumber where a SEG frame is referenced by number.

    PS3.3 C.18.3 (Image SOP Instance Reference): the segment number is required only when no
    frame is referenced (a SEG frame belongs to exactly one segment); highdicom 0.28 writes both
    for a Referenced Segmentation Frame, which dciodvfy reports as an error."""
    stack = list(content)
    while stack:
        item = stack.pop()
        for ref in item.get("ReferencedSOPSequence") or []:
            if "ReferencedFrameNumber" in ref and "ReferencedSegmentNumber" in ref:
                del ref.ReferencedSegmentNumber
        stack.extend(item.get("ContentSequence") or [])


# -- the analysis report ----------------------------------------------------------------
def _side(title: str, headers: Sequence[pydicom.Dataset]) -> str | None:
    for h in headers:
        side = str(h.get("ImageLaterality", "") or h.get("Laterality", "") or "").strip().upper()
        if side in _SIDES:
            return side
    return title[:1].upper() if title[:1].upper() in _SIDES and len(title) <= 5 else None


def _seg_segments(seg_path: Path) -> tuple[pydicom.Dataset, dict[str, tuple[int, list[int]]]]:
    """A SEG's header and {segment label (lowercase): (segment number, [frame numbers])}."""
    ds = pydicom.dcmread(seg_path, stop_before_pixels=True)
    numbers = {int(s.SegmentNumber): str(s.get("SegmentLabel", "")).strip().lower() for s in ds.SegmentSequence}
    frames: dict[int, list[int]] = {n: [] for n in numbers}
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    shared_ident = shared.get("SegmentIdentificationSequence") if shared is not None else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    for i in range(1, int(ds.get("NumberOfFrames", 1) or 1) + 1):
        fg = per_frame[i - 1] if i <= len(per_frame) else None
        ident = (fg.get("SegmentIdentificationSequence") if fg is not None else None) or shared_ident
        if ident:  # per frame, or shared by all frames (one segment)
            frames.setdefault(int(ident[0].ReferencedSegmentNumber), []).append(i)
    return ds, {label: (n, frames.get(n, [])) for n, label in numbers.items()}


def _pixel_mm2(sr) -> float:
    """A 2D image's pixel area, with the same spacing the analysis measured with (estimated when
    the file has none)."""
    est = (sr.notes or {}).get("spacing_estimated") or {}
    if est.get("mm"):
        return float(est["mm"]) ** 2
    return float(sr.volume.spacing[1] * sr.volume.spacing[2])


def _domain_items(domain: Mapping):
    import highdicom as hd

    evaluations, measures = [], []
    if domain.get("in_domain") is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(IN_DOMAIN, YES if domain["in_domain"] else NO))
    algo = algorithm_identification(str(domain.get("model", ""))) if domain.get("model") else None
    for key, code in (("score", DOMAIN_SCORE), ("threshold", DOMAIN_THRESHOLD)):
        if domain.get(key) is not None:
            measures.append(hd.sr.Measurement(name=code, value=float(domain[key]), unit=NO_UNITS, algorithm_id=algo))
    return evaluations, measures


def _roi_groups(sr, series: Series, headers, seg_path: Path | None, side: str | None) -> tuple[list, list, set]:
    """Area / volume groups for each class of each label overlay; returns (groups, SEG headers, covered
    score names)."""
    import highdicom as hd

    groups, seg_headers, covered = [], [], set()
    projection = sr.volume.shape[0] == 1
    for ov in sr.overlays:
        if ov.kind != "labels":
            continue
        seg_ds, segments = (None, {})
        if seg_path is not None:
            seg_ds, segments = _seg_segments(seg_path)
            seg_headers.append(seg_ds)
        counts = np.bincount(np.asarray(ov.array).ravel().astype(np.int64))
        algo = algorithm_identification(ov.model)
        for value in range(1, len(counts)):
            if not counts[value]:
                continue
            cls = ov.classes[value] if value < len(ov.classes) else f"label {value}"
            ptype = _seg.property_codes(cls)[1]
            tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{sr.title}: {cls}"[:64])
            sites = [finding_site(side)] if side else None
            seg_ref = segments.get(cls.strip().lower())
            if projection:
                value_mm = float(counts[value]) * _pixel_mm2(sr)
                measure = hd.sr.Measurement(name=AREA, value=value_mm, unit=MM2, algorithm_id=algo,
                                            referenced_images=measurement_source_images(headers))
                covered.add("lesion area mm2")
                if seg_ref is not None and seg_ref[1]:
                    ref = hd.sr.ReferencedSegmentationFrame(
                        sop_class_uid=str(seg_ds.SOPClassUID), sop_instance_uid=str(seg_ds.SOPInstanceUID),
                        frame_number=seg_ref[1], segment_number=seg_ref[0],
                        source_image=hd.sr.SourceImageForSegmentation(str(headers[0].SOPClassUID),
                                                                      str(headers[0].SOPInstanceUID)))
                    groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                        tracking_identifier=tracking, referenced_segment=ref, finding_type=ptype,
                        algorithm_id=algo, finding_sites=sites, measurements=[measure]))
                    continue
            else:
                value_ml = float(counts[value]) * float(np.prod(sr.volume.spacing)) / 1000.0
                measure = hd.sr.Measurement(name=VOLUME, value=value_ml, unit=ML, algorithm_id=algo)
                covered.add(f"{cls} mL")
                if seg_ref is not None:
                    ref = hd.sr.ReferencedSegment(
                        sop_class_uid=str(seg_ds.SOPClassUID), sop_instance_uid=str(seg_ds.SOPInstanceUID),
                        segment_number=seg_ref[0],
                        source_series=hd.sr.SourceSeriesForSegmentation(str(series.uid)))
                    groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                        tracking_identifier=tracking, referenced_segment=ref, finding_type=ptype,
                        algorithm_id=algo, finding_sites=sites, measurements=[measure]))
                    continue
            # no SEG to point at (none written for it): the measurement stands on the images alone
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, finding_type=ptype, algorithm_id=algo, finding_sites=sites,
                measurements=[measure], source_images=group_source_images(headers)))
    return groups, seg_headers, covered


def write_analysis_report(result, series_by_key: Mapping[str, Series], seg_files: Mapping[str, Path], path, *,
                          series_number: int | None = None) -> Path:
    """One TID 1500 report for an AnalysisResult whose images are DICOM; returns ``path``.

    ``series_by_key``: SeriesResult.series_key -> its Series; ``seg_files``: series_key -> the DICOM
    SEG written for that series' label map (absent: areas/volumes reference the images only).
    Series that are not DICOM are left out; none at all is a ValueError."""
    import highdicom as hd

    groups, evidence, modality = [], [], ""
    headers_of: dict[str, list] = {}
    for sr in result.series.values():
        series = series_by_key.get(sr.series_key)
        if series is None or series.kind != "dicom":
            continue
        headers = source_headers(series)
        if not headers:
            continue
        headers_of[sr.title] = headers
        modality = modality or series.info.modality
        evidence.extend(headers)
        side = _side(sr.title, headers) if series.is_projection else None
        seg_path = seg_files.get(sr.series_key)
        roi, seg_headers, covered = _roi_groups(sr, series, headers, Path(seg_path) if seg_path else None, side)
        evidence.extend(seg_headers)
        score_model = result.models.get("exam") or next(iter(result.models.values()), "")
        measures = [hd.sr.Measurement(name=score_code(k), value=float(v), unit=unit_for(k),
                                      algorithm_id=algorithm_identification(score_model))
                    for k, v in sr.scores.items() if k not in covered]
        evaluations, domain_measures = _domain_items(sr.domain or {})
        if measures or evaluations or domain_measures:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{sr.title}: scores"[:64]),
                algorithm_id=algorithm_identification(score_model) if score_model else None,
                finding_sites=[finding_site(side)] if side else None, measurements=measures + domain_measures,
                qualitative_evaluations=evaluations or None, source_images=group_source_images(headers)))
        groups.extend(roi)
    if not evidence:
        raise ValueError("no DICOM image among the analysed series: nothing a DICOM report can reference")
    exam_model = result.models.get("exam", "")
    for side, score in sorted(result.exam_scores.items()):
        views = [h for title, hs in headers_of.items() for h in hs if _side(title, hs) == side]
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"breast {side}"),
            algorithm_id=algorithm_identification(exam_model) if exam_model else None,
            finding_sites=[finding_site(side)],
            measurements=[hd.sr.Measurement(name=PROBABILITY_OF_CANCER, value=float(score), unit=PROBABILITY_UNIT,
                                            algorithm_id=algorithm_identification(exam_model) if exam_model
                                            else None)],
            source_images=group_source_images(views) or None))
    unique = list({str(d.SOPInstanceUID): d for d in evidence}.values())
    # Image Library (TID 1600) entries for projection images only (a mammogram's view and laterality);
    # a CT's hundreds of slices would multiply the report's size and build time for descriptors the
    # images themselves carry; they stay referenced as evidence and as the groups' source images.
    images = [d for d in unique if str(d.SOPClassUID) not in _seg.SEG_SOP_CLASSES
              and "ImagePositionPatient" not in d]
    try:
        report = hd.sr.MeasurementReport(
            observation_context=observation_context(), procedure_reported=procedure_code(modality),
            imaging_measurements=groups, referenced_images=images or None)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"cannot build the analysis report: {describe(exc)}") from exc
    conform_segment_references(report)
    if series_number is None:
        first = next((series_by_key[sr.series_key] for sr in result.series.values()
                      if getattr(series_by_key.get(sr.series_key), "kind", "") == "dicom"), None)
        series_number = 3000 + int(first.info.series_number or 0) if first is not None else 3000
    return write_report(report, unique, path, series_description="Lightbox AI analysis report",
                        series_number=series_number)


# -- reading it back --------------------------------------------------------------------
IMAGING_MEASUREMENTS, MEASUREMENT_GROUP, TRACKING_ID = "126010", "125007", "112039"
ALGORITHM_NAME, ALGORITHM_VERSION = "111001", "111003"


def _concept(item) -> tuple[str, str, str]:
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return "", "", ""
    c = seq[0]
    return (str(c.get("CodeValue", "") or c.get("LongCodeValue", "") or ""), str(c.get("CodingSchemeDesignator", "")),
            str(c.get("CodeMeaning", "")))


def _children(item) -> list:
    return list(item.get("ContentSequence") or [])


def _algorithm_of(container) -> str:
    """"name version" of the nearest Algorithm Name/Version items under a content item."""
    level = [container]
    while level:
        name = version = ""
        for item in level:
            for child in _children(item):
                code = _concept(child)[0]
                if code == ALGORITHM_NAME and not name:
                    name = str(child.get("TextValue", ""))
                elif code == ALGORITHM_VERSION and not version:
                    version = str(child.get("TextValue", ""))
        if name:
            return f"{name} {version}".strip() if version and version != "unknown" else name
        level = [c for item in level for c in _children(item)]
    return ""


def _groups(ds) -> list:
    """The Measurement Group containers of a TID 1500 document (pydicom datasets, not copied)."""
    for item in _children(ds):
        if _concept(item)[0] == IMAGING_MEASUREMENTS:
            return [g for g in _children(item) if _concept(g)[0] == MEASUREMENT_GROUP]
    raise ValueError("no Imaging Measurements container: not a TID 1500 measurement report")


def _number(item) -> float | None:
    measured = item.get("MeasuredValueSequence")
    value = measured[0].get("NumericValue") if measured else None
    return None if value is None or value == "" else float(value)  # no value: nothing measured


def _score_name(code: str, scheme: str, meaning: str) -> str:
    if (code, scheme) == (PROBABILITY_OF_CANCER.value, "DCM"):
        return "malignancy"
    return meaning


def read_analysis_report(path) -> dict:
    """Our (or any TID 1500) analysis report back as {"models": [...], "exam_scores": {side: p},
    "series": {title: {"scores", "areas", "volumes", "domain", "model", "images", "segmentation"}}},
    the values exactly as written. Titles come from the tracking identifiers ("RCC: scores").

    Walks the content tree with pydicom (no copies): a 300-slice CT's report reads in well under
    a second, where building highdicom's template objects takes seconds."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - one line naming the file
        raise ValueError(f"{path}: not readable as DICOM ({describe(exc)})") from exc
    if str(ds.get("SOPClassUID", "")) not in SR_SOP_CLASSES:
        raise ValueError(f"{path}: not a DICOM Structured Report (SOP class {ds.get('SOPClassUID', 'missing')})")
    try:
        return _read_groups(_groups(ds))
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:  # a damaged tree: one line
        raise ValueError(f"{path}: {describe(exc) if not isinstance(exc, ValueError) else exc}") from exc


def _read_groups(groups) -> dict:
    out: dict = {"models": [], "exam_scores": {}, "series": {}}
    for group in groups:
        children = _children(group)
        ident = next((str(c.get("TextValue", "")) for c in children if _concept(c)[0] == TRACKING_ID), "")
        model = _algorithm_of(group)
        if model and model not in out["models"]:
            out["models"].append(model)
        numbers = [(_concept(c), _number(c)) for c in children if c.get("ValueType") == "NUM"]
        numbers = [(concept, value) for concept, value in numbers if value is not None]
        if ident.startswith("breast ") and len(ident) == 8:
            for _, value in numbers:
                out["exam_scores"][ident[-1]] = value
            continue
        title, _, what = ident.rpartition(": ")
        title = title or ident
        e = out["series"].setdefault(title, {"scores": {}, "areas": {}, "volumes": {}, "domain": {},
                                             "model": "", "images": [], "segmentation": {}})
        for c in children:
            if c.get("ValueType") != "IMAGE":
                continue
            for ref in c.get("ReferencedSOPSequence") or []:
                uid = str(ref.get("ReferencedSOPInstanceUID", ""))
                if str(ref.get("ReferencedSOPClassUID", "")) in _seg.SEG_SOP_CLASSES:
                    e["segmentation"][what] = uid
                elif uid and uid not in e["images"]:
                    e["images"].append(uid)
        if what == "scores":
            e["model"] = e["model"] or model
            for (code, scheme, meaning), value in numbers:
                if scheme == LIGHTBOX_SCHEME and code in (DOMAIN_SCORE.value, DOMAIN_THRESHOLD.value):
                    e["domain"]["score" if code == DOMAIN_SCORE.value else "threshold"] = value
                else:
                    e["scores"][_score_name(code, scheme, meaning)] = value
            for c in children:
                if c.get("ValueType") == "CODE" and _concept(c)[:2] == (IN_DOMAIN.value, LIGHTBOX_SCHEME):
                    e["domain"]["in_domain"] = str(c.ConceptCodeSequence[0].CodeValue) == YES.value
            continue
        for (code, scheme, _), value in numbers:
            if (code, scheme) == (AREA.value, "SCT"):
                e["areas"][what] = value
                e["scores"]["lesion area mm2"] = e["scores"].get("lesion area mm2", 0.0) + value
            elif (code, scheme) == (VOLUME.value, "SCT"):
                e["volumes"][what] = value
                e["scores"][f"{what} mL"] = value
    return out


def report_summary(ds) -> dict:
    """``{"kind": "report", "references": [series UIDs], "title": ...}`` of an SR header, for
    ``lightbox info --json``."""
    refs = []
    for item in ds.get("CurrentRequestedProcedureEvidenceSequence") or []:
        for s in item.get("ReferencedSeriesSequence") or []:
            refs.append(str(s.get("SeriesInstanceUID", "")))
    title = ds.get("ConceptNameCodeSequence")
    return {"kind": "report", "references": list(dict.fromkeys(u for u in refs if u)),
            "title": str(title[0].CodeMeaning) if title else ""}
