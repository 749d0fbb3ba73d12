"""Fine-tune a model from its current weights on an exported dataset, writing a new version.

    python -m inference.finetune DATASET [--model NAME] --epochs 5 [--device auto]

:func:`finetune` dispatches on the model's task: 3D segmentation (here), 2D segmentation
(``finetune_seg2d``) and the mammography exam classifier (``finetune_exam``); they share the
dataset reading, versioning and card writing below (:func:`save_version`).

3D segmentation reads ``DATASET/dataset.json`` (channel names, labels) and the ``imagesTr``/``labelsTr`` NIfTI
pairs, maps the dataset's label names onto the model's classes, splits cases into training and
validation (seeded), trains from the model's current weights with the same loss and crops as
``train_seg`` (Dice + cross-entropy, random patches, half of them on the rarest class), reports
loss and per-class validation Dice after every epoch, and writes a NEW version of the model
(weights + card with the training-data summary and metrics) into the user's model folder.
The shipped model is never overwritten.

Retraining cannot put a worse model in charge (``inference.activation`` holds the rule):

* The run starts from the version Analyze uses now (the parent) and needs validation cases: a
  dataset too small to hold one out is refused unless ``allow_no_validation`` is given, and a
  version trained that way is written "unvalidated" and never used automatically.
* The parent is scored on the same validation cases before training; the new version is
  "better" (used by Analyze from now on) only when its score is not worse, else it is kept as
  "not better" and Analyze keeps the parent. The verdict and both numbers are in the new card
  (``extra["activation"]``).
* Labels are matched before training: a dataset label the model lacks would be ignored, so the
  run is refused unless ``ignore_extra_labels`` is given; a model class without labels in the
  dataset is trained as background, which is said as a warning.

A new version gets its own domain description (``card.domain``, the out-of-distribution check of
``inference.domain``), computed with ITS network from all the exported cases, plus a few of the
demo training phantoms (``domain_fit.DEMO_SUBSET``) when the parent was described from them: the
cases it was trained on are no longer "unlike this model's training data". When that cannot be
done (fewer than 3 cases, another kind of description, an error) the parent's is kept;
``extra["domain_note"]`` says which (:func:`version_domain`).

Several GPUs or machines: run it under torchrun, e.g.

    torchrun --nproc_per_node 4 -m inference.finetune DATASET --epochs 20
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_endpoint HOST:29500 -m inference.finetune DATASET

Each process trains on its own random crops with DistributedDataParallel (NCCL on CUDA, gloo on
CPU) averaging the gradients; rank 0 validates and writes the new version.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from inference import activation, registry
from inference.device import DeviceError, pick_device
from inference.preprocess import ct as ctp

Progress = Callable[[dict], None]
Warn = Callable[[str], None]
SEGMENTATION_TASKS = ("segmentation-3d", "segmentation-2d")
ALLOW_NO_VALIDATION = "lightbox train --allow-no-validation"
IGNORE_EXTRA_LABELS = "lightbox train --ignore-extra-labels"


class FinetuneError(ValueError):
    """The dataset cannot train this model (layout, labels, modality); the message says why."""


class Stopped(Exception):
    """Cancelled between steps."""


def read_dataset(root) -> tuple[dict, list[tuple[Path, Path]]]:
    """(dataset.json, [(image, label), ...]) of an nnU-Net v2 raw dataset folder."""
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise FinetuneError(f"{root}: no dataset.json (expected an nnU-Net v2 raw dataset folder)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise FinetuneError(f"{meta_path}: not readable JSON ({exc})") from exc
    ending = meta.get("file_ending", ".nii.gz")
    pairs = []
    for label in sorted((root / "labelsTr").glob(f"*{ending}")):
        case = label.name[: -len(ending)]
        image = root / "imagesTr" / f"{case}_0000{ending}"
        if not image.is_file():
            raise FinetuneError(f"{label}: no image {image.name} in imagesTr")
        pairs.append((image, label))
    if not pairs:
        raise FinetuneError(f"{root}: no cases in labelsTr")
    return meta, pairs


def label_values(dataset_labels: dict) -> dict[int, str]:
    """{value: name} of dataset.json's labels; region-based labels (lists of values) are refused."""
    values = {}
    for name, v in dataset_labels.items():
        try:
            values[int(v)] = str(name)
        except (TypeError, ValueError) as exc:
            raise FinetuneError(f"dataset.json: label {name!r} has value {v!r}, not one whole number "
                                "(region-based labels cannot fine-tune these models)") from exc
    return values


