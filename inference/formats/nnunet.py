"""nnU-Net v2 trained model folders, run the way nnU-Net's own predictor runs them.

A folder as nnU-Net writes it (``<Trainer>__<Plans>__<configuration>/`` with dataset.json, plans.json
and fold_N/checkpoint_final.pth) is read from its own files: the network is rebuilt from the plans with
``dynamic_network_architectures``; preprocessing, sliding window, mirroring, ensembling and export
repeat nnunetv2's code step for step (DefaultPreprocessor.run_case_npy, nnUNetPredictor's sliding
window, convert_predicted_logits_to_segmentation_with_correct_shape), without importing nnunetv2:
it is only the tests' reference.

Input geometry: a VolumeImage holds (z, y, x) with spacing (z, y, x), which is what nnU-Net's
SimpleITKIO gives for the same image (the sitk array and its reversed spacing), so no reorientation
is needed; nnU-Net's own transpose_forward/backward are applied inside, as nnU-Net does.

Where the numbers come from, so results match nnU-Net's to the bit where it matters:
- logits are accumulated in float16 with the Gaussian importance map scaled to 10 (nnU-Net's
  ``compute_gaussian``) and the folds are averaged in float16, exactly as nnUNetPredictor does;
- resampling is skimage's ``resize`` as nnU-Net calls it (mode "edge", no anti-aliasing, order 3 for
  the image, 1 for the logits, order 0 across the low-resolution axis of anisotropic data), done here
  with scipy.ndimage.zoom, which is what ``resize`` calls;
- the network sees one window at a time, its mirrored copies in the order nnU-Net runs them. A card
  may set ``input["windows_per_batch"]`` above 1: faster for small networks, slower for a 4-stage one
  on a 2-core CPU (benchmarks/bench_nnunet.py), and convolutions over a batch round differently, which
  the float16 sums turn into probability differences of ~1e-4 (labels may differ where classes tie).

Checkpoints are pickles. They are read with ``torch.load(weights_only=True)`` and an allow-list of
what nnU-Net's training log puts there (numpy scalars: numpy's scalar(), np.dtype and the numeric
dtype classes); any other global is named and refused before a byte is unpickled. The plans name
the network's classes by dotted path; only names under ``dynamic_network_architectures.`` and
``torch.nn.`` are resolved.

The card: ``input.spacing_mm`` is the target spacing in the input's (z, y, x) order (the plans hold it
after transpose_forward; a 2d configuration keeps each volume's own slice spacing, the plans' median
stands there); ``patch_size`` and ``mirror_axes`` stay in nnU-Net's transposed axes.
``input.mirroring`` (default True, as nnU-Net) switches test-time mirroring. A region-based model
returns one probability channel per class: each region's sigmoid at the label value it writes, and
background = 1 - the largest region probability.
"""
from __future__ import annotations

import importlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import register
from .base import FormatHandler, ImportPlan, NotImportable, Prediction, VolumeImage

FORMAT = "nnunet-v2"
CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth")  # preferred first, as nnU-Net's default
ANISO_THRESHOLD = 3  # nnunetv2.configuration.ANISO_THRESHOLD
_ALLOWED_PREFIXES = ("dynamic_network_architectures.", "torch.nn.")
_NORMALIZATIONS = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization",
                   "RGBTo01Normalization")
_RESAMPLERS = ("resample_data_or_seg_to_shape", "no_resampling_hack")
_MR_CHANNEL = re.compile(r"^(MRI?|T1.*|T2.*|FLAIR.*|ADC|DWI.*|PD.*|SWI|DIXON.*|B0|BVAL.*|PERF.*|DCE.*|"
                         r"CBF|CBV|MTT|TTP|T1C.*|T1GD|T1CE|FAT|WATER|INPHASE|OUTPHASE|OPPOSED.*)$")


# --------------------------------------------------------------------------
# reading the folder
# --------------------------------------------------------------------------
def _is_model_dir(path: Path) -> bool:
    return (path.is_dir() and (path / "dataset.json").is_file() and (path / "plans.json").is_file()
            and bool(fold_checkpoints(path)))


def fold_checkpoints(model_dir: Path) -> dict[str, Path]:
    """{fold: checkpoint} for every fold_* folder holding a checkpoint; final preferred over best."""
    out = {}
    for fold_dir in sorted(Path(model_dir).glob("fold_*"), key=lambda p: _fold_key(p.name[5:])):
        for name in CHECKPOINT_NAMES:
            if (fold_dir / name).is_file():
                out[fold_dir.name[5:]] = fold_dir / name
                break
    return out


def _fold_key(fold: str):
    return (0, int(fold), "") if fold.isdigit() else (1, 0, fold)


def _model_dirs(path: Path) -> list[Path]:
    """The trained-model folders at ``path``: itself, or the Trainer__Plans__configuration folders in it."""
    path = Path(path)
    if _is_model_dir(path):
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.name.count("__") == 2 and _is_model_dir(p))


def detect(path) -> bool:
    return bool(_model_dirs(Path(path)))


