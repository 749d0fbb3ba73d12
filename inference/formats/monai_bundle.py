"""MONAI bundles: a folder (or the model zoo's zip) with configs/metadata.json,
configs/inference.json|yaml and models/model.pt or models/model.ts.

A bundle describes itself: metadata.json gives name, version, licence, modality and the meaning of
each output channel; the inference config gives the network, the pre- and postprocessing and the
inferer, and we run exactly those with MONAI's own bundle API (``ConfigParser``), so the model sees
what its authors' ``monai.bundle run`` would feed it. Configs can run code (``$`` expressions,
any ``_target_``), so planning an import only reads them, and lists that code for the user to
confirm; running happens after the registry has checked the folder's sha256.

Our image reaches the bundle as a temporary NIfTI, read by the bundle's own LoadImaged, and its
SaveImaged steps are dropped from the parsed config (results stay in memory). The bundle's
output is on the NIfTI's voxel grid in MONAI's (C, x, y, z) order after its own Invertd; without
an inverting postprocessing it is resampled there from the output's affine. Either way it is
returned as (C, z, y, x) on the input grid.

Axis orders: MONAI's ``pixdim`` and ``roi_size`` follow the image array after the bundle's
Orientationd (RAS: x, y, z for an axial series); the card keeps ours, (z, y, x), so both are
reversed into ``input.spacing_mm`` and ``input.patch_size``.
"""
from __future__ import annotations

import contextlib
import functools
import json
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import register
from .base import FormatHandler, ImportPlan, NotImportable, Prediction, VolumeImage

FORMAT = "monai-bundle"
CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
WEIGHT_NAMES = ("model.pt", "model.ts")
SAVE_TRANSFORMS = {"SaveImaged", "SaveImage", "SaveImageD", "SaveImageDict"}
SPACING_TRANSFORMS = {"Spacingd", "Spacing", "SpacingD", "SpacingDict"}
DOCS_LIMIT = 2 << 20  # docs/ travels with the model when it is this small (bytes)
MODALITIES = {"CT": "CT", "MR": "MR", "MRI": "MR", "MG": "MG", "MAMMOGRAPHY": "MG", "MAMMOGRAM": "MG",
              "MAGNETIC RESONANCE": "MR", "MAGNETIC RESONANCE IMAGING": "MR", "COMPUTED TOMOGRAPHY": "CT"}
DISCLAIMER = ("Imported MONAI bundle: what it may be used for is for its authors to say (see its docs and "
              "licence); Lightbox has not validated it.")


# --------------------------------------------------------------------------
# reading a bundle (nothing executed)
# --------------------------------------------------------------------------
def config_file(folder: Path) -> Path | None:
    for name in CONFIG_NAMES:
        if (Path(folder) / "configs" / name).is_file():
            return Path(folder) / "configs" / name
    return None


def detect(path: Path) -> bool:
    path = Path(path)
    return (path.is_dir() and (path / "configs" / "metadata.json").is_file() and config_file(path) is not None
            and any((path / "models" / n).is_file() for n in WEIGHT_NAMES))


def read_bundle(folder: Path, config: str | None = None):
    """(ConfigParser with metadata and inference config read, its macros resolved; metadata dict;
    config path). Reading and macro resolution evaluate nothing."""
    from monai.bundle import ConfigParser

    folder = Path(folder)
    meta_path = folder / "configs" / "metadata.json"
    config_path = folder / config if config else config_file(folder)
    if config_path is None or not config_path.is_file():
        raise NotImportable(f"{folder}: no configs/inference.json or configs/inference.yaml in the bundle")
    parser = ConfigParser()
    for what, path in (("metadata", meta_path), ("config", config_path)):
        try:
            (parser.read_meta if what == "metadata" else parser.read_config)(str(path))
        except FileNotFoundError as exc:
            raise NotImportable(f"{path}: missing from the bundle") from exc
        except ImportError as exc:  # PyYAML for a .yaml config
            raise NotImportable(f"{path}: cannot read it ({exc}); install pyyaml") from exc
        except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError: a damaged file
            raise NotImportable(f"{path}: not a readable {what} file ({exc})") from exc
    meta = parser.get(parser.meta_key)
    if not isinstance(meta, dict):
        raise NotImportable(f"{meta_path}: the metadata must be a JSON object")
    try:
        parser.resolve_macro_and_relative_ids()
    except Exception as exc:  # a %macro naming a missing file or id
        raise NotImportable(f"{config_path}: cannot resolve its references ({exc})") from exc
    return parser, meta, config_path


