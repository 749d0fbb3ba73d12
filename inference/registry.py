"""Model cards (JSON) beside weights (safetensors): what a model is, and loading it safely.

A card says everything a runner needs to use the weights correctly (task, modality,
input spacing, normalization, classes) and what they were trained on, so the UI
and the CLI never hard-code a model. Weights from a user folder are untrusted:
their sha256 is checked against the card before any byte is parsed, and they are
read with safetensors (no code) or TorchScript - never with a general unpickler.

A card's sha256 catches corruption, not tampering (whoever can replace the weights can
rewrite the card). The hashes of the shipped weights are therefore also kept inside the
package (``shipped_models.json``, written by ``python -m inference.shipped_manifest``):
a shipped model whose weights differ from it is refused, and every other model (fine-tuned,
imported) is "unverified": its weights match its own card, nothing more.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

DEFAULT_DISCLAIMER = ("Demo model trained only on synthetic phantoms. Not a clinical model and not a "
                      "medical device; its output must not be used for diagnosis.")
WEIGHT_SUFFIXES = (".safetensors", ".pt")
MANIFEST = Path(__file__).with_name("shipped_models.json")
VERIFIED, UNVERIFIED = "verified", "unverified"


class ModelError(Exception):
    """A model cannot be used: bad card, missing or unreadable weights, unknown architecture."""


class ChecksumError(ModelError):
    """The weights on disk are not the ones the card describes (corrupt or tampered)."""


@dataclass
class ModelCard:
    """Everything needed to run a model and to judge what its output means."""

    name: str
    version: str
    task: str  # "patch-classifier" | "exam-classifier" | "segmentation-2d" | "segmentation-3d" ...
    modality: str  # "MG", "CT", "MR"...
    architecture: str  # key into the builder table
    arch_kwargs: dict = field(default_factory=dict)
    classes: list = field(default_factory=list)
    input: dict = field(default_factory=dict)  # patch_size, spacing_mm, size ...
    normalization: dict = field(default_factory=dict)
    training_data: str = ""
    metrics: dict = field(default_factory=dict)
    weights: str = ""  # file name beside the card
    sha256: str = ""
    disclaimer: str = DEFAULT_DISCLAIMER
    source: str = ""  # where the model comes from (a URL, a paper, "Lightbox demo")
    licence: str = ""  # the weights' licence as their author gives it
    domain: dict = field(default_factory=dict)  # description of the training inputs (inference.domain)
    extra: dict = field(default_factory=dict)  # anything task-specific the runner needs
    path: Path | None = field(default=None, compare=False)  # folder holding the card; not serialized

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("path")
        return d

    @classmethod
    def from_dict(cls, data: dict, path: Path | None = None) -> ModelCard:
        if not isinstance(data, dict):
            raise ModelError("a model card must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)} - {"path"}
        required = ("name", "version", "task", "modality", "architecture")
        missing = [k for k in required if not data.get(k)]
        if missing:
            raise ModelError(f"model card lacks {', '.join(missing)}")
        kwargs = {k: v for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known}
        if unknown:  # newer card format: keep what we do not understand instead of failing
            kwargs["extra"] = {**kwargs.get("extra", {}), **unknown}
        kwargs["version"] = str(kwargs["version"])
        return cls(**kwargs, path=Path(path) if path is not None else None)

    @property
    def imported(self) -> bool:
        """Made with another tool (nnU-Net, MONAI bundle, ONNX, TorchScript): run by inference.formats."""
        from inference.formats import is_imported

        return is_imported(self)

    @property
    def weights_path(self) -> Path:
        """The weights file; a card may only name a plain file in its own folder."""
        if not self.weights or Path(self.weights).name != self.weights or self.weights in (".", ".."):
            raise ModelError(f"model {self.name!r}: weights must be a file name beside the card, "
                             f"got {self.weights!r}")
        if self.path is None:
            raise ModelError(f"model {self.name!r}: card has no folder (load it with load_card)")
        return Path(self.path) / self.weights


# --------------------------------------------------------------------------
# architectures
# --------------------------------------------------------------------------
_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str):
    """Decorator: make a builder (class or function taking arch_kwargs) known under `name`."""
    def deco(builder):
        other = _ARCHITECTURES.get(name)
        if other is not None and other is not builder and (
                getattr(other, "__qualname__", None), getattr(other, "__module__", None)) != (
                getattr(builder, "__qualname__", None), getattr(builder, "__module__", None)):
            raise ValueError(f"architecture {name!r} is already registered by {other!r}")
        _ARCHITECTURES[name] = builder
        return builder
    return deco


def architectures() -> dict[str, Callable[..., nn.Module]]:
    _import_builders()
    return dict(_ARCHITECTURES)


def _import_builders() -> None:
    """The builders register themselves on import; importing here avoids a cycle."""
    import inference.models  # noqa: F401


def build(card: ModelCard) -> nn.Module:
    """A freshly initialised network of the card's architecture."""
    _import_builders()
    builder = _ARCHITECTURES.get(card.architecture)
    if builder is None:
        raise ModelError(f"model {card.name!r}: unknown architecture {card.architecture!r} "
                         f"(known: {', '.join(sorted(_ARCHITECTURES)) or 'none'})")
    try:
        return builder(**card.arch_kwargs)
    except TypeError as exc:
        raise ModelError(f"model {card.name!r}: bad arch_kwargs for {card.architecture!r}: {exc}") from exc


