"""De-identification of DICOM for export (DICOM PS3.15 Annex E).

Implements the Basic Application Level Confidentiality Profile with the option
"Retain Longitudinal Temporal Information With Modified Dates": every date is
shifted back by a number of days that is the same for all files of one patient
(derived from the export's secret and the original PatientID), so intervals
between studies survive. The per-attribute actions come from ``deid_table``
(Table E.1-1, "Basic Prof." column; its docstring names the source).

How the table's actions are applied here:

* ``X`` remove; ``Z`` zero length; ``D`` dummy value of the element's VR;
  ``U`` a new UID, the same for the same input UID within one ``Deidentifier``
  (keyed hash -> ``2.25.<int>``); ``K`` (and attributes not in the table) keep.
* Compound actions take the choice that keeps the object valid without keeping
  data: D when the object's IOD needs the attribute with a value (Type 1), Z
  when it needs it present (Type 2), from the standard's tables highdicom ships
  (``required_types``); otherwise ``Z/D`` -> D, ``X/Z`` -> Z, ``X/D`` -> D,
  ``X/Z/D`` -> Z. ``X/Z/U*`` -> keep the sequence and de-identify its items
  (their UIDs are U themselves).
* Dates and date-times (DA, DT) that are kept, dummied or zeroed by the basic
  profile are instead shifted (the option's "C"); the one exception is
  Patient's Birth Date, which stays Z unless the policy asks for ``"shift"``
  or ``"year"``. Times (TM) keep their value when the option applies (a whole
  number of days does not move a time of day); removed ones stay removed.
* Patient's Name and Patient ID become the patient's pseudonym.
* Every private element (and private creator) is removed, as are group 50xx
  (curves) and all of group 60xx (overlays, stricter than the table, which lists
  only 60xx,3000 / 60xx,4000), and group lengths. Sequences are walked
  recursively with the same rules.
* Pixel data is copied byte for byte. Burned-in text cannot be removed here:
  ``BurnedInAnnotation == "YES"`` raises ``DeidError`` naming the file unless
  ``DeidPolicy.allow_burned_in``; when the attribute is missing on a modality
  that often carries burned-in text (US, SC, OT, ...) a ``BurnedInWarning`` is
  issued.

Free text in attributes the profile keeps (the standard's accepted risk) is not
inspected; the "Clean Descriptors" option is not implemented.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import os
import re
import secrets
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from ..atomic import replacing, write_bytes
from .deid_table import BASIC_PROFILE, BASIC_PROFILE_MASKED

BIRTH_DATE = 0x00100030
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
BURNED_IN_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "GM", "SM", "DOC", "IVUS", "OP"})
DUMMY_TEXT = "ANONYMIZED"
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.1"

RESOLVE = {"Z/D": "D", "X/Z": "Z", "X/D": "D", "X/Z/D": "Z", "X/Z/U*": "K"}


class DeidError(ValueError):
    """A file that cannot be de-identified safely; the message names it and says why."""


class BurnedInWarning(UserWarning):
    """A file may carry identifying text in its pixels (nothing here removes it)."""


@dataclass
class DeidPolicy:
    """How one export is de-identified.

    secret: key for UIDs, pseudonyms and date shifts; a random one per export
        unless given (give the same secret to make two exports consistent).
    min_shift_days / max_shift_days: a patient's dates move back by a number of
        days in [min, max] (derived from the secret and the original PatientID).
    keep_mapping: remember original -> new identifiers so ``mapping()`` can be
        written to a separate (itself confidential) file.
    pseudonym: "case" (CASE_0001, CASE_0002 ... in order of first appearance)
        or "hash" (a keyed hash of the PatientID, stable across exports with
        the same secret).
    birth_date: "remove" (profile: zero length), "shift" or "year" (shifted,
        then only the year kept as YYYY0101).
    allow_burned_in: export files marked BurnedInAnnotation=YES anyway.
    """

    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    min_shift_days: int = 30
    max_shift_days: int = 3650
    keep_mapping: bool = False
    pseudonym: str = "case"
    pseudonym_prefix: str = "CASE_"
    birth_date: str = "remove"
    allow_burned_in: bool = False

    def __post_init__(self):
        if isinstance(self.secret, str):
            self.secret = self.secret.encode()
        if self.pseudonym not in ("case", "hash"):
            raise ValueError(f"pseudonym must be 'case' or 'hash', not {self.pseudonym!r}")
        if self.birth_date not in ("remove", "shift", "year"):
            raise ValueError(f"birth_date must be 'remove', 'shift' or 'year', not {self.birth_date!r}")
        if not 0 < self.min_shift_days <= self.max_shift_days:
            raise ValueError("need 0 < min_shift_days <= max_shift_days")


def profile_action(tag: int) -> str | None:
    """The basic profile's action for a tag (None: not listed, i.e. keep)."""
    action = BASIC_PROFILE.get(int(tag))
    if action is not None:
        return action
    group, elem = int(tag) >> 16, int(tag) & 0xFFFF
    for g, e, gm, em, act in BASIC_PROFILE_MASKED:
        if (group & gm) == g and (elem & em) == e:
            return act
    return None


