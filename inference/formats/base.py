"""What every imported model format shares: the plan shown before import, the input a runner
gets, the prediction it returns, and the folder digest that a card's sha256 holds.

Formats (nnU-Net v2 folders, MONAI bundles, ONNX, TorchScript, torch.export) differ in how they
are read and run; the app sees only these types, so Analyze, the CLI and the import dialog never
branch on a format.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

Progress = Callable[[float], None]  # fraction 0..1 of the work done
Cancel = Callable[[], bool]  # True: stop (raise inference.segment.Cancelled)


class NotImportable(ValueError):
    """A file or folder cannot be imported as a model; the message names it and says why."""


@dataclass
class ImportPlan:
    """What importing ``source`` would do, shown to the user before anything is copied.

    ``card`` holds the prefilled card fields (name, version, task, modality, classes, input,
    normalization, source, licence, domain, extra ...) in ModelCard's own keys; ``needs`` lists the
    fields the user must still fill in (an ONNX file does not say its modality); ``runs_code`` is
    every piece of code that running the model would execute beyond the network's tensors (a
    bundle's ``$`` expressions and the classes its configs instantiate); non-empty means the
    import must be confirmed, and the confirmation is recorded in the card.
    """

    format: str  # "nnunet-v2" | "monai-bundle" | "onnx" | "torchscript" | "torch-export"
    source: Path
    card: dict
    needs: list[str] = field(default_factory=list)
    runs_code: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # facts worth showing (folds found, mirroring, ...)
    files: list[Path] = field(default_factory=list)  # what will be copied (relative to source when a folder)

    @property
    def needs_confirmation(self) -> bool:
        return bool(self.runs_code)


@dataclass
class VolumeImage:
    """One image in patient geometry, the way viewer.core.volume.Volume holds it (no viewer import).

    array: (z, y, x) modality values (HU for CT) or (C, z, y, x) for several channels;
    spacing: mm per array axis (z, y, x); origin: LPS mm of voxel (0, 0, 0);
    direction: 3x3, column a = LPS direction of array axis a (z, y, x).
    A mammogram is a (1, rows, cols) volume.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3)[:, ::-1].copy())
    modality: str = ""

    @property
    def itk_spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.spacing[::-1])

    @property
    def itk_direction(self) -> tuple[float, ...]:
        """Row-major 3x3 with columns for (x, y, z), as SimpleITK's SetDirection wants it."""
        return tuple(float(v) for v in np.asarray(self.direction, float)[:, ::-1].ravel())

    def to_sitk(self):
        """A SimpleITK image with this geometry (one channel; float32)."""
        import SimpleITK as sitk

        arr = np.asarray(self.array)
        if arr.ndim == 4:
            if arr.shape[0] != 1:
                raise ValueError("to_sitk takes one channel")
            arr = arr[0]
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr, dtype=np.float32))
        img.SetSpacing(self.itk_spacing)
        img.SetOrigin(tuple(float(v) for v in self.origin))
        img.SetDirection(self.itk_direction)
        return img


@dataclass
class Prediction:
    """What a runner returns, on the input's own grid (same z, y, x as VolumeImage.array).

    labels: integer (z, y, x), values index ``classes`` (0 = background), or None for a classifier;
    probabilities: float32 (K, z, y, x) per class in ``classes`` order, or None when the format
    gives none; scores: {class: probability} for whole-image classifiers.
    """

    classes: list[str]
    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    scores: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def channel(self, name: str) -> np.ndarray:
        """One class' probability map (z, y, x)."""
        if self.probabilities is None:
            raise KeyError(f"no probabilities for {name!r}")
        return np.asarray(self.probabilities[self.classes.index(name)], dtype=np.float32)


class Runner(Protocol):
    """A loaded imported model. ``predict`` is all Analyze calls."""

    card: object  # inference.registry.ModelCard

    def predict(self, image: VolumeImage, progress: Progress | None = None,
                cancel: Cancel | None = None) -> Prediction: ...


@dataclass
class FormatHandler:
    """One format: recognise a path, plan its import, load an installed copy.

    detect(path) -> bool, cheap (names and small files only, nothing executed);
    plan(path) -> ImportPlan, reads the artefact's own description, executes nothing;
    load(card, folder_or_file, device) -> Runner, after the registry has verified the sha256;
    check(card) -> None raises ValueError naming what a filled-in card still lacks (a user-described
    model), so an import never writes a card that cannot run.
    """

    name: str
    detect: Callable[[Path], bool]
    plan: Callable[[Path], ImportPlan]
    load: Callable[..., Runner]
    describe: str = ""
    check: Callable[[object], object] | None = None


# --------------------------------------------------------------------------
# digest of a folder
# --------------------------------------------------------------------------
def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_files(folder: Path) -> list[Path]:
    """Regular files under ``folder`` (relative, sorted), links refused: an installed model is plain files."""
    folder = Path(folder)
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files) + [d for d in dirs if (Path(root) / d).is_symlink()]:
            p = Path(root) / name
            if p.is_symlink():
                raise NotImportable(f"{p}: a link inside a model folder is not allowed")
            out.append(p.relative_to(folder))
    return sorted(out, key=lambda p: p.as_posix())


def tree_digest(folder: Path) -> str:
    """sha256 over every file's relative path and sha256: the folder's contents, order-free."""
    h = hashlib.sha256()
    for rel in tree_files(folder):
        h.update(f"{rel.as_posix()}\t{file_digest(Path(folder) / rel)}\n".encode())
    return h.hexdigest()


def artefact_digest(path: Path) -> str:
    path = Path(path)
    return tree_digest(path) if path.is_dir() else file_digest(path)
