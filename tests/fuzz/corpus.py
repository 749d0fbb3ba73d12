"""Seeded corruption corpus: folders where a few slices of one real series got damaged.

Sources are the demo studies (small scale), series built from pydicom's bundled test files
(every codec the app reads: explicit/implicit/big-endian, RLE, JPEG-LS, JPEG 2000; each copy
gets its own SOP UID, position and pixels, re-encoded in the source's transfer syntax), legacy
multi-frame files built from MR_small, and one larger demo CT whose size is the memory
yardstick ("largest real volume").

Every folder holds one source series; some of its files are replaced by a mutated copy and a
few junk or damaged-duplicate files may be added. ``corpus.json`` records, per folder, the
untouched good slices (file, SOP Instance UID, position) and every mutation (file, name,
detail), so a failure is reproduced from the seed alone: same seed, same bytes.
"""
from __future__ import annotations

import io
import json
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
import pydicom.config
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid

PIXEL_DATA = 0x7FE00010
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"  # offline: never get_testdata_file

# (source name, pydicom test file, copies): one series per file, in its own transfer syntax.
PYDICOM_SOURCES = [
    ("ct_small", "CT_small.dcm", 6),
    ("mr_small", "MR_small.dcm", 6),
    ("mr_implicit", "MR_small_implicit.dcm", 6),
    ("mr_bigendian", "MR_small_bigendian.dcm", 6),
    ("mr_rle", "MR_small_RLE.dcm", 6),
    ("mr_jpegls", "MR_small_jpeg_ls_lossless.dcm", 6),
    ("mr_j2k", "MR_small_jp2klossless.dcm", 6),
]


# The order sources take turns in: every codec comes early, so a small corpus still covers them.
TURNS = ["demo_ct", "mr_rle", "mr_multiframe", "mr_jpegls", "mr_j2k", "demo_mg", "mr_bigendian", "mr_implicit",
         "ct_small", "demo_mr", "mr_small"]


@dataclass
class Source:
    """One clean series: its files and the bytes its pixels hold once decoded."""

    name: str
    files: list[Path]
    volume_bytes: int


@dataclass
class Folder:
    name: str
    source: str
    good: list[dict] = field(default_factory=list)  # {"file", "sop_uid", "position"}
    bad: list[dict] = field(default_factory=list)  # {"file", "mutation", "detail", "base"}


@dataclass
class Corpus:
    root: Path
    seed: int
    folders: list[Folder]
    largest_volume_bytes: int
    files: int

    def save(self) -> Path:
        path = self.root / "corpus.json"
        data = {"seed": self.seed, "files": self.files, "largest_volume_bytes": self.largest_volume_bytes,
                "folders": [asdict(f) for f in self.folders]}
        path.write_text(json.dumps(data, indent=1))
        return path

    @classmethod
    def load(cls, root) -> "Corpus":
        root = Path(root)
        data = json.loads((root / "corpus.json").read_text())
        return cls(root, data["seed"], [Folder(**f) for f in data["folders"]], data["largest_volume_bytes"],
                   data["files"])


@contextmanager
def _lenient_writes():
    """Mutations write invalid values on purpose: pydicom must not refuse to write them."""
    settings = pydicom.config.settings
    old = settings.writing_validation_mode, settings.reading_validation_mode
    settings.writing_validation_mode = settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.writing_validation_mode, settings.reading_validation_mode = old


