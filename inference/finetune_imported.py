"""Fine-tune a model imported with ``lightbox models import`` (a MONAI bundle, an nnU-Net v2 folder,
a TorchScript file with parameters) from its own weights, by the rules the demo models follow.

    lightbox train DATASET --model IMPORTED     (inference.finetune.finetune dispatches here)

What is the same as for Lightbox's own models (``finetune_common``): the dataset reading and label
matching (``read_dataset``, ``segmentation_labels``, ``label_remap``), the seeded split, refusal
without validation cases, the training loop with DistributedDataParallel under torchrun
(``start_run``, ``train_segmentation``), the verdict (``judge_segmentation``: the new version is used
by Analyze only when its validation Dice is not worse than its parent's) and the provenance kept
in the new card (parent, training data, metrics).

What follows the model's own format, so that training sees what inference sees:

* preprocessing is the format's own: nnU-Net's plans (crop, normalisation, target spacing), the
  bundle's preprocessing transforms (its spatial steps applied to the label map too), a described
  file's card; a step that cannot be applied to a label map is refused, naming it;
* validation runs the format's own runner (``predict``, as Analyze runs it) on each validation
  case's source grid, for the parent and for the new version as reloaded from disk;
* the new version is a copy of the parent's artefact with only the weights replaced (the bundle's
  models/model.pt in its own checkpoint layout, nnU-Net's fold_N/checkpoint_final.pth, the
  TorchScript file), installed beside it with the artefact's digest in its card.

Formats that hold no trainable parameters (ONNX, torch.export) are refused by :func:`trainable`,
which the Train dialog also shows.
"""
from __future__ import annotations

import importlib
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from inference import registry
from inference.finetune_common import (
    FinetuneError,
    Plan,
    Progress,
    Warn,
    dice_per_class,
    exam_of_pairs,
    free_version,
    judge_segmentation,
    label_remap,
    read_dataset,
    segmentation_labels,
    split_by_exam,
    start_run,
    train_segmentation,
)
from inference.formats.base import VolumeImage, artefact_digest, tree_files

# format -> module with trainable(card) and Training(card, device)
FINETUNERS = {"monai-bundle": "inference.finetune_monai_bundle", "nnunet-v2": "inference.finetune_nnunet",
              "torchscript": "inference.finetune_torchscript"}
REFUSED = {
    "onnx": "ONNX files hold no trainable parameters: ONNX Runtime only runs the graph. Fine-tune the model in "
            "the tool that made it, export it again and import the new file",
    "torch-export": "a torch.export program is a graph frozen for running, not a network Lightbox can train. "
                    "Fine-tune the model in the tool that made it, export it again and import the new file",
}
SEGMENTATION_TASKS = ("segmentation-3d", "segmentation-2d")


# --------------------------------------------------------------------------
# what can be trained
# --------------------------------------------------------------------------
def trainable(card) -> str | None:
    """None when this imported model can be fine-tuned; else the plain reason it cannot."""
    fmt = getattr(card, "architecture", "")
    if fmt in REFUSED:
        return REFUSED[fmt]
    if fmt not in FINETUNERS:
        return f"models of format {fmt!r} cannot be fine-tuned by Lightbox"
    if card.task not in SEGMENTATION_TASKS:
        return f"it is a {card.task} model; imported models are fine-tuned for segmentation only"
    return _finetuner(fmt).trainable(card)


def _finetuner(fmt: str):
    return importlib.import_module(FINETUNERS[fmt])


def _refuse_untrainable(card) -> None:
    reason = trainable(card)
    if reason:
        raise FinetuneError(f"{card.name} {card.version} cannot be fine-tuned: {reason}")


# --------------------------------------------------------------------------
# the dataset, as the model's runner gets it
# --------------------------------------------------------------------------
@dataclass
class Case:
    """One exported case as Analyze hands it to an imported model, with its labels in model classes."""

    name: str
    image: VolumeImage  # (z, y, x) modality values, LPS geometry
    labels: np.ndarray  # (z, y, x) uint8 model classes on the same grid