def weights_used(folder: Path, config: dict) -> str:
    """models/model.ts when the config loads it (or there is no state dict to load into the
    network definition), else models/model.pt."""
    folder = Path(folder)
    has_pt, has_ts = ((folder / "models" / n).is_file() for n in WEIGHT_NAMES)
    mentions_ts = "model.ts" in json.dumps(config, default=str)
    if has_ts and (mentions_ts or not has_pt or "network_def" not in config):
        return "models/model.ts"
    if has_pt and "network_def" in config:
        return "models/model.pt"
    raise NotImportable(f"{folder}: models/model.pt needs a 'network_def' in the inference config; "
                        "neither it nor models/model.ts is usable")


@functools.lru_cache(maxsize=1)
def _locator():
    import monai  # noqa: F401  (imports its transforms and networks, which the locator scans)
    from monai.bundle.config_item import ComponentLocator

    return ComponentLocator()


def qualified_name(name: str) -> str:
    """A `_target_` as the user can look it up: "LoadImaged" -> "monai.transforms.LoadImaged"."""
    if "." in name:
        return name
    modules = _locator().get_component_module_name(name)
    if isinstance(modules, list):
        modules = modules[0] if modules else None
    if not modules:
        return f"{name} (not found in MONAI)"
    obj = getattr(sys.modules.get(modules), name, None)
    parts = modules.split(".")
    for i in range(2, len(parts) + 1):  # the shortest public path to the same object
        prefix = ".".join(parts[:i])
        if obj is not None and getattr(sys.modules.get(prefix), name, None) is obj:
            return f"{prefix}.{name}"
    return f"{modules}.{name}"


def code_items(node, file_label: str, path: str = "") -> list[str]:
    """Every `$` expression and every `_target_` (and what `_requires_` pulls in) under ``node``,
    each with its file and config path, e.g. "inference.json:network: $@network_def.to(@device)"."""
    where = f"{file_label}:{path or '(top level)'}"
    out: list[str] = []
    if isinstance(node, dict):
        target = node.get("_target_")
        if isinstance(target, str) and not target.startswith("$"):
            out.append(f"{where}: _target_ {qualified_name(target)}")
        for key, value in node.items():
            sub = f"{path}#{key}" if path else str(key)
            if key == "_requires_" and not isinstance(value, (dict, list)):
                value = [value]
            out += code_items(value, file_label, sub)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += code_items(value, file_label, f"{path}#{i}" if path else str(i))
    elif isinstance(node, str) and node.startswith("$"):
        out.append(f"{where}: {node}")
    return out


def _literal(config: dict, value, depth: int = 0):
    """A config value with "@id" references to plain values followed; None for anything computed."""
    if isinstance(value, str) and value.startswith("@") and depth < 8:
        node = config
        for key in value[1:].replace("::", "#").split("#"):
            if isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            elif isinstance(node, dict) and key in node:
                node = node[key]
            else:
                return None
        return _literal(config, node, depth + 1)
    if isinstance(value, str) and value.startswith("$"):
        return None
    if isinstance(value, list):
        items = [_literal(config, v, depth + 1) for v in value]
        return None if any(v is None for v in items) else items
    return value


def transforms_of(config: dict, key: str) -> list[dict]:
    """The transform entries of a Compose (nested ones flattened), as written in the config."""
    node = _literal(config, config.get(key)) if isinstance(config.get(key), str) else config.get(key)
    out: list[dict] = []

    def walk(n):
        if isinstance(n, list):
            for v in n:
                walk(v)
        elif isinstance(n, dict):
            if _short(n.get("_target_")) == "Compose":
                walk(n.get("transforms"))
            elif "_target_" in n:
                out.append(n)

    walk(node)
    return out


