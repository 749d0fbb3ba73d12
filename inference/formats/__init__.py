"""Import and run models made with other tools: nnU-Net v2 folders, MONAI bundles, ONNX,
TorchScript and torch.export files.

    plan = inspect(path)                    # what the artefact says; nothing executed
    card = install(plan, {"modality": "CT"}, confirmed=True)   # copied + card written
    runner = load(card, "cpu")              # after the registry verified the sha256
    pred = runner.predict(VolumeImage(...))

An installed model is a card ``<name>-<version>.json`` in the user model folder beside its
artefact (a file or a folder of the same stem); the card's ``architecture`` is the format's name,
its ``sha256`` the artefact's (a folder: :func:`base.tree_digest`).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from .base import (FormatHandler, NotImportable, ImportPlan, Prediction, Runner, VolumeImage, artefact_digest,
                   tree_files)

__all__ = ["FORMATS", "NotImportable", "ImportPlan", "Prediction", "Runner", "VolumeImage", "detect", "inspect",
           "filled", "install", "is_imported", "load", "opened"]

FORMATS: dict[str, FormatHandler] = {}
_MAX_ZIP_BYTES = 8 << 30


def register(handler: FormatHandler) -> FormatHandler:
    FORMATS[handler.name] = handler
    return handler


def _import_handlers() -> None:
    """Each format module registers itself; a missing optional library only hides its format."""
    import importlib

    for mod in ("nnunet", "monai_bundle", "onnx_model", "torchscript_model"):
        with contextlib.suppress(ImportError):
            importlib.import_module(f"{__name__}.{mod}")


def is_imported(card) -> bool:
    _import_handlers()
    return getattr(card, "architecture", None) in FORMATS


@contextlib.contextmanager
def opened(path) -> Iterator[Path]:
    """The artefact as a path on disk: a zip (a MONAI bundle) is extracted to a temporary folder,
    refusing members that would land outside it, links and absurd sizes."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path) and path.suffix.lower() == ".zip":
        with tempfile.TemporaryDirectory(prefix="lightbox-import-") as tmp:
            yield safe_extract(path, Path(tmp))
        return
    yield path


def safe_extract(zip_path: Path, dest: Path) -> Path:
    """Extract a zip under ``dest``; its single top folder when it has one."""
    dest = Path(dest).resolve()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            if sum(m.file_size for m in members) > _MAX_ZIP_BYTES:
                raise NotImportable(f"{zip_path}: unpacks to more than {_MAX_ZIP_BYTES >> 30} GB")
            for m in members:
                target = (dest / m.filename).resolve()
                if dest != target and dest not in target.parents:
                    raise NotImportable(f"{zip_path}: member {m.filename!r} would be written outside the folder")
                if (m.external_attr >> 16) & 0o170000 == 0o120000:
                    raise NotImportable(f"{zip_path}: member {m.filename!r} is a link")
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise NotImportable(f"{zip_path}: not a readable zip ({exc})") from exc
    tops = [p for p in dest.iterdir() if not p.name.startswith("__MACOSX")]
    return tops[0] if len(tops) == 1 and tops[0].is_dir() else dest


def detect(path) -> str:
    """The format name of a file or folder; NotImportable saying what was expected otherwise."""
    _import_handlers()
    path = Path(path)
    if not path.exists():
        raise NotImportable(f"{path}: no such file or folder")
    with opened(path) as p:
        for name, handler in FORMATS.items():
            if handler.detect(p):
                return name
    known = "; ".join(h.describe for h in FORMATS.values() if h.describe)
    raise NotImportable(f"{path}: not a model Lightbox can import ({known})")


def inspect(path, format: str | None = None) -> ImportPlan:
    """The import plan of ``path``: prefilled card, fields still needed, code that would run."""
    _import_handlers()
    name = format or detect(path)
    if name not in FORMATS:
        raise NotImportable(f"unknown model format {name!r} (known: {', '.join(sorted(FORMATS))})")
    with opened(path) as p:
        plan = FORMATS[name].plan(p)
    plan.source = Path(path)
    return plan


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")