def _geometry(img) -> tuple[tuple, tuple, np.ndarray]:
    """(spacing, origin, direction) of a SimpleITK image in VolumeImage's (z, y, x) terms."""
    dim = img.GetDimension()
    spacing = tuple(float(s) for s in reversed(img.GetSpacing()))
    direction = np.asarray(img.GetDirection(), float).reshape(dim, dim)
    origin = tuple(float(v) for v in img.GetOrigin())
    if dim == 2:  # one slice: a unit z axis along the normal
        full = np.eye(3)
        full[:2, :2] = direction
        return (1.0, *spacing), (*origin, 0.0), full[:, ::-1].copy()
    return spacing, origin, direction[:, ::-1].copy()


def read_case(image: Path, label: Path, lut: np.ndarray, modality: str = "") -> Case:
    """An exported (image, label) pair read with SimpleITK; labels mapped to model classes by ``lut``."""
    import SimpleITK as sitk

    def read(path: Path):
        try:
            return sitk.ReadImage(str(path))
        except RuntimeError as exc:  # ITK's I/O errors: name the file, keep ITK's last line
            raise FinetuneError(f"{path}: cannot be read ({str(exc).strip().splitlines()[-1]})") from exc

    img, lab = read(image), read(label)
    if img.GetSize() != lab.GetSize():
        raise FinetuneError(f"{label.name}: size {lab.GetSize()} differs from its image {img.GetSize()}")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise FinetuneError(f"{image.name}: {img.GetNumberOfComponentsPerPixel()} values per voxel; one expected")
    pixels = sitk.GetArrayFromImage(img).astype(np.float32)
    values = sitk.GetArrayFromImage(lab)
    if values.size and int(values.min()) < 0:
        raise FinetuneError(f"{label.name}: negative label values")
    if values.size and int(values.max()) >= len(lut):
        raise FinetuneError(f"{label.name}: label value {int(values.max())} is not in dataset.json")
    if pixels.ndim == 2:
        pixels, values = pixels[None], values[None]
    spacing, origin, direction = _geometry(img)
    return Case(label.name, VolumeImage(pixels, spacing, origin, direction, modality), lut[values.astype(np.int64)])


def check_channels(meta: dict, card, dataset) -> None:
    """One image channel, of the model's modality (nnU-Net's channel names such as "T2" count as MR)."""
    from inference.formats.nnunet import modality_of

    where = Path(dataset) / "dataset.json"
    channels = {str(k): str(v) for k, v in (meta.get("channel_names") or meta.get("modality") or {}).items()}
    if len(channels) > 1:
        raise FinetuneError(f"{where}: {len(channels)} channels; fine-tuning an imported model reads one image "
                            "per case (CASE_0000)")
    wanted = str(card.modality).upper()
    names = {v.upper() for v in channels.values()}
    if channels and wanted and wanted not in names and modality_of(channels) != wanted:
        raise FinetuneError(f"{where}: channel {', '.join(sorted(names))} does not match the modality of "
                            f"{card.name} ({wanted})")
    wants = (card.input or {}).get("channels")
    n = len(wants) if isinstance(wants, list) else wants
    if isinstance(n, int) and n > 1:
        raise FinetuneError(f"{card.name} takes {n} input channels; Lightbox datasets hold one image per case")


def plan_imported(dataset, card, val_fraction: float = 0.2, seed: int = 0) -> Plan:
    """The checked plan of fine-tuning the imported ``card`` on ``dataset`` (labels read, no image
    prepared), as ``finetune.plan`` gives for Lightbox's models; the Train dialog shows it."""
    _refuse_untrainable(card)
    meta, pairs = read_dataset(dataset)
    check_channels(meta, card, dataset)
    lut = label_remap(meta.get("labels", {}), list(card.classes))
    labels = segmentation_labels(meta, pairs, card)
    train_idx, val_idx, val_exams = split_by_exam(exam_of_pairs(dataset, pairs), val_fraction, seed)
    notes = [f"imported {card.architecture} model: trained with its own preprocessing, validated with its own "
             "inference"]
    unit = "views" if card.task == "segmentation-2d" else "cases"
    return Plan(card, labels, train_idx, val_idx, val_exams, len(pairs), unit, (meta, pairs, lut), notes)