# -- sources --------------------------------------------------------------------------
def _volume_bytes(files: list[Path]) -> int:
    total = 0
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        total += frames * ds.Rows * ds.Columns * int(ds.get("SamplesPerPixel", 1)) * max(1, ds.BitsAllocated // 8)
    return total


def _series_from_file(src: Path, out_dir: Path, name: str, copies: int) -> list[Path]:
    """``copies`` slices of one series from one file: new UIDs, positions one thickness apart,
    pixels rolled so no two slices are alike, re-encoded in the file's own transfer syntax."""
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid(entropy_srcs=["lightbox-fuzz", name, "series"])
    paths = []
    for k in range(copies):
        ds = pydicom.dcmread(src)
        ts = ds.file_meta.TransferSyntaxUID
        arr = ds.pixel_array
        rolled = np.roll(arr, 5 * k + 1, axis=-1)
        try:
            if ts.is_compressed:
                ds.compress(ts, rolled)
            else:
                ds.PixelData = rolled.tobytes()
        except Exception:  # no encoder for this syntax: copies keep the original stream
            pass
        sop = generate_uid(entropy_srcs=["lightbox-fuzz", name, str(k)])
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = k + 1
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            iop = np.array([float(v) for v in ds.ImageOrientationPatient])
            normal = np.cross(iop[:3], iop[3:])
            step = float(ds.get("SliceThickness", 1) or 1)
            ipp = np.array([float(v) for v in ds.ImagePositionPatient]) + k * step * normal
            ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
            if "SliceLocation" in ds:
                ds.SliceLocation = f"{float(ipp @ normal):.4f}"
        path = out_dir / f"IM{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=False)
        paths.append(path)
    return paths


def _multiframe_series(src: Path, out_dir: Path, name: str, files: int = 3, frames: int = 4) -> list[Path]:
    """Legacy multi-frame files (NumberOfFrames, one position + SliceThickness step) of one series,
    each file a block of slices further along the normal; frames rolled so none are alike."""
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid(entropy_srcs=["lightbox-fuzz", name, "series"])
    paths = []
    for k in range(files):
        ds = pydicom.dcmread(src)
        arr = ds.pixel_array
        stack = np.stack([np.roll(arr, 3 * (k * frames + f) + 1, axis=-1) for f in range(frames)])
        ds.PixelData = stack.astype(arr.dtype).tobytes()
        ds.NumberOfFrames = frames
        sop = generate_uid(entropy_srcs=["lightbox-fuzz", name, str(k)])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = k + 1
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        step = float(ds.get("SliceThickness", 1) or 1)
        ds.SpacingBetweenSlices = f"{step:g}"
        ipp = np.array([float(v) for v in ds.ImagePositionPatient]) + k * frames * step * np.cross(iop[:3], iop[3:])
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
        path = out_dir / f"MF{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=False)
        paths.append(path)
    return paths


def build_sources(root: Path, seed: int = 0, demo_scale: float = 0.1,
                  big_ct_shape: tuple[int, int, int] | None = (24, 256, 256)) -> list[Source]:
    """Clean series under root/_sources; the big CT (if any) comes first."""
    from viewer.core.synthetic import write_ct_study, write_demo_studies

    base = root / "_sources"
    sources = []
    if big_ct_shape is not None:
        files = write_ct_study(base / "ct_big", shape=big_ct_shape, spacing=(2.5, 1.4, 1.4), seed=seed).files
        sources.append(Source("ct_big", list(files), _volume_bytes(files)))
    demo = write_demo_studies(base / "demo", seed=seed, scale=demo_scale)
    for key in ("CT", "MR"):
        files = list(demo[key].files)
        sources.append(Source(f"demo_{key.lower()}", files, _volume_bytes(files)))
    mg = [p for view in demo["MG"].values() for p in view.files]
    sources.append(Source("demo_mg", mg, max(_volume_bytes([p]) for p in mg)))
    with _lenient_writes():
        for name, filename, copies in PYDICOM_SOURCES:
            src = PYDICOM_FILES / filename
            if src.is_file():
                files = _series_from_file(src, base / name, name, copies)
                sources.append(Source(name, files, _volume_bytes(files)))
        if (PYDICOM_FILES / "MR_small.dcm").is_file():
            files = _multiframe_series(PYDICOM_FILES / "MR_small.dcm", base / "mr_multiframe", "mr_multiframe")
            sources.append(Source("mr_multiframe", files, _volume_bytes(files)))
    return sources


# -- element offsets (for byte-level mutations) ---------------------------------------
@dataclass
class Element:
    tag: int
    vr: str | None  # None: implicit VR
    header: int  # offset of the tag
    value: int  # offset of the value
    length: int
    little: bool

    @property
    def length_field(self) -> tuple[int, int]:
        """(offset, size) of the length field."""
        if self.vr is None:
            return self.header + 4, 4
        if self.vr in LONG_VRS:
            return self.header + 8, 4
        return self.header + 6, 2


def elements(data: bytes) -> list[Element]:
    """Top-level data elements of the dataset (not the file meta) with their byte offsets."""
    ds = pydicom.dcmread(io.BytesIO(data), force=True, defer_size=None)
    out = []
    for tag in list(ds._dict):
        raw = ds._dict[tag]
        tell = getattr(raw, "value_tell", None)
        if tell is None:
            continue
        implicit = bool(raw.is_implicit_VR)
        vr = None if implicit else raw.VR
        head = tell - (8 if implicit or vr not in LONG_VRS else 12)
        out.append(Element(int(raw.tag), vr, head, tell, int(raw.length), bool(raw.is_little_endian)))
    return out


def _pixel_element(els: list[Element]) -> Element | None:
    return next((e for e in els if e.tag == PIXEL_DATA), None)


# -- mutations -----------------------------------------------------------------------
# Each takes (rng, data) and returns (bytes, detail) or None when it does not apply to the file.
Mutation = Callable[[np.random.Generator, bytes], "tuple[bytes, str] | None"]


def _edit(data: bytes, change: Callable[[pydicom.Dataset], str | None]) -> tuple[bytes, str] | None:
    with _lenient_writes():
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        detail = change(ds)
        if detail is None:
            return None
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue(), detail


def trunc_header(rng, data):
    px = _pixel_element(elements(data))
    end = px.header if px is not None else len(data)
    cut = int(rng.integers(1, max(2, end)))
    return data[:cut], f"cut at byte {cut} of {len(data)} (header ends at {end})"


def trunc_pixels(rng, data):
    px = _pixel_element(elements(data))
    if px is None or px.value >= len(data) - 1:
        return None
    cut = int(rng.integers(px.value, len(data)))
    return data[:cut], f"cut at byte {cut} of {len(data)} (pixels start at {px.value})"


def _flip(rng, data, lo, hi, most):
    if hi - lo < 1:
        return None
    buf = bytearray(data)
    where = sorted(int(i) for i in rng.integers(lo, hi, int(rng.integers(1, most + 1))))
    for i in where:
        buf[i] ^= int(rng.integers(1, 256))
    return bytes(buf), f"bytes {where} flipped"


def flip_header(rng, data):
    px = _pixel_element(elements(data))
    return _flip(rng, data, 132, px.header if px is not None else len(data), 8)


def flip_pixels(rng, data):
    px = _pixel_element(elements(data))
    return None if px is None else _flip(rng, data, px.value, len(data), 16)


def wrong_vr(rng, data):
    els = [e for e in elements(data) if e.vr is not None and e.tag != PIXEL_DATA]
    if not els:
        return None
    ww = [e for e in els if e.tag == 0x00281051]
    if ww and rng.random() < 0.3:
        el, new = ww[0], "Di"  # the issue's case: WindowWidth DS -> Di
    else:
        el = els[int(rng.integers(len(els)))]
        new = str(rng.choice(["Di", "XX", "ds", "??", "OB", "SQ", "UN", "US", "FD", "AT"]))
    if new == el.vr:
        new = "Qz"
    buf = bytearray(data)
    buf[el.header + 4:el.header + 6] = new.encode("latin-1")
    return bytes(buf), f"({el.tag >> 16:04X},{el.tag & 0xFFFF:04X}) VR {el.vr} -> {new!r}"


def wrong_length(rng, data):
    els = [e for e in elements(data) if e.tag != PIXEL_DATA and e.length != 0xFFFFFFFF]
    if not els:
        return None
    el = els[int(rng.integers(len(els)))]
    off, size = el.length_field
    top = (1 << (8 * size)) - 1
    new = int(rng.choice([el.length + 1, el.length + 2, max(0, el.length - 2), 0, top, el.length * 7 + 1000]))
    new = min(new, top)
    buf = bytearray(data)
    buf[off:off + size] = new.to_bytes(size, "little" if el.little else "big")
    return bytes(buf), f"({el.tag >> 16:04X},{el.tag & 0xFFFF:04X}) length {el.length} -> {new}"


def cut_stream(rng, data):
    """A compressed frame cut short (and sometimes garbage-tailed), re-encapsulated validly."""
    def change(ds):
        if not ds.file_meta.TransferSyntaxUID.is_compressed or "PixelData" not in ds:
            return None
        frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
        frame = frames[0]
        cut = int(rng.integers(1, max(2, len(frame))))
        tail = bytes(rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8)) if rng.random() < 0.3 else b""
        new = frame[:cut] + tail
        new += b"\0" * (len(new) % 2)
        ds.PixelData = encapsulate([new] + frames[1:])
        return f"frame 0 cut at {cut} of {len(frame)} bytes" + (f", {len(tail)} junk bytes appended" if tail else "")
    return _edit(data, change)