def _short(target) -> str:
    return str(target or "").rsplit(".", 1)[-1]


def _modality(inputs: dict) -> str:
    for spec in inputs.values():
        if not isinstance(spec, dict):
            continue
        text = str(spec.get("modality", "")).strip().upper()
        if text in MODALITIES:
            return MODALITIES[text]
        if str(spec.get("format", "")).lower() == "hounsfield":
            return "CT"
    return ""


def _classes(output: dict) -> list[str]:
    channels = output.get("channel_def") or {}
    if isinstance(channels, dict) and channels:
        try:
            return [str(channels[k]) for k in sorted(channels, key=lambda k: int(k))]
        except ValueError:
            return [str(v) for v in channels.values()]
    n = int(output.get("num_channels") or 2)
    return ["background"] + [f"class {i}" for i in range(1, max(n, 2))]


def _licence(folder: Path, meta: dict) -> str:
    parts = [str(meta[k]).strip() for k in ("license", "licence") if meta.get(k)]
    if not parts:
        for name in ("LICENSE", "LICENSE.txt", "LICENSE.md", "docs/LICENSE"):
            path = folder / name
            if path.is_file():
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    first = next((ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()),
                                 "")
                    if first:
                        parts.append(f"{first} ({name})")
                        break
    if meta.get("copyright"):
        parts.append(str(meta["copyright"]).strip())
    return "; ".join(parts)


def _name(folder: Path, meta: dict) -> str:
    """The bundle's id (its folder, as in the model zoo), else its title."""
    if not folder.name.startswith("lightbox-import-"):
        return folder.name
    title = str(meta.get("name") or "").strip()
    return "-".join(title.lower().split()) or "monai-bundle"


def _files(folder: Path, weights: str) -> tuple[list[Path], list[str]]:
    """What an install copies (configs/, the weights used, scripts/, small docs/, licence files)
    and the notes naming what stays behind."""
    keep: list[Path] = []
    left: list[str] = []
    for top in sorted(folder.iterdir()):
        rel = Path(top.name)
        if top.name in ("configs", "scripts") and top.is_dir():
            keep += [p.relative_to(folder) for p in sorted(top.rglob("*")) if p.is_file()
                     and "__pycache__" not in p.parts]
        elif top.name == "models" and top.is_dir():
            keep.append(Path(weights))
            others = [p.name for p in sorted(top.rglob("*")) if p.is_file() and p.relative_to(folder) != Path(weights)]
            if others:
                left.append(f"models/: {', '.join(others)} (not used for inference)")
        elif top.name == "docs" and top.is_dir():
            files = [p for p in sorted(top.rglob("*")) if p.is_file()]
            if sum(p.stat().st_size for p in files) <= DOCS_LIMIT:
                keep += [p.relative_to(folder) for p in files]
            else:
                left.append("docs/ (larger than 2 MB)")
        elif top.is_file() and top.name.upper().startswith(("LICENSE", "LICENCE", "COPYING", "NOTICE")):
            keep.append(rel)
        else:
            left.append(f"{top.name}{'/' if top.is_dir() else ''}")
    return keep, left