def _model_dir(path: Path) -> Path:
    found = _model_dirs(path)
    if not found:
        raise NotImportable(f"{path}: not an nnU-Net v2 trained model folder (dataset.json, plans.json and "
                            "fold_N/checkpoint_final.pth)")
    if len(found) > 1:
        raise NotImportable(f"{path}: holds several trained models ({', '.join(p.name for p in found)}); "
                            "import one of those folders")
    return found[0]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotImportable(f"{path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise NotImportable(f"{path}: expected a JSON object")
    return data


def configuration(plans: dict, name: str, plans_path: Path | None = None) -> dict:
    """One configuration of the plans, with ``inherits_from`` resolved as nnU-Net's PlansManager does."""
    configs = plans.get("configurations") or {}
    chain, seen = [], set()
    while True:
        if name not in configs:
            raise NotImportable(f"{plans_path or 'plans.json'}: no configuration {name!r} "
                                f"(found: {', '.join(configs) or 'none'})")
        if name in seen:
            raise NotImportable(f"{plans_path or 'plans.json'}: configurations inherit from each other in a circle")
        seen.add(name)
        chain.append(configs[name])
        name = configs[name].get("inherits_from")
        if name is None:
            break
    merged: dict = {}
    for cfg in reversed(chain):
        merged.update(json.loads(json.dumps(cfg)))
    return merged


# --------------------------------------------------------------------------
# checkpoints: pickles, read with an allow-list
# --------------------------------------------------------------------------
_NUMERIC_DTYPES = ("Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType", "Int32DType",
                   "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType", "UInt64DType", "BoolDType")


def _allowed_globals() -> list:
    """What nnU-Net's checkpoints hold besides tensors: numpy scalars of numeric dtypes (its training
    log: losses, Dice, the best EMA). Rebuilding such a scalar needs numpy's scalar(), np.dtype and,
    on numpy 2, the numeric dtype classes; nothing that can run other code."""
    from numpy._core.multiarray import scalar

    dtypes = [getattr(np.dtypes, n) for n in _NUMERIC_DTYPES if hasattr(np.dtypes, n)]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype] + dtypes


_ALLOWED_NAMES = {"numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar", "numpy.dtype"}


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's dict, unpickled by torch's weights-only loader with nnU-Net's few globals allowed.

    Any other global (a class, a function: what an unpickler would call) is named and refused."""
    import pickle

    import torch

    path = Path(path)
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # not a zip, truncated, not a torch file
        raise NotImportable(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    refused = [g for g in unsafe if g not in _ALLOWED_NAMES]
    if refused:
        raise NotImportable(f"{path}: contains {', '.join(refused)}, which is not allowed in an nnU-Net "
                            "checkpoint (only tensors, numbers and numpy scalars are read)")
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            try:
                data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:  # a legacy (non-zip) torch file cannot be memory-mapped
                if "mmap" not in str(exc):
                    raise
                data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>", str(exc))
        what = (found.group(1) or found.group(2)) if found else "a global"
        raise NotImportable(f"{path}: contains {what}, which is not allowed in an nnU-Net checkpoint") from exc
    except (RuntimeError, OSError, ValueError, EOFError) as exc:
        raise NotImportable(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("network_weights"), dict):
        raise NotImportable(f"{path}: not an nnU-Net checkpoint (no network_weights)")
    return data


# --------------------------------------------------------------------------
# labels, modality
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Labels:
    """nnU-Net's LabelManager in the few facts inference needs."""

    classes: list  # name per label value (index = value in the label map)
    has_regions: bool
    regions_class_order: tuple  # label value written for each region channel (regions only)
    num_heads: int  # network output channels


def labels_of(dataset: dict, where: Path | None = None) -> Labels:
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or "background" not in labels:
        raise NotImportable(f"{where or 'dataset.json'}: 'labels' must name a background label 0")
    items = [(k, v) for k, v in labels.items() if k != "ignore"]
    has_regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for _, v in items)
    if not has_regions:
        values = {}
        for k, v in items:
            v = int(v[0] if isinstance(v, (list, tuple)) else v)
            values.setdefault(v, k)
        ordered = sorted(values)
        if ordered != list(range(len(ordered))):
            raise NotImportable(f"{where or 'dataset.json'}: label values must be 0, 1, 2, ... (got {ordered})")
        return Labels([values[v] for v in ordered], False, (), len(ordered))
    order = dataset.get("regions_class_order")
    regions = [(k, v) for k, v in items if not _is_background(v)]
    if not isinstance(order, list) or len(order) != len(regions):
        raise NotImportable(f"{where or 'dataset.json'}: region-based labels need regions_class_order with one "
                            f"entry per region ({len(regions)})")
    order = tuple(int(c) for c in order)
    classes = ["background"] + [f"label {v}" for v in range(1, max(order) + 1)]
    for (name, _), value in zip(regions, order):
        classes[value] = name
    return Labels(classes, True, order, len(regions))


def _is_background(v) -> bool:
    vals = v if isinstance(v, (list, tuple)) else [v]
    return all(int(x) == 0 for x in vals)