TYPE1 = ["Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
         "PhotometricInterpretation", "SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID",
         "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "PixelData"]


def delete_type1(rng, data):
    def change(ds):
        present = [k for k in TYPE1 if k in ds]
        signed = [k for k in present if k == "PixelRepresentation" and ds.PixelRepresentation == 1]
        if not present:
            return None
        key = signed[0] if signed and rng.random() < 0.3 else present[int(rng.integers(len(present)))]
        del ds[key]
        if key in ("SOPInstanceUID", "SOPClassUID") and rng.random() < 0.5:
            tag = "MediaStorageSOPInstanceUID" if key == "SOPInstanceUID" else "MediaStorageSOPClassUID"
            if tag in ds.file_meta:
                del ds.file_meta[tag]
        return f"{key} deleted"
    return _edit(data, change)


def _set(ds, keyword, vr, value) -> str:
    """Set (or add) an element, whatever its validity; returns what was done, for the record."""
    if keyword in ds:
        ds[keyword].value = value
    else:
        ds.add_new(pydicom.datadict.tag_for_keyword(keyword), vr, value)
    shown = "\\".join(value) if isinstance(value, list) else value
    return f"{keyword} = {shown}"


def _slope(ds, value) -> str:
    _set(ds, "RescaleIntercept", "DS", str(ds.get("RescaleIntercept", "0")))
    return _set(ds, "RescaleSlope", "DS", value)


def _orientation(ds, value) -> str | None:
    """Only for files that have a position: an orientation alone is not used."""
    return _set(ds, "ImageOrientationPatient", "DS", value) if "ImagePositionPatient" in ds else None


def _shift_ipp(ds, z) -> str | None:
    if "ImagePositionPatient" not in ds:
        return None
    x, y, _ = (str(v) for v in ds.ImagePositionPatient)
    return _set(ds, "ImagePositionPatient", "DS", [x, y, z])


# name -> change(ds) returning what it did, or None when it does not apply.
ABSURD = {
    "frames_1e6": lambda ds: _set(ds, "NumberOfFrames", "IS", "1000000"),
    "rows_0": lambda ds: _set(ds, "Rows", "US", 0),
    "columns_0": lambda ds: _set(ds, "Columns", "US", 0),
    "rows_65535": lambda ds: _set(ds, "Rows", "US", 65535),
    "thickness_neg": lambda ds: _set(ds, "SliceThickness", "DS", "-2.5"),
    "spacing_zero": lambda ds: _set(ds, "PixelSpacing", "DS", ["0", "0"]),
    "slope_nan": lambda ds: _slope(ds, "NaN"),
    "slope_inf": lambda ds: _slope(ds, "inf"),
    "iop_parallel": lambda ds: _orientation(ds, ["1", "0", "0", "1", "0", "0"]),
    "iop_zero": lambda ds: _orientation(ds, ["0"] * 6),
    "ipp_20250": lambda ds: _shift_ipp(ds, "20250"),
    "ipp_1e300": lambda ds: _shift_ipp(ds, "1e300"),
    "bits_allocated_7": lambda ds: _set(ds, "BitsAllocated", "US", 7),
    "bits_stored_40": lambda ds: _set(ds, "BitsStored", "US", 40),
    "samples_3": lambda ds: _set(ds, "SamplesPerPixel", "US", 3),
    "palette": lambda ds: _set(ds, "PhotometricInterpretation", "CS", "PALETTE COLOR"),
}


def absurd_value(rng, data):
    names = sorted(ABSURD)
    return _absurd(names[int(rng.integers(len(names)))])(rng, data)


def zero_filled(rng, data):
    size = int(rng.choice([len(data), 4096, 1 << 20]))
    return b"\0" * size, f"{size} zero bytes"


def not_dicom(rng, data):
    kind = int(rng.integers(3))
    if kind == 0:
        return b"exported by hand, see the ticket\n" * int(rng.integers(1, 200)), "text"
    if kind == 1:
        return b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 3000, dtype=np.uint8)), "PNG header and noise"
    return bytes(rng.integers(0, 256, int(rng.integers(200, 20000)), dtype=np.uint8)), "random bytes"