def label_remap(dataset_labels: dict, classes: list[str]) -> np.ndarray:
    """Lookup table dataset value -> model class index, matching names (case-insensitive).
    Dataset labels the model does not know become background, so a model never learns a class it
    cannot output (:func:`segmentation_labels` names them first, and training refuses them unless
    told to ignore them); the model's classes missing from the dataset are trained as background."""
    index = {c.lower(): i for i, c in enumerate(classes)}
    values = label_values(dataset_labels)
    lut = np.zeros(max(values, default=0) + 1, np.uint8)
    matched = 0
    for v, name in values.items():
        if v and name.lower() in index:
            lut[v] = index[name.lower()]
            matched += 1
    if not matched:
        raise FinetuneError(f"no dataset label ({', '.join(n for v, n in values.items() if v)}) is a class of "
                            f"the model ({', '.join(classes[1:])})")
    return lut


def load_case(image: Path, label: Path, card, lut: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalized input (C,z,y,x), labels (z,y,x) in model classes) on the model's grid."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(image))
    lab = sitk.ReadImage(str(label))
    if img.GetSize() != lab.GetSize():
        raise FinetuneError(f"{label.name}: size {lab.GetSize()} differs from its image {img.GetSize()}")
    hu = sitk.GetArrayFromImage(img).astype(np.float32)
    spacing = tuple(float(s) for s in reversed(img.GetSpacing()))
    labels = sitk.GetArrayFromImage(lab).astype(np.int64)
    if labels.max(initial=0) >= len(lut):
        raise FinetuneError(f"{label.name}: label value {labels.max()} is not in dataset.json")
    model_spacing = tuple(float(s) for s in card.input["spacing_mm"])
    x = ctp.to_model_grid(hu, spacing, model_spacing, card.normalization)
    classes = len(card.classes)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(lut[labels]).long(), classes)
    y = ctp.resample(onehot.permute(3, 0, 1, 2).to(torch.uint8), x.shape[1:]).argmax(0).to(torch.uint8)
    return x, y


def dice_per_class(pred: torch.Tensor, truth: torch.Tensor, classes: list[str]) -> dict[str, float]:
    out = {}
    for i, name in enumerate(classes):
        if i == 0:
            continue
        p, t = pred == i, truth == i
        denom = int(p.sum()) + int(t.sum())
        if denom:
            out[name] = 2.0 * int((p & t).sum()) / denom
    return out


@dataclass
class LabelCheck:
    """How a dataset's labels meet a model's classes, found before any training."""

    model: str  # "name version"
    classes: list  # the model's classes, background first for segmentation
    unknown: dict = field(default_factory=dict)  # dataset label the model lacks -> how many voxels/views
    untaught: dict = field(default_factory=dict)  # model class -> "no label" | "no voxels"
    unit: str = "voxels"

    def refusals(self) -> list[str]:
        """Labels the run would silently drop: refused unless the caller chose to ignore them."""
        shown = ", ".join(c for c in self.classes if c.lower() != "background")
        def amount(n: int) -> str:
            return f"{n} {self.unit if n != 1 else self.unit.rstrip('s')}"

        return [f"{name!r} is in the dataset ({amount(count)}) but not in model {self.model} (classes: {shown}): "
                "it would be ignored" for name, count in self.unknown.items()]

    def warnings(self) -> list[str]:
        return [f"model class {name!r} has {why} in the dataset: it is trained as background"
                for name, why in self.untaught.items()]

    def messages(self) -> list[str]:
        return self.refusals() + self.warnings()