def modality_of(channel_names: dict) -> str:
    """"CT" or "MR" when every channel says so; "" when unknown (the user fills it in)."""
    kinds = set()
    for name in channel_names.values():
        key = re.sub(r"[\s_\-]+", "", str(name)).upper()
        if key in ("CT", "CTA", "CECT", "NCCT"):
            kinds.add("CT")
        elif _MR_CHANNEL.match(key):
            kinds.add("MR")
        else:
            return ""
    return kinds.pop() if len(kinds) == 1 else ""


# --------------------------------------------------------------------------
# plan
# --------------------------------------------------------------------------
def _describe_dir(model_dir: Path):
    """(dataset, plans, configuration name, config, checkpoints, first checkpoint's metadata)."""
    dataset = _read_json(model_dir / "dataset.json")
    plans = _read_json(model_dir / "plans.json")
    folds = fold_checkpoints(model_dir)
    meta = read_checkpoint(next(iter(folds.values())))
    parts = model_dir.name.split("__")
    init = meta.get("init_args") if isinstance(meta.get("init_args"), dict) else {}
    name = init.get("configuration") or (parts[2] if len(parts) == 3 else None)
    if not name and len(plans.get("configurations") or {}) == 1:
        name = next(iter(plans["configurations"]))
    if not name:
        raise NotImportable(f"{model_dir}: cannot tell which configuration of plans.json was trained")
    cfg = configuration(plans, str(name), model_dir / "plans.json")
    _check_supported(model_dir, dataset, plans, cfg, str(name))
    return dataset, plans, str(name), cfg, folds, meta


def _check_supported(model_dir: Path, dataset: dict, plans: dict, cfg: dict, name: str) -> None:
    where = model_dir / "plans.json"
    if cfg.get("previous_stage"):
        raise NotImportable(f"{where}: configuration {name!r} is a cascade stage; it needs the segmentation of "
                            f"{cfg['previous_stage']!r} as input, which Lightbox does not run")
    if cfg.get("preprocessor_name", "DefaultPreprocessor") != "DefaultPreprocessor":
        raise NotImportable(f"{where}: preprocessor {cfg['preprocessor_name']!r} is not supported "
                            "(only nnU-Net's DefaultPreprocessor)")
    for key in ("resampling_fn_data", "resampling_fn_probabilities"):
        if cfg.get(key, _RESAMPLERS[0]) not in _RESAMPLERS:
            raise NotImportable(f"{where}: {key} {cfg[key]!r} is not supported (known: {', '.join(_RESAMPLERS)})")
    schemes = cfg.get("normalization_schemes") or []
    unknown = [s for s in schemes if s not in _NORMALIZATIONS]
    if unknown:
        raise NotImportable(f"{where}: normalization {', '.join(unknown)} is not supported "
                            f"(known: {', '.join(_NORMALIZATIONS)})")
    channels = dataset.get("channel_names") or dataset.get("modality") or {}
    if len(schemes) != len(channels):
        raise NotImportable(f"{where}: {len(schemes)} normalization schemes for {len(channels)} input channels")
    if plans.get("label_manager", "LabelManager") != "LabelManager":
        raise NotImportable(f"{where}: label manager {plans['label_manager']!r} is not supported")
    arch = cfg.get("architecture") or {}
    if not arch.get("network_class_name"):
        raise NotImportable(f"{where}: configuration {name!r} names no network (old plans format: re-plan it "
                            "with a current nnU-Net)")
    resolve_name(arch["network_class_name"], where)
    for key in arch.get("_kw_requires_import") or []:
        value = (arch.get("arch_kwargs") or {}).get(key)
        if value is not None:
            resolve_name(value, where)


def _input_spacing(plans: dict, cfg: dict) -> list[float]:
    """The target spacing in the input array's (z, y, x) order (plans hold it transposed); a 2d
    configuration keeps each image's own through-plane spacing: the plans' median stands there."""
    target = [float(s) for s in cfg["spacing"]]
    if len(target) == 2:
        target = [float(plans.get("original_median_spacing_after_transp", [0.0])[0])] + target
    backward = plans.get("transpose_backward", [0, 1, 2])
    return [target[i] for i in backward]


