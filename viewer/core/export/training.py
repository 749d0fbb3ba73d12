"""One corrected case into a retraining dataset, de-identified: the glue the CLI and the app share.

The image and label map go into the nnU-Net/MONAI dataset (``dataset.DatasetWriter``: NIfTI,
which carries no patient data); the corrected segmentation also goes in as a DICOM SEG next to
them (``segTr/``), de-identified with the same keyed UID mapping (``deid``), so it still lines up
with the case's other exported objects; the mapping is written only when asked for.
"""
from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..study import Series
from ..volume import Volume
from .dataset import DEFAULT_NAME, DatasetWriter, ExportError, inside


def export_case(out_root, volume: Volume, labels: np.ndarray, names: Mapping[int, str], series: Series | None,
                *, dataset_name: str = DEFAULT_NAME, model: str = "", original_labels: np.ndarray | None = None,
                keep_mapping: bool = False, secret: bytes | None = None,
                classes: Mapping[str, str] | None = None) -> dict:
    """Append one case; returns {"case", "dataset", "image", "label", "seg" (or None), "mapping" (or None)}.

    ``classes``: the user's confirmed or corrected class per view or for the exam
    ({"LCC": "malignant", "exam": "malignant"}), written to classification.csv/.json for the classifiers.
    """
    from .deid import Deidentifier, DeidPolicy, deidentify_file

    policy = DeidPolicy(keep_mapping=keep_mapping) if secret is None else \
        DeidPolicy(secret=secret, keep_mapping=keep_mapping)
    deid = Deidentifier(policy)
    writer = DatasetWriter(out_root, dataset_name, uid_mapper=deid.uid)
    name, _, version = model.rpartition(" ")
    provenance = {"model": {"name": name or model, "version": version}} if model else {}
    case = writer.add_case(volume, labels, names, provenance, original_labels=original_labels)
    for view, label in (classes or {}).items():
        writer.add_classification(case, view, label)
    out = {"case": case, "dataset": writer.folder, "image": writer.image_path(case),
           "label": writer.label_path(case), "seg": None, "mapping": None}
    if series is not None and series.kind == "dicom" and np.any(labels):
        out["seg"] = _write_deidentified_seg(writer, case, volume, labels, names, series, deid, deidentify_file)
    if keep_mapping:
        out["mapping"] = deid.write_mapping(inside(writer.folder, f"deid-mapping-{case}.json"))
    return out


def _write_deidentified_seg(writer, case, volume, labels, names, series, deid, deidentify_file) -> Path:
    from ..colors import label_color
    from .dicom_seg import Segment, compact_segments, write_dicom_seg

    folder = inside(writer.folder, "segTr")
    folder.mkdir(exist_ok=True)
    final = inside(folder, f"{case}.seg.dcm")
    segs = [Segment(v, str(n), label_color(v), algorithm_type="SEMIAUTOMATIC",
                    algorithm_name="Lightbox segment editor") for v, n in names.items() if v]
    compact, segs = compact_segments(labels, segs)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".seg-") as tmp:
        plain = write_dicom_seg(compact, volume, series, segs, Path(tmp) / "seg.dcm",
                                series_description="Lightbox corrected segmentation")
        try:
            deidentify_file(plain, final, deid)
        except ValueError as exc:  # DeidError: names the file and why (e.g. burned-in annotation)
            raise ExportError(str(exc)) from exc
    return final