@lru_cache(maxsize=64)
def _iod_table(sop_class_uid: str) -> tuple[tuple[str, str, str], ...]:
    """(module usage M/C/U, keyword, type 1/1C/2/2C/3) of each top-level attribute of the IOD of
    ``sop_class_uid``, from the standard's tables that highdicom ships; () for a SOP class they lack."""
    try:
        from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map

        iod = get_sop_class_iod_map().get(str(sop_class_uid))
        modules = get_iod_module_map().get(iod, []) if iod else []
        attributes = get_module_attribute_map()
    except (ImportError, OSError, ValueError):  # tables unavailable: fall back to the fixed choices
        return ()
    return tuple((str(m.get("usage", "")), a["keyword"], str(a["type"]))
                 for m in modules for a in attributes.get(m["key"], []) if not a["path"])


def required_types(sop_class_uid: str) -> dict[str, str]:
    """Top-level keyword -> "1" (must have a value) or "2" (must be present) in the IOD, the
    strictest over its modules (conditional types count as their base type)."""
    types: dict[str, str] = {}
    for _usage, keyword, kind in _iod_table(sop_class_uid):
        if kind[:1] in ("1", "2") and types.get(keyword) != "1":
            types[keyword] = kind[:1]
    return types


def always_type2(sop_class_uid: str) -> list[str]:
    """Top-level keywords every instance of the IOD carries, possibly empty: Type 2 (not 2C) in its
    mandatory modules. Files from real archives often lack some; our copies get them empty."""
    found = [keyword for usage, keyword, kind in _iod_table(sop_class_uid) if usage == "M" and kind == "2"]
    return list(dict.fromkeys(found))


def _fill_type2(ds: Dataset) -> None:
    for keyword in always_type2(str(ds.get("SOPClassUID", ""))):
        if keyword not in ds:
            tag = pydicom.datadict.tag_for_keyword(keyword)
            if tag is not None:
                vr = pydicom.datadict.dictionary_VR(tag)
                ds.add(DataElement(tag, vr, Sequence() if vr == "SQ" else None))


def resolve(action: str, required: str | None) -> str:
    """One action from a compound one (PS3.15 E.1: "X unless Z or D is needed to keep the IOD
    conformant"): a dummy for an attribute the IOD needs with a value (Type 1), zero length for one
    it needs present (Type 2), else the fixed choice in RESOLVE."""
    if action not in RESOLVE or action == "X/Z/U*":
        return RESOLVE.get(action, action)
    options = action.split("/")
    if required == "1" and "D" in options:
        return "D"
    if required in ("1", "2") and "Z" in options:
        return "Z"
    if required == "2":
        return "D"
    return RESOLVE[action]


def _dummy(vr: str):
    if vr in ("SQ",):
        return []
    if vr in ("DS", "IS"):
        return "0"
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
        return 0
    if vr == "AS":
        return "000Y"
    if vr == "DA":
        return "19000101"
    if vr == "TM":
        return "000000"
    if vr == "DT":
        return "19000101000000"
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return b""
    if vr == "CS":
        return DUMMY_TEXT[:16]
    return DUMMY_TEXT


