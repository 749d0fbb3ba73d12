"""Which breast and which view a mammogram shows, from whatever its file carries (no Qt).

Archives and public datasets put it in different places: a modality writes ImageLaterality and
ViewPosition; some converters write only the ViewCodeSequence (SNOMED codes of DICOM CID 4014);
CBIS-DDSM writes the view into PatientOrientation ('CC', 'MLO') and the IDs
('Calc-Training_P_00042_LEFT_MLO'); INbreast names it in the file ('..._MG_R_ML_ANON.dcm', where
ML means the MLO). The first source that answers wins, in that order, and the answer keeps its
source so the browser can say "view from PatientID text".

Extra SourceInfo fields (view_code, view_modifiers, presentation_intent, image_type) are read with
getattr, so they plug in when the scan reads them and are simply absent before.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .volume import SourceInfo

# DICOM CID 4014 view codes (SNOMED CT, checked against pydicom.sr.codedict) -> ViewPosition terms
VIEW_CODES = {
    "399162004": "CC", "399368009": "MLO", "399260004": "ML", "399352003": "LM",
    "399099002": "LMO", "399192008": "XCCL", "399101009": "XCCM", "399196006": "FB",
    "399188001": "SIO", "441555000": "ISO", "399161006": "CV", "399011000": "AT",
    "399265009": "XCC",
}
# CID 4015 view modifiers that make an image an extra (not a screening) view
MODIFIER_CODES = {
    "399055006": "spot", "399163009": "magnification", "399110001": "tangential",
    "399197002": "rolled", "399226006": "rolled", "414493004": "rolled", "415670009": "rolled",
    "399209000": "implant displaced", "442581004": "nipple in profile",
}
_MEANINGS = {"cranio-caudal": "CC", "medio-lateral oblique": "MLO", "mediolateral oblique": "MLO",
             "medio-lateral": "ML", "mediolateral": "ML", "latero-medial": "LM", "lateromedial": "LM",
             "exaggerated laterally": "XCCL", "exaggerated medially": "XCCM"}
STANDARD = ("CC", "MLO")
# Digital X-Ray, Mammography and Intra-oral X-Ray Image Storage - For Processing
FOR_PROCESSING_CLASSES = {"1.2.840.10008.5.1.4.1.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.2.1",
                          "1.2.840.10008.5.1.4.1.1.1.3.1"}
# the model's two projections: which one each other view resembles
MODEL_VIEW = {"CC": "CC", "XCCL": "CC", "XCCM": "CC", "XCC": "CC", "FB": "CC", "CV": "CC",
              "MLO": "MLO", "ML": "MLO", "LM": "MLO", "LMO": "MLO", "SIO": "MLO", "ISO": "MLO", "AT": "MLO"}
_VIEWS = "XCCL|XCCM|MLO|CC|ML|LM|LMO|FB|SIO"
_LAT = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}
_PAIR = re.compile(rf"(?<![A-Z0-9])(LEFT|RIGHT|L|R)[ _\-.]*({_VIEWS})(?![A-Z0-9])")
_PAIR_REV = re.compile(rf"(?<![A-Z0-9])({_VIEWS})[ _\-.]*(LEFT|RIGHT|L|R)(?![A-Z0-9])")
_INBREAST = re.compile(r"_MG_([LR])_(CC|ML|MLO)_ANON", re.I)  # INbreast: ML in the name is the MLO
_LAT_WORD = re.compile(r"(?<![A-Z])(LEFT|RIGHT)(?![A-Z])")
_VIEW_WORD = re.compile(rf"(?<![A-Z0-9])({_VIEWS})(?![A-Z0-9])")  # 'CC12345' is an ID, not a view
_SPOT = re.compile(r"(?<![A-Z])(SPOT|MAG|MAGNIFICATION|MAGNIFIED)(?![A-Z])")
# CBIS-DDSM: crops and ROI masks share the full image's identity but are not views to read
_NOT_A_VIEW = re.compile(r"ROI MASK|CROPPED|MASK IMAGES", re.I)


@dataclass
class ViewId:
    """A mammogram's breast and view, and where each was read from."""

    laterality: str = ""  # 'R', 'L' or '' (unknown)
    view: str = ""  # ViewPosition term: CC, MLO, ML, XCCL, ... or ''
    modifiers: tuple[str, ...] = ()  # 'spot', 'magnification', ...
    sources: dict[str, str] = field(default_factory=dict)  # 'laterality'/'view' -> where it was read
    for_processing: bool = False  # PresentationIntentType FOR PROCESSING (raw detector image)
    not_a_view: str = ""  # e.g. 'ROI mask images': a derived image, never hung

    @property
    def hanging(self) -> str | None:
        """'RCC', 'LMLO', ... when this is a standard screening view; None otherwise."""
        if self.laterality in ("R", "L") and self.view in STANDARD and not self.modifiers and not self.not_a_view:
            return self.laterality + self.view
        return None

    @property
    def model_name(self) -> str | None:
        """The standard view the models treat it as ('LXCCL' -> 'LCC', 'RML' -> 'RMLO')."""
        view = MODEL_VIEW.get(self.view)
        if self.laterality not in ("R", "L") or view is None or self.not_a_view:
            return None
        return self.laterality + view

    @property
    def label(self) -> str:
        text = f"{self.laterality}{self.view}" or "?"
        return " ".join([text, *self.modifiers] + (["for processing"] if self.for_processing else []))

    def why(self) -> str:
        """'laterality from ImageLaterality, view from PatientID text'."""
        return ", ".join(f"{what} from {src}" for what, src in self.sources.items())