def plan(path) -> ImportPlan:
    path = Path(path)
    model_dir = _model_dir(path)
    dataset, plans, cfg_name, cfg, folds, meta = _describe_dir(model_dir)
    labels = labels_of(dataset, model_dir / "dataset.json")
    channels = dataset.get("channel_names") or dataset.get("modality") or {}
    modality = modality_of(channels)
    dataset_name = str(plans.get("dataset_name") or dataset.get("name") or model_dir.parent.name)
    spacing = _input_spacing(plans, cfg)
    props = plans.get("foreground_intensity_properties_per_channel") or {}
    keys = ("mean", "std", "percentile_00_5", "percentile_99_5", "min", "max", "median")
    channel_stats = [{k: float(props[str(c)][k]) for k in keys if k in props.get(str(c), {})}
                     for c in range(len(channels))]
    mirror = meta.get("inference_allowed_mirroring_axes")
    mirror = [int(a) for a in mirror] if mirror is not None else None
    trainer = str(meta.get("trainer_name") or model_dir.name.split("__")[0])
    prefix = model_dir.relative_to(path) if model_dir != path else Path()
    rel = {f: (prefix / ck.relative_to(model_dir)).as_posix() for f, ck in folds.items()}
    card = {
        "name": f"{dataset_name}-{cfg_name}",
        "version": "1",
        "task": "segmentation-3d",
        "modality": modality,
        "classes": list(labels.classes),
        "input": {"spacing_mm": spacing, "patch_size": [int(p) for p in cfg["patch_size"]],
                  "configuration": cfg_name, "folds": list(folds), "mirroring": True, "mirror_axes": mirror,
                  "channels": [str(channels[k]) for k in channels], "tile_step_size": 0.5,
                  "axis_order": "spacing_mm: input (z, y, x); patch_size, mirror_axes: nnU-Net's axes "
                                "after transpose_forward"},
        "normalization": {"kind": "nnunet", "schemes": list(cfg["normalization_schemes"]),
                          "use_mask_for_norm": [bool(v) for v in cfg.get("use_mask_for_norm") or []],
                          "intensity_properties": channel_stats},
        "source": f"nnU-Net v2 model folder {dataset_name}/{model_dir.name}",
        "licence": "",
        "domain": {"kind": "intensity", "channels": channel_stats, "spacing_mm": spacing},
        "extra": {"nnunet": {"model_dir": prefix.as_posix() if prefix.parts else "", "configuration": cfg_name,
                             "trainer": trainer, "plans": str(plans.get("plans_name", "")),
                             "checkpoints": rel, "transpose_forward": plans.get("transpose_forward", [0, 1, 2]),
                             "region_based": labels.has_regions}},
    }
    notes = [f"configuration {cfg_name} of {dataset_name}, trained by {trainer}",
             f"{len(folds)} fold(s) ({', '.join(folds)}): "
             + ("their logits are averaged, as nnU-Net ensembles folds" if len(folds) > 1 else "one network"),
             f"target spacing {spacing} mm (z, y, x), patch {cfg['patch_size']}, sliding window step 0.5",
             f"normalization {', '.join(cfg['normalization_schemes'])}",
             "test-time mirroring on " + (f"axes {mirror}" if mirror else "no axes (the trainer allows none)"),
             "nothing runs beyond the network: it is built from plans.json by dynamic_network_architectures and "
             "its weights are read with torch's weights-only loader"]
    if labels.has_regions:
        notes.append("region-based labels: sigmoid per region, later regions written over earlier ones")
    if trainer != "nnUNetTrainer":
        notes.append(f"trainer {trainer}: the network is built from the plans as nnUNetTrainer builds it; "
                     "weights that do not fit are refused when the model is loaded")
    if any(ck.name != CHECKPOINT_NAMES[0] for ck in folds.values()):
        notes.append("some folds have no checkpoint_final.pth; their checkpoint_best.pth is used")
    files = [prefix / "dataset.json", prefix / "plans.json"] + [Path(p) for p in rel.values()]
    return ImportPlan(format=FORMAT, source=path, card=card, needs=[] if modality else ["modality"],
                      runs_code=[], notes=notes, files=files)


# --------------------------------------------------------------------------
# network
# --------------------------------------------------------------------------
def resolve_name(dotted: str, where=None):
    """The class a plans file names, only from dynamic_network_architectures or torch.nn: importing
    any other dotted name from a file would run whatever module it names."""
    dotted = str(dotted)
    if not dotted.startswith(_ALLOWED_PREFIXES) or not all(p.isidentifier() for p in dotted.split(".")):
        raise NotImportable(f"{where or 'plans.json'}: names {dotted!r}; only classes from "
                            "dynamic_network_architectures and torch.nn are allowed in an nnU-Net plan")
    module_name, _, attr = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == "dynamic_network_architectures":
            raise NotImportable("nnU-Net models need the dynamic-network-architectures package: "
                                "pip install dynamic-network-architectures") from exc
        raise NotImportable(f"{where or 'plans.json'}: names {dotted!r}, which does not exist "
                            f"({exc}); the plans may need a newer dynamic-network-architectures") from exc
    obj = getattr(module, attr, None)
    if not isinstance(obj, type):
        raise NotImportable(f"{where or 'plans.json'}: names {dotted!r}, which is not a class")
    return obj


def build_network(cfg: dict, in_channels: int, out_channels: int, where=None):
    """The network of a configuration, as nnU-Net's get_network_from_plans builds it for inference."""
    from torch import nn

    try:
        import dynamic_network_architectures  # noqa: F401
    except ImportError as exc:
        raise NotImportable("nnU-Net models need the dynamic-network-architectures package: "
                            "pip install dynamic-network-architectures") from exc
    arch = cfg["architecture"]
    cls = resolve_name(arch["network_class_name"], where)
    if not issubclass(cls, nn.Module):
        raise NotImportable(f"{where or 'plans.json'}: {arch['network_class_name']} is not a network")
    kwargs = dict(arch.get("arch_kwargs") or {})
    for key in arch.get("_kw_requires_import") or []:
        if kwargs.get(key) is not None:
            kwargs[key] = resolve_name(kwargs[key], where)
    try:
        return cls(input_channels=in_channels, num_classes=out_channels, deep_supervision=False, **kwargs)
    except TypeError as exc:
        raise NotImportable(f"{where or 'plans.json'}: cannot build {arch['network_class_name']} from the plans "
                            f"({exc})") from exc


