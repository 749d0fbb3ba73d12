"""One folder, in its own process: scan, load every series, then check the good slices.

Run as ``python -m fuzz.child FOLDER FOLDER_JSON OUT_JSON`` (with tests/ on PYTHONPATH). Writes
OUT_JSON; an exception escaping scan/load_series that is not the app's LightboxError is a crash,
recorded with the last line of its traceback. The parent counts a missing OUT_JSON (signal,
timeout, hard exit) as a crash or a hang.

Good slices: a good (untouched) slice is *kept* when its pixels, as pydicom decodes them and
applies the modality LUT (rescale), equal a slice of the volume loaded from the series that holds
its file; it is looked for first at the index its ImagePositionPatient maps to (found elsewhere:
"misplaced", reported but not lost), then anywhere in the volume. Not found, or its file in no
series, or its series failing to load: lost.

Memory: RSS after imports and a warm-up that loads every codec (the peak mark reset there), then
the peak RSS (VmHWM) right after scan + load; the growth is what this folder cost.
"""
from __future__ import annotations

import gc
import json
import resource
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np

MEMORY_CAP = 6 << 30  # address-space cap: a runaway allocation fails here instead of hurting the machine
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima"}


def _last_line(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return (lines[-1].strip() if lines else type(exc).__name__)[:300]


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    return f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _reset_peak() -> bool:
    """Start the peak-RSS mark (VmHWM) afresh. ru_maxrss cannot be used: Linux carries it over
    from the forking parent across exec, so it reports the driver's size, not this child's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak(base: int, reset: bool) -> int:
    hwm = _status_kib("VmHWM") if reset else None
    if hwm is not None:
        return hwm * 1024
    return max(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def _warm_up() -> None:
    """Import and exercise every decoder once so their libraries are not counted as growth."""
    import pydicom

    from viewer.core.io import load_series, scan

    from .corpus import PYDICOM_FILES

    for name in ("MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"):
        p = PYDICOM_FILES / name
        if p.is_file():
            try:
                pydicom.dcmread(p).pixel_array
            except Exception:
                pass
    p = PYDICOM_FILES / "CT_small.dcm"
    if p.is_file():
        try:
            for s in scan(p).series:
                load_series(s)
        except Exception:
            pass


def refused_by_pydicom(path: Path) -> str | None:
    """Why pydicom cannot give this file's pixels, or None. Files that are not DICOM at all
    (no 'DICM' marker and no DICOM suffix) are not counted: the app may ignore them quietly."""
    import pydicom

    with open(path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] != b"DICM" and path.suffix.lower() not in DICOM_SUFFIXES:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            arr = ds.pixel_array
            if arr.size == 0:
                return "empty pixel array"
    except BaseException as exc:  # noqa: BLE001  (PanicException from a Rust decoder is a BaseException)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return _last_line(exc)
    return None


def _expected(path: Path):
    """(frames of modality values as float64, ImagePositionPatient or None) as pydicom sees the file."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1:
        arr = arr[np.newaxis]
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        arr = arr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    else:
        arr = np.stack([np.asarray(apply_modality_lut(a, ds), dtype=np.float64) for a in arr])
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    step = float(ds.get("SpacingBetweenSlices", 0) or ds.get("SliceThickness", 0) or 0)
    if ipp is None or (frames > 1 and (iop is None or step <= 0 or "PerFrameFunctionalGroupsSequence" in ds)):
        return arr, [None] * frames
    ipp = np.array([float(v) for v in ipp])
    if frames == 1:
        return arr, [ipp]
    iop = np.array([float(v) for v in iop])
    normal = np.cross(iop[:3], iop[3:])  # legacy multi-frame: frames one step apart along the normal
    return arr, [ipp + f * step * normal for f in range(frames)]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.allclose(a.astype(np.float64), b, rtol=1e-5, atol=1e-3, equal_nan=False)


def check_good(path: Path, vol) -> tuple[str, str]:
    """('kept' | 'misplaced' | 'lost', why) for one good file against its loaded volume."""
    frames, positions = _expected(path)
    where = []
    for f, (expected, pos) in enumerate(zip(frames, positions)):
        first = None
        if pos is not None or vol.shape[0] == 1:  # a one-slice volume (a projection) has one place
            k = 0 if vol.shape[0] == 1 else int(np.rint(vol.world_to_index(pos)[0]))
            if 0 <= k < vol.shape[0]:
                first = k
                if _same(vol.array[k], expected):
                    where.append("kept")
                    continue
        hit = next((k for k in range(vol.shape[0]) if k != first and _same(vol.array[k], expected)), None)
        if hit is None:
            where.append("lost")
        else:  # found; misplaced only when the file says where it belongs
            where.append("kept" if first is None and pos is None else "misplaced")
    if "lost" in where:
        return "lost", f"pixels of frame {where.index('lost')} not in the loaded volume {vol.shape}"
    if "misplaced" in where:
        return "misplaced", "pixels found away from the slice its position maps to"
    return "kept", ""


def run(folder: Path, record: dict, out_path: Path | None = None) -> dict:
    from viewer.core.errors import LightboxError
    from viewer.core.io import load_series, scan

    out: dict = {"crashes": [], "good": [], "refused": [], "series": []}
    _warm_up()
    gc.collect()
    reset = _reset_peak()
    base = _rss()
    names: list[str] = []  # every message the loader gave: the refused files must be in them
    result = None
    try:
        result = scan(folder)
        names += [str(p) for p in result.problems]
    except LightboxError as exc:
        names.append(str(exc))
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        out["crashes"].append({"op": "scan", "file": "", "error": _last_line(exc), "at": _where(exc)})
    volumes = {}
    for series in (result.series if result is not None else []):
        entry = {"key": series.key, "files": [str(i.path) for i in series.instances], "error": None}
        names += list(series.problems)
        try:
            vol = load_series(series)
            volumes[series.key] = vol
            names += list(vol.problems)
            entry["shape"] = list(vol.shape)
        except LightboxError as exc:
            entry["error"] = str(exc)
            names.append(str(exc))
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            entry["error"] = _last_line(exc)
            out["crashes"].append({"op": "load_series", "file": entry["files"][0] if entry["files"] else "",
                                   "error": _last_line(exc), "at": _where(exc)})
        out["series"].append(entry)
    out["rss_growth"] = max(0, _peak(base, reset) - base)
    out["rss_base"] = base
    if out_path is not None:  # the app's part is done: a timeout from here on is the checks' own
        out_path.write_text(json.dumps(dict(out, phase="loaded")))
    blob = "\n".join(names)
    by_file = {f: s for s in out["series"] for f in s["files"]}
    for good in record["good"]:
        path = folder / good["file"]
        series = by_file.get(str(path))
        if series is None:
            reason = next((n for n in names if str(path) in n), "not in any series and not named")
            out["good"].append({"file": good["file"], "status": "lost", "why": f"not in any series: {reason}"})
        elif series["error"]:
            out["good"].append({"file": good["file"], "status": "lost", "why": f"series failed: {series['error']}"})
        else:
            try:
                status, why = check_good(path, volumes[series["key"]])
            except Exception as exc:  # the good file itself: a corpus problem, say so
                status, why = "lost", f"cannot check: {_last_line(exc)}"
            out["good"].append({"file": good["file"], "status": status, "why": why})
    out["bad_named"] = {b["file"]: str(folder / b["file"]) in blob for b in record.get("bad", [])}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        why = refused_by_pydicom(path)
        if why is not None:
            out["refused"].append({"file": path.name, "why": why, "named_by_loader": str(path) in blob})
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder, record_path, out_path = Path(argv[0]).resolve(), Path(argv[1]), Path(argv[2])
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    except (ValueError, OSError):
        pass
    record = json.loads(record_path.read_text())
    out = run(folder, record, out_path)
    out_path.write_text(json.dumps(dict(out, phase="checked")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