def _texts(info: SourceInfo, path: Path | str | None) -> list[tuple[str, str]]:
    out = [("SeriesDescription text", info.series_description), ("PatientID text", info.patient_id),
           ("PatientName text", info.patient_name), ("StudyDescription text", info.study_description)]
    name = Path(path).name if path else (Path(info.files[0]).name if info.files else "")
    out.append(("file name", name))
    return [(src, str(t or "")) for src, t in out if t]


def _code_view(info: SourceInfo) -> str:
    code = str(getattr(info, "view_code", "") or "")
    if code in VIEW_CODES:
        return VIEW_CODES[code]
    meaning = str(getattr(info, "view_meaning", "") or "").lower()
    for text, view in sorted(_MEANINGS.items(), key=lambda kv: -len(kv[0])):
        if text in meaning:
            if view == "CC" and "exaggerated" in meaning:
                return "XCC"
            return view
    return ""


def _orientation_view(info: SourceInfo) -> str:
    """CBIS-DDSM writes 'CC'/'MLO' into PatientOrientation; real direction letters tell CC (a
    left-right column axis) from MLO (a head-feet column axis)."""
    text = str(getattr(info, "orientation_text", "") or "")
    po = info.patient_orientation or (tuple(text.split("\\")) if text else None)
    if not po:
        return ""
    joined = "".join(po).upper().replace(" ", "")
    for v in ("XCCL", "XCCM", "MLO", "CC", "ML", "LM"):
        if joined == v or any(str(p).upper().strip() == v for p in po):
            return v
    if len(po) == 2 and set(str(po[0]).upper()) <= set("APLRHF") and str(po[1]):
        col = str(po[1]).upper()
        if col in ("L", "R"):
            return "CC"
        if "F" in col or "H" in col:
            return "MLO"
    return ""


def identify(info: SourceInfo, path: Path | str | None = None) -> ViewId:
    """Laterality and view in the order ImageLaterality/Laterality, ViewPosition, ViewCodeSequence,
    PatientOrientation, then series/patient/study text and the file name."""
    vid = ViewId()
    lat = (info.laterality or "").strip().upper()[:1]
    if lat in ("R", "L"):
        vid.laterality, vid.sources["laterality"] = lat, "ImageLaterality/Laterality"
    vp = (info.view_position or "").strip().upper().replace(" ", "")
    if vp in MODEL_VIEW:
        vid.view, vid.sources["view"] = vp, "ViewPosition"
    if not vid.view:
        code = _code_view(info)
        if code:
            vid.view, vid.sources["view"] = code, "ViewCodeSequence"
    mods = [MODIFIER_CODES[c] for c in getattr(info, "view_modifiers", ()) or () if c in MODIFIER_CODES]
    if not vid.view:
        ov = _orientation_view(info)
        if ov:
            vid.view, vid.sources["view"] = ov, "PatientOrientation"
    for src, text in _texts(info, path):
        if vid.laterality and vid.view:
            break
        up = text.upper()
        m = _INBREAST.search(text)
        if m:
            found_lat, found_view = m.group(1).upper(), "MLO" if m.group(2).upper() != "CC" else "CC"
            src = f"{src} (INbreast naming)"
        else:
            m = _PAIR.search(up) or _PAIR_REV.search(up)
            if m:
                a, b = m.group(1), m.group(2)
                found_lat, found_view = (_LAT[a], b) if a in _LAT else (_LAT[b], a)
            else:
                w, v = _LAT_WORD.search(up), _VIEW_WORD.search(up)
                found_lat = _LAT[w.group(1)] if w else ""
                found_view = v.group(1) if v else ""
        if found_lat and not vid.laterality:
            vid.laterality, vid.sources["laterality"] = found_lat, src
        if found_view and not vid.view:
            vid.view, vid.sources["view"] = found_view, src
    text = " ".join(t for _s, t in _texts(info, path)[:2]).upper()
    mods += ["magnification" if word.startswith("MAG") else "spot" for word in _SPOT.findall(text)]
    vid.modifiers = tuple(dict.fromkeys(mods))
    intent = str(getattr(info, "presentation_intent", "") or "").upper()
    image_type = [str(v).upper() for v in getattr(info, "image_type", ()) or ()]
    vid.for_processing = "PROCESSING" in intent or "FOR PROCESSING" in " ".join(image_type)
    m = _NOT_A_VIEW.search(info.series_description or "")
    vid.not_a_view = (info.series_description or "").strip() if m else ""
    return vid


def identify_series(series) -> ViewId:
    """identify() for a scanned Series (its first file names it when the tags do not)."""
    first = series.instances[0] if getattr(series, "instances", None) else None
    vid = identify(series.info, first.path if first is not None else getattr(series, "path", None))
    if first is not None and first.sop_class in FOR_PROCESSING_CLASSES:
        vid.for_processing = True
    return vid
