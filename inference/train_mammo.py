"""Train the demo mammography models on phantoms: patch classifier, then whole-image classifier.

    python -m inference.train_mammo --out resources/models --seed 0

Phantom views are rendered at 0.21 mm (a third of the full detector matrix, cheap
to generate yet finer than the model grid) and prepared exactly as at inference.
Stage 1 trains the all-convolutional patch network on labelled patches (background,
normal tissue, mass, calcification) cut from training seeds. Stage 2 puts a few
convolutions and a global max-pool on the frozen patch trunk and trains them with
view labels only (Shen et al. 2019). Metrics come from separate held-out seeds and
are written into the model cards. Deterministic for a given --seed; a few minutes on
two CPU cores.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from inference.models.exam_net import ExamNet
from inference.models.patch_net import PatchNet
from inference.phantoms import MG_VIEWS, mammo_image, mammo_spacing
from inference.preprocess.mammo import (
    DEFAULT_NORMALIZATION,
    MODEL_SPACING_MM,
    prepare,
    to_model,
)
from inference.registry import ModelCard, save_model

CLASSES = ["background", "normal", "mass", "calcification"]
BG, NORMAL, MASS, CALC, IGNORE = 0, 1, 2, 3, -1
SOURCE_SIZE = (1109, 853)  # 0.21 mm pixels
WIDTHS = (8, 16, 24, 32, 48, 64)
MARGIN = 26
TRAIN_SEED0, TEST_SEED0 = 1000, 900_000  # disjoint phantom seed ranges
VERSION = "1.0.0"


@dataclass
class View:
    seed: int
    name: str
    image: np.ndarray  # prepared, float32
    labels: np.ndarray  # int8 per patch position at stride 1 (IGNORE where ambiguous)
    lesion: bool


def lesion_plan(seed: int) -> dict[str, tuple[bool, bool]]:
    """Per breast (mass, calcifications): about 40% normal, the rest one or both findings."""
    rng = np.random.default_rng([seed, 77])
    plan = {}
    for side in ("R", "L"):
        kind = rng.choice(4, p=[0.4, 0.3, 0.15, 0.15])
        plan[side] = [(False, False), (True, True), (True, False), (False, True)][kind]
    return plan


def patch_labels(mass: np.ndarray, calc: np.ndarray, breast: np.ndarray, patch: int) -> np.ndarray:
    """Label of the patch whose top-left is each pixel, from its centre (ambiguous -> IGNORE)."""
    def central_mean(m, k):
        pooled = F.avg_pool2d(torch.from_numpy(m.astype(np.float32))[None, None], k, stride=1)[0, 0].numpy()
        off = patch // 2 - k // 2
        n = (m.shape[0] - patch + 1, m.shape[1] - patch + 1)
        return pooled[off:off + n[0], off:off + n[1]]

    lab = np.where(central_mean(breast, 6) >= 0.5, NORMAL, BG).astype(np.int8)
    near_mass, near_calc = central_mean(mass, 20) > 0, central_mean(calc, 20) > 0
    lab[near_mass | near_calc] = IGNORE
    lab[central_mean(calc, 8) > 0] = CALC
    lab[central_mean(mass, 6) >= 0.5] = MASS
    return lab


def make_views(seeds, patch: int) -> list[View]:
    views = []
    spacing = mammo_spacing(SOURCE_SIZE)
    for seed in seeds:
        plan = lesion_plan(seed)
        for name in MG_VIEWS:
            side, view = name[0], name[1:]
            m, c = plan[side]
            img, masks = mammo_image(side, view, SOURCE_SIZE, seed, mass=m, calcifications=c)
            p = prepare(img, spacing, side, view, margin=MARGIN)
            mass = to_model(masks["mass"].astype(np.float32), p.geometry)
            calc = to_model(masks["calcification"].astype(np.float32), p.geometry)
            labels = patch_labels(mass, calc, p.breast, patch)
            views.append(View(seed, name, p.image, labels, bool(m or c)))
    return views


def sample_patches(views: list[View], patch: int, caps: dict[int, int], stride: int, rng) -> tuple:
    """Every lesion position on a `stride` grid, random normal/background ones, up to caps per class."""
    picks = {k: [] for k in caps}
    for vi, v in enumerate(views):
        lab = v.labels[::stride, ::stride]
        for k in caps:
            ys, xs = np.nonzero(lab == k)
            picks[k].append(np.stack([np.full(ys.size, vi), ys * stride, xs * stride], 1))
    xs_, ys_ = [], []
    for k, cap in caps.items():
        allk = np.concatenate(picks[k])
        if len(allk) > cap:
            allk = allk[rng.choice(len(allk), cap, replace=False)]
        for vi, y, x in allk:
            xs_.append(views[vi].image[y:y + patch, x:x + patch])
        ys_ += [k] * len(allk)
    return torch.from_numpy(np.stack(xs_)[:, None]), torch.tensor(ys_, dtype=torch.long)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random vertical/horizontal mirror per patch (findings have no preferred direction at this scale)."""
    fv = torch.rand(x.shape[0], generator=gen) < 0.5
    fh = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(fv[:, None, None, None], x.flip(2), x)
    return torch.where(fh[:, None, None, None], x.flip(3), x)


