"""Segmentations made by other tools, opened as a label map on an open image's grid.

One entry point, :func:`read_label_file`, takes a DICOM SEG (binary, fractional
or label map), a DICOM RT Structure Set or a NIfTI/NRRD label image and returns
an :class:`OpenedLabels`: an integer array on the given Volume's grid, one
:class:`~viewer.core.export.dicom_seg.Segment` per label value (name, colour,
codes) and notes on anything that could not be kept exactly. Why each is
matched the way it is:

* **SEG** frames are placed by the source image they reference (SOP Instance
  UID + frame number), else by their plane position; never by frame order (see
  ``export.dicom_seg.read_dicom_seg``). Overlapping segments cannot share a
  label map: the later (higher-numbered) segment wins and a note says where.
* **RTSTRUCT** contours are polygons in patient millimetres. They are mapped
  through the Volume's geometry to (slice, row, column) and filled on their
  slice with the even-odd rule (inner contours are holes), sampling pixel
  centres; centres lying exactly on the contour count as inside, as in the
  mask-to-contour writers (rt-utils, OpenCV) that put the contour through the
  edge pixels' centres. Later ROIs win where ROIs overlap.
* **NIfTI/NRRD** carry no UIDs, so they are matched by geometry: the same grid
  within 1e-3 mm is taken as is, an overlapping grid is resampled nearest-
  neighbour (with a note), a disjoint one is refused. Slicer's ``.seg.nrrd``
  segment names and colours are kept.

:func:`segmentation_summary` is the header-only description ``lightbox info``
lists for a SEG/RTSTRUCT; :func:`label_files_for` finds the ones beside a series.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from ..colors import label_color
from ..errors import LoadError, describe
from ..export.dicom_seg import SEG_SOP_CLASSES, Segment, SegReadWarning, read_dicom_seg
from ..study import Series
from ..volume import Volume
from . import itk

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
GRID_TOL = 1e-3  # mm (and direction cosines): NIfTI stores float32 geometry
PLANE_TOL = 0.1  # slice fraction a contour may lie off its slice (or tilt across it)
ON_CONTOUR = 1e-3  # pixel fraction: a centre this close to the contour lies on it
MAX_LABEL = 65535


@dataclass
class OpenedLabels:
    """A label file on an image's grid: ``array`` values are ``segments``' numbers."""

    path: Path
    kind: str  # "DICOM SEG (BINARY)", "RTSTRUCT", "NIfTI", ...
    array: np.ndarray
    segments: list[Segment]
    notes: list[str] = field(default_factory=list)


# -- what a file is -----------------------------------------------------------------------
def file_kind(path) -> str:
    """'seg', 'rtstruct', 'image' (NIfTI/NRRD/MHA) or '' for anything else; reads a header only."""
    if itk.is_image_file(path):
        return "image"
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=["SOPClassUID", "Modality"])
    except Exception:  # noqa: BLE001 - not DICOM at all
        return ""
    return _dicom_kind(ds)


def _dicom_kind(ds) -> str:
    sop = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "")).upper()
    if sop in SEG_SOP_CLASSES or (modality == "SEG" and not sop):
        return "seg"
    if sop == RTSTRUCT_SOP_CLASS or (modality == "RTSTRUCT" and not sop):
        return "rtstruct"
    return ""


def _rt_referenced_series(ds) -> list[str]:
    out = []
    for fr in ds.get("ReferencedFrameOfReferenceSequence") or []:
        for st in fr.get("RTReferencedStudySequence") or []:
            for se in st.get("RTReferencedSeriesSequence") or []:
                uid = str(se.get("SeriesInstanceUID", ""))
                if uid and uid not in out:
                    out.append(uid)
    return out


def _rt_frames_of_reference(ds) -> list[str]:
    uids = [str(fr.get("FrameOfReferenceUID", "")) for fr in ds.get("ReferencedFrameOfReferenceSequence") or []]
    uids += [str(r.get("ReferencedFrameOfReferenceUID", "")) for r in ds.get("StructureSetROISequence") or []]
    return list(dict.fromkeys(u for u in uids if u))


def referenced_series(ds) -> list[str]:
    """Series Instance UIDs a SEG or RTSTRUCT header says it was made on."""
    kind = _dicom_kind(ds)
    if kind == "rtstruct":
        return _rt_referenced_series(ds)
    out = [str(s.get("SeriesInstanceUID", "")) for s in ds.get("ReferencedSeriesSequence") or []]
    return list(dict.fromkeys(u for u in out if u))


def segmentation_summary(ds) -> dict:
    """``{"kind": "segmentation", "references": [series UIDs], "segments": [names]}`` of a SEG or
    RTSTRUCT header (no pixel data needed), for ``lightbox info --json``."""
    kind = _dicom_kind(ds)
    if kind == "seg":
        names = [str(s.get("SegmentLabel", "") or f"Segment {s.get('SegmentNumber', i + 1)}")
                 for i, s in enumerate(ds.get("SegmentSequence") or [])
                 if int(s.get("SegmentNumber", i + 1) or 0) > 0]  # a label map's 0 is its background
    elif kind == "rtstruct":
        names = [str(r.get("ROIName", "") or f"ROI {r.get('ROINumber', i + 1)}")
                 for i, r in enumerate(ds.get("StructureSetROISequence") or [])]
    else:
        raise ValueError(f"not a DICOM SEG or RT Structure Set (SOP class {ds.get('SOPClassUID', 'missing')})")
    return {"kind": "segmentation", "references": referenced_series(ds), "segments": names}


def label_files_for(series: Series, candidates: Iterable[Series], limit: int = 50) -> list[Path]:
    """SEG / RTSTRUCT files among the scanned ``candidates`` (non-image series of the same scan)
    whose header references ``series`` (by Series UID; an RTSTRUCT naming no series, by its
    frame of reference). Headers only; at most ``limit`` files are read."""
    out: list[Path] = []
    read = 0
    for cand in candidates:
        if cand is series or cand.kind == "file":
            continue
        for inst in cand.instances:
            if inst.sop_class and inst.sop_class not in SEG_SOP_CLASSES and inst.sop_class != RTSTRUCT_SOP_CLASS:
                continue
            if read >= limit:
                return out
            read += 1
            try:
                ds = pydicom.dcmread(inst.path, stop_before_pixels=True, force=True)
            except Exception:  # noqa: BLE001 - a damaged file is the scan's to report
                continue
            kind = _dicom_kind(ds)
            if not kind:
                continue
            refs = referenced_series(ds)
            if series.uid in refs or (kind == "rtstruct" and not refs and series.info.frame_of_reference_uid
                                      and series.info.frame_of_reference_uid in _rt_frames_of_reference(ds)):
                out.append(Path(inst.path))
    return out


# -- reading ---------------------------------------------------------------------------------
def read_label_file(path, volume: Volume, series: Series | None = None) -> OpenedLabels:
    """A SEG, RTSTRUCT or NIfTI/NRRD label file as a label map on ``volume`` (= ``series`` loaded).

    Raises LoadError naming the file and saying why it does not belong to this image."""
    path = Path(path)
    if not path.is_file():
        raise LoadError(path, "no such file")
    kind = file_kind(path)
    if kind == "image":
        return read_label_image(path, volume)
    if kind == "seg":
        return read_seg(path, volume, series)
    if kind == "rtstruct":
        return read_rtstruct(path, volume, series)
    raise LoadError(path, "not a label file: open a DICOM SEG, an RT Structure Set, or a NIfTI/NRRD label map")


def _strip(path: Path, message: str) -> str:
    return message.removeprefix(f"{path}: ")


def _check_reference(path: Path, ds, volume: Volume, series: Series | None, what: str) -> None:
    """Refuse at once, in words, a file that names other images (no shared frame of reference)."""
    refs = referenced_series(ds)
    uid = series.uid if series is not None else volume.info.series_uid
    if not refs or uid in refs:
        return
    frames = ([str(ds.get("FrameOfReferenceUID", ""))] if what == "SEG" else _rt_frames_of_reference(ds))
    ours = volume.info.frame_of_reference_uid
    if ours and ours in frames:
        return  # another series of the same patient space: placed by position
    desc = volume.info.series_description or uid
    raise LoadError(path, f"this {what} was made on series {', '.join(refs)}, not on the open series "
                          f"'{desc}' ({uid}), and shares no frame of reference with it: open that series first")


def read_seg(path, volume: Volume, series: Series | None) -> OpenedLabels:
    """A DICOM SEG (BINARY, FRACTIONAL at half the maximum, or LABELMAP) on ``volume``."""
    path = Path(path)
    if series is None or series.kind != "dicom":
        raise LoadError(path, "a DICOM SEG references DICOM images: open its DICOM series (not a NIfTI copy)")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise LoadError(path, f"cannot read ({describe(exc)})") from exc
    _check_reference(path, ds, volume, series, "SEG")
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SegReadWarning)
        try:
            array, segments = read_dicom_seg(path, volume, series)
        except ValueError as exc:
            raise LoadError(path, _strip(path, str(exc))) from exc
        except Exception as exc:  # noqa: BLE001 - a damaged SEG must not crash the viewer
            raise LoadError(path, f"cannot read the segmentation ({describe(exc)})") from exc
    notes += [_strip(path, str(w.message)) for w in caught if issubclass(w.category, SegReadWarning)]
    seg_type = str(ds.get("SegmentationType", "BINARY")).upper()
    if seg_type == "FRACTIONAL":
        notes.append(f"fractional ({ds.get('SegmentationFractionalType', 'PROBABILITY')}) segments shown "
                     "where the value is at least half the maximum")
    return OpenedLabels(path, f"DICOM SEG ({seg_type})", array, segments, notes)


# -- RTSTRUCT -------------------------------------------------------------------------------
def read_rtstruct(path, volume: Volume, series: Series | None = None) -> OpenedLabels:
    """CLOSED_PLANAR contours of an RT Structure Set filled onto ``volume``'s slices (module doc)."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # noqa: BLE001
        raise LoadError(path, f"cannot read ({describe(exc)})") from exc
    if _dicom_kind(ds) != "rtstruct":
        raise LoadError(path, "not an RT Structure Set")
    _check_reference(path, ds, volume, series, "RTSTRUCT")
    ours = volume.info.frame_of_reference_uid
    frames = _rt_frames_of_reference(ds)
    refs = referenced_series(ds)
    uid = series.uid if series is not None else volume.info.series_uid
    notes: list[str] = []
    if ours and frames and ours not in frames and uid not in refs:
        raise LoadError(path, f"its contours are in frame of reference {', '.join(frames)}, not the open "
                              f"image's ({ours}): open the series it was drawn on")
    if not ours and uid not in refs:
        notes.append("the image has no frame of reference UID: contours placed by their coordinates alone")
    names = {int(r.ROINumber): str(r.get("ROIName", "") or f"ROI {r.ROINumber}")
             for r in ds.get("StructureSetROISequence") or [] if "ROINumber" in r}
    out = np.zeros(volume.shape, np.uint8 if len(names) < 256 else np.uint16)
    segments: list[Segment] = []
    used: set[str] = set()
    overlap = 0
    for item in ds.get("ROIContourSequence") or []:
        number = int(item.get("ReferencedROINumber", 0) or 0)
        name = names.get(number, f"ROI {number}")
        contours = list(item.get("ContourSequence") or [])
        masks: dict[int, list[np.ndarray]] = {}
        skipped = {"not closed planar": 0, "off the image's slices": 0, "not parallel to the slices": 0}
        for c in contours:
            why = _add_contour(c, volume, masks)
            if why:
                skipped[why] += 1
        for why, n in skipped.items():
            if n:
                notes.append(f"ROI '{name}': {n} contour(s) {why} left out")
        masks = {z: inside | edge for z, (inside, edge) in masks.items()}
        if not any(m.any() for m in masks.values()):
            if contours:
                notes.append(f"ROI '{name}' covers no voxel of this image: not listed")
            continue
        value = len(segments) + 1
        if value > MAX_LABEL:
            notes.append(f"more than {MAX_LABEL} ROIs: the rest left out")
            break
        base, k = name, 2
        while name.lower() in used:
            name, k = f"{base} ({k})", k + 1
        used.add(name.lower())
        color = item.get("ROIDisplayColor")
        rgb = tuple(int(np.clip(float(v), 0, 255)) for v in color[:3]) if color and len(color) >= 3 \
            else label_color(value)
        for z, m in masks.items():
            overlap += int(np.count_nonzero(out[z][m]))
            out[z][m] = value
        segments.append(Segment(value, name, rgb, algorithm_type=_rt_algorithm(ds, number),
                                algorithm_name=str(ds.get("Manufacturer", "") or "")))
    if not segments:
        raise LoadError(path, "none of its ROIs has a closed contour on this image's slices")
    if overlap:
        notes.append(f"ROIs overlap on {overlap} voxel(s); a label map keeps the later ROI there")
    return OpenedLabels(path, "RTSTRUCT", out, segments, notes)