def _stem(card: dict) -> str:
    name = _SAFE_NAME.sub("-", str(card["name"])).strip("-.") or "model"
    version = _SAFE_NAME.sub("-", str(card["version"])).strip("-.") or "1"
    return f"{name}-{version}"


def filled(card: dict, dotted: str) -> bool:
    """A need such as "modality" or "input.patch_size" has a non-empty value in the card."""
    value = card
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return value not in (None, "", [], {})


def install(plan: ImportPlan, overrides: dict | None = None, confirmed: bool = False, dest=None,
            progress=None, should_stop=None):
    """Copy the artefact into the user model folder (or ``dest``) and write its card; returns the
    ModelCard. Refuses while a needed field is empty (dotted needs name nested fields), when the
    format says the filled-in card cannot run, or when the plan runs code and the import was not
    ``confirmed``; an existing name and version is never overwritten. ``progress(fraction, text)`` is
    called per copied file; ``should_stop()`` True stops (inference.segment.Cancelled), leaving nothing."""
    from inference import registry
    from inference.segment import Cancelled

    card = {**plan.card, **{k: v for k, v in (overrides or {}).items() if v not in (None, "")}}
    missing = [k for k in plan.needs if not filled(card, k)]
    if missing:
        raise NotImportable(f"{plan.source}: fill in {', '.join(missing)} before importing")
    if plan.runs_code and not confirmed:
        raise NotImportable(f"{plan.source}: running this model executes code from its files "
                           f"({len(plan.runs_code)} item(s)); confirm the import to accept that")
    card.setdefault("version", "1")
    card["architecture"] = plan.format
    folder = Path(dest) if dest is not None else registry.user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stem = _stem(card)
    json_path = folder / f"{stem}.json"
    with opened(plan.source) as src:
        target = folder / (stem + (src.suffix if src.is_file() else ""))
        if json_path.exists() or target.exists():
            raise NotImportable(f"{json_path}: a model {card['name']} version {card['version']} is already "
                               "installed; give another name or version")
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{stem}.", suffix=".import"))
        try:
            staged = staging / target.name
            files = [None] if src.is_file() else (plan.files or tree_files(src))
            for i, rel in enumerate(files):
                if should_stop is not None and should_stop():
                    raise Cancelled("import cancelled")
                if progress is not None:
                    progress(i / max(1, len(files)), f"copying {src.name if rel is None else rel}")
                if rel is None:
                    shutil.copy2(src, staged)
                else:
                    (staged / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src / rel, staged / rel)
            card["weights"] = target.name
            card["sha256"] = artefact_digest(staged)
            extra = dict(card.get("extra") or {})
            extra["import"] = {"format": plan.format, "from": str(Path(plan.source).resolve()),
                               "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                               "code_confirmed": list(plan.runs_code) if plan.runs_code else [],
                               "notes": list(plan.notes)}
            card["extra"] = extra
            model = registry.ModelCard.from_dict(card, folder)
            handler = FORMATS.get(plan.format)
            if handler is not None and handler.check is not None:
                try:
                    handler.check(model)
                except ValueError as exc:
                    raise NotImportable(f"{plan.source}: {exc}") from exc
            text = registry.card_json(model)
            staged.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    registry._atomic_write(json_path, (text + "\n").encode())
    return registry.load_card(json_path)


def load(card, device="cpu") -> Runner:
    """A runner for an installed imported model; the sha256 is checked first."""
    from inference import registry

    _import_handlers()
    handler = FORMATS.get(card.architecture)
    if handler is None:
        raise registry.ModelError(f"model {card.name!r}: format {card.architecture!r} is not available "
                                  "(its library is not installed)")
    registry.check_model(card)
    try:
        return handler.load(card, card.weights_path, device)
    except registry.ModelError:
        raise
    except (NotImportable, OSError, RuntimeError, ValueError, KeyError) as exc:
        raise registry.ModelError(f"{card.weights_path}: cannot load {card.architecture} model: {exc}") from exc