def damaged_duplicate(rng, data):
    """A second, broken copy of a good slice (same SOP UID and position), named to sort first."""
    done = cut_stream(rng, data) or trunc_pixels(rng, data)
    return None if done is None else (done[0], "duplicate of a good slice: " + done[1])


# name -> (function, kind): "replace" damages a slice of the series, "extra" adds a file beside them.
MUTATIONS: dict[str, tuple[Mutation, str]] = {
    "trunc_header": (trunc_header, "replace"),
    "trunc_pixels": (trunc_pixels, "replace"),
    "flip_header": (flip_header, "replace"),
    "flip_pixels": (flip_pixels, "replace"),
    "wrong_vr": (wrong_vr, "replace"),
    "wrong_length": (wrong_length, "replace"),
    "cut_stream": (cut_stream, "replace"),
    "delete_type1": (delete_type1, "replace"),
    "absurd_value": (absurd_value, "replace"),
    "zero_filled": (zero_filled, "replace"),
    "zero_filled_noext": (zero_filled, "extra"),
    "not_dicom": (not_dicom, "extra"),
    "damaged_duplicate": (damaged_duplicate, "extra"),
}
WEIGHTS = {"absurd_value": 3, "delete_type1": 2, "wrong_vr": 2, "wrong_length": 2, "cut_stream": 2}


