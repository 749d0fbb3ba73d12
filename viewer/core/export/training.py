"""Corrected cases into a retraining dataset, de-identified: the glue the CLI and the app share.

``export_case``: one image and its corrected label map. ``export_exam``: one mammography exam for the
classifiers (every view's image into imagesCls/ with its class row, and the exam's class), plus a 2D
segmentation pair for each view that has a corrected map.

The images and label maps go into the nnU-Net/MONAI dataset (``dataset.DatasetWriter``: NIfTI,
which carries no patient data); a corrected segmentation of a DICOM image also goes in as a DICOM
SEG next to them (``segTr/``), de-identified with the same keyed UID mapping (``deid``) as the
provenance's source UIDs, so it still lines up with the case's other exported objects; the
re-identification mapping is written only when asked for.

Case ids of an exam: the exam is one numbered case (``CASE_0007``) in the classification rows and
imagesCls (``CASE_0007_LCC.nii.gz``); a view with a corrected map becomes the segmentation case
``CASE_0007_LCC`` (imagesTr/CASE_0007_LCC_0000.nii.gz, labelsTr/CASE_0007_LCC.nii.gz), whose
provenance names the exam case and the view. nnU-Net and the fine-tuner take any case id, and
the name says where it came from without a lookup.

One export is one commit of the dataset (``DatasetWriter.transaction``): the image, label, SEG,
provenance, class rows, dataset.json, datalist and mapping are all built and staged first, and moved
into place together; if anything fails (a source the SEG cannot be built from, a full disk) or the
process dies, the dataset is left as it was. Exporting the same image with the same label map again
(a repeated click, a re-run after a crash) rewrites that case instead of adding a second one; a
changed label map of the same image is a new case (``DatasetWriter.add_case``, ``replace_same``).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..mammo import FOUR_VIEWS, bright_is_dense
from ..model_id import split_model_id
from ..study import Series
from ..volume import SourceInfo, Volume
from .dataset import (
    DEFAULT_NAME,
    EXAM_VIEW,
    ClassifiedView,
    DatasetWriter,
    ExportError,
    content_key,
    inside,
    safe_name,
)
from .dicom_seg import Segment
from .pixel_safety import check_sources

# {view: (label map on the view's grid, {value: name}, the model's map before the user's edits or None)}
ViewLabels = Mapping[str, tuple[np.ndarray, Mapping[int, str], "np.ndarray | None"]]


def chest_wall_side(info: SourceInfo) -> str:
    """The image side the chest wall is on ("left"/"right"), from PatientOrientation (its row direction:
    columns running anterior = towards the nipple put the chest wall on the left); "" when unknown.
    The same rule as inference.preprocess.mammo.chest_wall_from_orientation, which core cannot import
    (it would pull in torch)."""
    orientation = info.patient_orientation
    first = str(orientation[0]).upper()[:1] if orientation else ""
    return {"A": "left", "P": "right"}.get(first, "")


def training_image(volume: Volume, series: Series | None) -> Volume:
    """The image as models take it: a MONOCHROME1 view inverted to MONOCHROME2 (the NIfTI cannot say
    which it is, and the fine-tuners prepare images exactly as Analyze does, which inverts it too)."""
    pixels = bright_is_dense(volume, series)
    return volume if pixels is volume.array else volume.with_array(pixels)


def export_case(out_root, volume: Volume, labels: np.ndarray, names: Mapping[int, str], series: Series | None,
                *, dataset_name: str = DEFAULT_NAME, model: str = "", original_labels: np.ndarray | None = None,
                keep_mapping: bool = False, secret: bytes | None = None,
                classes: Mapping[str, str] | None = None, allow_unverified_pixels: bool = False,
                opened: tuple[np.ndarray, Mapping[int, Segment]] | None = None) -> dict:
    """Append one case; returns {"case", "dataset", "image", "label", "seg" (or None), "mapping" (or None)}.

    ``classes``: the user's confirmed or corrected class per view or for the exam
    ({"LCC": "malignant", "exam": "malignant"}), written to classification.csv/.json for the classifiers.
    ``allow_unverified_pixels``: the user checked that images where burned-in text is common (US, SC,
    ...) carry none (``pixel_safety``); an image marked BurnedInAnnotation=YES is refused regardless.
    ``opened``: (voxels as opened, {value: Segment}) when the labels came from another tool's SEG or
    RTSTRUCT, so the exported SEG keeps that file's segment codes and algorithms (``edited_segments``).
    """
    check_sources([(volume, series)], allow_unverified_pixels)  # before anything is written
    deid = _deidentifier(keep_mapping, secret)
    writer = DatasetWriter(out_root, dataset_name, uid_mapper=deid.uid, create=False)
    with writer.transaction():
        out = _add_segmentation(writer, deid, volume, labels, names, series, model, original_labels,
                                replace_same=True, opened=opened)
        case = out["case"]
        if classes:
            writer.add_classifications(case, [ClassifiedView(view, label) for view, label in classes.items()])
        out["mapping"] = _stage_mapping(writer, deid, case) if keep_mapping else None
    return out


def export_exam(out_root, views: Mapping[str, tuple[Volume, Series | None]], classes: Mapping[str, str], *,
                labels: ViewLabels | None = None, dataset_name: str = DEFAULT_NAME, model: str = "",
                keep_mapping: bool = False, secret: bytes | None = None,
                seg_models: Mapping[str, str] | None = None, allow_unverified_pixels: bool = False) -> dict:
    """Append one mammography exam; returns {"case", "dataset", "images": {view: path}, "rows": n,
    "segmentations": {view: export_case-like dict}, "mapping" (or None)}.

    ``views``: {"RCC": (volume (1, rows, cols) as loaded, its series), ...}; ``classes``: {view or
    "exam": label}, only the labelled ones (an empty label is skipped). When any class is given, every
    view's image is written (rows only for the labelled ones). ``labels``: corrected maps per view,
    each exported as its own segmentation case (see the module docstring). ``model`` ("name
    version") is the model whose suggestion the user confirmed or corrected; ``seg_models`` names,
    per view, the model whose map was corrected when that is another one (default ``model``).
    ``allow_unverified_pixels``: as for :func:`export_case`.
    """
    check_sources(views.values(), allow_unverified_pixels)  # before anything is written
    classes = {safe_name(k, "view"): str(v).strip() for k, v in (classes or {}).items() if str(v).strip()}
    labels = {safe_name(k, "view"): v for k, v in (labels or {}).items()}
    names = {safe_name(k, "view"): k for k in views}
    unknown = sorted(set(classes) - set(names) - {EXAM_VIEW}) + sorted(set(labels) - set(names))
    if unknown:
        raise ExportError(f"no {', '.join(unknown)} view in this exam (it has {', '.join(names) or 'none'})")
    if not classes and not labels:
        raise ExportError("nothing to export: give a class (a view's or the exam's) or a corrected segmentation")
    deid = _deidentifier(keep_mapping, secret)
    writer = DatasetWriter(out_root, dataset_name, uid_mapper=deid.uid, create=False)
    with writer.transaction():
        return _add_exam(writer, deid, views, names, classes, labels, model, seg_models, keep_mapping)


def _add_exam(writer, deid, views, names, classes, labels, model, seg_models, keep_mapping) -> dict:
    """export_exam's files, staged in the writer's open commit (the exam lands whole or not at all).
    The same exam with the same classes and maps exported again is written again under its case id
    (``exam_key`` in its provenance lines), as export_case does for a case."""
    order = sorted(names, key=lambda v: (FOUR_VIEWS.index(v) if v in FOUR_VIEWS else len(FOUR_VIEWS), v))
    key = _exam_key(views, names, order, classes, labels)
    previous = _exam_with_key(writer, key)
    case = previous or writer.next_case_id()
    out = {"case": case, "dataset": writer.folder, "images": {}, "rows": 0, "segmentations": {}, "mapping": None}
    if classes:
        items = [ClassifiedView(v, classes.get(v, ""), training_image(*views[names[v]]),
                                chest_wall_side(views[names[v]][0].info)) for v in order]
        if EXAM_VIEW in classes:
            items.append(ClassifiedView(EXAM_VIEW, classes[EXAM_VIEW]))
        provenance = {"model": _model_record(model)} if model else {}
        writer.add_classifications(case, items, provenance, replace_provenance=previous is not None,
                                   keys={"exam_key": key})
        out["images"] = {v: writer.cls_image_path(case, v) for v in order}
        out["rows"] = len(classes)
    for v in (v for v in order if v in labels):
        volume, series = views[names[v]]
        label_map, label_names, original = labels[v]
        seg_model = (seg_models or {}).get(names[v], model)
        out["segmentations"][v] = _add_segmentation(writer, deid, volume, label_map, label_names, series,
                                                    seg_model, original, case_id=f"{case}_{v}",
                                                    extra={"exam_case": case, "view": v},
                                                    replace_same=previous is not None, keys={"exam_key": key})
    out["mapping"] = _stage_mapping(writer, deid, case) if keep_mapping else None
    return out


def _exam_key(views, names, order, classes, labels) -> str:
    """A hash of what an exam export writes: each view's pixels and grid, the classes, the maps."""
    h = hashlib.sha256(b"lightbox-exam-v1\0")
    empty = np.zeros(0, np.uint8)
    for v in order:
        volume, series = views[names[v]]
        h.update(f"{v}\0{content_key(training_image(volume, series), empty)}\0".encode())
    h.update(json.dumps(sorted(classes.items())).encode())
    for v in sorted(labels):
        label_map, label_names, _original = labels[v]
        h.update(f"{v}\0{json.dumps(sorted((int(k), str(n)) for k, n in label_names.items()))}\0".encode())
        h.update(np.ascontiguousarray(label_map).astype(np.int64, copy=False).tobytes())
    return "sha256:" + h.hexdigest()


def _exam_with_key(writer: DatasetWriter, key: str) -> str | None:
    """The exam case an earlier export of the same exam made (from its provenance lines), or None."""
    for record in reversed(writer.provenance()):
        if record.get("exam_key") == key:
            extra = record.get("extra") if isinstance(record.get("extra"), dict) else {}
            return str(extra.get("exam_case") or record.get("case"))
    return None


def _deidentifier(keep_mapping: bool, secret: bytes | None):
    from .deid import Deidentifier, DeidPolicy

    policy = DeidPolicy(keep_mapping=keep_mapping) if secret is None else \
        DeidPolicy(secret=secret, keep_mapping=keep_mapping)
    return Deidentifier(policy)


def _model_record(model: str) -> dict:
    """The analysis's "name version" (e.g. "ct-organs-unet3d 1.2") as {"name", "version"}."""
    name, version = split_model_id(model)
    return {"name": name, "version": version}


def _stage_mapping(writer: DatasetWriter, deid, case: str) -> Path | None:
    """The re-identification mapping, staged last in the export's commit (it must hold every UID the
    SEG and provenance mapped); written owner-only by ``deid``."""
    final = inside(writer.folder, f"deid-mapping-{case}.json")
    tx = writer.transaction_open()
    staged = deid.write_mapping(tx.new_path(".json"))
    if staged is None:
        return None
    tx.add(staged, final)
    return final


def _add_segmentation(writer: DatasetWriter, deid, volume: Volume, labels: np.ndarray, names: Mapping[int, str],
                      series: Series | None, model: str, original_labels: np.ndarray | None,
                      case_id: str | None = None, extra: Mapping | None = None, replace_same: bool = False,
                      keys: Mapping[str, str] | None = None, opened=None) -> dict:
    """One (image, label map) pair, its provenance and, for a DICOM image with a mask, its
    de-identified SEG, staged in the writer's open commit; returns {"case", "dataset", "image",
    "label", "seg"}."""
    provenance = {**(extra or {}), **({"model": _model_record(model)} if model else {})}
    case = writer.add_case(training_image(volume, series), labels, names, provenance, case_id=case_id,
                           original_labels=original_labels, replace_same=replace_same, keys=keys)
    out = {"case": case, "dataset": writer.folder, "image": writer.image_path(case),
           "label": writer.label_path(case), "seg": None}
    if series is not None and series.kind == "dicom" and np.any(labels):
        out["seg"] = _stage_deidentified_seg(writer, case, volume, np.asarray(labels), names, series, deid,
                                             original_labels, model, opened)
    return out


def _stage_deidentified_seg(writer, case, volume, labels, names, series, deid, original, model: str,
                            opened=None) -> Path:
    """The case's de-identified SEG, staged in the writer's open commit. The plain SEG (it still
    names the patient) exists only in the staging folder, and only until it is de-identified."""
    from ..colors import label_color
    from .deid import deidentify_file
    from .dicom_seg import compact_segments, edited_segments, write_dicom_seg

    final = inside(inside(writer.folder, "segTr"), f"{case}.seg.dcm")
    tx = writer.transaction_open()
    colors = {v: (opened[1][v].color if opened and v in opened[1] and opened[1][v].color else label_color(v))
              for v in names}
    segs = edited_segments(labels, names, colors, original, model, opened=opened)
    compact, segs = compact_segments(labels, segs)
    plain, staged = tx.new_path(".dcm"), tx.new_path(".dcm")
    try:
        write_dicom_seg(compact, volume, series, segs, plain, series_description="Lightbox corrected segmentation")
        try:
            deidentify_file(plain, staged, deid)
        except ValueError as exc:  # DeidError: names the file and why (e.g. burned-in annotation)
            raise ExportError(str(exc)) from exc
    finally:
        plain.unlink(missing_ok=True)
    tx.add(staged, final)
    return final