# --------------------------------------------------------------------------
# preprocessing (nnunetv2 DefaultPreprocessor.run_case_npy)
# --------------------------------------------------------------------------
def crop_to_nonzero(data: np.ndarray):
    """(cropped data, seg with -1 outside the filled nonzero mask, bbox [[lo, hi), ...]) as nnU-Net crops."""
    from scipy.ndimage import binary_fill_holes

    mask = data[0] != 0
    for c in range(1, data.shape[0]):
        mask |= data[c] != 0
    mask = binary_fill_holes(mask)
    bbox = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        bbox.append([int(hit[0]), int(hit[-1]) + 1] if hit.size else [0, mask.shape[axis]])
    sl = tuple(slice(a, b) for a, b in bbox)
    seg = np.where(mask[sl], np.int8(0), np.int8(-1))[None]
    return data[(slice(None),) + sl], seg, bbox


def normalize(data: np.ndarray, seg: np.ndarray, schemes, use_mask, properties) -> np.ndarray:
    """nnU-Net's normalization classes, per channel, in place on float32 data."""
    for c, scheme in enumerate(schemes):
        image = data[c]
        props = properties.get(str(c), {}) if isinstance(properties, dict) else properties[c]
        if scheme == "CTNormalization":
            np.clip(image, props["percentile_00_5"], props["percentile_99_5"], out=image)
            image -= props["mean"]
            image /= max(props["std"], 1e-8)
        elif scheme == "ZScoreNormalization":
            if use_mask[c]:
                mask = seg[0] >= 0
                mean = image[mask].mean()
                std = image[mask].std()
                image[mask] = (image[mask] - mean) / max(std, 1e-8)
            else:
                mean = image.mean()
                std = image.std()
                image -= mean
                image /= max(std, 1e-8)
        elif scheme == "RescaleTo01Normalization":
            image -= image.min()
            image /= np.clip(image.max(), a_min=1e-8, a_max=None)
        elif scheme == "RGBTo01Normalization":
            if image.min() < 0 or image.max() > 255:
                raise ValueError("RGBTo01Normalization expects values 0..255")
            image /= 255.0
        elif scheme != "NoNormalization":
            raise ValueError(f"normalization {scheme!r} is not supported")
        data[c] = image
    return data


def compute_new_shape(old_shape, old_spacing, new_spacing) -> np.ndarray:
    return np.array([int(round(i / j * k)) for i, j, k in zip(old_spacing, new_spacing, old_shape)])


def _separate_z(force, current_spacing, new_spacing, threshold=ANISO_THRESHOLD):
    """(resample the low-resolution axis apart?, that axis), nnU-Net's determine_do_sep_z_and_axis."""
    def lowres_axis(spacing):
        spacing = np.asarray(spacing, dtype=float)
        return np.where(max(spacing) / spacing == 1)[0]

    if force is not None:
        do, axis = bool(force), (lowres_axis(current_spacing) if force else None)
    elif np.max(current_spacing) / np.min(current_spacing) > threshold:
        do, axis = True, lowres_axis(current_spacing)
    elif np.max(new_spacing) / np.min(new_spacing) > threshold:
        do, axis = True, lowres_axis(new_spacing)
    else:
        do, axis = False, None
    if axis is not None:
        if len(axis) in (2, 3):
            return False, None
        axis = int(axis[0])
    return do, axis


def resize(image: np.ndarray, shape, order: int) -> np.ndarray:
    """skimage.transform.resize(image, shape, order, mode="edge", anti_aliasing=False) on float64:
    scipy's zoom on the pixel grid, clipped to the input's range."""
    from scipy import ndimage

    factors = np.divide(image.shape, shape)
    out = ndimage.zoom(image, [1 / f for f in factors], order=order, mode="nearest", cval=0, grid_mode=True)
    lo, hi = np.min(image), np.max(image)
    if np.isnan(lo):
        lo, hi = np.nanmin(image), np.nanmax(image)
    np.clip(out, np.asarray(lo), np.asarray(hi), out=out)
    return out


def _nearest_along(volume: np.ndarray, axis: int, size: int) -> np.ndarray:
    """map_coordinates(order=0, mode="nearest") along one axis with the others unchanged: the same
    source index per output slice (scipy rounds half up), without a coordinate grid per voxel."""
    n = volume.shape[axis]
    scale = float(n) / size
    coords = scale * (np.arange(size, dtype=float) + 0.5) - 0.5
    idx = np.clip(np.floor(coords + 0.5).astype(np.int64), 0, n - 1)
    return np.take(volume, idx, axis=axis)


