"""DICOM series -> Volume: geometry from headers first, then pixels.

``plan_series`` decides, from headers alone, where every frame goes: slices are
sorted by projecting ImagePositionPatient on the slice normal, duplicates
dropped, gaps of whole slices kept as blank slices so world coordinates stay
right, positions far outside the others excluded as corrupt, and anything odd
(gaps, uneven spacing) reported in words. A gantry-tilted (sheared) stack is
planned on a regular grid along the slice normal, and ``load_series`` shifts
each slice in-plane by its own offset (linear interpolation, as dcm2niix and
Slicer correct tilt), so every voxel's world position is true.
``load_series`` then fills a preallocated array, reading uncompressed pixel data
straight from its byte offset and handing everything else to pydicom (whose
pylibjpeg plugins decode JPEG, JPEG-LS, JPEG 2000 and RLE). A slice that fails,
even with a decoder panic, is blanked and named (or replaced by another image at
its position); it never costs the rest of the series.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace

import numpy as np
import pydicom

from ..errors import Cancelled, LoadError, describe
from ..geometry import direction_from_iop, slice_normal
from ..study import Frame, Instance, Series
from ..volume import Volume
from ..windowing import HISTOGRAM_WINDOW_MODALITIES, checked_header_window
from . import itk

FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit)  # never swallowed by per-slice guards
NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
BIG_ENDIAN = "1.2.840.10008.1.2.2"
DUPLICATE_TOL_MM = 0.01
OUTLIER_GAP_STEPS = 20  # a gap this many slice steps wide (and >= OUTLIER_MIN_MM) may cut off outliers
OUTLIER_MIN_MM = 50.0
MAX_BODY_MM = 2000.0  # slices of one series further apart than this cannot all be real
OUTLIER_MAX_FRAMES, OUTLIER_MAX_SHARE = 2, 0.05  # at most this many (or this share) are outliers
MAX_BLANK_PER_IMAGE = 2  # blank gap slots allowed per real image; beyond it the spacing is non-uniform
MAX_TILT_DEG = 45.0  # gantries tilt up to ~30 degrees; a larger shear is not resampled
READ_THREADS = max(1, min(4, os.cpu_count() or 1))

_LETTERS = {"L": (1, 0, 0), "R": (-1, 0, 0), "P": (0, 1, 0), "A": (0, -1, 0),
            "H": (0, 0, 1), "S": (0, 0, 1), "F": (0, 0, -1), "I": (0, 0, -1)}


@dataclass
class SlicePlan:
    """Where each output slice comes from; None marks a missing slice kept blank."""

    shape: tuple[int, int, int]
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray
    slots: list[Frame | None]
    problems: list[str] = field(default_factory=list)
    alternates: dict[int, list[Frame]] = field(default_factory=dict)  # slot -> other frames at its position
    # gantry tilt: per slot, the (row, col) index offset at which slot k's own pixels are read on the
    # regular grid (None: not sheared); the read buffer is (slots, rows, cols) = ``read_shape``
    shear: np.ndarray | None = None
    read_shape: tuple[int, int, int] | None = None
    oriented: bool = False  # the direction comes from ImageOrientationPatient (orientation letters are true)

    @property
    def blank_slots(self) -> tuple[int, ...]:
        return tuple(k for k, f in enumerate(self.slots) if f is None)


def _letters_vector(text: str) -> np.ndarray | None:
    vec = np.zeros(3)
    for ch in text.upper():
        if ch not in _LETTERS:
            return None
        vec += _LETTERS[ch]
    n = np.linalg.norm(vec)
    return vec / n if n else None


def projection_direction(patient_orientation) -> np.ndarray | None:
    """Direction (array order) of a projection image from PatientOrientation, e.g. ('A', 'R')."""
    if not patient_orientation:
        return None
    x = _letters_vector(patient_orientation[0])
    y = _letters_vector(patient_orientation[1])
    if x is None or y is None or abs(float(np.dot(x, y))) > 1e-3:
        return None
    return np.column_stack([np.cross(x, y), y, x])


def _mm(v: float) -> str:
    return f"{v:.3g} mm"


def plan_series(series: Series) -> SlicePlan:
    """Geometry of a series from its headers (no pixel data read)."""
    frames = series.frames
    if not frames:
        raise LoadError(series.uid, "series has no images")
    first = frames[0].instance
    problems: list[str] = []
    if first.pixel_spacing is not None and all(v > 0 for v in first.pixel_spacing):
        row_sp, col_sp = first.pixel_spacing
    else:
        row_sp = col_sp = 1.0
        problems.append("no pixel spacing in the file: 1 mm pixels assumed, measurements are in pixels")
    placed = all(f.position is not None and f.orientation is not None for f in frames)
    if placed:
        return _plan_stack(frames, row_sp, col_sp, first, problems)
    # No patient position: a projection (mammogram, radiograph) or a bare stack.
    ordered = sorted(frames, key=lambda f: (f.instance.instance_number or 0, str(f.instance.path), f.index))
    step = first.spacing_between_slices or first.slice_thickness or 1.0
    if len(ordered) > 1:
        problems.append("no ImagePositionPatient: images stacked in instance-number order, "
                        f"{_mm(step)} apart")
    direction = projection_direction(series.info.patient_orientation)
    if direction is None:
        direction = np.eye(3)[:, ::-1].copy()
    origin = frames[0].position if frames[0].position is not None else np.zeros(3)
    shape = (len(ordered), first.rows, first.columns)
    return SlicePlan(shape, np.array([step, row_sp, col_sp]), origin, direction, list(ordered), problems)


def _drop_outliers(frames: list[Frame], dist: np.ndarray, problems: list[str]):
    """Frames far outside the others (a corrupt position) are excluded, each named.

    Gaps larger than many slice steps split the stack into clusters; a few frames split off
    from a cluster many times their number are outliers. Real gaps (a missing block, two
    stations) leave clusters too big to be mistaken for outliers.
    """
    if len(frames) < 3:
        return frames, dist
    order = np.argsort(dist, kind="stable")
    d = dist[order]
    gaps = np.diff(d)
    real = gaps[gaps >= DUPLICATE_TOL_MM]
    if not real.size:
        return frames, dist
    limit = max(OUTLIER_GAP_STEPS * float(np.median(real)), OUTLIER_MIN_MM)
    clusters = np.split(order, np.flatnonzero(gaps > limit) + 1)
    if len(clusters) == 1:
        return frames, dist
    main = max(clusters, key=len)
    others = len(frames) - len(main)
    few = others <= max(OUTLIER_MAX_FRAMES, OUTLIER_MAX_SHARE * len(frames))
    # a gap longer than any body cannot be real, whatever the counts: the minority is corrupt
    impossible = others < len(main) and all(
        np.ptp(dist[np.concatenate([main, c])]) > MAX_BODY_MM for c in clusters if c is not main)
    if not impossible and (not few or len(main) < 5 * others):
        return frames, dist
    keep = np.sort(main)
    lo, hi = float(dist[keep].min()), float(dist[keep].max())
    out = [i for i in range(len(frames)) if i not in set(keep.tolist())]
    named = "; ".join(f"{frames[i].instance.path} at {dist[i]:.6g} mm" for i in out[:5])
    more = f" and {len(out) - 5} more" if len(out) > 5 else ""
    problems.append(f"{len(out)} image(s) far outside the other slices ({lo:.6g}..{hi:.6g} mm along the "
                    f"slice normal), excluded as corrupt positions: {named}{more}")
    return [frames[i] for i in keep], dist[keep]


def _plan_stack(frames: list[Frame], row_sp: float, col_sp: float, first: Instance,
                problems: list[str]) -> SlicePlan:
    orientation = frames[0].orientation
    try:
        normal = slice_normal(orientation)
    except ValueError as exc:
        raise LoadError(first.path, f"invalid ImageOrientationPatient (0020,0037): {exc}") from exc
    dist = np.array([float(np.dot(f.position, normal)) for f in frames])
    frames, dist = _drop_outliers(frames, dist, problems)
    order = np.argsort(dist, kind="stable")
    kept: list[Frame] = []
    kept_d: list[float] = []
    spares: dict[int, list[Frame]] = {}  # id(kept frame) -> other frames at its position
    dupes = 0
    for i in order:
        if kept_d and abs(dist[i] - kept_d[-1]) < DUPLICATE_TOL_MM:
            dupes += 1
            if kept[-1].instance.pixel_problem and not frames[i].instance.pixel_problem:
                # the scan found this one's pixels damaged: the sound image takes the slot
                spare = spares.pop(id(kept[-1]), [])
                spares[id(frames[i])] = [kept[-1], *spare]
                kept[-1] = frames[i]
            else:
                spares.setdefault(id(kept[-1]), []).append(frames[i])
            continue
        kept.append(frames[i])
        kept_d.append(float(dist[i]))
    if dupes:
        problems.append(f"{dupes} image(s) at a position already taken: the first that decodes is kept")
        problems.extend(f"{f.instance.path}: {f.instance.pixel_problem}; another image at its position is used"
                        for spare in spares.values() for f in spare if f.instance.pixel_problem)
    slots: list[Frame | None] = list(kept)
    d = np.array(kept_d)
    if len(kept) == 1:
        step = first.spacing_between_slices or first.slice_thickness or 1.0
    else:
        gaps = np.diff(d)
        step = float(np.median(gaps))
        uneven = np.abs(gaps - step) > max(0.01 * step, DUPLICATE_TOL_MM)
        if uneven.any():
            ratio = gaps / step
            if np.abs(gaps - step).min() > 0.01 * step and gaps.min() > 0:
                step = float(gaps.min())  # the median of few gaps may be no real gap (0.8, 1.6 -> 1.2)
                ratio = gaps / step
            # a gap far shorter than the step (1.25 among 100s) rounds to 0 steps: not a whole multiple
            whole = (np.abs(ratio - np.rint(ratio)) < 0.05) & (np.rint(ratio) >= 1)
            missing_f = float(np.sum(np.rint(ratio) - 1))
            if whole.all() and missing_f <= MAX_BLANK_PER_IMAGE * len(kept):
                slots = [kept[0]]
                missing = 0
                for f, r in zip(kept[1:], np.rint(ratio).astype(int)):
                    slots.extend([None] * (r - 1))
                    missing += r - 1
                    slots.append(f)
                where = ", ".join(f"{kept_d[i]:.1f}..{kept_d[i + 1]:.1f} mm"
                                  for i in np.flatnonzero(ratio > 1.5)[:3])
                problems.append(f"{missing} missing slice(s) (gaps at {where}): kept as blank slices "
                                "so positions stay true")
            else:
                step = float((d[-1] - d[0]) / (len(d) - 1))
                problems.append(f"non-uniform slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm): "
                                f"shown with the mean spacing {_mm(step)}, positions approximate")
        if not (np.isfinite(step) and step > 0):
            step = 1.0
    direction = direction_from_iop(orientation, normal)
    shape = (len(slots), first.rows, first.columns)
    alternates = {k: spares[id(f)] for k, f in enumerate(slots) if f is not None and id(f) in spares}
    plan = SlicePlan(shape, np.array([step, row_sp, col_sp]), kept[0].position.copy(), direction, slots,
                     problems, alternates, oriented=True)
    if len(kept) > 1:
        _plan_shear(plan, kept)
    return plan


def _plan_shear(plan: SlicePlan, kept: list[Frame]) -> None:
    """Gantry tilt: slices stepped along a vector off the slice normal are put on a regular grid.

    Each slice keeps its plane; its in-plane offset from the first slice (in pixels) becomes a
    shift applied at load time. The grid grows to hold every shifted slice, its origin moving by
    whole pixels so the first slice is not interpolated.
    """
    p0 = plan.origin
    normal, col_cos, row_cos = plan.direction[:, 0], plan.direction[:, 1], plan.direction[:, 2]
    span = kept[-1].position - p0
    if np.linalg.norm(span) == 0:
        return
    cos = abs(float(np.dot(span, normal))) / float(np.linalg.norm(span))
    tilt = float(np.degrees(np.arccos(min(1.0, cos))))
    offsets = np.zeros((len(plan.slots), 2))
    for k, f in enumerate(plan.slots):
        if f is not None:
            delta = f.position - p0
            delta = delta - np.dot(delta, normal) * normal
            offsets[k] = (np.dot(delta, col_cos) / plan.spacing[1], np.dot(delta, row_cos) / plan.spacing[2])
    if tilt <= 0.1 or np.abs(offsets).max() < 0.05:  # rounding in the positions, not a tilt
        return
    low = np.floor(offsets.min(axis=0) + 1e-6)
    high = np.ceil(offsets.max(axis=0) - 1e-6)
    grow = (high - low).astype(int)
    if tilt > MAX_TILT_DEG or (grow > np.array(plan.shape[1:])).any():
        # no gantry tilts this far: a stack sheared by more than its own size is left as it is
        plan.problems.append(f"slices stepped {tilt:.1f} degrees off their normal (too far for a gantry tilt): "
                             "shown unsheared, off-plane positions approximate")
        return
    plan.read_shape = plan.shape
    plan.shape = (plan.shape[0], plan.shape[1] + int(grow[0]), plan.shape[2] + int(grow[1]))
    plan.origin = p0 + low[0] * plan.spacing[1] * col_cos + low[1] * plan.spacing[2] * row_cos
    plan.shear = offsets - low  # slot k's pixel (i, j) lands on grid (i + shear[k, 0], j + shear[k, 1])
    plan.problems.append(f"gantry tilt {tilt:.1f} degrees: resampled to a regular grid "
                         f"({plan.read_shape[1]}x{plan.read_shape[2]} -> {plan.shape[1]}x{plan.shape[2]} pixels, "
                         "linear interpolation), positions true")


def _unshear(raw: np.ndarray, plan: SlicePlan, fill, out_dtype) -> np.ndarray:
    """Shift each slice of ``raw`` in-plane onto the plan's regular grid (bilinear, ``fill`` outside).

    A pure translation needs no general resampler: each slice is placed at its whole-pixel
    offset in a canvas of ``fill`` and the fractional part blends the canvas with itself moved
    by one pixel (exactly linear interpolation), a few numpy passes per slice.
    """
    out = np.empty(plan.shape, dtype=out_dtype)
    h, w = plan.shape[1:]
    r, c = raw.shape[1:]
    canvas = np.empty((h + 1, w + 1), dtype=np.float32)
    integral = np.issubdtype(out_dtype, np.integer)
    for k in range(plan.shape[0]):
        if plan.slots[k] is None:
            out[k] = fill
            continue
        dy, dx = plan.shear[k]
        iy, ix = int(np.floor(dy + 1e-9)), int(np.floor(dx + 1e-9))
        fy, fx = max(0.0, dy - iy), max(0.0, dx - ix)
        canvas.fill(fill)
        canvas[1 + iy:1 + iy + r, 1 + ix:1 + ix + c] = raw[k]
        moved = ((1 - fy) * (1 - fx)) * canvas[1:, 1:]
        if fy:
            moved += (fy * (1 - fx)) * canvas[:-1, 1:]
        if fx:
            moved += ((1 - fy) * fx) * canvas[1:, :-1]
        if fy and fx:
            moved += (fy * fx) * canvas[:-1, :-1]
        if integral:
            info = np.iinfo(out_dtype)
            np.clip(np.rint(moved), info.min, info.max, out=moved)
        out[k] = moved
    return out


# -- pixels ------------------------------------------------------------------
def _stored_range(inst: Instance) -> tuple[int, int]:
    bits = inst.bits_stored or inst.bits_allocated
    if inst.pixel_representation:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def output_dtype(plan: SlicePlan) -> np.dtype:
    """Smallest dtype holding every modality value the stored bits allow (HU in int16)."""
    frames = [f for f in plan.slots if f is not None] + [f for alts in plan.alternates.values() for f in alts]
    insts = {id(f.instance): f.instance for f in frames}.values()
    if any(i.samples_per_pixel != 1 or i.photometric.startswith("PALETTE") or i.float_pixels for i in insts):
        return np.dtype(np.float32)
    lo, hi, integral = np.inf, -np.inf, True
    for inst in insts:
        smin, smax = _stored_range(inst)
        for slope, icpt in {f.rescale or inst.rescale for f in inst.frame_list}:
            a, b = sorted((slope * smin + icpt, slope * smax + icpt))
            lo, hi = min(lo, a), max(hi, b)
            integral &= float(slope).is_integer() and float(icpt).is_integer()
    if not integral:
        return np.dtype(np.float32)
    for dt in (np.uint8, np.int16, np.uint16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    return np.dtype(np.float32)


def _native_dtype(inst: Instance) -> np.dtype | None:
    if inst.bits_allocated not in (8, 16, 32) or inst.samples_per_pixel != 1:
        return None
    kind = "i" if inst.pixel_representation else "u"
    order = ">" if inst.transfer_syntax == BIG_ENDIAN else "<"
    return np.dtype(f"{order}{kind}{inst.bits_allocated // 8}")


def read_stored(inst: Instance, notes: list[str] | None = None) -> np.ndarray:
    """Stored pixel values of every frame, shape (frames, rows, cols) (or (..., 3) colour).

    Decoded values outside what BitsStored allows are clipped, with a note naming the file.
    """
    if not inst.has_pixels:
        raise LoadError(inst.path, "no pixel data (7FE0,0010) in the file")
    dtype = _native_dtype(inst)
    if (dtype is not None and inst.pixel_offset is not None
            and inst.transfer_syntax in NATIVE_SYNTAXES and inst.photometric.startswith("MONO")):
        count = inst.rows * inst.columns * inst.frames
        need = count * dtype.itemsize
        size = inst.path.stat().st_size
        if inst.pixel_offset + need > size or (inst.pixel_length or 0) < need:
            have = max(0, min(size - inst.pixel_offset, inst.pixel_length or 0))
            raise LoadError(inst.path, f"pixel data truncated: {need} bytes expected, {have} present")
        arr = np.fromfile(inst.path, dtype=dtype, count=count, offset=inst.pixel_offset)
        arr = arr.reshape(inst.frames, inst.rows, inst.columns)
        if not dtype.isnative:
            arr = arr.astype(dtype.newbyteorder("="))
        return _mask_bits(arr, inst)
    arr = _read_with_pydicom(inst)
    clipped = _clip_to_stored(arr, inst)
    if clipped and notes is not None:
        notes.append(f"{inst.path}: {clipped} decoded pixel value(s) outside the {inst.bits_stored} bits "
                     "stored (corrupt compressed data): clipped to the stored range")
    return arr


def _clip_to_stored(arr: np.ndarray, inst: Instance) -> int:
    """Clip integer values a decoder gave beyond BitsStored (they would wrap in the output)."""
    if not np.issubdtype(arr.dtype, np.integer) or inst.samples_per_pixel != 1 or not arr.size:
        return 0
    lo, hi = _stored_range(inst)
    if arr.min() >= lo and arr.max() <= hi:
        return 0
    bad = int(np.count_nonzero((arr < lo) | (arr > hi)))
    np.clip(arr, max(lo, np.iinfo(arr.dtype).min), min(hi, np.iinfo(arr.dtype).max), out=arr)
    return bad


def _mask_bits(arr: np.ndarray, inst: Instance) -> np.ndarray:
    """Clear bits above BitsStored (old overlays) and sign-extend signed values."""
    spare = inst.bits_allocated - inst.bits_stored
    if spare <= 0 or inst.bits_stored <= 0:
        return arr
    if inst.pixel_representation:
        return (arr << spare) >> spare
    mask = np.array((1 << inst.bits_stored) - 1, dtype=arr.dtype)
    if arr.max(initial=0) > mask:
        np.bitwise_and(arr, mask, out=arr)
    return arr


def _read_with_pydicom(inst: Instance) -> np.ndarray:
    try:
        ds = pydicom.dcmread(inst.path, force=True)  # the scan already vouched it is DICOM
        arr = ds.pixel_array
    except BaseException as exc:  # decoders written in Rust panic with a BaseException
        if isinstance(exc, FATAL):
            raise
        ts = inst.transfer_syntax
        name = getattr(pydicom.uid.UID(ts), "name", ts) if ts else "unknown transfer syntax"
        raise LoadError(inst.path, f"cannot decode pixel data ({name}): {describe(exc)}") from exc
    if inst.photometric.startswith("PALETTE"):
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    if inst.samples_per_pixel == 3 or arr.ndim == (4 if inst.frames > 1 else 3):
        arr = arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if inst.frames == 1:
        arr = arr[np.newaxis]
    expected = (inst.frames, inst.rows, inst.columns)
    if arr.shape != expected:
        raise LoadError(inst.path, f"decoded image is {arr.shape}, header says {expected}")
    return arr


def _to_modality(stored: np.ndarray, rescale: tuple[float, float], out: np.ndarray) -> None:
    """out = stored * slope + intercept, exact for integer outputs (modular arithmetic)."""
    slope, icpt = rescale
    if np.issubdtype(out.dtype, np.integer):
        np.copyto(out, stored, casting="unsafe")
        if slope != 1:
            out *= np.array(int(slope)).astype(out.dtype)
        if icpt:
            out += np.array(int(icpt)).astype(out.dtype)
    else:
        np.multiply(stored, np.float32(slope), out=out, dtype=np.float32, casting="unsafe")
        if icpt:
            out += np.float32(icpt)


def load_series(series: Series, progress=None, should_stop=None) -> Volume:
    """Decode a series into a Volume; bad files become problems, not failures, while any image is good."""
    if series.kind == "file":
        return itk.read_volume(series.path)
    if series.kind != "dicom":
        reason = series.problems[0] if series.problems else "no image data"
        raise LoadError(series.instances[0].path if series.instances else series.uid, reason)
    plan = plan_series(series)
    dtype = output_dtype(plan)
    out = np.empty(plan.read_shape or plan.shape, dtype=dtype)
    slots_by_instance: dict[int, list[tuple[int, Frame]]] = {}
    instances: dict[int, Instance] = {}
    for k, f in enumerate(plan.slots):
        if f is None:
            continue
        slots_by_instance.setdefault(id(f.instance), []).append((k, f))
        instances[id(f.instance)] = f.instance
    blank = [k for k, f in enumerate(plan.slots) if f is None]
    problems = list(series.problems) + list(plan.problems)

    def work(key: int) -> None:
        inst = instances[key]
        stored = read_stored(inst, problems)  # list.append is atomic: threads may add notes
        for k, f in slots_by_instance[key]:
            _to_modality(stored[f.index], f.rescale or inst.rescale, out[k])

    done, total, good = 0, len(instances), 0
    failed: dict[int, str] = {}  # instance key -> why it could not be read
    with ThreadPoolExecutor(READ_THREADS) as pool:
        futures = {pool.submit(work, key): key for key in instances}
        for fut in as_completed(futures):
            key = futures[fut]
            done += 1
            if should_stop is not None and should_stop():
                for other in futures:
                    other.cancel()
                raise Cancelled("loading cancelled")
            try:
                fut.result()
                good += 1
            except BaseException as exc:  # one bad file (even a decoder panic) never loses the others
                if isinstance(exc, FATAL):
                    raise
                failed[key] = _reason(instances[key], exc)
            if progress is not None:
                progress(done, total)
    for key in sorted(failed, key=lambda key: slots_by_instance[key][0][0]):
        used, blanked = [], 0
        for k, _ in slots_by_instance[key]:
            alt = _fill_from_alternates(plan.alternates.get(k, []), out[k])
            if alt is None:
                blank.append(k)
                blanked += 1
            elif str(alt.instance.path) not in used:
                used.append(str(alt.instance.path))
        if used:
            good += 1
            rest = f"; {blanked} other frame(s) shown blank" if blanked else ""
            problems.append(f"{failed[key]}; {', '.join(used)} at the same position used instead{rest}")
        else:
            problems.append(f"{failed[key]}; shown blank")
    for key, inst in instances.items():
        if inst.pixel_problem and key not in failed:  # flagged by the scan, yet it decoded
            problems.append(f"{inst.path}: {inst.pixel_problem}; decoded anyway, check this image")
    if good == 0:
        raise LoadError(next(iter(instances.values())).path,
                        "no image in this series could be read: " + problems[-1])
    fill = None
    if blank or plan.shear is not None:
        fill = _fill_value(series.modality, out, sorted(set(range(len(plan.slots))) - set(blank)))
        for k in blank:
            out[k] = fill
    if plan.shear is not None:
        plan.slots = [None if k in blank else f for k, f in enumerate(plan.slots)]
        out = _unshear(out, plan, fill, dtype)
    info = replace(series.info, files=tuple(str(i.path) for i in instances.values()))
    if any(i.samples_per_pixel == 3 or i.photometric.startswith("PALETTE") for i in instances.values()):
        problems.append("colour image shown as greyscale luminance")
    if series.modality.upper() in HISTOGRAM_WINDOW_MODALITIES and info.window is not None:
        window, note = checked_header_window(info.window, out)
        if note:
            info = replace(info, window=window)
            problems.append(note)
    return Volume(out, plan.spacing, plan.origin, plan.direction, info, problems,
                  blank_slices=tuple(sorted(set(blank))), oriented=plan.oriented)


def _reason(inst: Instance, exc: BaseException) -> str:
    return str(exc) if isinstance(exc, LoadError) else f"{inst.path}: cannot read pixels ({describe(exc)})"


def _fill_from_alternates(alternates: list[Frame], out: np.ndarray) -> Frame | None:
    """The first other image at a slot's position that decodes, written into out."""
    for f in alternates:
        try:
            stored = read_stored(f.instance)
            _to_modality(stored[f.index], f.rescale or f.instance.rescale, out)
            return f
        except BaseException as exc:
            if isinstance(exc, FATAL):
                raise
    return None


def _fill_value(modality: str, out: np.ndarray, good: list[int]):
    """Blank slices get the lowest meaningful value: air (-1024 HU) for CT, else the data minimum."""
    low = min((out[k].min() for k in good), default=0)
    value = -1024 if modality == "CT" else low
    if np.issubdtype(out.dtype, np.integer):
        info = np.iinfo(out.dtype)
        if not info.min <= value <= info.max:
            value = low
        return int(value)
    return float(value)
