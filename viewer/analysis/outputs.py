"""Write an analysis to a folder: heatmaps and label maps as NIfTI, segmentations as DICOM SEG,
and ``results.json`` with the scores, models and the files written.

File names come from view names and class names, reduced to safe characters, and every
path is checked to stay inside the chosen folder.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from viewer.core.atomic import write_bytes
from viewer.core.errors import LightboxError
from viewer.core.export.dataset import inside
from viewer.core.export.dataset import safe_name as _safe_name
from viewer.core.model_id import split_model_id
from viewer.core.study import Series

from .results import AnalysisResult, Overlay, SeriesResult


def safe_name(text: str, fallback: str = "item") -> str:
    """The export package's file-name rule (dataset.safe_name), with this module's fallback."""
    return _safe_name(text, fallback)


class OutputFolderError(LightboxError):
    """The results folder cannot be created or written; ``str()`` names it and says why."""


def prepare_output_folder(out) -> list[Path]:
    """Create ``out`` (with its parents) and prove it writable with a probe file that is removed
    again, before any model runs: an analysis must not run for minutes and then fail to save.
    Returns the folders it created (to remove, empty, if nothing is written after all)."""
    out = Path(out)
    created = [p for p in (out, *out.parents) if not p.exists()][::-1]
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".lightbox-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        remove_empty_folders([p for p in created if p.exists()])
        raise OutputFolderError(f"{out}: cannot write results there ({exc.strerror or exc})") from exc
    return created


def remove_empty_folders(created: list[Path]) -> None:
    """Undo prepare_output_folder's folders (deepest first) as far as they are still empty."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


def write_json_atomic(data, path: Path) -> Path:
    return write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def write_series_outputs(sr: SeriesResult, series: Series | None, folder: Path) -> dict[str, str]:
    """NIfTI for every overlay, DICOM SEG for label maps of DICOM sources; returns {what: relative path}."""
    from viewer.core.export.nifti import write_heatmap, write_label_map

    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for ov in sr.overlays:
        stem = safe_name(ov.name)
        if ov.kind == "probability":
            path = write_heatmap(ov.array, sr.volume, inside(folder, f"heatmap_{stem}.nii.gz"))
            written[f"heatmap {ov.name}"] = path.name
        else:
            path = write_label_map(ov.array, sr.volume, inside(folder, f"{stem}.nii.gz"))
            written[f"{ov.name} (NIfTI)"] = path.name
            if series is not None and series.kind == "dicom":
                seg_path = write_seg(ov, sr, series, inside(folder, f"{stem}.seg.dcm"))
                if seg_path is not None:
                    written[f"{ov.name} (DICOM SEG)"] = seg_path.name
    return written


def write_seg(ov: Overlay, sr: SeriesResult, series: Series, path: Path) -> Path | None:
    """DICOM SEG of a label map referencing its source series; None when it holds no finding."""
    from viewer.core.colors import label_color
    from viewer.core.export.dicom_seg import Segment, compact_segments, write_dicom_seg

    name, version = split_model_id(ov.model)
    top = max(len(ov.classes) - 1, int(ov.array.max(initial=0)))
    segments = [Segment(number=i, label=ov.classes[i] if i < len(ov.classes) else f"label {i}",
                        color=label_color(i), algorithm_type="AUTOMATIC", algorithm_name=name or ov.model,
                        algorithm_version=version or "1") for i in range(1, top + 1)]
    labels, segments = compact_segments(ov.array, segments)  # classes found -> segments 1..N, no gaps
    if not segments:
        return None
    return write_dicom_seg(labels, sr.volume, series, segments, path,
                           series_description=f"Lightbox AI {ov.name}"[:64])


def write_outputs(results: list[AnalysisResult], series_by_key: dict[str, Series], out_dir,
                  extra: dict | None = None) -> Path:
    """Everything for a list of analyses under ``out_dir``; returns the path of results.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"results": [], **(extra or {})}
    used: set[str] = set()
    for res in results:
        entry = res.summary()
        for key, sr in res.series.items():
            base = safe_name(f"{res.kind}_{sr.title}" if res.kind == "mammo-exam" else sr.title, "series")
            folder_name, n = base, 2
            while folder_name in used:
                folder_name, n = f"{base}_{n}", n + 1
            used.add(folder_name)
            files = write_series_outputs(sr, series_by_key.get(sr.series_key), inside(out, folder_name))
            entry["series"][key]["files"] = {k: f"{folder_name}/{v}" for k, v in files.items()}
        summary["results"].append(entry)
    return write_json_atomic(summary, inside(out, "results.json"))
