"""Write an analysis to a folder: heatmaps and label maps as NIfTI, segmentations as DICOM SEG,
heatmaps as DICOM Parametric Maps, one DICOM SR report per analysis, and ``results.json`` with
the scores, models and the files written.

File names come from view names and class names, reduced to safe characters, and every
path is checked to stay inside the chosen folder.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from viewer.core.atomic import write_bytes
from viewer.core.errors import Cancelled, LightboxError, describe
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
            if series is not None and series.kind == "dicom":
                try:
                    pm_path = write_pm(ov, sr, series, inside(folder, f"heatmap_{stem}.pm.dcm"))
                except ValueError as exc:  # e.g. a source highdicom cannot place: the NIfTI still stands
                    sr.notes.setdefault("not_written", []).append(f"heatmap {ov.name} (DICOM PM): {exc}")
                    continue
                written[f"heatmap {ov.name} (DICOM PM)"] = pm_path.name
        else:
            path = write_label_map(ov.array, sr.volume, inside(folder, f"{stem}.nii.gz"))
            written[f"{ov.name} (NIfTI)"] = path.name
            if series is not None and series.kind == "dicom":
                try:
                    seg_path = write_seg(ov, sr, series, inside(folder, f"{stem}.seg.dcm"))
                except ValueError as exc:  # e.g. an old CT without FrameOfReferenceUID: the NIfTI still stands
                    sr.notes.setdefault("not_written", []).append(f"{ov.name} (DICOM SEG): {exc}")
                    continue
                if seg_path is not None:
                    written[f"{ov.name} (DICOM SEG)"] = seg_path.name
    return written


def write_seg(ov: Overlay, sr: SeriesResult, series: Series, path: Path) -> Path | None:
    """DICOM SEG of a label map referencing its source series; None when it holds no finding.

    A map the user edited (``ov.original`` = the model's map) says so per segment: AUTOMATIC where
    the voxels are still the model's, SEMIAUTOMATIC where they were edited, MANUAL for labels the
    model never drew (dicom_seg.edited_segments, as the editor's own SEG save)."""
    from viewer.core.colors import label_color
    from viewer.core.export.dicom_seg import Segment, compact_segments, edited_segments, write_dicom_seg

    name, version = split_model_id(ov.model)
    top = max(len(ov.classes) - 1, int(ov.array.max(initial=0)))
    names = {i: ov.classes[i] if i < len(ov.classes) else f"label {i}" for i in range(1, top + 1)}
    if ov.original is not None:
        segments = edited_segments(ov.array, names, {i: label_color(i) for i in names}, original=ov.original,
                                   model=ov.model)
    else:
        segments = [Segment(number=i, label=label, color=label_color(i), algorithm_type="AUTOMATIC",
                            algorithm_name=name or ov.model, algorithm_version=version or "1")
                    for i, label in names.items()]
    labels, segments = compact_segments(ov.array, segments)  # classes found -> segments 1..N, no gaps
    if not segments:
        return None
    edited = " (edited)" if ov.original is not None and any(s.algorithm_type != "AUTOMATIC" for s in segments) else ""
    return write_dicom_seg(labels, sr.volume, series, segments, path,
                           series_description=f"Lightbox AI {ov.name}{edited}"[:64])


def write_pm(ov: Overlay, sr: SeriesResult, series: Series, path: Path) -> Path:
    """DICOM Parametric Map of a probability overlay referencing its source series."""
    from viewer.core.export.dicom_pm import write_parametric_map

    return write_parametric_map(ov.array, sr.volume, series, path, name=ov.name, model=ov.model,
                                series_description=f"Lightbox AI {ov.name}"[:64])


def write_report(res: AnalysisResult, series_by_key: dict[str, Series], seg_files: dict[str, Path],
                 folder: Path) -> dict[str, str]:
    """The analysis report (DICOM SR, TID 1500) into ``folder``; {} when no series is DICOM."""
    from viewer.core.export.dicom_sr import write_analysis_report

    if not any(getattr(series_by_key.get(sr.series_key), "kind", "") == "dicom" for sr in res.series.values()):
        return {}
    path = write_analysis_report(res, series_by_key, seg_files, inside(folder, "report.sr.dcm"))
    return {"report": path.name}


STAGING_PREFIX = ".lightbox-staging-"  # a series' outputs while they are written; hidden, removed on failure


def write_outputs(results: list[AnalysisResult], series_by_key: dict[str, Series], out_dir,
                  extra: dict | None = None, failed: list[dict] | None = None) -> Path:
    """Everything for a list of analyses under ``out_dir``; returns the path of results.json.

    Each series' files are written into a hidden staging folder beside their final one and renamed
    into place only when all are written, so a series' folder is whole or absent; one series that
    cannot be written (a writer error, a full disk) is removed again, named under ``"failed"`` in
    results.json ({"series", "reason"}; ``failed`` collects the same entries for the caller) and
    the others are still written. results.json is written last, atomically, whatever failed.

    Re-running into the same folder *replaces*: a series' folder from an earlier run is swapped for
    the new one whole, and folders an earlier run's results.json listed that this run does not
    write again are removed, so the folder holds exactly what the new results.json describes
    (files Lightbox did not write are never touched). Staging folders a killed run left behind
    are removed first.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    previous = _folders_listed(out / "results.json")
    failures = failed if failed is not None else []
    summary = {"results": [], **(extra or {})}
    used: set[str] = set()
    written_folders: set[str] = set()
    for res in results:
        entry = res.summary()
        seg_files: dict[str, Path] = {}
        for key, sr in res.series.items():
            base = safe_name(f"{res.kind}_{sr.title}" if res.kind == "mammo-exam" else sr.title, "series")
            folder_name, n = base, 2
            while folder_name in used:
                folder_name, n = f"{base}_{n}", n + 1
            used.add(folder_name)
            try:
                files = _write_staged(sr, series_by_key.get(sr.series_key), out, folder_name)
            except Cancelled:
                raise
            except Exception as exc:  # noqa: BLE001 - one series' failure is reported, the others kept
                label = f"{res.kind} {sr.title}" if res.kind == "mammo-exam" else sr.title
                failures.append({"series": label, "series_uid": sr.series_uid, "folder": folder_name,
                                 "reason": _reason(exc)})
                entry["series"][key]["files"] = {}
                continue
            written_folders.add(folder_name)
            entry["series"][key]["files"] = {k: f"{folder_name}/{v}" for k, v in files.items()}
            seg = next((v for k, v in files.items() if k.endswith("(DICOM SEG)")), None)
            if seg is not None:
                seg_files[sr.series_key] = out / folder_name / seg
            if sr.notes.get("not_written"):
                entry["series"][key]["not_written"] = list(sr.notes["not_written"])
        _add_report(res, entry, series_by_key, seg_files, out, used, written_folders)
        summary["results"].append(entry)
    summary.setdefault("not_analysed", [])
    summary["failed"] = [{"series": f["series"], "reason": f["reason"]} for f in failures]
    path = write_json_atomic(summary, inside(out, "results.json"))
    for name in sorted(previous - written_folders):  # an earlier run's folder this run did not replace
        shutil.rmtree(out / name, ignore_errors=True)
    return path


def _add_report(res: AnalysisResult, entry: dict, series_by_key: dict[str, Series], seg_files: dict[str, Path],
                out: Path, used: set[str], written_folders: set[str]) -> None:
    """The analysis' DICOM SR in a folder of its own (staged like a series folder), listed as
    entry["report"]; a report that cannot be built is named under entry["not_written"] instead,
    like a SEG: the analysis and its other files still stand."""
    first = next(iter(res.series.values()), None)
    if first is None:
        return
    base = safe_name(f"{res.kind}_report" if res.kind == "mammo-exam" else f"{first.title}_report", "report")
    folder_name, n = base, 2
    while folder_name in used:
        folder_name, n = f"{base}_{n}", n + 1
    try:
        files = _write_staged_with(lambda staging: write_report(res, series_by_key, seg_files, staging),
                                   out, folder_name, skip_empty=True)
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - the report is one more file; the analysis stands without it
        reason = str(exc).strip().splitlines()[0] if isinstance(exc, ValueError) and str(exc).strip() else \
            _reason(exc)  # our writers' ValueErrors already say what could not be built, as for a SEG
        entry.setdefault("not_written", []).append(f"report (DICOM SR): {reason}")
        return
    if files:
        used.add(folder_name)
        written_folders.add(folder_name)
        entry["report"] = f"{folder_name}/{files['report']}"


def remove_stale_staging(out: Path) -> None:
    """Remove staging folders a killed run left in ``out`` (never following a link)."""
    try:
        entries = list(out.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _write_staged(sr: SeriesResult, series: Series | None, out: Path, folder_name: str) -> dict[str, str]:
    """write_series_outputs into a hidden folder, then rename it to ``out/folder_name`` (replacing an
    earlier run's folder of that name); on any failure the staging folder is removed."""
    return _write_staged_with(lambda staging: write_series_outputs(sr, series, staging), out, folder_name)


def _write_staged_with(write, out: Path, folder_name: str, skip_empty: bool = False) -> dict[str, str]:
    """``write(staging folder) -> files`` into a hidden folder renamed to ``out/folder_name`` when
    done; with ``skip_empty``, nothing is renamed (and no folder left) when it wrote no files."""
    inside(out, folder_name)  # refuses a name that would land outside ``out``
    final = out / folder_name
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise OutputFolderError(f"{final}: exists and is not a folder Lightbox wrote")
    staging = out / f"{STAGING_PREFIX}{folder_name}-{secrets.token_hex(4)}"
    os.mkdir(staging)  # the umask's mode, as a plain mkdir of the final folder would have
    try:
        files = write(staging)
        if skip_empty and not files:
            return files
        old = None
        if final.exists():
            old = out / f"{STAGING_PREFIX}old-{folder_name}-{secrets.token_hex(4)}"
            os.rename(final, old)
        try:
            os.rename(staging, final)
        except OSError:
            if old is not None:
                os.rename(old, final)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return files
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _folders_listed(results_json: Path) -> set[str]:
    """Folder names an earlier run's results.json lists files in (plain names inside the folder only)."""
    try:
        data = json.loads(results_json.read_text(encoding="utf-8"))
        entries = [files for res in data.get("results", []) for sr in res.get("series", {}).values()
                   for files in (sr.get("files") or {}).values()]
        entries += [res["report"] for res in data.get("results", []) if isinstance(res.get("report"), str)]
    except (OSError, ValueError, AttributeError, TypeError):
        return set()
    names = set()
    for rel in entries:
        name = str(rel).split("/", 1)[0]
        if name and safe_name(name) == name and not name.startswith(".") and (results_json.parent / name).is_dir() \
                and not (results_json.parent / name).is_symlink():
            names.add(name)
    return names


def _reason(exc: Exception) -> str:
    if isinstance(exc, LightboxError) and str(exc).strip():
        return str(exc).strip().splitlines()[0]
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename or 'output'}: {exc.strerror}" if exc.filename else exc.strerror
    return describe(exc)