def plan(path: Path) -> ImportPlan:
    folder = Path(path)
    if not detect(folder):
        raise NotImportable(f"{folder}: not a MONAI bundle (expected configs/metadata.json, "
                            "configs/inference.json|yaml and models/model.pt or models/model.ts)")
    parser, meta, config_path = read_bundle(folder)
    config = {k: v for k, v in parser.get().items() if k != parser.meta_key}
    weights = weights_used(folder, config)
    data_format = meta.get("network_data_format") or {}
    inputs, outputs = data_format.get("inputs") or {}, data_format.get("outputs") or {}
    if not outputs:
        raise NotImportable(f"{folder / 'configs' / 'metadata.json'}: network_data_format names no outputs; "
                            "cannot tell what the bundle predicts")
    out_key, output = next(iter(outputs.items()))
    in_key = next(iter(inputs), "image")
    if str(output.get("type", "image")).lower() != "image":
        raise NotImportable(f"{folder}: the bundle outputs {output.get('type')!r}; Lightbox imports MONAI "
                            "bundles that segment images")
    network = config.get("network_def") if isinstance(config.get("network_def"), dict) else {}
    dims = len(output.get("spatial_shape") or []) or int(_literal(config, network.get("spatial_dims")) or 3)
    task = "segmentation-2d" if dims == 2 else "segmentation-3d"

    pre = transforms_of(config, "preprocessing")
    card_input: dict = {"axes": "zyx", "channels": int((inputs.get(in_key) or {}).get("num_channels") or 1)}
    for t in pre:
        pixdim = _literal(config, t.get("pixdim")) if _short(t.get("_target_")) in SPACING_TRANSFORMS else None
        if isinstance(pixdim, list) and all(isinstance(v, (int, float)) for v in pixdim):
            card_input["spacing_mm"] = [float(v) for v in reversed(pixdim)]
    inferer = config.get("inferer") if isinstance(config.get("inferer"), dict) else {}
    roi = _literal(config, inferer.get("roi_size"))
    if isinstance(roi, list) and all(isinstance(v, int) for v in roi):
        card_input["patch_size"] = list(reversed(roi))
    if inferer.get("_target_"):
        card_input["inferer"] = _short(inferer["_target_"])
    for key in ("overlap", "mode", "sw_batch_size"):
        if _literal(config, inferer.get(key)) is not None:
            card_input[key] = _literal(config, inferer.get(key))

    modality = _modality(inputs)
    post = transforms_of(config, "postprocessing")
    card = {
        "name": _name(folder, meta),
        "version": str(meta.get("version") or "1"),
        "task": task,
        "modality": modality,
        "classes": _classes(output),
        "input": card_input,
        "normalization": {"kind": "monai-bundle", "transforms": [_short(t["_target_"]) for t in pre]},
        "training_data": " ".join(str(meta[k]) for k in ("data_source", "data_type") if meta.get(k)),
        "source": "MONAI bundle " + " ".join(
            str(v) for v in (meta.get("name"), f"by {meta['authors']}" if meta.get("authors") else None,
                             f"({meta['references'][0]})" if isinstance(meta.get("references"), list)
                             and meta["references"] else None) if v),
        "licence": _licence(folder, meta),
        "disclaimer": " ".join(v for v in (str(meta.get("intended_use") or "").strip(), DISCLAIMER) if v),
        "domain": {},
        "extra": {"monai_bundle": {
            "config": config_path.relative_to(folder).as_posix(), "weights": weights,
            "input_key": in_key, "output_key": out_key, "spatial_dims": dims,
            "postprocessing": [_short(t["_target_"]) for t in post],
            "title": meta.get("name", ""), "description": meta.get("description", ""),
            "monai_version": meta.get("monai_version", ""), "pytorch_version": meta.get("pytorch_version", ""),
            "network_data_format": data_format}},
    }
    runs_code = code_items(meta, "metadata.json") + code_items(config, config_path.name)
    files, left = _files(folder, weights)
    notes = [f"weights: {weights}" + (" (TorchScript)" if weights.endswith(".ts") else
                                      f" (state dict for network_def {network.get('_target_', '?')})"),
             "runs the bundle's preprocessing, inferer and postprocessing; its SaveImaged steps are left out "
             "(results stay in memory)"]
    if meta.get("required_packages_version"):
        notes.append("the bundle asks for packages: " + ", ".join(
            f"{k} {v}" for k, v in dict(meta["required_packages_version"]).items()))
    if (folder / "scripts").is_dir():
        notes.append("the bundle brings its own Python code (scripts/), which its configs may import")
    if left:
        notes.append("not copied: " + "; ".join(left))
    if "spacing_mm" not in card_input:
        notes.append("the preprocessing has no literal Spacingd pixdim: the bundle runs at the image's own spacing")
    return ImportPlan(format=FORMAT, source=folder, card=card, needs=[] if modality else ["modality"],
                      runs_code=runs_code, notes=notes, files=files)