def resample(data: np.ndarray, new_shape, current_spacing, new_spacing, *, order: int, order_z: int = 0,
             force_separate_z=None, is_seg: bool = False) -> np.ndarray:
    """nnU-Net's resample_data_or_seg_to_shape for images and logits (not segmentations)."""
    from scipy.ndimage import map_coordinates

    if is_seg:
        raise ValueError("segmentation resampling is not needed for inference")
    do_separate, axis = _separate_z(force_separate_z, current_spacing, new_spacing)
    shape = np.array(data[0].shape)
    new_shape = np.array(new_shape)
    if not np.any(shape != new_shape):
        return data
    out = np.zeros((data.shape[0], *new_shape), dtype=data.dtype)
    data = data.astype(float, copy=False)
    for c in range(data.shape[0]):
        if not do_separate:
            out[c] = resize(data[c], new_shape, order)
            continue
        in_plane = [int(s) for i, s in enumerate(new_shape) if i != axis]
        tmp = new_shape.copy()
        tmp[axis] = shape[axis]
        here = np.zeros(tmp)
        for k in range(shape[axis]):
            sl = [slice(None)] * 3
            sl[axis] = k
            here[tuple(sl)] = resize(data[c][tuple(sl)], in_plane, order)
        if shape[axis] == new_shape[axis]:
            out[c] = here
        elif order_z == 0:
            out[c] = _nearest_along(here, axis, int(new_shape[axis]))
        else:
            grids = np.mgrid[tuple(slice(0, int(s)) for s in new_shape)].astype(float)
            scales = np.array(here.shape, float) / new_shape
            coords = np.array([sc * (g + 0.5) - 0.5 for sc, g in zip(scales, grids)])
            out[c] = map_coordinates(here, coords, order=order_z, mode="nearest")
    return out


def _resampler(cfg: dict, key: str):
    name = cfg.get(key, "resample_data_or_seg_to_shape")
    kwargs = dict(cfg.get(key + "_kwargs") or {})
    if name == "no_resampling_hack":
        return lambda data, shape, cur, new: data
    order, order_z, force = int(kwargs.get("order", 3)), int(kwargs.get("order_z", 0)), kwargs.get("force_separate_z")
    return lambda data, shape, cur, new: resample(data, shape, cur, new, order=order, order_z=order_z,
                                                  force_separate_z=force)


