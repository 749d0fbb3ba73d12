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

Several GPUs or machines: run it under torchrun, e.g.

    torchrun --nproc_per_node 4 -m inference.finetune DATASET --epochs 20
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_endpoint HOST:29500 -m inference.finetune DATASET

Each process trains on its own random crops with DistributedDataParallel (NCCL on CUDA, gloo on
CPU) averaging the gradients; rank 0 validates and writes the new version.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from inference import registry
from inference.device import DeviceError, pick_device
from inference.preprocess import ct as ctp

Progress = Callable[[dict], None]


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


def label_remap(dataset_labels: dict, classes: list[str]) -> np.ndarray:
    """Lookup table dataset value -> model class index, matching names (case-insensitive).
    Dataset labels the model does not know become background, so a model never learns a
    class it cannot output; the model's classes missing from the dataset are simply not taught."""
    index = {c.lower(): i for i, c in enumerate(classes)}
    values = {int(v): str(n) for n, v in dataset_labels.items()}
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
             out_dir=None, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None):
    """Fine-tune ``model`` (default: :func:`default_model`) on ``dataset``; returns the new ModelCard
    (saved in ``out_dir`` or the user's model folder), or None in a torchrun worker other than rank 0.

    ``progress`` gets a record after each epoch: {"epoch", "loss"} plus "val_dice": {class: dice}
    for segmentation models or "val_auc": {name: auc} for classifiers.
    """
    check_arguments(epochs, steps_per_epoch, lr, batch, val_fraction)
    card = registry.find_model(model or default_model(dataset))
    args = {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "lr": lr, "batch": batch,
            "val_fraction": val_fraction, "seed": seed, "device": device, "out_dir": out_dir,
            "progress": progress, "should_stop": should_stop}
    if card.task == "segmentation-3d":
        return _finetune_seg3d(dataset, card, **args)
    if card.task == "segmentation-2d":
        from inference.finetune_seg2d import finetune_seg2d

        return finetune_seg2d(dataset, card, **args)
    if card.task == "exam-classifier":
        from inference.finetune_exam import finetune_exam

        return finetune_exam(dataset, card, **args)
    raise FinetuneError(f"{card.name} is a {card.task} model; fine-tuning supports 3D and 2D segmentation "
                        "models and the exam classifier")


def save_version(net: torch.nn.Module, card, dataset, summary: str, metrics: dict, out_dir=None, extra=None):
    """Write ``net`` as the next version of ``card`` (side by side with the older ones) and return its card.
    ``summary`` describes the training data; the parent's description and metrics are kept in the card."""
    new = replace(card, version=next_version(card), sha256="", path=None,
                  training_data=(f"fine-tuned from {card.name} {card.version} on {Path(dataset).name}: {summary}; "
                                 f"parent: {card.training_data}"),
                  metrics={**metrics, "parent_metrics": card.metrics},
                  extra={**card.extra, "parent": f"{card.name} {card.version}", **(extra or {}),
                         "finetuned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    folder = Path(out_dir) if out_dir is not None else registry.user_models_dir()
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
    """Device (torchrun's LOCAL_RANK on CUDA), process group, and a split that is the same on every
    rank (seeded) with at least one validation case when there are two or more; or the given
    ``split`` (training, validation) of a fine-tuner with its own rule."""
    dev = pick_device(device)
    if dev.type == "cuda" and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    rank, world = _distributed(dev)
    torch.manual_seed(seed)
    if split is not None:
        train_idx, val_idx = (np.asarray(part, dtype=int) for part in split)
    else:
        order = np.random.default_rng(seed).permutation(n_cases)
        n_val = max(1, round(val_fraction * n_cases)) if n_cases > 1 else 0
        val_idx, train_idx = order[:n_val], order[n_val:]
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


def _finetune_seg3d(dataset, card, epochs: int, steps_per_epoch: int, lr: float, batch: int, val_fraction: float,
                    seed: int, device: str, out_dir, progress: Progress | None, should_stop):
    """3D fine-tuning: random crops (half on the rarest class) of the cases resampled to the model's
    spacing, the shared loop, validation by the same sliding window as inference on the model grid.
    No intensity augmentation: measured, it cost Dice on both benchmark shifts (docs/design-notes.md)."""
    from monai.inferers import sliding_window_inference

    from inference.train_seg import random_crop

    meta, pairs = read_dataset(dataset)
    channels = {str(v).upper() for v in meta.get("channel_names", {}).values()}
    if channels and card.modality.upper() not in channels:
        raise FinetuneError(f"dataset channels {sorted(channels)} do not match the model's modality {card.modality}")
    lut = label_remap(meta.get("labels", {}), list(card.classes))
    run = start_run(device, seed, len(pairs), val_fraction)
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
    new = save_version(net, card, dataset, summary, {"val_dice_before": before, "val_dice": after, "epochs": history},
                       out_dir, {"processes": run.world})
    run.close()
    return new


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
    args = ap.parse_args(argv)
    try:  # before any data is read or anything written: a typo must not cost a training run
        check_arguments(args.epochs, args.steps)
        pick_device(args.device)
    except (FinetuneError, DeviceError) as exc:
        print(f"lightbox: {exc}", file=sys.stderr)
        return 2

    def report(r: dict) -> None:
        print(f"lightbox: epoch {r['epoch']}: loss {r['loss']:.4f}; {describe_metrics(r)}", file=sys.stderr,
              flush=True)

    try:
        card = finetune(args.dataset, args.model, args.epochs, args.steps, seed=args.seed, device=args.device,
                        out_dir=args.out, progress=report)
    except (FinetuneError, registry.ModelError, DeviceError) as exc:
        print(f"lightbox: {exc}", file=sys.stderr)
        return 2
    if card is not None:  # None: a torchrun worker other than rank 0
        print(f"lightbox: wrote {card.name} {card.version} to {card.path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
