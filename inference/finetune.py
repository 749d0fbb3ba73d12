"""Fine-tune a shipped 3D segmentation model on an exported dataset (nnU-Net v2 raw layout).

    python -m inference.finetune DATASET --model ct-organs-unet3d --epochs 5 [--device auto]

Reads ``DATASET/dataset.json`` (channel names, labels) and the ``imagesTr``/``labelsTr`` NIfTI
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
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from inference import registry
from inference.device import pick_device
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


def finetune(dataset, model: str = "ct-organs-unet3d", epochs: int = 5, steps_per_epoch: int = 20,
             lr: float = 2e-4, batch: int = 2, val_fraction: float = 0.2, seed: int = 0, device: str = "auto",
             out_dir=None, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None):
    """Fine-tune ``model`` on ``dataset``; returns the new ModelCard (saved in ``out_dir`` or the user's
    model folder). ``progress`` gets {"epoch", "loss", "val_dice": {class: dice}} after each epoch."""
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss

    from inference.train_seg import random_crop

    card = registry.find_model(model)
    if card.task != "segmentation-3d":
        raise FinetuneError(f"{model} is a {card.task} model; fine-tuning supports 3D segmentation models")
    meta, pairs = read_dataset(dataset)
    channels = {str(v).upper() for v in meta.get("channel_names", {}).values()}
    if channels and card.modality.upper() not in channels:
        raise FinetuneError(f"dataset channels {sorted(channels)} do not match the model's modality {card.modality}")
    lut = label_remap(meta.get("labels", {}), list(card.classes))
    dev = pick_device(device)
    if dev.type == "cuda" and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    rank, world = _distributed(dev)
    torch.manual_seed(seed)  # the same initial weights everywhere
    order = np.random.default_rng(seed).permutation(len(pairs))  # the same split everywhere
    rng = np.random.default_rng([seed, rank])  # each process its own crops
    n_val = max(1, int(round(val_fraction * len(pairs)))) if len(pairs) > 1 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    cases = [load_case(*pairs[i], card, lut) for i in range(len(pairs))]
    net, card = registry.load_model(card, device=dev)
    model_net = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    patch = tuple(int(p) for p in card.input["patch_size"])
    rare = int(np.argmin([sum(int((c[1] == k).sum()) for c in cases) or 1 << 62
                          for k in range(len(card.classes))]))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-5)
    history = []

    def validate() -> dict[str, float]:
        model_net.eval()
        scores: dict[str, list[float]] = {}
        with torch.no_grad():
            for i in val_idx:
                x, y = cases[i]
                logits = sliding_window_inference(x[None].to(dev), patch, 4, model_net, overlap=0.25,
                                                  mode="gaussian")
                for k, v in dice_per_class(logits[0].argmax(0).cpu(), y.long(), list(card.classes)).items():
                    scores.setdefault(k, []).append(v)
        return {k: float(np.mean(v)) for k, v in scores.items()}

    before = validate() if n_val else {}
    for epoch in range(1, epochs + 1):
        net.train()
        losses = []
        for _ in range(steps_per_epoch):
            if should_stop is not None and should_stop():
                raise Stopped("fine-tuning cancelled")
            xs, ys = [], []
            for b in range(batch):
                x, y = cases[int(train_idx[rng.integers(len(train_idx))])] if len(train_idx) else cases[0]
                xc, yc = random_crop(rng, x, y, patch, rare if b % 2 == 0 else None)
                xs.append(xc)
                ys.append(yc)
            x, y = torch.stack(xs).to(dev), torch.stack(ys).to(dev)
            loss = loss_fn(net(x), y[:, None].long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        record = {"epoch": epoch, "loss": float(np.mean(losses)),
                  "val_dice": validate() if n_val and rank == 0 else {}}
        history.append(record)
        if progress is not None and rank == 0:
            progress(record)
    model_net.eval()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if rank != 0:  # rank 0 writes the model
            dist.destroy_process_group()
            return None
    after = history[-1]["val_dice"] if history else {}
    new = replace(card, version=next_version(card), sha256="", path=None,
                  training_data=(f"fine-tuned from {card.name} {card.version} on {Path(dataset).name}: "
                                 f"{len(train_idx)} training and {n_val} validation cases, {epochs} epochs x "
                                 f"{steps_per_epoch} steps (seed {seed}); parent: {card.training_data}"),
                  metrics={"val_dice_before": before, "val_dice": after,
                           "parent_metrics": card.metrics, "epochs": history},
                  extra={**card.extra, "parent": f"{card.name} {card.version}", "processes": world,
                         "finetuned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    folder = Path(out_dir) if out_dir is not None else registry.user_models_dir()
    path = registry.save_model(model_net.cpu(), new, folder, stem=f"{new.name}-{new.version}")  # side by side
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return registry.load_card(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="lightbox train", description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--model", default="ct-organs-unet3d")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="training steps per epoch")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="model folder (default: the user's model folder)")
    args = ap.parse_args(argv)

    def report(r: dict) -> None:
        dice = ", ".join(f"{k} {v:.3f}" for k, v in r["val_dice"].items())
        print(f"lightbox: epoch {r['epoch']}: loss {r['loss']:.4f}; validation Dice {dice or '-'}",
              file=sys.stderr, flush=True)

    try:
        card = finetune(args.dataset, args.model, args.epochs, args.steps, seed=args.seed, device=args.device,
                        out_dir=args.out, progress=report)
    except (FinetuneError, registry.ModelError) as exc:
        print(f"lightbox: {exc}", file=sys.stderr)
        return 2
    if card is not None:  # None: a torchrun worker other than rank 0
        print(f"lightbox: wrote {card.name} {card.version} to {card.path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
