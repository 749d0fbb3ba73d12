"""Header-only summaries of what a scan found (for `lightbox info` and the study browser)."""
from __future__ import annotations

import numpy as np
import pydicom

from ..errors import describe as describe_exc
from ..geometry import orientation_code, plane_name
from ..mammo import four_view, is_mammo_study
from ..mammo_exams import exams_summary
from ..mammo_views import identify_series
from ..study import ScanResult, Series, Study
from . import itk
from .dicom import plan_series


def _view(series: Series) -> dict:
    """{'view': laterality, view position, name and where they were read} for a mammogram, found from
    whatever its file carries (tags, view code, PatientOrientation, IDs, file name)."""
    view = {"laterality": series.info.laterality, "view_position": series.info.view_position}
    if series.kind == "dicom" and series.info.modality.upper() == "MG":
        vid = identify_series(series)
        view.update(laterality=vid.laterality or view["laterality"], view_position=vid.view or view["view_position"],
                    name=vid.label, source=vid.why())
    return {"view": view} if view["laterality"] or view["view_position"] else {}


def series_summary(series: Series) -> dict:
    """Dimensions (x, y, z), spacing (x, y, z) mm, origin, direction and problems, without pixels."""
    out = {
        "uid": series.uid,
        "part": series.part,
        "number": series.info.series_number,
        "modality": series.info.modality,
        "description": series.info.series_description,
        "kind": series.kind,
        "files": len(series.instances) if series.kind != "file" else 1,
        "problems": list(series.problems),
    }
    if series.info.view_position or series.info.laterality or series.info.modality.upper() == "MG":
        out.update(_view(series))
    if series.kind == "non-image":
        out.update(_segmentation(series) or _derived(series))
        return out
    derived = _derived(series)  # a Parametric Map is an image too: geometry below as for any image
    out.update(derived)
    try:
        if series.kind == "file":
            geo = itk.read_header(series.path)
            shape, spacing, origin, direction = geo["shape"], geo["spacing"], geo["origin"], geo["direction"]
        else:
            plan = plan_series(series)
            shape, spacing, origin, direction = plan.shape, plan.spacing, plan.origin, plan.direction
            out["problems"] += plan.problems
    except Exception as exc:  # report, never crash a listing
        out["problems"].append(f"geometry unavailable ({describe_exc(exc)})")
        return out
    out.update({
        "dimensions": [int(v) for v in shape[::-1]],
        "spacing": [round(float(v), 6) for v in np.asarray(spacing)[::-1]],
        "origin": [round(float(v), 4) for v in origin],
        "direction": [round(float(v), 6) for v in np.asarray(direction)[:, ::-1].ravel()],
        "orientation": "projection" if series.is_projection else plane_name(direction),
        "orientation_code": orientation_code(direction),
    })
    return out


def _segmentation(series: Series) -> dict:
    """kind "segmentation" with the series it references and its segment names, for a SEG or
    RTSTRUCT (one header read); {} for any other non-image object or an unreadable header."""
    from .label_files import RTSTRUCT_SOP_CLASS, SEG_SOP_CLASSES, segmentation_summary

    first = series.instances[0] if series.instances else None
    if first is None or first.sop_class not in SEG_SOP_CLASSES | {RTSTRUCT_SOP_CLASS}:
        return {}
    try:
        ds = pydicom.dcmread(first.path, stop_before_pixels=True, force=True)  # the scan vouched for it
        summary = segmentation_summary(ds)
    except Exception as exc:  # report, never crash a listing
        return {"problems": list(series.problems) + [f"{first.path}: segmentation header unreadable "
                                                      f"({describe_exc(exc)})"]}
    summary["problems"] = [p for p in series.problems if "not an image to display" not in p]
    return summary


def _derived(series: Series) -> dict:
    """kind "parametric-map" (with the maps' names and model) or "report" (a DICOM SR), with the
    series it references, from one header; {} for anything else or an unreadable header."""
    from ..export.dicom_pm import PM_SOP_CLASS, parametric_map_summary
    from ..export.dicom_sr import SR_SOP_CLASSES, report_summary

    first = series.instances[0] if series.instances else None
    if first is None or first.sop_class not in SR_SOP_CLASSES | {PM_SOP_CLASS}:
        return {}
    try:
        ds = pydicom.dcmread(first.path, stop_before_pixels=True, force=True)
        return parametric_map_summary(ds) if first.sop_class == PM_SOP_CLASS else report_summary(ds)
    except Exception as exc:  # report, never crash a listing
        return {"problems": list(series.problems) + [f"{first.path}: header unreadable ({describe_exc(exc)})"]}


def _attach_derived(summaries: list[dict]) -> None:
    """Each image series lists the Parametric Maps and reports of the same study that reference it."""
    for key, kind, fields in (("parametric_maps", "parametric-map", ("maps", "model")), ("reports", "report", ())):
        found = [s for s in summaries if s.get("kind") == kind]
        for s in summaries:
            if s.get("kind") in ("segmentation", "parametric-map", "report"):
                continue
            mine = [{"uid": d["uid"], "description": d["description"], **{f: d.get(f) for f in fields}}
                    for d in found if s["uid"] in d.get("references", [])]
            if mine:
                s[key] = mine


def _attach_segmentations(summaries: list[dict]) -> None:
    """Each image series lists the segmentations (SEG/RTSTRUCT) of the same study that reference it."""
    segs = [s for s in summaries if s.get("kind") == "segmentation"]
    for s in summaries:
        if s.get("kind") == "segmentation":
            continue
        mine = [{"uid": g["uid"], "description": g["description"], "segments": g["segments"]}
                for g in segs if s["uid"] in g.get("references", [])]
        if mine:
            s["segmentations"] = mine


def study_summary(study: Study) -> dict:
    out = {
        "uid": study.uid,
        "date": study.date,
        "description": study.description,
        "accession": study.accession,
        "series": [series_summary(se) for se in study.series],
    }
    _attach_segmentations(out["series"])
    _attach_derived(out["series"])
    if is_mammo_study(study):
        out["mammo_views"] = {v: (s.key if s else None) for v, s in four_view(study).items()}
    return out


def scan_summary(result: ScanResult) -> dict:
    out = {
        "patients": [
            {
                "id": p.id,
                "name": p.name,
                "studies": [study_summary(st) for st in p.studies],
            }
            for p in result.patients
        ],
        "problems": [{"path": pr.path, "reason": pr.reason} for pr in result.problems],
        "ignored_files": result.ignored,
    }
    exams = exams_summary(result)  # mammograms grouped into exams across studies and IDs, with why
    if exams:
        out["mammo_exams"] = exams
    return out
