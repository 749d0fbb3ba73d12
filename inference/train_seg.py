"""Train the demo segmentation models on synthetic phantoms and ship them with their cards.

    python -m inference.train_seg --out resources/models --seed 0

(a) ct-organs-unet3d: 3D U-Net for lungs, liver and lesions on CT phantoms of
    several scanner geometries, resampled to the model spacing exactly as
    inference.segment does; (b) mammo-lesion-unet2d: 2D U-Net for masses on
    mammography phantoms at a coarse pixel spacing, canonical side (chest wall left).
Held-out phantoms (seeds never trained on) are segmented with the full
segment_volume / segment_image pipeline on their own grid, and the Dice per class
goes into the card. Deterministic for a seed; about 10 minutes on two CPU cores.
These are demo models of synthetic anatomy, not clinical models.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from inference import phantoms
from inference.preprocess import ct as ctp
from inference.registry import ModelCard, build, save_model

CT_CLASSES = ["background", "lungs", "liver", "lesions"]
CT_SPACING = (3.0, 3.0, 3.0)
CT_PATCH = (32, 64, 64)
CT_NORMALIZATION = {"kind": "hu_windows", "windows": [[-1000, 1000], [-160, 240]],
                    "note": "each window clipped and mapped to [-1, 1]; one input channel per window"}
# (shape, spacing) of the training scanners: demo, low-dose thick, routine, thin.
CT_GEOMETRIES = [((120, 256, 256), (2.5, 1.4, 1.4)), ((60, 128, 128), (5.0, 2.8, 2.8)),
                 ((96, 192, 192), (3.0, 1.8, 1.8)), ((150, 320, 320), (2.0, 1.1, 1.1))]
CT_EVAL_GEOMETRY = ((120, 256, 256), (2.5, 1.4, 1.4))
CT_EVAL_SEEDS = (1000, 1001, 1002, 1003)

MG_CLASSES = ["background", "mass"]
MG_SPACING = (0.42, 0.42)  # inference.preprocess.mammo's model spacing, shared with the classifiers
MG_PATCH = (192, 192)
MG_NORMALIZATION = {"kind": "linear", "offset": 2000.0, "scale": 1000.0,
                    "note": "(value - offset) / scale after inference.preprocess.mammo.prepare "
                            "(resample, breast crop, chest wall left)"}
MG_SIZES = [(832, 640), (1664, 1280), (416, 320)]
MG_EVAL_SIZE = (1664, 1280)
MG_EVAL_SEEDS = tuple(range(1000, 1008))

TRAINING_NOTE = "synthetic phantoms (inference.phantoms), not a clinical model"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    p, t = pred.astype(bool), truth.astype(bool)
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * int((p & t).sum()) / denom


def ct_label_map(masks: dict) -> np.ndarray:
    """Ground truth in CT_CLASSES order; lesions win over the organ they sit in."""
    lab = np.zeros(masks["lungs"].shape, np.uint8)
    lab[masks["lungs"] > 0] = 1
    lab[masks["liver"] > 0] = 2
    lab[masks["lesions"] > 0] = 3
    return lab


# --------------------------------------------------------------------------
# CT
# --------------------------------------------------------------------------
def ct_example(seed: int, shape, spacing):
    """(normalized input (C,z,y,x), target labels (z,y,x)) on the model grid."""
    hu, masks = phantoms.ct_phantom(shape=shape, spacing=spacing, seed=seed)
    grid = ctp.grid_shape(shape, spacing, CT_SPACING)
    x = ctp.to_model_grid(hu, spacing, CT_SPACING, CT_NORMALIZATION)
    lab = torch.from_numpy(ct_label_map(masks)).long()
    onehot = torch.nn.functional.one_hot(lab, len(CT_CLASSES)).permute(3, 0, 1, 2).to(torch.uint8)
    y = ctp.resample(onehot, grid).argmax(0).to(torch.uint8)  # same filter as the images
    return x, y


def random_crop(rng: np.random.Generator, x, y, patch, focus: int | None, where: dict | None = None,
                pad_value: float = -1.0):
    """A patch, centred near a random voxel of class `focus` when given (rare classes), else anywhere.

    `where` caches the voxel indices of each focus class per example."""
    size = y.shape
    if focus is not None:
        if where is None:
            where = {}
        if focus not in where:
            where[focus] = torch.nonzero(y == focus)
        idx = where[focus]
        if len(idx):
            c = idx[int(rng.integers(len(idx)))].numpy() + rng.integers(-8, 9, len(size))
            st = [int(np.clip(ci - p // 2, 0, max(0, s - p))) for ci, p, s in zip(c, patch, size)]
        else:
            focus = None
    if focus is None:
        st = [int(rng.integers(0, max(1, s - p + 1))) for p, s in zip(patch, size)]
    sl = tuple(slice(a, a + p) for a, p in zip(st, patch))
    xs, ys = x[(slice(None),) + sl], y[sl]
    pads = [max(0, p - n) for p, n in zip(patch, ys.shape)]
    if any(pads):
        arg = []
        for p in reversed(pads):
            arg += [0, p]
        xs = torch.nn.functional.pad(xs, arg, value=pad_value)
        ys = torch.nn.functional.pad(ys, arg, value=0)
    return xs, ys


def train(net, batches, steps: int, lr: float, what: str):
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    net.train()
    t0 = time.time()
    run = None
    for step in range(steps):
        x, y = batches(step)
        loss = loss_fn(net(x), y[:, None].long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        value = float(loss.detach())
        run = value if run is None else 0.95 * run + 0.05 * value
        if step % 100 == 0 or step == steps - 1:
            log(f"{what} step {step + 1}/{steps} loss {run:.4f} ({time.time() - t0:.0f} s)")
    return net.eval()


def train_ct(out: Path, seed: int, n_train: int, steps: int, batch: int) -> ModelCard:
    from inference.segment import segment_volume

    rng = np.random.default_rng([seed, 3])
    torch.manual_seed(seed)
    log(f"CT: generating {n_train} training phantoms")
    data = [ct_example(seed * 10_000 + i, *CT_GEOMETRIES[i % len(CT_GEOMETRIES)]) for i in range(n_train)]
    card = ModelCard(
        name="ct-organs-unet3d", version="1", task="segmentation-3d", modality="CT", architecture="unet3d",
        arch_kwargs={"in_channels": len(CT_NORMALIZATION["windows"]), "out_channels": len(CT_CLASSES),
                     "channels": [12, 24, 48, 96], "strides": [2, 2, 2], "num_res_units": 1, "norm": "instance"},
        classes=list(CT_CLASSES),
        input={"spacing_mm": list(CT_SPACING), "patch_size": list(CT_PATCH), "overlap": 0.25,
               "axes": "zyx", "blend": "gaussian"},
        normalization=dict(CT_NORMALIZATION))
    net = build(card)
    cache = [{} for _ in data]

    def batches(step):
        xs, ys = [], []
        for b in range(batch):
            i = int(rng.integers(len(data)))
            x, y = data[i]
            r = rng.random()
            focus = 3 if r < 0.5 else (2 if r < 0.6 else None)
            xc, yc = random_crop(rng, x, y, CT_PATCH, focus, cache[i])
            xs.append(xc)
            ys.append(yc)
        return torch.stack(xs), torch.stack(ys)

    net = train(net, batches, steps, 3e-3, "CT")
    log("CT: held-out evaluation on the source grid")
    shape, spacing = CT_EVAL_GEOMETRY
    scores = {c: [] for c in CT_CLASSES[1:]}
    for s in CT_EVAL_SEEDS:
        hu, masks = phantoms.ct_phantom(shape=shape, spacing=spacing, seed=s)
        labels, _ = segment_volume(net, card, hu, spacing, device="cpu", probabilities="none")
        truth = ct_label_map(masks)
        for k, c in enumerate(CT_CLASSES[1:], start=1):
            scores[c].append(dice(labels == k, truth == k))
    card.metrics = {
        "dice": {c: round(float(np.mean(v)), 4) for c, v in scores.items()},
        "dice_min": {c: round(float(np.min(v)), 4) for c, v in scores.items()},
        "evaluated_on": (f"{len(CT_EVAL_SEEDS)} held-out phantoms (seeds {CT_EVAL_SEEDS[0]}-{CT_EVAL_SEEDS[-1]}), "
                         f"{'x'.join(map(str, shape))} voxels at {spacing} mm, Dice on the source grid"),
    }
    card.training_data = (f"{TRAINING_NOTE}: {n_train} CT chest/abdomen phantoms (seeds {seed * 10_000}-"
                          f"{seed * 10_000 + n_train - 1}) at {len(CT_GEOMETRIES)} scanner geometries, "
                          f"resampled to {CT_SPACING} mm; {steps} steps of {batch} patches "
                          f"{'x'.join(map(str, CT_PATCH))}, Dice+CE loss")
    card.extra = {"train_seed": seed, "label_priority": "lesions over liver over lungs"}
    log(f"CT held-out Dice {card.metrics['dice']}")
    save_model(net, card, out)
    return card


# --------------------------------------------------------------------------
# mammography
# --------------------------------------------------------------------------
def mammo_example(seed: int, size, laterality: str, view: str, mass: bool, calcs: bool):
    """(input (1,h,w), target (h,w), background value) prepared exactly as segment_image prepares."""
    from inference.preprocess import mammo as mgp

    img, masks = phantoms.mammo_image(laterality, view, size=size, seed=seed, mass=mass, calcifications=calcs)
    prep = mgp.prepare(img, phantoms.mammo_spacing(size), laterality, view, target_spacing=MG_SPACING[0],
                       normalization=MG_NORMALIZATION)
    y = mgp.to_model(masks["mass"].astype(np.float32), prep.geometry) > 0.5
    bg = prep.image[~prep.breast]
    return (torch.from_numpy(prep.image)[None], torch.from_numpy(y.astype(np.uint8)),
            float(np.median(bg)) if bg.size else float(prep.image.min()))


def train_mammo(out: Path, seed: int, n_train: int, steps: int, batch: int) -> ModelCard:
    from inference.segment import segment_image

    rng = np.random.default_rng([seed, 4])
    torch.manual_seed(seed + 1)
    log(f"MG: generating {n_train} training images")
    data = []
    for i in range(n_train):
        lat, view = ("R", "L")[i % 2], ("CC", "MLO")[(i // 2) % 2]
        data.append(mammo_example(seed * 10_000 + i // 4, MG_SIZES[(i // 4) % len(MG_SIZES)], lat, view,
                                  mass=(i % 5) != 4, calcs=(i % 3) == 0))
    card = ModelCard(
        name="mammo-lesion-unet2d", version="1", task="segmentation-2d", modality="MG", architecture="unet2d",
        arch_kwargs={"in_channels": 1, "out_channels": len(MG_CLASSES), "channels": [16, 32, 64, 128],
                     "strides": [2, 2, 2], "num_res_units": 1, "norm": "instance"},
        classes=list(MG_CLASSES),
        input={"spacing_mm": list(MG_SPACING), "patch_size": list(MG_PATCH), "overlap": 0.25,
               "canonical_side": "chest wall on the image's left", "axes": "yx", "blend": "gaussian"},
        normalization=dict(MG_NORMALIZATION))
    net = build(card)
    cache = [{} for _ in data]

    def batches(step):
        xs, ys = [], []
        for b in range(batch):
            i = int(rng.integers(len(data)))
            x, y, bg = data[i]
            xc, yc = random_crop(rng, x, y, MG_PATCH, 1 if rng.random() < 0.6 else None, cache[i], bg)
            if rng.random() < 0.5:  # up/down mirror keeps the chest wall left
                xc, yc = xc.flip(-2), yc.flip(-2)
            xs.append(xc)
            ys.append(yc)
        return torch.stack(xs), torch.stack(ys)

    net = train(net, batches, steps, 3e-3, "MG")
    log("MG: held-out evaluation on the source grid")
    scores = []
    for s in MG_EVAL_SEEDS:
        lat, view = ("R", "L")[s % 2], ("CC", "MLO")[(s // 2) % 2]
        img, masks = phantoms.mammo_image(lat, view, size=MG_EVAL_SIZE, seed=s, mass=True)
        mask, _ = segment_image(net, card, img, phantoms.mammo_spacing(MG_EVAL_SIZE), laterality=lat,
                                view=view, device="cpu")
        scores.append(dice(mask == 1, masks["mass"]))
    card.metrics = {
        "dice": {"mass": round(float(np.mean(scores)), 4)},
        "dice_min": {"mass": round(float(np.min(scores)), 4)},
        "evaluated_on": (f"{len(MG_EVAL_SEEDS)} held-out images with a mass (seeds {MG_EVAL_SEEDS[0]}-"
                         f"{MG_EVAL_SEEDS[-1]}, RCC/LCC/RMLO/LMLO), {MG_EVAL_SIZE[0]}x{MG_EVAL_SIZE[1]} px, "
                         f"Dice on the source grid"),
    }
    card.training_data = (f"{TRAINING_NOTE}: {n_train} mammography phantom views (4/5 with a mass, 1/3 with "
                          f"calcifications as distractors) at {len(MG_SIZES)} detector sizes, resampled to "
                          f"{MG_SPACING} mm; {steps} steps of {batch} patches {'x'.join(map(str, MG_PATCH))}")
    card.extra = {"train_seed": seed, "calcification": "not segmented (distractor only)"}
    log(f"MG held-out Dice {card.metrics['dice']}")
    save_model(net, card, out)
    return card


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="resources/models")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=("ct", "mammo"), default=None)
    p.add_argument("--ct-steps", type=int, default=2000)
    p.add_argument("--ct-volumes", type=int, default=24)
    p.add_argument("--mammo-steps", type=int, default=1000)
    p.add_argument("--mammo-images", type=int, default=120)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    t0 = time.time()
    if a.only in (None, "ct"):
        train_ct(out, a.seed, a.ct_volumes, a.ct_steps, batch=2)
    if a.only in (None, "mammo"):
        train_mammo(out, a.seed, a.mammo_images, a.mammo_steps, batch=4)
    log(f"done in {time.time() - t0:.0f} s; models in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