def _rt_algorithm(ds, number: int) -> str:
    for r in ds.get("StructureSetROISequence") or []:
        if int(r.get("ROINumber", -1) or -1) == number:
            alg = str(r.get("ROIGenerationAlgorithm", "") or "").upper()
            return alg if alg in ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL") else "MANUAL"
    return "MANUAL"


def _add_contour(c, volume: Volume, masks: dict[int, list[np.ndarray]]) -> str:
    """Add one contour to its slice: its interior XORed into the slice's (even-odd across the
    ROI's contours: inner contours are holes), its on-contour centres ORed in. '' or why not."""
    if str(c.get("ContourGeometricType", "")).upper() != "CLOSED_PLANAR":
        return "not closed planar"
    pts = _contour_points(c)
    if pts is None or len(pts) < 3:
        return "not closed planar"
    idx = volume.world_to_index(pts)  # (z, y, x) continuous
    zs = idx[:, 0]
    z = int(np.rint(zs.mean()))
    if np.ptp(zs) > 2 * PLANE_TOL:
        return "not parallel to the slices"
    if not 0 <= z < volume.shape[0] or abs(zs.mean() - z) > PLANE_TOL:
        return "off the image's slices"
    inside = _even_odd(volume.shape[1:], idx[:, 1], idx[:, 2])
    edge = _on_contour(volume.shape[1:], idx[:, 1], idx[:, 2])
    if z in masks:
        masks[z][0] ^= inside
        masks[z][1] |= edge
    else:
        masks[z] = [inside, edge]
    return ""