# --------------------------------------------------------------------------
# running an installed bundle
# --------------------------------------------------------------------------
def _without_save(node):
    """The config node with every SaveImage(d) transform removed from its lists."""
    if isinstance(node, list):
        return [_without_save(v) for v in node
                if not (isinstance(v, dict) and _short(v.get("_target_")) in SAVE_TRANSFORMS)]
    if isinstance(node, dict):
        return {k: _without_save(v) for k, v in node.items()}
    return node


def state_dict_of(obj, path: Path) -> dict:
    """The network's weights from the usual MONAI checkpoint layouts: a bare state dict, or one
    under "model" / "state_dict" / "network" / "net" (from CheckpointSaver), "module." prefixes gone."""
    import torch

    for key in ("model", "state_dict", "network", "net", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise NotImportable(f"{path}: not a state dict of tensors (nor one under 'model' or 'state_dict')")
    if all(str(k).startswith("module.") for k in obj):
        obj = {str(k)[len("module."):]: v for k, v in obj.items()}
    return obj


@contextlib.contextmanager
def _bundle_importable(folder: Path):
    """The bundle folder on sys.path while its configs are instantiated, so `scripts.*` resolves."""
    if not (folder / "scripts").is_dir():
        yield
        return
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(folder))


class BundleRunner:
    """An installed bundle, instantiated once: network, preprocessing, inferer, postprocessing."""

    def __init__(self, card, folder: Path, device="cpu"):
        import torch

        self.card = card
        self.folder = Path(folder)
        self.device = torch.device(device)
        info = dict((card.extra or {}).get("monai_bundle") or {})
        parser, _, config_path = read_bundle(self.folder, info.get("config"))
        self.input_key = info.get("input_key", "image")
        self.output_key = info.get("output_key", "pred")
        self.spatial_dims = int(info.get("spatial_dims") or 3)
        config = {k: v for k, v in parser.get().items() if k != parser.meta_key}
        weights = info.get("weights") or weights_used(self.folder, config)
        parser["bundle_root"] = str(self.folder)
        if "device" in config:
            parser["device"] = self.device
        for key in ("preprocessing", "postprocessing"):
            if key in config:
                parser[key] = _without_save(config[key])
        for key in ("preprocessing", "inferer"):
            if key not in config:
                raise NotImportable(f"{config_path}: the inference config has no {key!r}")
        _check_reader(config_path, transforms_of(config, "preprocessing"))
        try:
            with _bundle_importable(self.folder):
                self.network = self._network(parser, weights)
                self.preprocessing = parser.get_parsed_content("preprocessing")
                self.inferer = parser.get_parsed_content("inferer")
                self.postprocessing = (parser.get_parsed_content("postprocessing") if "postprocessing" in config
                                       else None)
        except (NotImportable, OSError):
            raise
        except Exception as exc:  # whatever the bundle's own code raises while being built
            raise NotImportable(f"{config_path}: cannot build the bundle's components: "
                                f"{exc.__class__.__name__}: {exc}") from exc

    def _network(self, parser, weights: str):
        import torch

        path = self.folder / weights
        if weights.endswith(".ts"):
            try:
                net = torch.jit.load(str(path), map_location=self.device)
            except Exception as exc:
                raise NotImportable(f"{path}: not a TorchScript model ({exc})") from exc
            return net.eval()
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise NotImportable(f"{path}: holds more than tensors, so it is not loaded "
                                f"(weights-only loading refused it: {str(exc).splitlines()[0]})") from exc
        net = parser.get_parsed_content("network_def")
        try:
            net.load_state_dict(state_dict_of(state, path), strict=True)
        except RuntimeError as exc:
            raise NotImportable(f"{path}: the weights do not fit the bundle's network_def: "
                                f"{str(exc).splitlines()[0]}") from exc
        return net.to(self.device).eval()

    # ----------------------------------------------------------------------
    def predict(self, image: VolumeImage, progress=None, cancel=None) -> Prediction:
        import torch
        from monai.data import decollate_batch, list_data_collate

        from inference.segment import Cancelled

        def stage(fraction: float) -> None:
            if cancel is not None and cancel():
                raise Cancelled()
            if progress is not None:
                progress(fraction)

        stage(0.0)
        with tempfile.TemporaryDirectory(prefix="lightbox-monai-") as tmp:
            paths = self.write_input(image, Path(tmp))
            stage(0.05)
            with self._failing("preprocessing"):
                data = self.preprocessing({self.input_key: paths[0] if len(paths) == 1 else paths})
            stage(0.25)
            with self._failing("network"), torch.no_grad():
                batch = list_data_collate([data])  # as the bundle's DataLoader and evaluator do
                batch[self.output_key] = self.inferer(batch[self.input_key].to(self.device), self.network)
                item = decollate_batch(batch)[0]
            stage(0.8)
            with self._failing("postprocessing"):
                item, probabilities = self._postprocess(item)
            stage(0.95)
        labels, probs = self._on_input_grid(item, probabilities, image)
        stage(1.0)
        classes = list(self.card.classes)
        if probs is not None and probs.shape[0] != len(classes):
            classes += [f"class {i}" for i in range(len(classes), probs.shape[0])]
        return Prediction(classes=classes, labels=labels, probabilities=probs,
                          notes=[f"MONAI bundle {self.card.name} {self.card.version}"])

    @contextlib.contextmanager
    def _failing(self, stage: str):
        """The bundle's own code failing: say which model and stage, with the innermost reason
        (MONAI wraps a transform's error in "applying transform ...")."""
        try:
            yield
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:
            inner = exc
            while inner.__cause__ is not None:
                inner = inner.__cause__
            raise RuntimeError(f"MONAI bundle {self.card.name} {self.card.version}: its {stage} failed: "
                               f"{inner.__class__.__name__}: {inner}") from exc

    def write_input(self, image: VolumeImage, tmp: Path, stem: str = "image") -> list[str]:
        """One NIfTI per channel, read back by the bundle's own LoadImaged (fine-tuning writes its
        label maps through here too, so they reach the bundle on the very grid its images do)."""
        import SimpleITK as sitk

        arr = np.asarray(image.array)
        channels = [arr] if arr.ndim == 3 else list(arr)
        paths = []
        for i, channel in enumerate(channels):
            itk = VolumeImage(channel, image.spacing, image.origin, image.direction).to_sitk()
            if self.spatial_dims == 2:
                if channel.shape[0] != 1:
                    raise ValueError(f"{self.card.name} is a 2D model; it takes one slice, got {channel.shape[0]}")
                itk = itk[:, :, 0]
            path = tmp / f"{stem}_{i:04d}.nii.gz"
            sitk.WriteImage(itk, str(path))
            paths.append(str(path))
        return paths

    def _postprocess(self, item: dict):
        """Run the postprocessing step by step, keeping the output as it was just before a step
        that turns several channels into one (argmax): those are the probabilities."""
        from monai.transforms import Compose, apply_transform

        post = self.postprocessing
        if post is None:
            return item, None
        steps = post.transforms if isinstance(post, Compose) else [post]
        map_items = getattr(post, "map_items", True)
        unpack = getattr(post, "unpack_items", False)
        probabilities = None
        for step in steps:
            before = item[self.output_key]
            item = apply_transform(step, item, map_items, unpack)
            after = item[self.output_key]
            if before.shape[0] > 1 and before.is_floating_point() and after.shape[0] == 1:
                probabilities = before
        return item, probabilities

    def _on_input_grid(self, item: dict, probabilities, image: VolumeImage):
        """Labels (z, y, x) and probabilities (K, z, y, x) on the input's grid."""
        import torch

        final = item[self.output_key]
        if probabilities is None and final.shape[0] > 1 and final.is_floating_point() \
                and not _is_one_hot(final):
            probabilities = final
        ref = item.get(self.input_key)
        meta = getattr(ref, "meta", {}) or {}
        shape = tuple(int(s) for s in np.asarray(image.array).shape[-3:][::-1])  # x, y, z
        if self.spatial_dims == 2:
            shape = shape[:2]
        affine = np.asarray(meta["original_affine"], float) if "original_affine" in meta else None
        probs = None
        if probabilities is not None:
            probs = self._resampled(probabilities, affine, shape, "bilinear").float()
            if float(probs.min()) < 0 or float(probs.max()) > 1:  # logits
                probs = torch.softmax(probs, dim=0)
        out = self._resampled(final, affine, shape, "nearest")
        if out.shape[0] > 1:
            labels = torch.argmax(out, dim=0)
        elif not out.is_floating_point() or bool(torch.all(out == torch.round(out))):
            labels = torch.round(out[0])
        else:  # one sigmoid channel
            labels = out[0] > 0.5
        labels = _zyx(labels[None].cpu().numpy(), self.spatial_dims)[0].astype(np.uint16)
        if probs is not None:
            probs = np.ascontiguousarray(_zyx(probs.detach().cpu().numpy(), self.spatial_dims), dtype=np.float32)
        return labels, probs

    def _resampled(self, tensor, affine, shape, mode):
        """``tensor`` (C, x, y, z) onto the input NIfTI's grid, unless it is there already."""
        import torch
        from monai.data import MetaTensor
        from monai.transforms import SpatialResample

        same_shape = tuple(tensor.shape[1:]) == tuple(shape)
        if not isinstance(tensor, MetaTensor) or affine is None:
            if same_shape:
                return torch.as_tensor(tensor)
            raise ValueError(f"the bundle's output has shape {tuple(tensor.shape[1:])} and no geometry; "
                             f"it cannot be mapped onto the image ({tuple(shape)})")
        if same_shape and np.allclose(tensor.affine.cpu().numpy(), affine, atol=1e-3):
            return tensor.as_tensor()
        resample = SpatialResample(mode=mode, padding_mode="border", dtype=torch.float32)
        out = resample(tensor.float(), dst_affine=torch.as_tensor(affine), spatial_size=tuple(shape))
        return torch.as_tensor(out)