def _position(path: Path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ipp = ds.get("ImagePositionPatient")
    return [float(v) for v in ipp] if ipp is not None else None, str(ds.get("SOPInstanceUID", ""))


def _window_width_di(rng, data):
    """The issue's one-byte case: WindowWidth's VR 'DS' -> 'Di'."""
    el = next((e for e in elements(data) if e.tag == 0x00281051 and e.vr == "DS"), None)
    if el is None:
        return None
    buf = bytearray(data)
    buf[el.header + 4:el.header + 6] = b"Di"
    return bytes(buf), "(0028,1051) WindowWidth VR DS -> 'Di'"


def _jpegls_above_bits_stored(rng, data):
    """The issue's JPEG-LS case: a lossless stream whose values exceed BitsStored (12 bits here)."""
    from pydicom.uid import JPEGLSLossless

    def change(ds):
        if int(ds.get("BitsStored", 16)) >= int(ds.get("BitsAllocated", 16)) or ds.get("PixelRepresentation", 0):
            return None
        bits = int(ds.BitsStored)
        arr = ds.pixel_array.astype(np.uint16)
        arr[: max(1, arr.shape[0] // 4)] |= np.uint16(0xF000)
        ds.BitsStored, ds.HighBit = 16, 15
        ds.compress(JPEGLSLossless, arr, generate_instance_uid=False)
        ds.BitsStored, ds.HighBit = bits, bits - 1
        return f"JPEG-LS stream with values up to {int(arr.max())} under BitsStored = {bits}"
    return _edit(data, change)


def _absurd(key: str) -> Mutation:
    def change(ds):
        done = ABSURD[key](ds)
        return f"{key}: {done}" if done else None
    return lambda rng, data: _edit(data, change)


def _delete(keyword: str) -> Mutation:
    def change(ds):
        if keyword not in ds:
            return None
        del ds[keyword]
        return f"{keyword} deleted"
    return lambda rng, data: _edit(data, change)


# The defects issue 16 reports, each planted once (after the big CT) so every run, however small,
# has them: (source, [(mutation name, function, kind)]).
def _absurd_case(key: str):
    return ("absurd_value", _absurd(key), "replace")


ISSUE_CASES = [
    ("demo_ct", [("wrong_vr", _window_width_di, "replace"), _absurd_case("ipp_20250"), _absurd_case("frames_1e6"),
                 _absurd_case("slope_nan"), _absurd_case("iop_zero"),
                 ("flip_pixels", _jpegls_above_bits_stored, "replace")]),
    ("demo_ct", [_absurd_case("ipp_1e300"), _absurd_case("iop_parallel"), _absurd_case("thickness_neg"),
                 _absurd_case("rows_0"), ("damaged_duplicate", damaged_duplicate, "extra")]),
    ("mr_rle", [("cut_stream", cut_stream, "replace")]),
    ("ct_small", [("delete_type1", _delete("PixelRepresentation"), "replace"),
                  ("zero_filled", zero_filled, "replace")]),
]


def _mutate_folder(rng, folder: Folder, fdir: Path, source: Source, n_bad: int, plan=None) -> None:
    """Damage n_bad files at random, or exactly the (name, function, kind) list ``plan``."""
    names = sorted(MUTATIONS)
    weights = np.array([WEIGHTS.get(n, 1) for n in names], dtype=float)
    names_by_file = {p.name: p for p in source.files}
    for p in source.files:
        shutil.copyfile(p, fdir / p.name)
    untouched = sorted(names_by_file)
    bad: list[dict] = []
    tries = 0
    plan = list(plan or [])
    if plan:
        n_bad = len(plan)
    while len(bad) < n_bad and tries < 20 * n_bad:
        tries += 1
        if plan:
            name, fn, kind = plan[len(bad)]
        else:
            name = str(rng.choice(names, p=weights / weights.sum()))
            fn, kind = MUTATIONS[name]
        if kind == "replace" and len(untouched) <= 1:
            continue  # keep at least one good slice in every folder
        base = untouched[int(rng.integers(len(untouched)))]
        try:
            done = fn(rng, (fdir / base).read_bytes())
        except Exception:  # the source does not parse the way this mutation needs
            done = None
        if done is None:
            if plan:  # a planted case that does not apply to this source: say so, go on
                plan.pop(len(bad))
                n_bad -= 1
            continue
        data, detail = done
        if kind == "replace":
            target = fdir / base
            untouched.remove(base)
        elif name == "zero_filled_noext":
            target = fdir / f"ZERO{len(bad):03d}"
        elif name == "not_dicom":
            target = fdir / f"notes{len(bad):03d}.dcm"
        else:  # damaged duplicate: sorts before the good file it copies
            target = fdir / f"0dup{len(bad):03d}_{base}"
        target.write_bytes(data)
        bad.append({"file": target.name, "mutation": name, "detail": detail, "base": base})
    folder.bad = bad
    for name in untouched:
        position, sop = _position(fdir / name)
        folder.good.append({"file": name, "sop_uid": sop, "position": position})


def _add_huge_zeros(folder: Folder, fdir: Path, size: int) -> None:
    """Zero-filled files of ``size`` bytes (sparse: no disk used), with and without '.dcm'.
    A reader that scans them byte by byte stalls for minutes (issue 16: 64 s per 100 MB)."""
    for name in ("HUGEZERO.dcm", "HUGEZERO"):
        with open(fdir / name, "wb") as fh:
            fh.truncate(size)
        folder.bad.append({"file": name, "mutation": "zero_filled_huge", "detail": f"{size} zero bytes (sparse)",
                           "base": ""})


def build_corpus(root, n_files: int, seed: int = 0, demo_scale: float = 0.1,
                 big_ct_shape: tuple[int, int, int] | None = (24, 256, 256),
                 sources: list[Source] | None = None, huge_zero: int = 3 << 30,
                 issue_cases: bool = True) -> Corpus:
    """Folders f0000_<source>, ... under root until they hold at least n_files files.

    The big CT (the memory yardstick) is used by the first folder only; the other sources take
    turns. Each folder damages 1 to half of its slices (at least one slice stays good); the
    first folder after the big CT also gets two huge zero-filled files (0: none). With
    ``issue_cases`` the folders after the big CT hold the defects issue 16 reports (ISSUE_CASES).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if sources is None:
        sources = build_sources(root, seed, demo_scale, big_ct_shape)
    big = [s for s in sources if s.name == "ct_big"]
    rank = {name: i for i, name in enumerate(TURNS)}
    rest = sorted((s for s in sources if s.name != "ct_big"), key=lambda s: rank.get(s.name, len(rank)))
    by_name = {s.name: s for s in sources}
    cases = [(by_name[name], plan) for name, plan in ISSUE_CASES if name in by_name] if issue_cases else []
    folders, total, i = [], 0, 0
    while total < n_files:
        plan = None
        if i < len(big):
            source = big[i]
        elif i < len(big) + len(cases):
            source, plan = cases[i - len(big)]
        else:
            source = rest[(i - len(big) - len(cases)) % len(rest)]
        rng = np.random.default_rng([seed, i])
        folder = Folder(f"f{i:04d}_{source.name}" + ("_issue" if plan else ""), source.name)
        fdir = root / folder.name
        fdir.mkdir()
        n_bad = int(rng.integers(1, max(1, len(source.files) // 2) + 1))
        _mutate_folder(rng, folder, fdir, source, n_bad, plan)
        if i == len(big) and huge_zero:
            _add_huge_zeros(folder, fdir, huge_zero)
        folders.append(folder)
        total += sum(1 for _ in fdir.iterdir())
        i += 1
    corpus = Corpus(root, seed, folders, max(s.volume_bytes for s in sources), total)
    corpus.save()
    return corpus


if __name__ == "__main__":  # python -m fuzz.corpus DIR N [SEED]: write a corpus to look at
    import sys

    c = build_corpus(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    print(f"{c.files} files in {len(c.folders)} folders under {c.root}")