def _contour_points(c) -> np.ndarray | None:
    """ContourData as (n, 3) mm. Parsed from the raw bytes when pydicom has not converted them yet:
    pydicom's DS conversion costs ~5 ms per 300-point contour, seconds for a whole structure set."""
    if "ContourData" not in c:
        return None
    elem = c.get_item(0x30060050)
    raw = getattr(elem, "value", None)
    try:
        if isinstance(raw, (bytes, bytearray)):
            values = np.array(bytes(raw).replace(b"\x00", b" ").split(b"\\")).astype(float)
        else:
            data = c.ContourData
            values = np.asarray([float(v) for v in (data if isinstance(data, (list, tuple, pydicom.multival.MultiValue))
                                                   else [data])], float)
    except (ValueError, TypeError):
        return None
    if not np.all(np.isfinite(values)):
        return None
    return values[: len(values) // 3 * 3].reshape(-1, 3)


def fill_polygon(shape, rows, cols) -> np.ndarray:
    """Pixels of a (rows, cols) image whose centres are inside a closed polygon by the even-odd
    rule (half-open across each crossing), plus centres lying on the polygon itself."""
    return _even_odd(shape, rows, cols) | _on_contour(shape, rows, cols)


def _even_odd(shape, rows, cols) -> np.ndarray:
    """Centres inside by the even-odd rule: each row's crossings (half-open in y), paired in x order."""
    ny, nx = int(shape[0]), int(shape[1])
    r0, c0 = np.asarray(rows, float), np.asarray(cols, float)
    r1, c1 = np.roll(r0, -1), np.roll(c0, -1)
    first = np.ceil(np.minimum(r0, r1))  # an edge crosses rows y with min <= y < max
    n = np.maximum(np.ceil(np.maximum(r0, r1)) - first, 0).astype(np.int64)
    mask = np.zeros((ny, nx), bool)
    if not n.sum():
        return mask
    e = np.repeat(np.arange(len(n)), n)
    y = first[e] + (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n))
    x = c0[e] + (y - r0[e]) * (c1[e] - c0[e]) / (r1[e] - r0[e])
    order = np.lexsort((x, y))  # a closed polygon crosses each row an even number of times
    y, x = y[order].reshape(-1, 2), x[order].reshape(-1, 2)
    y = y[:, 0].astype(np.int64)
    start = np.clip(np.ceil(x[:, 0]), 0, nx).astype(np.int64)  # centres with a <= x < b
    stop = np.clip(np.ceil(x[:, 1]), 0, nx).astype(np.int64)
    keep = (y >= 0) & (y < ny) & (stop > start)
    if not keep.any():
        return mask
    y, start, stop = y[keep], start[keep], stop[keep]
    top, bottom = int(y.min()), int(y.max()) + 1  # only the rows the polygon spans
    diff = np.zeros((bottom - top, nx + 1), np.int32)
    np.add.at(diff, (y - top, start), 1)
    np.add.at(diff, (y - top, stop), -1)
    mask[top:bottom] = np.cumsum(diff[:, :nx], axis=1) > 0
    return mask