# --------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------
def _atomic_write(path: Path, data: bytes) -> None:
    """Write then rename, so a crash never leaves a half-written card or weights file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; cards and weights are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def card_json(card: ModelCard) -> str:
    try:
        return json.dumps(card.to_dict(), indent=2, allow_nan=False)
    except ValueError as exc:  # NaN/inf would make a card other JSON readers reject
        raise ModelError(f"model {card.name!r}: card values must be finite numbers ({exc})") from exc


def save_card(card: ModelCard, json_path=None) -> Path:
    """Rewrite a card (e.g. after its domain description or activation changed); weights untouched."""
    json_path = Path(json_path) if json_path is not None else Path(card.path) / f"{Path(card.weights).stem}.json"
    _atomic_write(json_path, (card_json(card) + "\n").encode())
    return json_path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_model(module: nn.Module, card: ModelCard, folder, stem: str | None = None) -> Path:
    """Write <stem>.safetensors and <stem>.json (sha256 filled in; stem defaults to the card's
    name; give e.g. "<name>-<version>" to keep several versions side by side); returns the card path.

    The card object is updated in place (weights, sha256, path).
    """
    from safetensors.torch import save as st_save

    folder = Path(folder)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    data = st_save(state)  # no metadata: its key order is random, and the sha256 must be reproducible
    stem = stem or card.name
    card.weights = f"{stem}.safetensors"
    card.sha256 = sha256_bytes(data)
    card.path = folder
    text = card_json(card)  # serialise first: a card that cannot be written must not leave orphan weights
    _atomic_write(folder / card.weights, data)
    json_path = folder / f"{stem}.json"
    _atomic_write(json_path, (text + "\n").encode())
    return json_path


# --------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------
def load_card(json_path) -> ModelCard:
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{json_path}: cannot read model card: {exc}") from exc
    try:
        return ModelCard.from_dict(data, json_path.parent)
    except (ModelError, TypeError) as exc:
        raise ModelError(f"{json_path}: {exc}") from exc


def _check_digest(card: ModelCard, path: Path, digest: str) -> None:
    """The card's own checksum, then, for a shipped model, the package's manifest."""
    if digest != card.sha256.lower():
        raise ChecksumError(f"{path}: sha256 {digest[:12]}... does not match the card's "
                            f"{card.sha256[:12]}...; the file is corrupt or was replaced")
    if is_shipped(card):
        entry = manifest_entry(card)
        if entry is None:
            raise ChecksumError(f"{path}: {card.name} {card.version} is in the shipped model folder but not in "
                                f"the package's list of shipped models ({MANIFEST.name}); it was not shipped "
                                "with Lightbox (put your own models in the user model folder)")
        if entry["sha256"] != digest:
            raise ChecksumError(f"{path}: not the weights shipped with Lightbox (sha256 {digest[:12]}..., "
                                f"{MANIFEST.name} gives {entry['sha256'][:12]}...); reinstall Lightbox")


def _weights_file(card: ModelCard) -> Path:
    path = card.weights_path
    if card.imported:
        if not card.sha256:
            raise ChecksumError(f"{path}: the model card gives no sha256, so the model cannot be verified")
        return path
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ModelError(f"{path}: unsupported weights format {path.suffix!r} "
                         f"(use {' or '.join(WEIGHT_SUFFIXES)})")
    if not card.sha256:
        raise ChecksumError(f"{path}: the model card gives no sha256, so the weights cannot be verified")
    return path


def read_verified_weights(card: ModelCard) -> bytes:
    """The weights bytes, only if their sha256 matches the card (and, for a shipped model, the
    package's manifest); checked before any parsing."""
    path = _weights_file(card)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read weights: {exc}") from exc
    _check_digest(card, path, sha256_bytes(data))
    return data


# --------------------------------------------------------------------------
# trust: the shipped manifest
# --------------------------------------------------------------------------
_MANIFEST_CACHE: dict[tuple, dict] = {}
_DIGESTS: dict[tuple, str] = {}


def shipped_manifest() -> dict[tuple[str, str], dict]:
    """(name, version) -> {"name", "version", "weights", "sha256"} of the models shipped with Lightbox."""
    try:
        st = MANIFEST.stat()
        key = (str(MANIFEST), st.st_size, st.st_mtime_ns)
        if key not in _MANIFEST_CACHE:
            data = json.loads(MANIFEST.read_text(encoding="utf-8"))
            entries = {(str(m["name"]), str(m["version"])): {**m, "sha256": str(m["sha256"]).lower()}
                       for m in data["models"]}
            _MANIFEST_CACHE.clear()
            _MANIFEST_CACHE[key] = entries
        return _MANIFEST_CACHE[key]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{MANIFEST}: cannot read the list of shipped models ({exc}); reinstall Lightbox") from exc


def manifest_entry(card: ModelCard) -> dict | None:
    return shipped_manifest().get((card.name, str(card.version)))


def is_shipped(card: ModelCard) -> bool:
    """Whether the card lies in the shipped model folder (the manifest must then vouch for it)."""
    if card.path is None:
        return False
    try:
        return Path(card.path).resolve() == shipped_models_dir().resolve()
    except OSError:
        return False


def is_verified(card: ModelCard) -> bool:
    """The card's checksum is one the package shipped for this name and version. Meaningful for
    weights already checked against the card (load_model, check_model do that)."""
    try:
        entry = manifest_entry(card)
    except ModelError:
        return False
    return entry is not None and entry["sha256"] == (card.sha256 or "").lower()


def weights_digest(path: Path) -> str:
    """sha256 of a file, remembered while its size and modification time stay the same (listing
    and choosing models must not re-read every weights file each time)."""
    if path.is_dir():  # an imported model's folder: keyed on every file's size and time
        from inference.formats.base import tree_digest, tree_files

        stats = tuple((rel.as_posix(), (path / rel).stat().st_size, (path / rel).stat().st_mtime_ns)
                      for rel in tree_files(path))
        key = (str(path.resolve()), stats)
        if key not in _DIGESTS:
            _DIGESTS[key] = tree_digest(path)
        return _DIGESTS[key]
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def check_model(card: ModelCard) -> str:
    """VERIFIED or UNVERIFIED for weights that match their card (a shipped model: the manifest
    too) and whose safetensors header covers the file; raises ModelError / ChecksumError naming the
    file otherwise. Cheap enough to rank candidates: the hash is cached, no tensor is read."""
    path = _weights_file(card)
    try:
        digest = weights_digest(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read weights: {exc}") from exc
    except ValueError as exc:  # a link or a strange file inside an imported model's folder
        raise ModelError(f"{path}: {exc}") from exc
    _check_digest(card, path, digest)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as exc:  # SafetensorError, OSError: a truncated or malformed file
            raise ModelError(f"{path}: not a valid safetensors file ({exc})") from exc
    return VERIFIED if is_verified(card) else UNVERIFIED


def load_model(card_or_path, device="cpu") -> tuple[nn.Module, ModelCard]:
    """(network in eval mode on `device`, its card) from a card or the path of its JSON."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    from inference.device import pick_device

    card = card_or_path if isinstance(card_or_path, ModelCard) else load_card(card_or_path)
    dev = pick_device(device)
    if card.imported:  # a runner (inference.formats.base.Runner), not an nn.Module
        from inference import formats

        return formats.load(card, dev), card
    data = read_verified_weights(card)
    path = card.weights_path
    if path.suffix == ".pt":
        try:  # TorchScript: code + tensors in a zip, read by torch's restricted loader
            with warnings.catch_warnings():  # deprecated upstream, still the format users export
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(io.BytesIO(data), map_location=dev)
        except Exception as exc:
            raise ModelError(f"{path}: not a TorchScript model ({exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
        return module.eval(), card
    try:
        state = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:
        raise ModelError(f"{path}: not a valid safetensors file ({exc})") from exc
    module = build(card)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit architecture {card.architecture!r}: "
                         f"{str(exc).splitlines()[0]}") from exc
    return module.to(dev).eval(), card


# --------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------
def shipped_models_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "resources" / "models"


def user_models_dir() -> Path:
    """$LIGHTBOX_MODELS_DIR, else $XDG_CONFIG_HOME/lightbox/models, else ~/.config/lightbox/models."""
    env = os.environ.get("LIGHTBOX_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "lightbox" / "models"


def model_dirs() -> list[Path]:
    """Shipped models first, then the user's; a user model of the same name and version wins."""
    return [shipped_models_dir(), user_models_dir()]


def _version_key(version: str):
    parts = []
    for p in str(version).replace("-", ".").split("."):
        parts.append((0, int(p), "") if p.isdigit() else (1, 0, p))
    return tuple(parts)


_LOGGED: set[str] = set()


def available_models(task: str | None = None, modality: str | None = None,
                     problems: list | None = None) -> list[ModelCard]:
    """Cards found in model_dirs(), filtered; a broken card is logged (and appended to
    `problems` as "path: reason") instead of hiding every other model."""
    cards = []
    for folder in model_dirs():
        if not folder.is_dir():
            continue
        for json_path in sorted(folder.glob("*.json")):
            try:
                card = load_card(json_path)
                if not card.weights_path.exists():
                    raise ModelError(f"{json_path}: weights file {card.weights!r} is missing")
            except ModelError as exc:
                msg = str(exc) if str(json_path) in str(exc) else f"{json_path}: {exc}"
                if msg not in _LOGGED:  # listed on every call, logged once per process
                    _LOGGED.add(msg)
                    log.warning("skipping model card: %s", msg)
                if problems is not None:
                    problems.append(msg)
                continue
            if task is not None and card.task != task:
                continue
            if modality is not None and card.modality.upper() != modality.upper():
                continue
            cards.append(card)
    return cards


def find_model(name: str, version: str | None = None, **filters) -> ModelCard:
    """The card called `name` (newest version unless one is given; user folder wins ties)."""
    matches = [c for c in available_models(**filters) if c.name == name
               and (version is None or c.version == str(version))]
    if not matches:
        where = ", ".join(str(d) for d in model_dirs())
        raise ModelError(f"no model named {name!r}" + (f" version {version}" if version else "")
                         + f" in {where}")
    best = max(range(len(matches)), key=lambda i: (_version_key(matches[i].version), i))
    return matches[best]
