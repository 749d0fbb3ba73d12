"""Header-only summaries of what a scan found (for `lightbox info` and the study browser)."""
from __future__ import annotations

import numpy as np

from ..errors import describe as describe_exc
from ..geometry import orientation_code, plane_name
from ..mammo import four_view, is_mammo_study
from ..study import ScanResult, Series, Study
from . import itk
from .dicom import plan_series


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
    if series.info.view_position or series.info.laterality:
        out["view"] = {"laterality": series.info.laterality, "view_position": series.info.view_position}
    if series.kind == "non-image":
        return out
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


def study_summary(study: Study) -> dict:
    out = {
        "uid": study.uid,
        "date": study.date,
        "description": study.description,
        "accession": study.accession,
        "series": [series_summary(se) for se in study.series],
    }
    if is_mammo_study(study):
        out["mammo_views"] = {v: (s.key if s else None) for v, s in four_view(study).items()}
    return out


def scan_summary(result: ScanResult) -> dict:
    return {
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