def _on_contour(shape, rows, cols) -> np.ndarray:
    """Pixel centres the polygon passes through (a mask-to-contour writer drew it through them):
    each edge is stepped along its major axis at integer positions."""
    ny, nx = int(shape[0]), int(shape[1])
    r0, c0 = np.asarray(rows, float), np.asarray(cols, float)
    r1, c1 = np.roll(r0, -1), np.roll(c0, -1)
    flat = np.abs(c1 - c0) >= np.abs(r1 - r0)  # step along columns, else along rows
    a0, a1 = np.where(flat, c0, r0), np.where(flat, c1, r1)
    b0, b1 = np.where(flat, r0, c0), np.where(flat, r1, c1)
    lo = np.ceil(np.minimum(a0, a1) - ON_CONTOUR)
    n = np.maximum(np.floor(np.maximum(a0, a1) + ON_CONTOUR) - lo + 1, 0).astype(np.int64)
    mask = np.zeros((ny, nx), bool)
    if not n.sum():
        return mask
    e = np.repeat(np.arange(len(n)), n)
    a = lo[e] + (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n))
    da = a1[e] - a0[e]
    b = b0[e] + np.where(da != 0, (a - a0[e]) / np.where(da != 0, da, 1.0), 0.0) * (b1[e] - b0[e])
    on = np.abs(b - np.rint(b)) < ON_CONTOUR
    yi = np.rint(np.where(flat[e], b, a)[on]).astype(np.int64)
    xi = np.rint(np.where(flat[e], a, b)[on]).astype(np.int64)
    keep = (yi >= 0) & (yi < ny) & (xi >= 0) & (xi < nx)
    mask[yi[keep], xi[keep]] = True
    return mask