def label_counts(path: Path) -> dict[int, int]:
    """{label value: voxels} of one label map (any dimension), read label file only."""
    import SimpleITK as sitk

    try:
        values = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as exc:  # ITK's I/O errors: name the file, keep ITK's last line
        raise FinetuneError(f"{path}: cannot be read ({str(exc).strip().splitlines()[-1]})") from exc
    found, counts = np.unique(values, return_counts=True)
    return {int(v): int(n) for v, n in zip(found, counts)}


def segmentation_labels(meta: dict, pairs: list[tuple[Path, Path]], card) -> LabelCheck:
    """Dataset labels with voxels that the model lacks, and model classes with no label or no voxels."""
    values = label_values(meta.get("labels") or {})
    voxels: dict[int, int] = {}
    for _image, label in pairs:
        for v, n in label_counts(label).items():
            voxels[v] = voxels.get(v, 0) + n
    classes = list(card.classes)
    known = {c.lower() for c in classes[1:]}
    unknown = {name: voxels[v] for v, name in sorted(values.items())
               if v and name.lower() not in known and voxels.get(v)}
    by_name = {name.lower(): v for v, name in values.items() if v}
    untaught = {}
    for c in classes[1:]:
        if c.lower() not in by_name:
            untaught[c] = "no label"
        elif not voxels.get(by_name[c.lower()]):
            untaught[c] = "no voxels"
    return LabelCheck(f"{card.name} {card.version}", classes, unknown, untaught, "voxels")


@dataclass
class Plan:
    """What a run would train on, worked out and checked before any training: the parent (the
    version Analyze uses now), the split, and how the labels match. ``data`` is the fine-tuner's own
    (segmentation: (dataset.json, pairs, lookup table); exam: (views, skipped rows))."""

    card: object
    labels: LabelCheck
    train_idx: list
    val_idx: list
    validation_cases: int
    cases: int  # in the whole dataset (the exam classifier's views come several to a case)
    unit: str  # what train_idx/val_idx count: "cases", "views"
    data: tuple = ()
    notes: list = field(default_factory=list)

    def require(self, allow_no_validation: bool = False, ignore_extra_labels: bool = False) -> None:
        """Refuse a run that could not be judged, or that would silently drop labels."""
        refusals = self.labels.refusals()
        if refusals and not ignore_extra_labels:
            raise FinetuneError("; ".join(refusals) + ". Name the labels as the model's classes, or train "
                                f"ignoring them (confirm in the Train dialog, or {IGNORE_EXTRA_LABELS})")
        if not self.validation_cases and not allow_no_validation:
            n = self.cases
            what = f"{n} case{'s' if n != 1 else ''}"
            why = (f"{what}: nothing left to validate on; export at least 2 cases" if n < 2 else
                   f"{what} but no validation case (validation fraction 0, or too few cases to split); "
                   "raise the validation fraction or export more cases")
            raise FinetuneError(f"{why}, or train without validation explicitly (confirm in the Train dialog, or "
                                f"{ALLOW_NO_VALIDATION}): that version is never used by Analyze unless you choose "
                                "it in AI ▸ Models…")

    def messages(self) -> list[str]:
        n = self.validation_cases
        head = (f"{len(self.train_idx)} training and {len(self.val_idx)} validation {self.unit}"
                + ("" if n == len(self.val_idx) or not n else f" ({n} validation case{'s' if n != 1 else ''})"))
        return [head] + self.notes + self.labels.messages()