def _check_reader(config_path: Path, preprocessing: list[dict]) -> None:
    """Our image reaches the bundle as NIfTI; MONAI reads that with nibabel unless a reader is named."""
    import importlib.util

    loads = [t for t in preprocessing if _short(t.get("_target_")) in ("LoadImaged", "LoadImage", "LoadImageD")]
    if not loads:
        raise NotImportable(f"{config_path}: the preprocessing does not start by loading the image "
                            "(no LoadImaged); Lightbox hands the bundle an image file")
    if all(not t.get("reader") for t in loads) and importlib.util.find_spec("nibabel") is None:
        raise NotImportable(f"{config_path}: MONAI needs nibabel to read the image for this bundle; "
                            "install it (pip install nibabel)")


def _is_one_hot(t) -> bool:
    import torch

    return bool(torch.all((t == 0) | (t == 1))) and bool(torch.all(t.sum(0) == 1))


def _zyx(arr: np.ndarray, dims: int) -> np.ndarray:
    """(C, x, y, z) -> (C, z, y, x); a 2D (C, x, y) -> (C, 1, y, x)."""
    if dims == 2:
        return np.transpose(arr, (0, 2, 1))[:, None]
    return np.transpose(arr, (0, 3, 2, 1))


def load(card, folder, device="cpu") -> BundleRunner:
    return BundleRunner(card, Path(folder), device)


register(FormatHandler(name=FORMAT, detect=detect, plan=plan, load=load,
                       describe="a MONAI bundle (folder or .zip with configs/metadata.json and "
                                "configs/inference.json|yaml)"))