# -- NIfTI / NRRD -----------------------------------------------------------------------------
_SLICER_KEY = re.compile(r"^Segment(\d+)_(Name|Color|LabelValue|Layer)$")


def read_label_image(path, volume: Volume) -> OpenedLabels:
    """A NIfTI/NRRD/MHA label image matched to ``volume`` by geometry (module doc)."""
    import SimpleITK as sitk

    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise LoadError(path, f"cannot read as an image ({str(exc).strip().splitlines()[-1]})") from exc
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() not in (2, 3):
        raise LoadError(path, f"a label map is one 2D/3D integer image; this is {image.GetDimension()}D with "
                              f"{image.GetNumberOfComponentsPerPixel()} component(s) (overlapping Slicer layers?)")
    found = itk.from_sitk(image)
    array = found.array
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.rint(array)):
            raise LoadError(path, "holds non-integer values, so it is not a label map (a probability map?)")
        array = array.astype(np.int64)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise LoadError(path, f"holds {array.dtype} values, not integer labels")
    if array.size and (int(array.min()) < 0 or int(array.max()) > MAX_LABEL):
        raise LoadError(path, f"label values {int(array.min())}..{int(array.max())} are outside 0..{MAX_LABEL}")
    notes: list[str] = []
    if found.same_grid(volume, tol=GRID_TOL):
        out = array
    else:
        out = _resampled(path, image, found, volume)
        notes.append(f"on another grid ({'x'.join(map(str, found.shape[::-1]))} voxels of "
                     f"{'x'.join(f'{s:.3g}' for s in found.spacing[::-1])} mm): resampled nearest-neighbour "
                     "onto the image's grid")
    out = np.ascontiguousarray(out, dtype=np.uint8 if (out.max() if out.size else 0) <= 255 else np.uint16)
    segments = _image_segments(image, out)
    if not out.any():
        notes.append("no labelled voxel falls on this image")
    return OpenedLabels(path, "NRRD" if path.name.lower().endswith((".nrrd", ".nhdr")) else
                        ("NIfTI" if ".nii" in path.name.lower() else "image"), out, segments, notes)