def _r(x: float, nd: int = 4):
    """Rounded for the card; None where undefined (JSON has no NaN)."""
    return None if np.isnan(x) else round(float(x), nd)


def auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(allv):  # average ranks of ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def train_patch_net(x, y, epochs: int, gen: torch.Generator, log) -> PatchNet:
    model = PatchNet(num_classes=len(CLASSES), widths=WIDTHS)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((len(x) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    counts = torch.bincount(y, minlength=len(CLASSES)).float()
    weight = counts.sum() / (len(CLASSES) * counts.clamp(min=1))
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), 128):
            idx = perm[i:i + 128]
            logits = model(augment(x[idx], gen)).flatten(1)
            loss = F.cross_entropy(logits, y[idx], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log(f"  patch epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}")
    return model.eval()


@torch.no_grad()
def patch_metrics(model, x, y) -> dict:
    probs = torch.cat([torch.softmax(model(x[i:i + 512]).flatten(1), 1) for i in range(0, len(x), 512)]).numpy()
    pred = probs.argmax(1)
    y = y.numpy()
    out = {"accuracy": _r((pred == y).mean()), "n_patches": len(y)}
    for k, name in enumerate(CLASSES):
        out[f"{name}_recall"] = _r((pred[y == k] == k).mean()) if (y == k).any() else None
        out[f"{name}_auc"] = _r(auc(probs[:, k], y == k))
    return out


def exam_from_patch(patch_model: PatchNet, top=(32, 32)) -> ExamNet:
    exam = ExamNet(widths=WIDTHS, top=top)
    exam.trunk.load_state_dict(patch_model.trunk.state_dict())
    return exam


def train_exam_top(exam: ExamNet, views: list[View], epochs: int, gen: torch.Generator, log) -> ExamNet:
    """Trunk frozen (features computed once); the top learns from view labels only."""
    exam.trunk.eval()
    for p in exam.trunk.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        feats = [exam.trunk(torch.from_numpy(v.image)[None, None]) for v in views]
    labels = torch.tensor([float(v.lesion) for v in views])
    params = list(exam.top.parameters()) + list(exam.score.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    batch = 16
    for epoch in range(epochs):
        exam.top.train()
        perm = torch.randperm(len(views), generator=gen).tolist()
        total = 0.0
        for i in range(0, len(perm), batch):
            opt.zero_grad()
            for j in perm[i:i + batch]:
                logit = exam.score_map(None, features=feats[j]).flatten(1).amax(1)
                loss = F.binary_cross_entropy_with_logits(logit, labels[j:j + 1]) / batch
                loss.backward()
                total += loss.item() * batch
            opt.step()
        if (epoch + 1) % 5 == 0 or epoch == epochs - 1:
            log(f"  exam epoch {epoch + 1}/{epochs}: loss {total / len(views):.4f}")
    for p in exam.parameters():
        p.requires_grad_(True)
    return exam.eval()


@torch.no_grad()
def exam_metrics(exam: ExamNet, views: list[View]) -> dict:
    logits = np.array([float(exam(torch.from_numpy(v.image)[None, None])[0]) for v in views])
    probs = 1 / (1 + np.exp(-logits))
    y = np.array([v.lesion for v in views])
    breasts = {}
    for v, p in zip(views, probs):
        breasts.setdefault((v.seed, v.name[0]), []).append((p, v.lesion))
    bp = np.array([np.mean([p for p, _ in b]) for b in breasts.values()])
    by = np.array([b[0][1] for b in breasts.values()])
    return {"view_auc": _r(auc(probs, y)), "view_accuracy_at_0.5": _r(((probs > 0.5) == y).mean()),
            "breast_auc_mean_cc_mlo": _r(auc(bp, by)), "n_views": len(y), "n_breasts": len(by)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="resources/models", type=Path)
    ap.add_argument("--seed", default=0, type=int)
    ap.add_argument("--train-exams", default=48, type=int)
    ap.add_argument("--test-exams", default=12, type=int)
    ap.add_argument("--patch-epochs", default=6, type=int)
    ap.add_argument("--exam-epochs", default=20, type=int)
    ap.add_argument("--threads", default=2, type=int)
    args = ap.parse_args(argv)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    patch = PatchNet(widths=WIDTHS).patch_size
    train_seeds = range(TRAIN_SEED0 + args.seed * 10_000, TRAIN_SEED0 + args.seed * 10_000 + args.train_exams)
    test_seeds = range(TEST_SEED0, TEST_SEED0 + args.test_exams)

    log(f"rendering {len(train_seeds)} training and {len(test_seeds)} held-out 4-view phantom exams")
    train_views, test_views = make_views(train_seeds, patch), make_views(test_seeds, patch)
    x, y = sample_patches(train_views, patch, {BG: 2500, NORMAL: 5000, MASS: 5000, CALC: 4500}, 2, rng)
    xt, yt = sample_patches(test_views, patch, {BG: 1000, NORMAL: 2000, MASS: 1500, CALC: 1500}, 3, rng)
    log(f"patches: train {np.bincount(y.numpy()).tolist()}, held-out {np.bincount(yt.numpy()).tolist()}")

    patch_model = train_patch_net(x, y, args.patch_epochs, gen, log)
    pm = patch_metrics(patch_model, xt, yt)
    log(f"held-out patch metrics: {pm}")

    exam = train_exam_top(exam_from_patch(patch_model), train_views, args.exam_epochs, gen, log)
    em = exam_metrics(exam, test_views)
    log(f"held-out exam metrics: {em}")

    common = {"version": VERSION, "modality": "MG",
              "input": {"spacing_mm": MODEL_SPACING_MM, "patch_size": patch, "stride": patch_model.stride,
                        "crop_margin_px": MARGIN, "orientation": "chest wall left (columns mirrored if needed)",
                        "channels": 1},
              "normalization": dict(DEFAULT_NORMALIZATION),
              "training_data": (f"inference.phantoms.mammo_image at {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]} "
                                f"(0.21 mm), {len(train_seeds)} exams x 4 views (seeds {train_seeds.start}-"
                                f"{train_seeds.stop - 1}); metrics on {len(test_seeds)} held-out exams (seeds "
                                f"{test_seeds.start}-{test_seeds.stop - 1}); python -m inference.train_mammo "
                                f"--seed {args.seed} --threads {args.threads}")}
    patch_card = ModelCard(name="mammo-patch", task="patch-classifier", architecture="mammo-patch-net",
                           arch_kwargs={"num_classes": len(CLASSES), "widths": list(WIDTHS), "head": 64},
                           classes=list(CLASSES), metrics=pm, **common)
    exam_card = ModelCard(name="mammo-exam", task="exam-classifier", architecture="mammo-exam-net",
                          arch_kwargs={"widths": list(WIDTHS), "top": [32, 32]},
                          classes=["suspicious"], metrics=em,
                          extra={"output": "sigmoid of the logit = probability that the view shows a mass or "
                                           "calcification cluster (phantoms have no benign findings)",
                                 "exam_combine": "mean", "trunk_from": "mammo-patch", "gradcam_layer": "trunk"},
                          **common)
    args.out.mkdir(parents=True, exist_ok=True)
    for model, card in ((patch_model, patch_card), (exam, exam_card)):
        path = save_model(model, card, args.out)
        log(f"wrote {path} and {card.weights} ({(args.out / card.weights).stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
