"""The lesion-infill cGAN as a registry model: loading it, infilling lesions into normals, the demo version.

    python -m inference.infill demo --out resources/models [--steps 1000] [--seed 0]

``mammo-infill-cgan`` (task "lesion-infill", modality "MG") repaints a region of a normal mammogram
patch with a mass or a calcification cluster of a given mask (Wu et al. 2018; architecture in
``inference.models.infill_gan``, training in ``inference.infill_train``). Analyze never runs it: no
Analyze role has this task. ``inference.augment.synthesize("cgan", ...)`` calls
:func:`synthesize_cgan`; ``lightbox train DATASET --model mammo-infill-cgan`` trains a new version on a
dataset's positives (``inference.infill_finetune``).

The demo version is trained on phantom views (``inference.phantoms.mammo_image_with_truth`` prepared by
``inference.preprocess.mammo.prepare``) with both a mass and a calcification cluster, held-out seeds
for its metrics, deterministic for a seed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from inference import activation, registry
from inference.augment import Synthetic, report
from inference.infill_train import (
    GROW,
    PATCH,
    InfillPatches,
    extract_patches,
    generate,
    infill_region,
    max_extent,
    train_infill,
    validate_infill,
    window,
)
from inference.lesion_shapes import KINDS, ShapeBank
from inference.preprocess import mammo as mgp

NAME, TASK, VERSION = "mammo-infill-cgan", "lesion-infill", "1"
CLASSES = ["background", "mass", "calcification"]
AIR_LEVEL = -1.6  # normalized: modality value 400, well above air and below any breast tissue
DEMO_SIZE = (1109, 853)  # 0.21 mm phantom pixels, as inference.train_mammo renders them
DEMO_TRAIN_SEEDS, DEMO_VAL_SEEDS = range(5000, 5036), range(5900, 5906)
DEMO_STEPS = 1000
ARCH = {"widths": [16, 32, 64], "coarse_widths": [16, 32, 48], "disc_width": 24, "disc_scales": 2}
REFERENCE = ("Wu E, Wu K, Cox D, Lotter W. Conditional infilling GANs for data augmentation in mammogram "
             "classification. MICCAI workshop (RAMBO) 2018")


# --------------------------------------------------------------------------
# the model in the registry
# --------------------------------------------------------------------------
def new_card(arch_kwargs: dict, training_data: str, metrics: dict, extra: dict, version: str = VERSION):
    """The card of an infill cGAN version (weights and sha256 are filled in by registry.save_model)."""
    import inference.models.infill_gan  # noqa: F401 - registers "infill-cgan"

    return registry.ModelCard(
        name=NAME, version=version, task=TASK, modality="MG", architecture="infill-cgan", arch_kwargs=arch_kwargs,
        classes=list(CLASSES),
        input={"spacing_mm": mgp.MODEL_SPACING_MM, "patch_size": PATCH, "region_grow_px": dict(GROW),
               "orientation": "chest wall left (columns mirrored if needed)",
               "channels": ["patch with the region set to 0", "region", "mass mask", "calcification mask",
                            "noise in the region"]},
        normalization=dict(mgp.DEFAULT_NORMALIZATION), training_data=training_data, metrics=metrics,
        source=f"Lightbox demo; method after {REFERENCE}",
        disclaimer=("Demo lesion generator trained only on synthetic phantoms; it makes synthetic training data. "
                    "Not a clinical model and not a medical device; never run on a patient's images for reading."),
        extra={"analyze": "never (augmentation only)", **extra})


def infill_card(spec: str | None = None):
    """The card of "NAME[:VERSION]", else the active version of mammo-infill-cgan (inference.activation)."""
    if spec:
        name, _, version = str(spec).partition(":")
        card = registry.find_model(name, version or None)
        if card.task != TASK:
            raise registry.ModelError(f"model {name!r} is a {card.task} model, not a lesion-infill cGAN")
        if version:
            return card
        name = card.name
    else:
        name = NAME
    cards = registry.available_models(task=TASK)
    card, _why = activation.active_version(name, cards)
    if card is None:
        raise registry.ModelError(f"no usable {name} installed (a lesion-infill cGAN); train one with "
                                  "python -m inference.infill demo --out DIR, or pin a version in AI ▸ Models…")
    return card


def load_infill(spec: str | None = None, device="cpu"):
    """(InfillGAN in eval mode, card), weights read with safetensors after their sha256 check."""
    import inference.models.infill_gan  # noqa: F401 - registers "infill-cgan"

    return registry.load_model(infill_card(spec), device=device)


# --------------------------------------------------------------------------
# infilling lesions into normals
# --------------------------------------------------------------------------
def breast_from_image(image: np.ndarray) -> np.ndarray:
    """The breast of a model-input image: the largest region above the air level."""
    return mgp.largest_component(np.asarray(image) > AIR_LEVEL)


def pick_site(image: np.ndarray, distance: np.ndarray | None, shape: np.ndarray, kind: str, patch: int,
              rng: np.random.Generator):
    """(row, col) for the lesion's centre: a patch (smaller than two generator patches) gets it near its
    centre; a view anywhere its region stays inside the breast (``distance``: px to the breast edge)."""
    h, w = image.shape
    if min(h, w) < 2 * patch:
        return (h // 2 + int(rng.integers(-2, 3)), w // 2 + int(rng.integers(-2, 3)))
    need = max(shape.shape) / 2 + GROW[kind] + 2
    rows, cols = np.nonzero(distance >= need)
    if not rows.size:
        return None
    i = int(rng.integers(rows.size))
    return (int(rows[i]), int(cols[i]))


def place(shape: np.ndarray, patch: int) -> np.ndarray:
    """The shape centred in an empty patch."""
    out = np.zeros((patch, patch), bool)
    r0, c0 = (patch - shape.shape[0]) // 2, (patch - shape.shape[1]) // 2
    out[r0:r0 + shape.shape[0], c0:c0 + shape.shape[1]] = shape
    return out


def paste(target: np.ndarray, values: np.ndarray, centre, keep: np.ndarray | None = None) -> None:
    """Write a patch centred on ``centre`` into ``target`` (the part inside it; only ``keep`` pixels if given)."""
    p = values.shape[0]
    r0, c0 = int(centre[0]) - p // 2, int(centre[1]) - p // 2
    tr0, tc0 = max(r0, 0), max(c0, 0)
    tr1, tc1 = min(r0 + p, target.shape[0]), min(c0 + p, target.shape[1])
    if tr0 >= tr1 or tc0 >= tc1:
        return
    src = values[tr0 - r0:tr1 - r0, tc0 - c0:tc1 - c0]
    if keep is None:
        target[tr0:tr1, tc0:tc1] = src
    else:
        sel = keep[tr0 - r0:tr1 - r0, tc0 - c0:tc1 - c0]
        target[tr0:tr1, tc0:tc1][sel] = src[sel]


def synthesize_cgan(normals: list[np.ndarray], positives: list, n: int, seed: int, breast_masks=None,
                    infill_model: str | None = None, device="cpu", should_stop=None, progress=None) -> Synthetic:
    """``inference.augment.synthesize("cgan", ...)``: ``n`` normals with one infilled lesion each."""
    net, card = load_infill(infill_model, device)
    return infill_normals(net, card, normals, positives, n, seed, breast_masks, device, should_stop, progress)


def infill_normals(net, card, normals, positives, n, seed, breast_masks=None, device="cpu", should_stop=None,
                   progress=None) -> Synthetic:
    """:func:`synthesize_cgan` with a loaded network (training scripts score a version before saving it)."""
    from scipy.ndimage import distance_transform_edt

    if not normals:
        raise ValueError("cgan augmentation needs normal images (without lesions) to infill lesions into")
    if breast_masks is not None and len(breast_masks) != len(normals):
        raise ValueError(f"{len(breast_masks)} breast masks for {len(normals)} normal images")
    patch = int(card.input.get("patch_size", PATCH))
    bank = ShapeBank.from_masks([m for _, m in positives])
    kinds = bank.kinds()
    rng = np.random.default_rng([int(seed), 23])
    order = rng.permutation(len(normals))
    distances: dict[int, np.ndarray] = {}
    jobs, full, tries = [], set(), 0
    while len(jobs) < n and len(full) < len(normals) and tries < 4 * n + len(normals):
        k = int(order[tries % len(normals)])
        tries += 1
        if k in full:
            continue
        image = normals[k]
        if min(image.shape) >= 2 * patch and k not in distances:
            inside = (np.asarray(breast_masks[k], bool) if breast_masks is not None else breast_from_image(image))
            distances[k] = distance_transform_edt(inside)
        kind = kinds[int(rng.integers(len(kinds)))]
        shape = bank.sample(kind, rng, max_extent(kind, patch))
        centre = pick_site(image, distances.get(k), shape, kind, patch, rng)
        if centre is None:
            full.add(k)
            continue
        jobs.append((k, centre, place(shape, patch), kind))
    if not jobs:
        raise ValueError(f"no normal image has room inside the breast for a lesion patch of {patch} px")
    out = Synthetic(provenance={"augment": "cgan", "n_synthetic": len(jobs),
                                "infill_model": f"{card.name} {card.version}",
                                "infill_training": card.training_data,
                                "lesion_shapes": ("phantom lesion statistics (no positive masks)" if bank.from_phantoms
                                                  else "the positives' lesion masks")})
    if len(jobs) < n:
        out.provenance["note"] = f"{n - len(jobs)} of {n} not made: {len(full)} normal image(s) had no room"
    chunk = 64
    for s in range(0, len(jobs), chunk):
        report(progress, s, len(jobs), should_stop)
        part = jobs[s:s + chunk]
        real = np.stack([window(normals[k], c, patch, "edge") for k, c, _, _ in part])
        lesion = np.stack([m for _, _, m, _ in part])
        region = np.stack([infill_region(m, kind, patch) for _, _, m, kind in part])
        mass = np.stack([m & (kind == "mass") for _, _, m, kind in part]) & region
        calc = np.stack([m & (kind == "calcification") for _, _, m, kind in part]) & region
        made = generate(net, real, region.astype(np.float32), mass.astype(np.float32), calc.astype(np.float32),
                        seed=int(seed) * 1009 + s, device=device)
        for (k, centre, _m, kind), patch_img, reg, les in zip(part, made, region, lesion):
            image = np.array(normals[k], np.float32, copy=True)
            paste(image, patch_img, centre, reg)
            mask = np.zeros(image.shape, np.uint8)
            paste(mask, np.full(les.shape, KINDS[kind], np.uint8), centre, les & reg)
            out.images.append(image)
            out.masks.append(mask)
            out.kinds.append(kind)
            out.sources.append(k)
    report(progress, len(jobs), len(jobs), should_stop)
    return out


# --------------------------------------------------------------------------
# phantom training data and the demo version
# --------------------------------------------------------------------------
def model_label(mass: np.ndarray, calc: np.ndarray, geometry) -> np.ndarray:
    """Source-grid lesion masks -> uint8 label on the model grid: a mass where at least half a model pixel
    is mass; a calcification where a quarter is (dots are smaller than a 0.42 mm pixel), mass winning."""
    m = mgp.to_model(np.asarray(mass, np.float32), geometry)
    c = mgp.to_model(np.asarray(calc, np.float32), geometry)
    label = np.zeros(m.shape, np.uint8)
    label[c >= 0.25] = KINDS["calcification"]
    label[m >= 0.5] = KINDS["mass"]
    return label


def phantom_views(seeds, lesions: bool = True, size=DEMO_SIZE) -> list[tuple[np.ndarray, np.ndarray]]:
    """(prepared image, label) of the four views of each phantom seed, each with a mass and a calcification
    cluster (``lesions``) or none."""
    from inference.phantoms import MG_VIEWS, mammo_image_with_truth, mammo_spacing

    spacing = mammo_spacing(size)
    out = []
    for seed in seeds:
        for name in MG_VIEWS:
            side, view = name[0], name[1:]
            img, masks, _truth = mammo_image_with_truth(side, view, size, seed, mass=lesions, calcifications=lesions)
            p = mgp.prepare(img, spacing, side, view)
            out.append((p.image, model_label(masks["mass"], masks["calcification"], p.geometry)))
    return out


def patches_of(views) -> InfillPatches:
    return InfillPatches.concat([extract_patches(image, label) for image, label in views])


def train_demo(out_dir, steps: int = DEMO_STEPS, seed: int = 0, device="cpu", grid: Path | None = None,
               progress=print) -> Path:
    """Train and write the shipped demo version (card + safetensors) into ``out_dir``; returns the card path."""
    import torch

    from inference.infill_realism import realism

    start = time.perf_counter()
    train = patches_of(phantom_views(DEMO_TRAIN_SEEDS))
    val_views = phantom_views(DEMO_VAL_SEEDS)
    val = patches_of(val_views)
    progress({"stage": "data", "train_patches": len(train), "val_patches": len(val),
              "seconds": round(time.perf_counter() - start, 1)})
    from inference.models.infill_gan import infill_cgan

    torch.manual_seed(seed)
    net, history = train_infill(train, steps, seed, device, progress, net=infill_cgan(**ARCH))
    metrics = {"val": validate_infill(net, val, seed=0, device=device), "n_train_patches": len(train),
               "n_val_patches": len(val), "final_loss": history[-1] if history else {}}
    card = new_card(dict(ARCH), "", {}, {})
    normals = phantom_views(DEMO_VAL_SEEDS, lesions=False)
    made = infill_normals(net, card, [im for im, _ in normals], [], len(normals), seed=1, device=device)
    metrics["realism"] = realism(val_views, normals, made)
    metrics["train_seconds"] = round(time.perf_counter() - start, 1)
    command = f"python -m inference.infill demo --out DIR --steps {steps} --seed {seed}"
    training_data = (f"trained on synthetic phantoms: inference.phantoms.mammo_image_with_truth at {DEMO_SIZE[0]}x"
                     f"{DEMO_SIZE[1]} (0.21 mm), {len(DEMO_TRAIN_SEEDS)} exams x 4 views with a mass and a "
                     f"calcification cluster (seeds {DEMO_TRAIN_SEEDS.start}-{DEMO_TRAIN_SEEDS.stop - 1}), "
                     f"{len(train)} lesion patches of {PATCH} px; metrics on {len(DEMO_VAL_SEEDS)} held-out exams "
                     f"(seeds {DEMO_VAL_SEEDS.start}-{DEMO_VAL_SEEDS.stop - 1}); {command}")
    card = new_card(dict(ARCH), training_data, metrics, {"train_seed": seed, "steps": steps, "command": command})
    path = registry.save_model(net, card, out_dir)
    if grid is not None:
        from inference.augment import save_grid

        real = [(im, np.where(lab == (1 + i % 2), lab, 0)) for i, (im, lab) in enumerate(val_views)]
        save_grid(real, made, grid)  # real masses and calcification clusters in turn
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inference.infill", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train the shipped demo version on phantoms")
    demo.add_argument("--out", required=True, type=Path, help="folder for the card and weights")
    demo.add_argument("--steps", type=int, default=DEMO_STEPS)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=1,
                      help="torch CPU threads (1 is fastest for these small convolutions on a shared machine)")
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--grid", type=Path, help="also write a real-vs-synthetic PNG here")
    args = ap.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    path = train_demo(args.out, args.steps, args.seed, args.device, args.grid,
                      progress=lambda r: print(r, file=sys.stderr, flush=True))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
