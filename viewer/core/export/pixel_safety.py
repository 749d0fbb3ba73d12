"""Burned-in patient data in the pixels: what an export must refuse, and what it may send only on request.

De-identification cleans headers; it cannot clean text drawn into the pixels (an ultrasound's
patient banner, a screenshot). So before anything is written, every source file of the exported
images is read (header only) and:

* ``BurnedInAnnotation`` (0028,0301) = YES: refused, always (:class:`BurnedInPixels`);
* the attribute absent on an image where burned-in text is common (modalities US, SC, OT, XC, ...,
  a Secondary Capture SOP class, ImageType with SECONDARY, or a ConversionType, which only
  secondary captures carry): exported only after the user says they checked the pixels
  (``allow_unverified=True``; otherwise :class:`UnverifiedPixels`).

Ordinary CT, MR and MG images (ORIGINAL/PRIMARY, tag absent) pass without a question, as do
NIfTI/NRRD sources, which have no such tag. Export paths (the Python API, the CLI, the export
dialog) share :func:`inspect_sources`, so they refuse with the same words.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pydicom
from pydicom.errors import InvalidDicomError

from .dataset import ExportError
from .deid import BURNED_IN_MODALITIES  # one list of "often burned-in" modalities for deid and export

API_OPT_IN = "allow_unverified_pixels=True"
CLI_OPT_IN = "--allow-unverified-pixels"
# Secondary Capture Image Storage and the four multi-frame Secondary Capture SOP classes
SECONDARY_CAPTURE_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1",
                                       "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.5.1.4.1.1.7.3",
                                       "1.2.840.10008.5.1.4.1.1.7.4"})
_TAGS = ("BurnedInAnnotation", "Modality", "SOPClassUID", "ImageType", "ConversionType")
_NOT_DICOM_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".hdr", ".img")


class BurnedInPixels(ExportError):
    """A source image is marked BurnedInAnnotation = YES: never exported."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(f"{path}: BurnedInAnnotation is YES: the pixels carry burned-in text (possibly "
                         "the patient's name) that de-identification cannot remove, so this image is "
                         "not exported; leave it out")


class UnverifiedPixels(ExportError):
    """A source image where burned-in text is common has no BurnedInAnnotation: exported only when
    the user asks for it. ``message(opt_in)`` words the request for the path that raised it."""

    def __init__(self, path: str, why: str, more: int = 0, opt_in: str = API_OPT_IN):
        self.path, self.why, self.more = path, why, more
        super().__init__(self.message(opt_in))

    def message(self, opt_in: str) -> str:
        others = f" (and {self.more} more file{'s' if self.more > 1 else ''})" if self.more else ""
        return (f"{self.path}{others}: {self.why} without BurnedInAnnotation: the pixels may carry the "
                f"patient's name or other burned-in text; check the images, then export with {opt_in}")


@dataclass(frozen=True)
class PixelFindings:
    """What the source files say: the files marked YES and those that need the user's word."""

    burned_in: tuple[str, ...] = ()
    unverified: tuple[tuple[str, str], ...] = ()  # (file, why it is suspect)

    def refusal(self) -> BurnedInPixels | None:
        return BurnedInPixels(self.burned_in[0]) if self.burned_in else None

    def needs_confirmation(self, opt_in: str = API_OPT_IN) -> UnverifiedPixels | None:
        if not self.unverified:
            return None
        path, why = self.unverified[0]
        return UnverifiedPixels(path, why, len(self.unverified) - 1, opt_in)

    def check(self, allow_unverified: bool = False, opt_in: str = API_OPT_IN) -> None:
        """Raise the refusal, or (unless allowed) the request for confirmation; None when clean."""
        problem = self.refusal() or (None if allow_unverified else self.needs_confirmation(opt_in))
        if problem is not None:
            raise problem


def source_files(volume=None, series=None) -> list[str]:
    """The DICOM files an exported image's pixels came from: the series' instances and the
    volume's own record of its files (``SourceInfo.files``), without NIfTI/NRRD sources."""
    paths: list[str] = []
    if series is not None and getattr(series, "kind", "dicom") == "dicom":
        paths += [str(inst.path) for inst in series.instances]
    if volume is not None and (series is None or getattr(series, "kind", "dicom") == "dicom"):
        paths += [str(p) for p in getattr(volume.info, "files", ()) or ()]
    seen: dict[str, None] = {}
    for p in paths:
        if not p.lower().endswith(_NOT_DICOM_SUFFIXES):
            seen.setdefault(p, None)
    return list(seen)


def suspicion(ds) -> str:
    """Why this header's pixels often carry burned-in text ("" when they usually do not)."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in BURNED_IN_MODALITIES:
        return f"a {modality} image"
    if str(ds.get("SOPClassUID", "") or "").strip() in SECONDARY_CAPTURE_CLASSES:
        return "a Secondary Capture image"
    image_type = ds.get("ImageType", None)
    values = [str(v).strip().upper() for v in (image_type if isinstance(image_type, (list, tuple,
              pydicom.multival.MultiValue)) else [image_type or ""])]
    if "SECONDARY" in values:
        return "a SECONDARY image (ImageType)"
    if "ConversionType" in ds:
        return f"a converted image (ConversionType {str(ds.ConversionType).strip() or 'empty'})"
    return ""


def _header(path: str):
    """The few attributes needed, header only; None for a file that is not DICOM (a NIfTI)."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_TAGS))
    except InvalidDicomError:  # no preamble: accept it only if a forced read finds an image header
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=list(_TAGS))
        return ds if ("SOPClassUID" in ds or "Modality" in ds) else None


def inspect_files(paths: Iterable[str]) -> PixelFindings:
    """Read each file's header and sort it: marked YES, suspect without the tag, or fine.

    A file that cannot be read any more (moved, damaged since it was loaded) is refused: its pixels
    are in the export and nothing says they are clean."""
    burned, unverified = [], []
    for path in paths:
        try:
            ds = _header(path)
        except Exception as exc:  # noqa: BLE001 - any reader failure: refuse, naming the file
            raise ExportError(f"{path}: cannot read its header to check for burned-in patient data "
                              f"({type(exc).__name__}); not exported") from exc
        if ds is None:
            continue
        flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
        if flag == "YES":
            burned.append(str(path))
        elif not flag and (why := suspicion(ds)):
            unverified.append((str(path), why))
    return PixelFindings(tuple(burned), tuple(unverified))


def inspect_sources(images: Iterable[tuple]) -> PixelFindings:
    """Findings for every (volume, series) pair an export writes the pixels of."""
    paths: dict[str, None] = {}
    for volume, series in images:
        for p in source_files(volume, series):
            paths.setdefault(p, None)
    return inspect_files(paths)


def check_sources(images: Iterable[tuple], allow_unverified: bool = False, opt_in: str = API_OPT_IN) -> None:
    """Raise :class:`BurnedInPixels` or :class:`UnverifiedPixels` (an ExportError naming the file)
    before an export writes anything; return quietly when the pixels may go."""
    inspect_sources(images).check(allow_unverified, opt_in)