def split_indices(n_cases: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training, validation) case indices: a seeded permutation, at least one validation case when
    there are two or more cases and the fraction is above 0."""
    order = np.random.default_rng(seed).permutation(n_cases)
    n_val = max(1, round(val_fraction * n_cases)) if n_cases > 1 and val_fraction > 0 else 0
    return [int(i) for i in order[n_val:]], [int(i) for i in order[:n_val]]


def check_channels(meta: dict, card) -> None:
    channels = {str(v).upper() for v in meta.get("channel_names", {}).values()}
    if channels and card.modality.upper() not in channels:
        raise FinetuneError(f"dataset channels {sorted(channels)} do not match the model's modality {card.modality}")


def plan(dataset, card, val_fraction: float = 0.2, seed: int = 0) -> Plan:
    """The checked plan of fine-tuning ``card`` on ``dataset`` (reads dataset.json and the label maps
    or the classification rows; no image is prepared). Raises FinetuneError for a dataset this model
    cannot learn from at all."""
    if card.task == "exam-classifier":
        from inference.finetune_exam import plan_exam

        return plan_exam(dataset, card, val_fraction, seed)
    if card.task not in SEGMENTATION_TASKS:
        raise FinetuneError(f"{card.name} is a {card.task} model; fine-tuning supports 3D and 2D segmentation "
                            "models and the exam classifier")
    meta, pairs = read_dataset(dataset)
    if card.task == "segmentation-2d":
        from inference.finetune_seg2d import check_modality

        check_modality(meta, card, dataset)
    else:
        check_channels(meta, card)
    lut = label_remap(meta.get("labels", {}), list(card.classes))
    labels = segmentation_labels(meta, pairs, card)
    train_idx, val_idx = split_indices(len(pairs), val_fraction, seed)
    unit = "views" if card.task == "segmentation-2d" else "cases"
    return Plan(card, labels, train_idx, val_idx, len(val_idx), len(pairs), unit, (meta, pairs, lut))


def parent_card(name: str):
    """The version of ``name`` Analyze uses now (pinned, or the newest eligible): fine-tuning starts
    from it and is judged against it."""
    cards = registry.available_models()
    if not any(c.name == name for c in cards):
        return registry.find_model(name)  # raises, naming the folders searched
    card, _why = activation.active_version(name, cards)
    if card is None:
        raise FinetuneError(f"no version of {name} is in use (each is 'not better' or 'unvalidated'); choose "
                            "the one to start from in AI ▸ Models…")
    return card


def preflight(dataset, model: str | None = None, val_fraction: float = 0.2, seed: int = 0) -> Plan:
    """The plan a run with these settings would follow, for a caller that asks the user first (the
    Train dialog shows the split and the label mismatches and asks before refusing)."""
    return plan(dataset, parent_card(model or default_model(dataset)), val_fraction, seed)


def judge_segmentation(card, before: dict, after: dict, validation_cases: int) -> dict:
    """The new version's activation record: mean foreground Dice, parent vs new, same cases."""
    if not validation_cases:
        return activation.record("mean Dice", None, None, 0, f"{card.name} {card.version}")
    old, new = activation.dice_scores(before, after)
    return activation.record("mean Dice", old, new, validation_cases, f"{card.name} {card.version}")


def _distributed(dev: torch.device) -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def next_version(card) -> str:
    """'1' -> '1.1', '1.2' -> '1.3': a fine-tuned version sorts after its parent."""
    parts = str(card.version).split(".")
    if len(parts) >= 2 and parts[-1].isdigit():
        return ".".join(parts[:-1] + [str(int(parts[-1]) + 1)])
    return f"{card.version}.1"


def default_model(dataset) -> str:
    """The shipped model a dataset trains when none is named: by its channel (CT -> the 3D organ
    model, MG -> the 2D mass model), or the exam classifier for a classification-only dataset."""
    root = Path(dataset)
    try:
        meta = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError):
        meta = {}
    channels = {str(v).upper() for v in (meta.get("channel_names") or {}).values()}
    has_masks = any((root / "labelsTr").glob("*.nii*"))
    if "MG" in channels and has_masks:
        return "mammo-lesion-unet2d"
    if not has_masks and ((root / "classification.json").is_file() or (root / "classification.csv").is_file()):
        return "mammo-exam"
    return "ct-organs-unet3d"


