"""Write volumes and projection images as standard DICOM files (pydicom).

Used by the synthetic phantoms, the tests (any orientation, any file order,
compressed syntaxes) and exports. Geometry is written exactly as the Volume
states it: slice k sits at origin + direction[:, 0] * spacing[0] * k.
"""
from __future__ import annotations

import datetime as _dt
import random
from pathlib import Path
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

from ..geometry import plane_name
from ..volume import SourceInfo, Volume

SOP_CLASS = {
    "CT": UID("1.2.840.10008.5.1.4.1.1.2"),  # CT Image Storage
    "MR": UID("1.2.840.10008.5.1.4.1.1.4"),  # MR Image Storage
    "MG": UID("1.2.840.10008.5.1.4.1.1.1.2"),  # Digital Mammography - For Presentation
}
SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")
ENHANCED_SOP_CLASS = {
    "CT": UID("1.2.840.10008.5.1.4.1.1.2.1"),  # Enhanced CT Image Storage
    "MR": UID("1.2.840.10008.5.1.4.1.1.4.1"),  # Enhanced MR Image Storage
}
# Mammography views (ViewPosition) -> the view's code (CID 4014), by pydicom's SCT keywords.
MG_VIEW_CODES = {
    "CC": "CranioCaudal", "MLO": "MedioLateralObliqueProjection", "ML": "MedioLateralProjection",
    "LM": "Lateromedial", "XCCL": "CranioCaudalExaggeratedLaterally",
    "XCCM": "CranioCaudalExaggeratedMedially", "FB": "CaudoCranial",
}
UNCOMPRESSED = {
    UID("1.2.840.10008.1.2"),
    UID("1.2.840.10008.1.2.1"),
    UID("1.2.840.10008.1.2.2"),
}


def _ds(v: float) -> str:
    """Format a decimal string within DICOM's 16-character DS limit."""
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    return s if len(s) <= 16 else f"{v:.8g}"


def code_item(code) -> Dataset:
    """A code sequence item (Code Value, Coding Scheme Designator, Code Meaning) from a pydicom Code."""
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _iod_attributes(ds: Dataset, info: SourceInfo) -> None:
    """The modality's mandatory (Type 1) and required-but-may-be-empty (Type 2) attributes that a
    strict reader (dciodvfy) checks for and that our writers have no other reason to set: nominal
    acquisition values for the phantoms, empty where the standard allows empty."""
    modality = info.modality
    if modality in ("CT", "MR"):
        ds.PatientPosition = "HFS"  # General Series, Type 2C: required for CT and MR
        ds.AcquisitionNumber = 1
        if modality == "CT" and "BodyPartExamined" not in ds:
            ds.Laterality = ""  # Type 2C when the body part is unknown or paired
    if modality == "MR":  # MR Image module: a T1-weighted 2D spin echo
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "500"
        ds.EchoTime = "15"
        ds.EchoTrainLength = 1
    if modality == "MG":  # Mammography Image, DX Image / Detector / Positioning, Acquisition Context
        from pydicom.sr.codedict import codes

        ds.AnatomicRegionSequence = [code_item(codes.SCT.Breast)]
        ds.OrganExposed = "BREAST"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = -1 if info.photometric == "MONOCHROME2" else 1
        ds.LossyImageCompression = "00"
        ds.DetectorType = "DIRECT"
        ds.PositionerType = "MAMMOGRAPHIC"
        ds.AcquisitionContextSequence = []
        view = MG_VIEW_CODES.get(str(info.view_position or "").upper())
        if view:
            item = code_item(getattr(codes.SCT, view))
            item.ViewModifierCodeSequence = []
            ds.ViewCodeSequence = [item]


def fill_uids(info: SourceInfo) -> SourceInfo:
    """Give a SourceInfo the UIDs it lacks, so writing twice never collides."""
    from dataclasses import replace

    return replace(
        info,
        study_uid=info.study_uid or generate_uid(),
        series_uid=info.series_uid or generate_uid(),
        frame_of_reference_uid=info.frame_of_reference_uid or generate_uid(),
    )