# --------------------------------------------------------------------------
# what each format provides
# --------------------------------------------------------------------------
class Training(Protocol):
    """A format's side of fine-tuning, built from the parent version (its sha256 checked first)."""

    runner: object  # the parent as Analyze runs it (inference.formats.base.Runner)
    networks: list  # [(name, nn.Module)]: what is trained, from the parent's weights
    patch: tuple | None  # crop size in the training arrays' axes; None: whole images
    squeeze: bool  # the crop has a leading axis of 1 to drop (a 2D network on 3D data)
    pad_value: float  # what the format pads images with
    describe: str  # the training preprocessing, for the card

    def examples(self, cases: list[Case]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each case as the network sees it in inference: (C, ...) float32, labels (...) uint8."""

    def runner_with(self, index: int, net: torch.nn.Module):
        """A runner predicting with ``net`` in place of network ``index`` (validation during training)."""

    def write_weights(self, folder: Path) -> dict:
        """Replace the weights inside ``folder`` (a copy of the parent's artefact) by the trained ones;
        returns the card's ``extra`` entries that change."""

    def load(self, card, path: Path):
        """The written version through the import format's own loader."""


def validate(runner, cases: list[Case], classes: list[str], should_stop=None) -> dict[str, float]:
    """Mean Dice per class over ``cases``, each predicted by ``runner`` on its source grid."""
    from inference.finetune_common import Stopped

    scores: dict[str, list[float]] = {}
    for case in cases:
        if should_stop is not None and should_stop():
            raise Stopped("fine-tuning cancelled")
        pred = runner.predict(case.image)
        if pred.labels is None or pred.labels.shape != case.labels.shape:
            raise FinetuneError(f"{case.name}: the model's prediction does not cover the image "
                                f"({None if pred.labels is None else pred.labels.shape} vs {case.labels.shape})")
        for k, d in dice_per_class(np.asarray(pred.labels), case.labels, classes).items():
            scores.setdefault(k, []).append(d)
    return {k: float(np.mean(v)) for k, v in scores.items()}


def _batches(training: Training, examples: list, batch: int, rng: np.random.Generator, rare: int):
    """sample_batch for train_segmentation: random crops, half of them near the rarest class."""
    from inference.train_seg import random_crop

    where = [{} for _ in examples]

    def whole(picked):
        shape = [max(x.shape[d + 1] for x, _ in picked) for d in range(picked[0][0].ndim - 1)]
        xs, ys = [], []
        for x, y in picked:
            pads = []
            for want, have in zip(reversed(shape), reversed(y.shape)):
                pads += [0, want - have]
            xs.append(torch.nn.functional.pad(x, pads, value=training.pad_value))
            ys.append(torch.nn.functional.pad(y, pads, value=0))
        return torch.stack(xs), torch.stack(ys)

    def sample_batch():
        picks = [int(rng.integers(len(examples))) for _ in range(batch)]
        if training.patch is None:
            return whole([examples[i] for i in picks])
        xs, ys = [], []
        for b, i in enumerate(picks):
            x, y = examples[i]
            xc, yc = random_crop(rng, x, y, training.patch, rare if b % 2 == 0 else None, where[i],
                                 training.pad_value)
            if training.squeeze:
                xc, yc = xc[:, 0], yc[0]
            xs.append(xc)
            ys.append(yc)
        return torch.stack(xs), torch.stack(ys)

    return sample_batch


def freeze_unused(net: torch.nn.Module, x: torch.Tensor) -> list[str]:
    """Stop training parameters the forward pass never uses (nnU-Net's deep-supervision heads when it
    runs without them): DistributedDataParallel refuses parameters that get no gradient, and they
    would not change anyway. Probed in eval mode, so no normalisation statistics move."""
    was_training = net.training
    net.eval()
    net.zero_grad(set_to_none=True)
    out = net(x)
    (out[0] if isinstance(out, (list, tuple)) else out).float().sum().backward()
    unused = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    for n, p in net.named_parameters():
        if n in unused:
            p.requires_grad_(False)
    net.zero_grad(set_to_none=True)
    net.train(was_training)
    return unused


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------
def finetune_imported(dataset, card, *, epochs: int, steps_per_epoch: int, lr: float, batch: int,
                      val_fraction: float, seed: int, device: str, out_dir, progress: Progress | None,
                      should_stop: Callable[[], bool] | None, allow_no_validation: bool, ignore_extra_labels: bool,
                      warn: Warn | None, augment: str = "none"):
    """Fine-tune the imported ``card`` (the version Analyze uses now) on ``dataset``; the new ModelCard,
    or None on torchrun ranks other than 0. Refusals (FinetuneError) as for Lightbox's models, plus a
    model that cannot be trained (:func:`trainable`) and synthetic augmentation (made for mammograms)."""
    if augment not in (None, "", "none"):
        raise FinetuneError(f"augmentation {augment!r} makes synthetic mammography lesions for Lightbox's own "
                            f"models; fine-tune {card.name} without it (--augment none)")
    checked = plan_imported(dataset, card, val_fraction, seed)
    checked.require(allow_no_validation, ignore_extra_labels)
    for text in checked.labels.warnings():
        if warn is not None:
            warn(text)
    return run_imported(dataset, checked, epochs=epochs, steps_per_epoch=steps_per_epoch, lr=lr, batch=batch,
                        seed=seed, device=device, out_dir=out_dir, progress=progress, should_stop=should_stop)


def run_imported(dataset, checked: Plan, *, epochs: int, steps_per_epoch: int, lr: float, batch: int, seed: int,
                 device: str, out_dir, progress: Progress | None, should_stop):
    """Train a checked plan's imported model and write the new version (rank 0)."""
    _meta, pairs, lut = checked.data
    card = checked.card
    classes = list(card.classes)
    run = start_run(device, seed, len(pairs), 0.0, split=(checked.train_idx, checked.val_idx))
    try:
        registry.check_model(card)
    except registry.ModelError as exc:
        raise FinetuneError(str(exc)) from exc
    training: Training = _finetuner(card.architecture).Training(card, run.device)
    train_cases = [read_case(*pairs[int(i)], lut, card.modality) for i in run.train_idx] \
        or [read_case(*pairs[0], lut, card.modality)]
    val_cases = [read_case(*pairs[int(i)], lut, card.modality) for i in run.val_idx] if run.rank == 0 else []
    examples = training.examples(train_cases)
    counts = [sum(int((y == k).sum()) for _, y in examples) for k in range(len(classes))]
    rare = int(np.argmin([c or 1 << 62 for c in counts]))
    sample_batch = _batches(training, examples, batch, run.rng, rare)

    before = validate(training.runner, val_cases, classes, should_stop) if val_cases else {}
    history: list[dict] = []
    for index, (name, net) in enumerate(training.networks):
        freeze_unused(net, sample_batch()[0][:1].to(run.device))
        runner = training.runner_with(index, net)
        calls = [0]

        def check(runner=runner, calls=calls) -> dict[str, float]:
            calls[0] += 1
            if calls[0] == 1 and len(training.networks) == 1:
                return before  # the parent's own score: the same network, not run twice
            return validate(runner, val_cases, classes, should_stop) if val_cases else {}

        def report(record: dict, name=name) -> None:
            record = {**record, "network": name} if len(training.networks) > 1 else record
            history.append(record)
            if progress is not None:
                progress(record)

        train_segmentation(run, net, sample_batch, check, epochs, steps_per_epoch, lr, report, should_stop)
    if run.finished_worker():
        return None
    unit = "views" if card.task == "segmentation-2d" else "cases"
    summary = (f"{len(run.train_idx)} training and {len(run.val_idx)} validation {unit}, {epochs} epochs x "
               f"{steps_per_epoch} steps" + (f" for each of {len(training.networks)} networks"
                                             if len(training.networks) > 1 else "") + f" (seed {seed})")
    new = write_version(training, checked, dataset, summary, before, val_cases, history, out_dir,
                        {"processes": run.world, "finetune": {"format": card.architecture, "lr": lr, "batch": batch,
                                                              "networks": [n for n, _ in training.networks],
                                                              "preprocessing": training.describe}})
    run.close()
    return new


# --------------------------------------------------------------------------
# the new version
# --------------------------------------------------------------------------
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")


def _stem(name: str, version: str) -> str:
    """The file stem ``formats.install`` gives an imported model, so both name versions alike."""
    return (f"{_SAFE_NAME.sub('-', name).strip('-.') or 'model'}-"
            f"{_SAFE_NAME.sub('-', version).strip('-.') or '1'}")


def _copy_artefact(source: Path, target: Path) -> None:
    if source.is_file():
        shutil.copy2(source, target)
        return
    for rel in tree_files(source):
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, target / rel)


def write_version(training: Training, checked: Plan, dataset, summary: str, before: dict, val_cases: list[Case],
                  history: list, out_dir, extra: dict):
    """Copy the parent's artefact, put the trained weights in, reload it through its format and
    validate it there (the verdict), then install it with its card; returns the new ModelCard."""
    card = checked.card
    folder = Path(out_dir) if out_dir is not None else registry.user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    version = free_version(card, folder)
    source = card.weights_path
    stem = _stem(card.name, version)
    target = folder / (stem + (source.suffix if source.is_file() else ""))
    json_path = folder / f"{stem}.json"
    if target.exists() or json_path.exists():
        raise FinetuneError(f"{target}: already exists; remove it or train again")
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{stem}.", suffix=".finetune"))
    try:
        staged = staging / target.name
        _copy_artefact(source, staged)
        changed = training.write_weights(staged)
        inherited = {k: v for k, v in card.extra.items() if k not in ("activation", "label_warnings", "domain_note")}
        new = replace(card, version=version, weights=target.name, sha256=artefact_digest(staged), path=None)
        new = replace(new, extra={**inherited, **changed})
        after = validate(training.load(new, staged), val_cases, list(card.classes)) if val_cases else {}
        verdict = judge_segmentation(card, before, after, len(val_cases))
        notes = {"label_warnings": checked.labels.warnings()} if checked.labels.warnings() else {}
        if checked.labels.unknown:
            notes["ignored_labels"] = dict(checked.labels.unknown)
        kind = (card.domain or {}).get("kind")
        domain_note = (f"domain description of {card.name} {card.version} kept: "
                       + (f"its kind {kind!r} comes with the imported model, not from Lightbox's network features"
                          if kind else "the imported model came without one"))
        new = replace(
            new,
            training_data=(f"fine-tuned from {card.name} {card.version} on {Path(dataset).name}: {summary}; "
                           f"parent: {card.training_data}"),
            metrics={"val_dice_before": before, "val_dice": after, "n_val_cases": len(val_cases), "epochs": history,
                     "val_dice_on": f"each validation case's source grid, predicted by the {card.architecture} "
                                    "model's own inference", "parent_metrics": card.metrics},
            extra={**new.extra, "parent": f"{card.name} {card.version}", **extra, **notes, "activation": verdict,
                   "domain_note": domain_note, "finetuned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        text = registry.card_json(new)
        staged.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    registry._atomic_write(json_path, (text + "\n").encode())
    return registry.load_card(json_path)