class Deidentifier:
    """Applies one DeidPolicy to any number of datasets, consistently."""

    def __init__(self, policy: DeidPolicy | None = None):
        self.policy = policy or DeidPolicy()
        self._pseudonyms: dict[str, str] = {}
        self._uids: dict[str, str] = {}
        self._shifts: dict[str, int] = {}

    # -- keyed derivations ---------------------------------------------------
    def _mac(self, kind: str, value: str) -> bytes:
        return hmac.new(self.policy.secret, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, uid: str) -> str:
        """The replacement for ``uid``: the same input always gives the same 2.25.<int> UID."""
        uid = str(uid).strip().rstrip("\0")
        if not uid:
            return ""
        new = "2.25." + str(int.from_bytes(self._mac("uid", uid)[:16], "big"))
        if self.policy.keep_mapping:
            self._uids[uid] = new
        return new

    def pseudonym(self, patient_id: str) -> str:
        """The patient's pseudonym (used for both PatientName and PatientID)."""
        patient_id = str(patient_id).strip()
        if patient_id in self._pseudonyms:
            return self._pseudonyms[patient_id]
        if self.policy.pseudonym == "case":
            name = f"{self.policy.pseudonym_prefix}{len(self._pseudonyms) + 1:04d}"
        else:
            name = "ANON_" + self._mac("patient", patient_id)[:6].hex().upper()
        self._pseudonyms[patient_id] = name
        return name

    def date_shift(self, patient_id: str) -> int:
        """Days added to every date of this patient (negative: dates move back)."""
        patient_id = str(patient_id).strip()
        lo, hi = self.policy.min_shift_days, self.policy.max_shift_days
        n = int.from_bytes(self._mac("shift", patient_id)[:8], "big") % (hi - lo + 1)
        days = -(lo + n)
        if self.policy.keep_mapping:
            self._shifts[patient_id] = days
        return days

    def mapping(self) -> dict:
        """Original -> new identifiers seen so far; empty unless ``keep_mapping``.

        The mapping re-identifies the export: store it apart from the data.
        """
        if not self.policy.keep_mapping:
            return {}
        return {"patients": {k: {"pseudonym": v, "date_shift_days": self.date_shift(k)}
                             for k, v in self._pseudonyms.items()},
                "uids": dict(self._uids)}

    def write_mapping(self, path) -> Path | None:
        """Write ``mapping()`` as JSON (atomically), readable by its owner only: it re-identifies the
        patients. Does nothing without ``keep_mapping``."""
        if not self.policy.keep_mapping:
            return None
        return write_bytes(Path(path), json.dumps(self.mapping(), indent=1).encode(), mode=0o600)

    def safe_description(self, info, kind: str = "labels") -> str:
        """A NIfTI description for ``info`` (SourceInfo) that holds only the remapped series UID."""
        return f"{kind} {self.uid(info.series_uid)}" if info.series_uid else kind

    # -- datasets ----------------------------------------------------------------
    def dataset(self, ds: Dataset, source: str | os.PathLike | None = None) -> Dataset:
        """A new, de-identified copy of ``ds`` (``ds`` is not changed).

        ``source`` names the file in errors and warnings.
        """
        where = str(source) if source is not None else str(getattr(ds, "filename", None) or "dataset")
        burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
        if burned == "YES" and not self.policy.allow_burned_in:
            raise DeidError(f"{where}: BurnedInAnnotation is YES: the pixels carry text (possibly the "
                            "patient's name) that de-identification cannot remove; leave this file out "
                            "or allow burned-in annotation explicitly")
        modality = str(ds.get("Modality", "") or "").strip().upper()
        if not burned and modality in BURNED_IN_MODALITIES:
            warnings.warn(f"{where}: modality {modality} without BurnedInAnnotation: the pixels may "
                          "carry identifying text that is not removed", BurnedInWarning, stacklevel=2)
        patient_id = str(ds.get("PatientID", "") or "").strip()
        shift = self.date_shift(patient_id)
        pseudonym = self.pseudonym(patient_id)
        try:
            out = self._walk(ds, shift, pseudonym, required_types(str(ds.get("SOPClassUID", ""))))
        except (ValueError, TypeError, KeyError) as exc:  # a value pydicom cannot parse
            raise DeidError(f"{where}: cannot de-identify: {exc}") from exc
        _fill_type2(out)
        out.PatientIdentityRemoved = "YES"
        out.LongitudinalTemporalInformationModified = "MODIFIED"
        out.DeidentificationMethod = "Lightbox: PS3.15 E.1 Basic Profile, Retain Long. Modified Dates"
        codes = []
        for value, meaning in (("113100", "Basic Application Confidentiality Profile"),
                               ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")):
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            codes.append(item)
        out.DeidentificationMethodCodeSequence = codes
        if getattr(ds, "file_meta", None) is not None:
            meta = FileMetaDataset()
            old = ds.file_meta
            if "TransferSyntaxUID" in old:
                meta.TransferSyntaxUID = old.TransferSyntaxUID
            sop_class = old.get("MediaStorageSOPClassUID") or ds.get("SOPClassUID")
            if sop_class:
                meta.MediaStorageSOPClassUID = sop_class
            sop = ds.get("SOPInstanceUID") or old.get("MediaStorageSOPInstanceUID")
            if sop:
                meta.MediaStorageSOPInstanceUID = UID(self.uid(sop))
            meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
            meta.ImplementationVersionName = "LIGHTBOX_DEID"
            out.file_meta = meta
        return out

    def _walk(self, ds: Dataset, shift: int, pseudonym: str, required: dict[str, str] | None = None) -> Dataset:
        """``required``: the IOD's Type 1/2 keywords at this level (top level only)."""
        out = Dataset()
        for elem in ds:
            tag = int(elem.tag)
            if elem.tag.is_private or (tag & 0xFFFF) == 0 or (tag >> 16) & 0xFF00 in (0x5000, 0x6000):
                continue  # private data, group lengths, curves, overlays
            new = self._element(elem, shift, pseudonym, (required or {}).get(elem.keyword))
            if new is not None:
                out.add(new)
        return out

    def _element(self, elem: DataElement, shift: int, pseudonym: str, required: str | None = None
                 ) -> DataElement | None:
        tag, vr = int(elem.tag), elem.VR
        action = profile_action(tag)
        action = resolve(action, required) if action else "K"
        if tag in (PATIENT_NAME, PATIENT_ID):
            return DataElement(tag, vr, pseudonym)
        if tag == BIRTH_DATE:
            if self.policy.birth_date == "remove" or not elem.value:
                return DataElement(tag, vr, "")
            shifted = _shift_da(str(elem.value), shift)
            if self.policy.birth_date == "year" and shifted:
                shifted = shifted[:4] + "0101"
            return DataElement(tag, vr, shifted)
        if action == "X" or (vr == "UN" and action != "K"):
            return None  # an unparsed (UN) value cannot be blanked or remapped reliably
        if vr == "SQ":
            if action == "Z":
                return DataElement(tag, vr, Sequence())
            # K, D, U on a sequence: keep its structure, de-identify every item
            return DataElement(tag, vr, Sequence([self._walk(item, shift, pseudonym)
                                                  for item in elem.value]))
        if vr in ("DA", "DT"):  # Retain Longitudinal ... With Modified Dates: shift, do not blank
            return DataElement(tag, vr, _shift_values(elem.value, shift, _shift_da if vr == "DA" else _shift_dt))
        if vr == "TM" and action in ("Z", "D"):
            return DataElement(tag, vr, elem.value)  # same option: times stay; whole days moved dates
        if action == "U":
            if elem.value is None or elem.value == "":
                return DataElement(tag, vr, elem.value)
            values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
            mapped = [self.uid(v) for v in values]
            return DataElement(tag, vr, mapped if len(mapped) > 1 else mapped[0])
        if action == "Z":
            return DataElement(tag, vr, None if vr not in ("OB", "OW", "UN") else b"")
        if action == "D":
            return DataElement(tag, vr, _dummy(vr))
        return DataElement(tag, vr, elem.value)  # K / not listed


_DATE = re.compile(r"^(\d{8})(.*)$")


def _shift_da(value: str, days: int) -> str:
    value = value.strip()
    m = _DATE.match(value)
    if not m:
        return ""  # unparseable date: nothing safe to keep
    try:
        d = _dt.datetime.strptime(m.group(1), "%Y%m%d").date() + _dt.timedelta(days=days)
    except ValueError:
        return ""
    return d.strftime("%Y%m%d")


def _shift_dt(value: str, days: int) -> str:
    value = value.strip()
    m = _DATE.match(value)
    if not m:
        return ""  # year-only or malformed: drop
    date = _shift_da(m.group(1), days)
    if not date:
        return ""
    rest = re.split(r"[+-]", m.group(2), maxsplit=1)[0]  # time kept, UTC offset dropped (it locates)
    return date + rest


def _shift_values(value, days: int, fn):
    if value is None or value == "":
        return value
    if isinstance(value, (list, pydicom.multival.MultiValue)):
        return [fn(str(v), days) for v in value]
    return fn(str(value), days)


def deidentified_uid(uid: str, deidentifier: Deidentifier) -> str:
    """The UID that an export by ``deidentifier`` writes in place of ``uid``."""
    return deidentifier.uid(uid)


def safe_description(info, deidentifier: Deidentifier, kind: str = "labels") -> str:
    """A NIfTI description free of PHI: ``kind`` and the remapped series UID of ``info``."""
    return deidentifier.safe_description(info, kind)


def deidentify_file(src, dst, deidentifier: Deidentifier) -> Path:
    """Read ``src``, de-identify it and write ``dst`` atomically (temp file + rename).

    The transfer syntax and pixel data bytes are kept. Raises DeidError naming
    ``src`` when it cannot be read or must not be exported.
    """
    src, dst = Path(src), Path(dst)
    try:
        ds = pydicom.dcmread(src)
        ds.remove_private_tags()  # early, so unreadable private values never stop an export
    except Exception as exc:
        raise DeidError(f"{src}: cannot read as DICOM ({exc})") from exc
    out = deidentifier.dataset(ds, source=src)
    if not out.get("SOPClassUID") or not out.get("SOPInstanceUID"):
        raise DeidError(f"{src}: has no SOP Class/Instance UID, so it is not an exportable DICOM instance")
    meta = getattr(out, "file_meta", None) or FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    out.file_meta = meta
    ts = UID(out.file_meta.TransferSyntaxUID)
    out.preamble = b"\0" * 128
    out.set_original_encoding(ts.is_implicit_VR, ts.is_little_endian,
                              getattr(ds, "original_character_set", None) or "ISO_IR 6")
    try:
        with replacing(dst) as tmp:
            out.save_as(tmp, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise DeidError(f"{src}: cannot write the de-identified copy ({exc})") from exc
    return dst