def base_dataset(info: SourceInfo, sop_class: UID, transfer_syntax: UID = ExplicitVRLittleEndian,
                 sop_uid: str | None = None, extra: dict | None = None) -> FileDataset:
    """Patient / study / series / SOP common modules for one instance."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = UID(sop_uid or generate_uid())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian  # compressed below if asked
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
    meta.ImplementationVersionName = "LIGHTBOX_0_1"
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    now = _dt.datetime.now()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = info.patient_name or "Anonymous"
    ds.PatientID = info.patient_id or "UNKNOWN"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = info.study_uid or generate_uid()
    ds.StudyDate = info.study_date or now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = info.study_description
    ds.SeriesInstanceUID = info.series_uid or generate_uid()
    ds.SeriesNumber = info.series_number if info.series_number is not None else 1
    ds.SeriesDescription = info.series_description
    ds.Modality = info.modality or "OT"
    ds.Manufacturer = "Lightbox synthetic phantom"
    ds.FrameOfReferenceUID = info.frame_of_reference_uid or generate_uid()
    ds.PositionReferenceIndicator = ""
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    ds._lightbox_transfer_syntax = UID(transfer_syntax)  # type: ignore[attr-defined]
    return ds


def set_pixels(ds: Dataset, stored: np.ndarray, bits_stored: int | None = None,
               photometric: str = "MONOCHROME2") -> None:
    """Image Pixel module for a 2D (rows, cols) or multi-frame (frames, rows, cols) array."""
    if stored.dtype not in (np.uint8, np.uint16, np.int16):
        raise ValueError(f"stored pixels must be uint8/uint16/int16, got {stored.dtype}")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(stored.shape[-2]), int(stored.shape[-1])
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    if stored.ndim == 3:
        ds.NumberOfFrames = stored.shape[0]
    ds.PixelData = np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<"), copy=False).tobytes()


def save(ds: FileDataset, path: Path) -> Path:
    """Write the dataset, compressing to the transfer syntax chosen at creation."""
    ts = getattr(ds, "_lightbox_transfer_syntax", ExplicitVRLittleEndian)
    if ts not in UNCOMPRESSED:
        ds.compress(ts)  # pydicom encoders (RLE native; JPEG 2000 / JPEG-LS via plugins)
    elif ts != ExplicitVRLittleEndian:
        if ts == ExplicitVRBigEndian and ds.BitsAllocated > 8:  # pydicom writes pixel bytes as given
            kind = "i" if ds.PixelRepresentation else "u"
            le = np.frombuffer(ds.PixelData, dtype=f"<{kind}{ds.BitsAllocated // 8}")
            ds.PixelData = le.astype(le.dtype.newbyteorder(">")).tobytes()
        ds.file_meta.TransferSyntaxUID = ts
    path.parent.mkdir(parents=True, exist_ok=True)
    ts = UID(ds.file_meta.TransferSyntaxUID)
    ds.set_original_encoding(ts.is_implicit_VR, ts.is_little_endian, ds.original_character_set)
    ds.save_as(path, enforce_file_format=True)
    return path


def check_fits(values: np.ndarray, slope: float, intercept: float, dtype) -> None:
    """Refuse values the stored integer type cannot hold (instead of silently wrapping)."""
    info = np.iinfo(dtype)
    lo = (float(np.min(values)) - intercept) / slope
    hi = (float(np.max(values)) - intercept) / slope
    lo, hi = sorted((np.rint(lo), np.rint(hi)))
    if lo < info.min or hi > info.max:
        raise ValueError(
            f"values {np.min(values)}..{np.max(values)} do not fit {np.dtype(dtype).name} "
            f"with slope {slope} and intercept {intercept}")


def to_stored(values: np.ndarray, slope: float, intercept: float, dtype) -> np.ndarray:
    """Modality values -> stored integers (inverse of Rescale Slope/Intercept), range-checked."""
    check_fits(values, slope, intercept, dtype)
    if slope == 1 and float(intercept).is_integer() and np.issubdtype(np.asarray(values).dtype, np.integer):
        return (np.asarray(values, dtype=np.int64) - int(intercept)).astype(dtype)
    return np.rint((np.asarray(values, dtype=np.float64) - intercept) / slope).astype(dtype)


def write_series(volume: Volume, out_dir, *, slope: float = 1.0, intercept: float = 0.0,
                 stored_dtype=np.int16, bits_stored: int | None = None,
                 transfer_syntax: UID = ExplicitVRLittleEndian, file_order: str = "index",
                 seed: int = 0, slice_thickness: float | None = None,
                 extra: dict | None = None) -> list[Path]:
    """Write a Volume as one single-frame file per slice.

    file_order: 'index' names files by slice index; 'shuffled' gives random names
    and instance numbers unrelated to position (loaders must sort by geometry).
    """
    if file_order not in ("index", "shuffled"):
        raise ValueError(f"file_order must be 'index' or 'shuffled', not {file_order!r}")
    out = Path(out_dir)
    info = fill_uids(volume.info)
    sop_class = SOP_CLASS.get(info.modality, SECONDARY_CAPTURE)
    check_fits(volume.array, slope, intercept, stored_dtype)  # once; slices convert one at a time
    study_time = _dt.datetime.now().strftime("%H%M%S")
    image_type = {"axial": "AXIAL"}.get(plane_name(volume.direction), "OTHER")
    row_cos = volume.direction[:, 2]
    col_cos = volume.direction[:, 1]
    iop = [_ds(v) for v in (*row_cos, *col_cos)]
    n = volume.shape[0]
    order = list(range(n))
    rng = random.Random(seed)
    if file_order == "shuffled":
        rng.shuffle(order)
    paths = []
    for name_index, k in enumerate(order):
        ds = base_dataset(info, sop_class, transfer_syntax, extra=extra,
                          sop_uid=generate_uid(entropy_srcs=[info.series_uid, str(k)]))
        ds.StudyTime = study_time  # one time for the whole study
        ds.ImageType = ["ORIGINAL", "PRIMARY", image_type]
        ds.InstanceNumber = (name_index + 1) if file_order == "shuffled" else k + 1
        pos = volume.index_to_world([k, 0, 0])
        ds.ImagePositionPatient = [_ds(v) for v in pos]
        ds.ImageOrientationPatient = iop
        ds.PixelSpacing = [_ds(volume.spacing[1]), _ds(volume.spacing[2])]
        ds.SliceThickness = _ds(slice_thickness or volume.spacing[0])
        ds.SliceLocation = _ds(float(np.dot(pos, volume.direction[:, 0])))
        if info.modality != "MR" or slope != 1 or intercept != 0:  # the MR Image IOD has no rescale
            ds.RescaleIntercept = _ds(intercept)
            ds.RescaleSlope = _ds(slope)
        if info.modality == "CT":
            ds.RescaleType = "HU"
            ds.KVP = "120"
        if info.window:
            ds.WindowCenter, ds.WindowWidth = _ds(info.window[0]), _ds(info.window[1])
        _iod_attributes(ds, info)
        for key, value in (extra or {}).items():
            setattr(ds, key, value)  # the caller's values win over the defaults above
        set_pixels(ds, to_stored(volume.array[k], slope, intercept, stored_dtype), bits_stored,
                   info.photometric)
        fname = f"{rng.getrandbits(48):012x}.dcm" if file_order == "shuffled" else f"IM{k + 1:05d}.dcm"
        paths.append(save(ds, out / fname))
    return paths


def write_projection(image: np.ndarray, path, *, pixel_spacing: Sequence[float], info: SourceInfo,
                     stored_dtype=np.uint16, bits_stored: int | None = None,
                     transfer_syntax: UID = ExplicitVRLittleEndian, extra: dict | None = None) -> Path:
    """One 2D projection image (mammogram, radiograph): no IPP/IOP, PatientOrientation instead."""
    info = fill_uids(info)
    sop_class = SOP_CLASS.get(info.modality, SECONDARY_CAPTURE)
    ds = base_dataset(info, sop_class, transfer_syntax, extra=extra,
                      sop_uid=generate_uid(entropy_srcs=[info.series_uid, "projection"]))
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceNumber = 1
    ds.ImagerPixelSpacing = [_ds(pixel_spacing[0]), _ds(pixel_spacing[1])]
    ds.PixelSpacing = [_ds(pixel_spacing[0]), _ds(pixel_spacing[1])]
    if info.patient_orientation:
        ds.PatientOrientation = list(info.patient_orientation)
    if info.view_position:
        ds.ViewPosition = info.view_position
    if info.laterality:
        ds.ImageLaterality = info.laterality
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    if info.window:
        ds.WindowCenter, ds.WindowWidth = _ds(info.window[0]), _ds(info.window[1])
    if info.modality == "MG":
        ds.PresentationLUTShape = "IDENTITY" if info.photometric == "MONOCHROME2" else "INVERSE"
        ds.BurnedInAnnotation = "NO"
    _iod_attributes(ds, info)
    for key, value in (extra or {}).items():
        setattr(ds, key, value)  # the caller's values win over the defaults above
    set_pixels(ds, to_stored(np.asarray(image), 1.0, 0.0, stored_dtype), bits_stored, info.photometric)
    return save(ds, Path(path))



def write_enhanced(volume: Volume, path, *, slope: float = 1.0, intercept: float = 0.0,
                   stored_dtype=np.int16, bits_stored: int | None = None,
                   transfer_syntax: UID = ExplicitVRLittleEndian, frame_order: Sequence[int] | None = None,
                   extra: dict | None = None) -> Path:
    """The whole volume as one enhanced multi-frame file (per-frame plane positions).

    frame_order lists which slice each stored frame holds, to test that loaders
    sort frames by geometry rather than trusting storage order.
    """
    info = fill_uids(volume.info)
    sop_class = ENHANCED_SOP_CLASS.get(info.modality, ENHANCED_SOP_CLASS["CT"])
    ds = base_dataset(info, sop_class, transfer_syntax, extra=extra)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
    order = list(frame_order) if frame_order is not None else list(range(volume.shape[0]))
    iop = [_ds(v) for v in (*volume.direction[:, 2], *volume.direction[:, 1])]
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [_ds(volume.spacing[1]), _ds(volume.spacing[2])]
    measures.SliceThickness = _ds(volume.spacing[0])
    measures.SpacingBetweenSlices = _ds(volume.spacing[0])
    plane = Dataset()
    plane.ImageOrientationPatient = iop
    transform = Dataset()
    transform.RescaleIntercept, transform.RescaleSlope = _ds(intercept), _ds(slope)
    transform.RescaleType = "HU" if info.modality == "CT" else "US"
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [plane]
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in order:
        fg = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [_ds(v) for v in volume.index_to_world([k, 0, 0])]
        fg.PlanePositionSequence = [pos]
        content = Dataset()
        content.InStackPositionNumber = int(k) + 1
        content.StackID = "1"
        fg.FrameContentSequence = [content]
        per_frame.append(fg)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    stored = to_stored(volume.array[order], slope, intercept, stored_dtype)
    set_pixels(ds, stored, bits_stored, info.photometric)
    return save(ds, Path(path))