def check_arguments(epochs: int, steps_per_epoch: int, lr: float = 2e-4, batch: int = 2,
                    val_fraction: float = 0.2) -> None:
    """Refuse settings that would train nothing (and still write a "new" version) or cannot train."""
    for name, value in (("epochs", epochs), ("steps per epoch", steps_per_epoch), ("batch size", batch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise FinetuneError(f"{name} must be a whole number of at least 1, got {value!r}")
    if not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        raise FinetuneError(f"learning rate must be a positive number, got {lr!r}")
    if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
        raise FinetuneError(f"validation fraction must be at least 0 and below 1, got {val_fraction!r}")


def finetune(dataset, model: str | None = None, epochs: int = 5, steps_per_epoch: int = 20,
             lr: float = 2e-4, batch: int = 2, val_fraction: float = 0.2, seed: int = 0, device: str = "auto",
             out_dir=None, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
             allow_no_validation: bool = False, ignore_extra_labels: bool = False, warn: Warn | None = None):
    """Fine-tune ``model`` (default: :func:`default_model`) from the version Analyze uses now on
    ``dataset``; returns the new ModelCard (saved in ``out_dir`` or the user's model folder), or None
    in a torchrun worker other than rank 0.

    Refused before training (FinetuneError): no validation case unless ``allow_no_validation``;
    dataset labels the model lacks unless ``ignore_extra_labels``. ``warn`` gets each model class the
    dataset does not label (trained as background). The new card's ``extra["activation"]`` says
    whether it beat its parent on the same validation cases (see :mod:`inference.activation`).

    ``progress`` gets a record after each epoch: {"epoch", "loss"} plus "val_dice": {class: dice}
    for segmentation models or "val_auc": {name: auc} for classifiers.
    """
    check_arguments(epochs, steps_per_epoch, lr, batch, val_fraction)
    card = parent_card(model or default_model(dataset))
    checked = plan(dataset, card, val_fraction, seed)
    checked.require(allow_no_validation, ignore_extra_labels)
    for text in checked.labels.warnings():
        if warn is not None:
            warn(text)
    args = {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "lr": lr, "batch": batch, "seed": seed,
            "device": device, "out_dir": out_dir, "progress": progress, "should_stop": should_stop}
    if card.task == "segmentation-3d":
        return _finetune_seg3d(dataset, checked, **args)
    if card.task == "segmentation-2d":
        from inference.finetune_seg2d import finetune_seg2d

        return finetune_seg2d(dataset, checked, **args)
    from inference.finetune_exam import finetune_exam

    return finetune_exam(dataset, checked, **args)


def free_version(card, folder: Path) -> str:
    """:func:`next_version` of the parent, bumped past any version of the model already installed or
    in ``folder`` (a "not better" 1.1 beside its parent 1 makes the next run from 1 write 1.2)."""
    taken = {c.version for c in registry.available_models() if c.name == card.name}
    for path in folder.glob("*.json") if folder.is_dir() else ():
        try:
            other = registry.load_card(path)
        except registry.ModelError:
            continue
        if other.name == card.name:
            taken.add(other.version)
    version = next_version(card)
    while version in taken or (folder / f"{card.name}-{version}.json").exists():
        version = next_version(replace(card, version=version))
    return version


@dataclass
class DomainCases:
    """A run's own cases, for the new version's domain description: ``cases()`` yields them one at a
    time in :func:`inference.domain_fit.describe_embedding`'s formats (read lazily: one volume in
    memory at a time); ``count`` of them, each one ``what`` ("cases", "views"); run on ``device``."""

    count: int
    cases: Callable[[], Iterable]
    what: str = "cases"
    device: object = "cpu"


MIN_DOMAIN_CASES = 3  # fit_embedding's minimum: fewer images cannot be cross-validated


def _counted(items: Iterable, tally: list) -> Iterable:
    for item in items:
        tally[0] += 1
        yield item


def version_domain(card, net: torch.nn.Module, own: DomainCases | None, dataset) -> tuple[dict, str]:
    """(card.domain, note) of a version fine-tuned from ``card`` into ``net``.

    A version trained on a user's cases must not call those very cases "unlike this model's training
    data", and its features are not its parent's: the "embedding" description is recomputed with
    ``net`` from all the run's exported cases (training and validation), plus
    ``domain_fit.DEMO_SUBSET`` when the parent's description came from the demo training phantoms
    (so that their domain stays in domain). Never fails: with fewer than 3 cases, a parent described
    otherwise (e.g. an imported model's "intensity"), or any error, the parent's description is
    kept and the note says why.
    """
    from inference import domain_fit

    parent = card.domain or {}
    who = f"{card.name} {card.version}"

    def keep(why: str) -> tuple[dict, str]:
        return parent, f"domain description of {who} kept (not recomputed for this version): {why}"

    if own is None:
        return keep("the fine-tuner gave no cases to describe")
    if parent and parent.get("kind") != "embedding":
        return keep(f"its kind {parent.get('kind')!r} is not made from the network's features")
    demo = domain_fit.DEMO_SUBSET.get(card.name) if domain_fit.from_demo_phantoms(parent, card.name) else None
    if demo is None and own.count < MIN_DOMAIN_CASES:
        return keep(f"{own.count} exported {own.what}; a description needs at least {MIN_DOMAIN_CASES}")
    own_n, demo_n = [0], [0]
    cases = itertools.chain(_counted(own.cases(), own_n), _counted(demo[0]() if demo else (), demo_n))
    source = (f"{own.count} exported {own.what} of {Path(dataset).name} (training and validation)"
              + (f" + {demo[1]}" if demo else ""))
    note = f"fine-tuned from {who}, this version's network on {source}"
    start = time.perf_counter()
    try:
        with torch.no_grad():
            desc = domain_fit.describe_embedding(card, net, cases, note=note, device=own.device)
    except Exception as exc:  # noqa: BLE001 - a description must never cost the training run
        return keep(f"recomputing it failed ({type(exc).__name__}: {exc})")
    desc["fit"].update(own_cases=own_n[0], demo_cases=demo_n[0],
                       seconds=float(f"{time.perf_counter() - start:.3g}"))
    return desc, note


def save_version(net: torch.nn.Module, checked: Plan, dataset, summary: str, metrics: dict, verdict: dict,
                 out_dir=None, extra=None, domain_cases: DomainCases | None = None):
    """Write ``net`` as a new version of the plan's parent (side by side with the older ones) and return
    its card. ``summary`` describes the training data; the parent's metrics are kept in the card;
    ``verdict`` (:func:`inference.activation.record`) decides whether Analyze may use it. The domain
    description is recomputed from ``domain_cases`` (:func:`version_domain`); ``extra["domain_note"]``
    says what it was fitted on, or why the parent's was kept."""
    card = checked.card
    folder = Path(out_dir) if out_dir is not None else registry.user_models_dir()
    domain, domain_note = version_domain(card, net, domain_cases, dataset)
    inherited = {k: v for k, v in card.extra.items() if k not in ("activation", "label_warnings", "domain_note")}
    notes = {"label_warnings": checked.labels.warnings()} if checked.labels.warnings() else {}
    if checked.labels.unknown:
        notes["ignored_labels"] = dict(checked.labels.unknown)
    new = replace(card, version=free_version(card, folder), sha256="", path=None, domain=domain,
                  training_data=(f"fine-tuned from {card.name} {card.version} on {Path(dataset).name}: {summary}; "
                                 f"parent: {card.training_data}"),
                  metrics={**metrics, "parent_metrics": card.metrics},
                  extra={**inherited, "parent": f"{card.name} {card.version}", **(extra or {}), **notes,
                         "activation": verdict, "domain_note": domain_note,
                         "finetuned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    path = registry.save_model(net.cpu(), new, folder, stem=f"{new.name}-{new.version}")
    return registry.load_card(path)


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to 5 %."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1.0 + np.cos(np.pi * min(1.0, t)))


@dataclass
class Run:
    """Where and how one fine-tuning process runs: device, torchrun rank, seeded split and crop RNG."""

    device: torch.device
    rank: int
    world: int
    rng: np.random.Generator  # this process's own crops
    val_idx: np.ndarray
    train_idx: np.ndarray

    def wrap(self, net: torch.nn.Module) -> torch.nn.Module:
        """The module to train: DistributedDataParallel around ``net`` under torchrun."""
        if self.world <= 1:
            return net
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def finished_worker(self) -> bool:
        """After training: True on torchrun ranks > 0, which stop here (rank 0 writes the model)."""
        if self.world <= 1:
            return False
        import torch.distributed as dist

        dist.barrier()
        if self.rank != 0:
            dist.destroy_process_group()
            return True
        return False

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def start_run(device: str, seed: int, n_cases: int, val_fraction: float,
              split: tuple[list[int], list[int]] | None = None) -> Run:
    """Device (torchrun's LOCAL_RANK on CUDA), process group, and the given ``split`` (training,
    validation: the plan's), else :func:`split_indices` (the same on every rank: seeded)."""
    dev = pick_device(device)
    if dev.type == "cuda" and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    rank, world = _distributed(dev)
    torch.manual_seed(seed)
    train_idx, val_idx = (np.asarray(part, dtype=int)
                          for part in (split if split is not None else split_indices(n_cases, val_fraction, seed)))
    return Run(dev, rank, world, np.random.default_rng([seed, rank]), val_idx, train_idx)


def train_segmentation(run: Run, net: torch.nn.Module, sample_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                       validate: Callable[[], dict[str, float]], epochs: int, steps_per_epoch: int, lr: float,
                       progress: Progress | None, should_stop) -> tuple[dict, list]:
    """The loop both segmentation fine-tuners share; returns (validation Dice before, per-epoch history).

    DiceCE loss, AdamW with a warm-up + cosine learning rate, validation after every epoch (rank 0).
    The final weights are kept, as nnU-Net does: picking the best epoch on the one or two validation
    cases of a user's small dataset chose early, worse epochs (benchmarks/bench_retrain.py: arterial
    shift +0.085..+0.184 with best-epoch selection, +0.184..+0.190 with the final epoch, 3 seeds).
    """
    from monai.losses import DiceCELoss

    trained = run.wrap(net)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    opt = torch.optim.AdamW(trained.parameters(), lr=lr, weight_decay=1e-5)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: cosine_lr(k, total, max(1, total // 20)))

    def checked_validation() -> dict[str, float]:
        if run.rank != 0:
            return {}
        net.eval()
        with torch.no_grad():
            return validate()

    before = checked_validation()
    history = []
    for epoch in range(1, epochs + 1):
        trained.train()
        losses = []
        for _ in range(steps_per_epoch):
            if should_stop is not None and should_stop():
                raise Stopped("fine-tuning cancelled")
            x, y = sample_batch()
            loss = loss_fn(trained(x.to(run.device)), y[:, None].long().to(run.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "val_dice": checked_validation()}
        history.append(record)
        if progress is not None and run.rank == 0:
            progress(record)
    net.eval()
    return before, history


def _finetune_seg3d(dataset, checked: Plan, epochs: int, steps_per_epoch: int, lr: float, batch: int, seed: int,
                    device: str, out_dir, progress: Progress | None, should_stop):
    """3D fine-tuning: random crops (half on the rarest class) of the cases resampled to the model's
    spacing, the shared loop, validation by the same sliding window as inference on the model grid.
    No intensity augmentation: measured, it cost Dice on both benchmark shifts (docs/design-notes.md)."""
    from monai.inferers import sliding_window_inference

    from inference.train_seg import random_crop

    _meta, pairs, lut = checked.data
    card = checked.card
    run = start_run(device, seed, len(pairs), 0.0, split=(checked.train_idx, checked.val_idx))
    cases = [load_case(*pairs[i], card, lut) for i in range(len(pairs))]
    net, card = registry.load_model(card, device=run.device)
    patch = tuple(int(p) for p in card.input["patch_size"])
    rare = int(np.argmin([sum(int((c[1] == k).sum()) for c in cases) or 1 << 62
                          for k in range(len(card.classes))]))
    train_cases = [cases[int(i)] for i in run.train_idx] or cases[:1]

    def sample_batch():
        xs, ys = [], []
        for b in range(batch):
            x, y = train_cases[int(run.rng.integers(len(train_cases)))]
            xc, yc = random_crop(run.rng, x, y, patch, rare if b % 2 == 0 else None)  # padded as air (-1)
            xs.append(xc)
            ys.append(yc)
        return torch.stack(xs), torch.stack(ys)

    def validate() -> dict[str, float]:
        scores: dict[str, list[float]] = {}
        for i in run.val_idx:
            x, y = cases[i]
            logits = sliding_window_inference(x[None].to(run.device), patch, 4, net, overlap=0.25, mode="gaussian")
            for k, v in dice_per_class(logits[0].argmax(0).cpu(), y.long(), list(card.classes)).items():
                scores.setdefault(k, []).append(v)
        return {k: float(np.mean(v)) for k, v in scores.items()}

    before, history = train_segmentation(run, net, sample_batch, validate, epochs, steps_per_epoch, lr, progress,
                                         should_stop)
    if run.finished_worker():
        return None
    after = history[-1]["val_dice"] if history else {}
    summary = (f"{len(run.train_idx)} training and {len(run.val_idx)} validation cases, {epochs} epochs x "
               f"{steps_per_epoch} steps (seed {seed})")
    verdict = judge_segmentation(card, before, after, len(run.val_idx))
    new = save_version(net, checked, dataset, summary, {"val_dice_before": before, "val_dice": after,
                                                        "n_val_cases": len(run.val_idx), "epochs": history},
                       verdict, out_dir, {"processes": run.world}, volume_cases(pairs, run.device))
    run.close()
    return new


def volume_cases(pairs: list[tuple[Path, Path]], device) -> DomainCases:
    """The exported volumes as (HU (z, y, x), spacing (z, y, x)), as Analyze gets them, for
    segment_volume to run the new version on (its domain description)."""
    def cases():
        import SimpleITK as sitk

        for image, _label in pairs:
            img = sitk.ReadImage(str(image))
            yield (sitk.GetArrayFromImage(img).astype(np.float32),
                   tuple(float(s) for s in reversed(img.GetSpacing())))
    return DomainCases(len(pairs), cases, "cases", device)


def describe_metrics(record: dict) -> str:
    """'validation Dice lungs 0.981, ...' or 'validation AUC suspicious 0.912' for an epoch record."""
    parts = []
    for key, title in (("val_dice", "Dice"), ("val_auc", "AUC")):
        if key in record:
            values = ", ".join(f"{k} {v:.3f}" for k, v in record[key].items())
            parts.append(f"validation {title} {values or '-'}")
    return "; ".join(parts) or "no validation"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="lightbox train", description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--model", default=None,
                    help="model to fine-tune (default: by the dataset: CT -> ct-organs-unet3d, MG masks -> "
                         "mammo-lesion-unet2d, classification only -> mammo-exam)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="training steps per epoch")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="model folder (default: the user's model folder)")
    ap.add_argument("--allow-no-validation", action="store_true",
                    help="train even when no case is left for validation; the new version is written "
                         "'unvalidated' and Analyze never uses it unless you choose it")
    ap.add_argument("--ignore-extra-labels", action="store_true",
                    help="train even when the dataset has labels the model lacks (they become background)")
    args = ap.parse_args(argv)
    try:  # before any data is read or anything written: a typo must not cost a training run
        check_arguments(args.epochs, args.steps)
        pick_device(args.device)
    except (FinetuneError, DeviceError) as exc:
        print(f"lightbox: {exc}", file=sys.stderr)
        return 2

    def warn(text: str) -> None:
        if int(os.environ.get("RANK", "0")) == 0:  # torchrun: said once
            print(f"lightbox: warning: {text}", file=sys.stderr, flush=True)

    def report(r: dict) -> None:
        print(f"lightbox: epoch {r['epoch']}: loss {r['loss']:.4f}; {describe_metrics(r)}", file=sys.stderr,
              flush=True)

    try:
        card = finetune(args.dataset, args.model, args.epochs, args.steps, seed=args.seed, device=args.device,
                        out_dir=args.out, progress=report, allow_no_validation=args.allow_no_validation,
                        ignore_extra_labels=args.ignore_extra_labels, warn=warn)
    except (FinetuneError, registry.ModelError, DeviceError) as exc:
        print(f"lightbox: {exc}", file=sys.stderr)
        return 2
    if card is not None:  # None: a torchrun worker other than rank 0
        print(f"lightbox: wrote {card.name} {card.version} to {card.path}", file=sys.stderr)
        print(f"lightbox: {activation.outcome(card)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