# --------------------------------------------------------------------------
# sliding window (nnUNetPredictor)
# --------------------------------------------------------------------------
def compute_gaussian(tile_size, sigma_scale=1.0 / 8, value_scaling_factor=10.0):
    """nnU-Net's importance map: float16, peak value_scaling_factor, no zeros."""
    import torch
    from scipy.ndimage import gaussian_filter

    tmp = np.zeros(tile_size)
    tmp[tuple(i // 2 for i in tile_size)] = 1
    g = gaussian_filter(tmp, [i * sigma_scale for i in tile_size], 0, mode="constant", cval=0)
    g /= np.max(g) / value_scaling_factor
    g = torch.from_numpy(g).to(dtype=torch.float16)
    mask = g == 0
    g[mask] = torch.min(g[~mask])
    return g


def compute_steps(image_size, tile_size, tile_step_size: float):
    target = [i * tile_step_size for i in tile_size]
    num = [int(np.ceil((i - k) / j)) + 1 for i, j, k in zip(image_size, target, tile_size)]
    steps = []
    for dim in range(len(tile_size)):
        max_step = image_size[dim] - tile_size[dim]
        actual = max_step / (num[dim] - 1) if num[dim] > 1 else 99999999999
        steps.append([int(np.round(actual * i)) for i in range(num[dim])])
    return steps


def _slicers(image_size, patch_size, step: float):
    """Window slices in nnU-Net's order; a 2d patch on 3d data walks every slice."""
    if len(patch_size) < len(image_size):
        steps = compute_steps(image_size[1:], patch_size, step)
        return [(slice(None), d, *[slice(s, s + t) for s, t in zip((sx, sy), patch_size)])
                for d in range(image_size[0]) for sx in steps[0] for sy in steps[1]]
    steps = compute_steps(image_size, patch_size, step)
    return [(slice(None), *[slice(s, s + t) for s, t in zip((sx, sy, sz), patch_size)])
            for sx in steps[0] for sy in steps[1] for sz in steps[2]]


def _pad(data, patch_size):
    """acvl_utils' pad_nd_image(..., 'constant', value 0): pad to at least the patch, content centred."""
    import torch.nn.functional as F

    old = list(data.shape)
    new = old[:len(old) - len(patch_size)] + [max(p, s) for p, s in zip(patch_size, old[-len(patch_size):])]
    diff = np.array(new) - np.array(old)
    below, above = diff // 2, diff // 2 + diff % 2
    if not diff.any():
        return data, tuple(slice(None) for _ in old)
    pad = []
    for b, a in zip(below[::-1], above[::-1]):
        pad += [int(b), int(a)]
    out = F.pad(data, pad, "constant", 0)
    return out, tuple(slice(int(b), int(b) + s) for b, s in zip(below, old))


# --------------------------------------------------------------------------
# runner
# --------------------------------------------------------------------------
class NnUNetRunner:
    """A loaded nnU-Net v2 model: ``predict`` reproduces nnUNetPredictor.predict_single_npy_array."""

    def __init__(self, card, folder: Path, device="cpu"):
        import torch

        self.card = card
        info = (card.extra or {}).get("nnunet") or {}
        root = Path(folder) / (info.get("model_dir") or "")
        self.dataset = _read_json(root / "dataset.json")
        self.plans = _read_json(root / "plans.json")
        self.configuration_name = str((card.input or {}).get("configuration") or info.get("configuration"))
        self.cfg = configuration(self.plans, self.configuration_name, root / "plans.json")
        _check_supported(root, self.dataset, self.plans, self.cfg, self.configuration_name)
        self.labels = labels_of(self.dataset, root / "dataset.json")
        self.channels = len(self.dataset.get("channel_names") or self.dataset.get("modality") or {})
        self.patch_size = [int(p) for p in self.cfg["patch_size"]]
        self.transpose_forward = [int(a) for a in self.plans.get("transpose_forward", [0, 1, 2])]
        self.transpose_backward = [int(a) for a in self.plans.get("transpose_backward", [0, 1, 2])]
        self.device = torch.device(device) if not isinstance(device, torch.device) else device
        checkpoints = info.get("checkpoints") or {}
        folds = [str(f) for f in (card.input or {}).get("folds") or list(checkpoints)]
        if not folds:
            raise NotImportable(f"{root}: the card names no fold to run")
        self.weights, mirror = [], None
        for i, fold in enumerate(folds):
            rel = checkpoints.get(fold)
            path = (Path(folder) / rel) if rel else root / f"fold_{fold}" / CHECKPOINT_NAMES[0]
            ck = read_checkpoint(path)
            if i == 0:
                mirror = ck.get("inference_allowed_mirroring_axes")
            self.weights.append((path, ck["network_weights"]))
        self.mirror_axes = tuple(int(a) for a in mirror) if mirror is not None else None
        self.network = build_network(self.cfg, self.channels, self.labels.num_heads, root / "plans.json")
        self._load(0)
        self.network.to(self.device).eval()
        self.mirroring = bool((card.input or {}).get("mirroring", True))
        self.tile_step_size = float((card.input or {}).get("tile_step_size", 0.5))
        # 1 = nnU-Net's own way and its numbers to the bit; more windows per network call can be faster,
        # but convolutions over a batch round differently, which the float16 sums can make visible
        self.windows_per_batch = max(1, int((card.input or {}).get("windows_per_batch", 1)))

    def _load(self, i: int) -> None:
        path, state = self.weights[i]
        try:
            self.network.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise NotImportable(f"{path}: the weights do not fit the network the plans describe "
                                f"({str(exc).splitlines()[0]})") from exc

    # -- preprocessing ---------------------------------------------------
    def preprocess(self, array: np.ndarray, spacing) -> tuple[np.ndarray, dict]:
        """(network-ready float32 (C, ...), properties to undo it), DefaultPreprocessor.run_case_npy."""
        data = np.asarray(array)
        if data.ndim == 3:
            data = data[None]
        if data.ndim != 4 or data.shape[0] != self.channels:
            raise ValueError(f"model {self.card.name!r} takes {self.channels} channel(s) of (z, y, x), "
                             f"got an array of shape {np.shape(array)}")
        data = data.astype(np.float32)
        data = data.transpose([0, *[i + 1 for i in self.transpose_forward]])
        original_spacing = [float(spacing[i]) for i in self.transpose_forward]
        props = {"spacing": [float(s) for s in spacing], "shape_before_cropping": data.shape[1:]}
        data, seg, bbox = crop_to_nonzero(data)
        props["bbox_used_for_cropping"] = bbox
        props["shape_after_cropping_and_before_resampling"] = data.shape[1:]
        target = [float(s) for s in self.cfg["spacing"]]
        if len(target) < len(data.shape[1:]):
            target = [original_spacing[0]] + target
        new_shape = compute_new_shape(data.shape[1:], original_spacing, target)
        data = normalize(data, seg, self.cfg["normalization_schemes"], self.cfg.get("use_mask_for_norm") or [],
                         self.plans.get("foreground_intensity_properties_per_channel") or {})
        data = _resampler(self.cfg, "resampling_fn_data")(data, new_shape, original_spacing, target)
        return np.ascontiguousarray(data, dtype=np.float32), props

    # -- network ---------------------------------------------------------
    def _mirrored(self, x):
        """nnUNetPredictor._internal_maybe_mirror_and_predict."""
        import torch

        prediction = self.network(x)
        axes = self.mirror_axes if self.mirroring else None
        if axes:
            if max(axes) > x.ndim - 3:
                raise ValueError(f"mirror axes {axes} do not fit a {x.ndim - 2}d network")
            axes = [a + 2 for a in axes]
            combos = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
            for c in combos:
                prediction += torch.flip(self.network(torch.flip(x, c)), c)
            prediction /= (len(combos) + 1)
        return prediction

    def _sliding_window(self, data, tick, cancel):
        """float16 logits (K, ...) of one network over preprocessed data, nnU-Net's accumulation."""
        import torch

        from inference.segment import Cancelled

        data, revert = _pad(data, self.patch_size)
        slicers = _slicers(data.shape[1:], self.patch_size, self.tile_step_size)
        logits = torch.zeros((self.labels.num_heads, *data.shape[1:]), dtype=torch.half)
        weights = torch.zeros(data.shape[1:], dtype=torch.half)
        gaussian = compute_gaussian(tuple(self.patch_size))
        on_cuda = self.device.type == "cuda"
        for b0 in range(0, len(slicers), self.windows_per_batch):
            if cancel is not None and cancel():
                raise Cancelled("segmentation cancelled")
            batch = slicers[b0:b0 + self.windows_per_batch]
            x = torch.cat([data[sl][None] for sl in batch]).contiguous().to(self.device)
            if on_cuda:
                with torch.autocast("cuda", enabled=True):
                    preds = self._mirrored(x).to("cpu")
            else:
                preds = self._mirrored(x)
            for sl, pred in zip(batch, preds):  # accumulated window by window, in nnU-Net's order
                pred *= gaussian
                logits[sl] += pred
                weights[sl[1:]] += gaussian
                tick()
        torch.div(logits, weights, out=logits)
        if torch.any(torch.isinf(logits)):
            raise RuntimeError("nnU-Net logits overflowed float16 (inf); the model's outputs are too large")
        return logits[(slice(None), *revert[1:])]

    def predict_logits(self, data: np.ndarray, progress=None, cancel=None):
        """Fold-averaged float16 logits on the preprocessed grid (predict_logits_from_preprocessed_data)."""
        import torch

        data_t = torch.from_numpy(data)
        n_windows = len(_slicers(_pad(data_t, self.patch_size)[0].shape[1:], self.patch_size, self.tile_step_size))
        total, done = n_windows * len(self.weights), [0]

        def tick():
            done[0] += 1
            if progress is not None:
                progress(done[0] / total)

        prediction = None
        with torch.inference_mode():
            for i in range(len(self.weights)):
                if len(self.weights) > 1:
                    self._load(i)
                logits = self._sliding_window(data_t, tick, cancel)
                prediction = logits if prediction is None else prediction.add_(logits)
            if len(self.weights) > 1:
                prediction /= len(self.weights)
        return prediction

    # -- export ----------------------------------------------------------
    def export(self, logits, props: dict):
        """(labels, probabilities) on the input grid: convert_predicted_logits_to_segmentation_with_correct_shape."""
        import torch

        spacing_t = [props["spacing"][i] for i in self.transpose_forward]
        target = [float(s) for s in self.cfg["spacing"]]
        current = target if len(target) == len(props["shape_after_cropping_and_before_resampling"]) \
            else [spacing_t[0], *target]
        logits = _resampler(self.cfg, "resampling_fn_probabilities")(
            logits.numpy(), props["shape_after_cropping_and_before_resampling"], current, spacing_t)
        with torch.no_grad():
            t = torch.from_numpy(np.asarray(logits)).float()
            probs = torch.sigmoid(t) if self.labels.has_regions else torch.softmax(t, 0)
        probs = probs.numpy()
        heads = self.labels.num_heads
        if self.labels.has_regions:
            seg = np.zeros(probs.shape[1:], dtype=np.uint16)
            for i, c in enumerate(self.labels.regions_class_order):
                seg[probs[i] > 0.5] = c
        else:
            seg = probs.argmax(0)
        n_fg = len(self.labels.classes) - 1
        dtype = np.uint8 if n_fg < 255 else np.uint16
        shape = props["shape_before_cropping"]
        sl = tuple(slice(a, b) for a, b in props["bbox_used_for_cropping"])
        labels = np.zeros(shape, dtype=dtype)
        labels[sl] = seg
        full = np.zeros((heads, *shape), dtype=np.float32)
        if not self.labels.has_regions:
            full[0] = 1
        full[(slice(None),) + sl] = probs
        labels = labels.transpose(self.transpose_backward)
        full = full.transpose([0] + [i + 1 for i in self.transpose_backward])
        if self.labels.has_regions:  # one channel per class: background = no region above 0.5 ...
            per_class = np.zeros((len(self.labels.classes), *full.shape[1:]), dtype=np.float32)
            for i, c in enumerate(self.labels.regions_class_order):
                per_class[c] = full[i]
            per_class[0] = 1.0 - full.max(0)
            full = per_class
        return np.ascontiguousarray(labels), np.ascontiguousarray(full)

    def predict(self, image: VolumeImage, progress=None, cancel=None) -> Prediction:
        from inference.segment import Cancelled

        def stage(lo, hi):
            return None if progress is None else (lambda f: progress(lo + (hi - lo) * float(f)))

        if cancel is not None and cancel():
            raise Cancelled("segmentation cancelled")
        data, props = self.preprocess(image.array, image.spacing)
        if progress is not None:
            progress(0.05)
        logits = self.predict_logits(data, stage(0.05, 0.9), cancel)
        if cancel is not None and cancel():
            raise Cancelled("segmentation cancelled")
        labels, probabilities = self.export(logits, props)
        if progress is not None:
            progress(1.0)
        notes = [f"nnU-Net {self.configuration_name}, {len(self.weights)} fold(s), mirroring "
                 + ("on" if self.mirroring and self.mirror_axes else "off")]
        return Prediction(classes=list(self.labels.classes), labels=labels, probabilities=probabilities, notes=notes)


def load(card, folder, device="cpu") -> NnUNetRunner:
    return NnUNetRunner(card, Path(folder), device)


HANDLER = register(FormatHandler(
    name=FORMAT, detect=detect, plan=plan, load=load,
    describe="an nnU-Net v2 trained model folder (dataset.json, plans.json, fold_N/checkpoint_final.pth)"))