def _corners(vol: Volume) -> np.ndarray:
    n = np.array(vol.shape) - 1
    corner_idx = np.array([[a, b, c] for a in (0, n[0]) for b in (0, n[1]) for c in (0, n[2])], float)
    return vol.index_to_world(corner_idx)


def _resampled(path: Path, image, found: Volume, volume: Volume) -> np.ndarray:
    """Nearest-neighbour onto ``volume``'s grid; refused when the two boxes do not meet."""
    import SimpleITK as sitk

    theirs = volume.world_to_index(_corners(found))
    lo, hi = theirs.min(axis=0), theirs.max(axis=0)
    top = np.array(volume.shape) - 1
    if np.any(hi < -0.5) or np.any(lo > top + 0.5):
        raise LoadError(path, "does not overlap the open image (its voxels lie elsewhere in patient space): "
                              "it belongs to another image")
    ref = itk.to_sitk(volume.with_array(np.zeros(volume.shape, np.uint8)))
    moved = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())
    arr = sitk.GetArrayFromImage(moved)
    return arr.reshape(volume.shape)


def _image_segments(image, array: np.ndarray) -> list[Segment]:
    """Segments for the values present: Slicer .seg.nrrd names and colours when the header has them."""
    meta: dict[int, dict[str, str]] = {}
    for key in image.GetMetaDataKeys():
        m = _SLICER_KEY.match(key)
        if m:
            meta.setdefault(int(m.group(1)), {})[m.group(2)] = image.GetMetaData(key)
    named: dict[int, Segment] = {}
    for i, fields in sorted(meta.items()):
        try:
            value = int(fields.get("LabelValue", i + 1))
        except ValueError:
            continue
        rgb = label_color(value)
        try:
            rgb = tuple(int(round(float(v) * 255)) for v in fields.get("Color", "").split()[:3]) or rgb
        except ValueError:
            pass
        named[value] = Segment(value, fields.get("Name", "") or f"Label {value}", rgb, algorithm_type="MANUAL")
    present = [int(v) for v in np.unique(array) if v]
    out, used = [], set()
    for v in sorted(set(named) | set(present)):
        seg = named.get(v) or Segment(v, f"Label {v}", label_color(v), algorithm_type="MANUAL")
        base, k = seg.label, 2
        while seg.label.lower() in used:
            seg.label, k = f"{base} ({k})", k + 1
        used.add(seg.label.lower())
        out.append(seg)
    return out
