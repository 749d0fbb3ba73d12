"""Fine-tune the mammography exam classifier on the per-view classes a user confirmed or corrected.

Reads ``classification.json`` (or ``classification.csv``) of an exported dataset: one row per
view with its label and the view's image (a NIfTI of shape (1, rows, cols) inside the dataset
folder). Labels map onto the model's single output: the card's class name, "malignant",
"abnormal", "positive" or "1" are positive; "normal", "benign", "negative" or "0" negative;
anything else is skipped and counted. Cases (never single views: the views of one woman look
alike) are split into training and validation with the seed.

Each view is prepared exactly as at inference (``preprocess.mammo.prepare`` with the card's
spacing, margin and normalization, chest wall from the row or else from the pixels), and the
network computes exactly the function inference uses:

* The trunk stays frozen. It is the patch network's trunk (``train_mammo`` stage 1, learned from
  many labelled patches); a few dozen view labels cannot improve it, only overfit it. Frozen, its
  features are computed once per view, so a training step only runs the small top: seconds per
  epoch on a CPU, which is what makes training from the app practical.
* BatchNorm keeps its running statistics (eval mode). Views differ in size, so a batch is a loop
  of single views; batch statistics of one view would train a different function than the one
  inference runs.
* Augmentation: the up-down mirror of each training view (its trunk features are cached too).
  The left-right mirror is not used: inference always puts the chest wall on the left.
* Each step draws ``batch`` training views alternating positive and negative ones, so a rare
  class is still taught, and minimises the binary cross-entropy of the view logit.

Under torchrun every process draws its own views and the gradients are averaged (all-reduce)
before each step; rank 0 validates and writes the new version.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from inference import registry
from inference.classify import split_view_name
from inference import activation
from inference.finetune_common import (
    DomainCases,
    FinetuneError,
    LabelCheck,
    Plan,
    Progress,
    Stopped,
    save_version,
    start_run,
)
from inference.finetune_augment import NONE, synthesize
from inference.preprocess.mammo import PreparedMammo, prepare
from inference.train_mammo import auc

POSITIVE = ("malignant", "abnormal", "positive", "1")
NEGATIVE = ("normal", "benign", "negative", "0")


@dataclass
class LabelledView:
    case: str
    view: str  # RCC / LCC / RMLO / LMLO
    image: Path
    chest_wall: str | None
    target: float  # 1.0 positive, 0.0 negative


def read_rows(root) -> tuple[Path, list[dict]]:
    """(file read, its rows) from classification.json, else classification.csv."""
    root = Path(root)
    json_path, csv_path = root / "classification.json", root / "classification.csv"
    if json_path.is_file():
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FinetuneError(f"{json_path}: not readable JSON ({exc})") from exc
        rows = data.get("classification") if isinstance(data, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise FinetuneError(f"{json_path}: expected {{\"classification\": [rows]}}")
        return json_path, rows
    if csv_path.is_file():
        try:
            with open(csv_path, newline="", encoding="utf-8") as f:
                return csv_path, list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise FinetuneError(f"{csv_path}: not a readable CSV ({exc})") from exc
    raise FinetuneError(f"{root}: no classification.json or classification.csv (export views with their class "
                        "first)")


def target_of(label: str, class_name: str) -> float | None:
    """1.0 / 0.0 for a label that names the finding or its absence; None for anything else."""
    text = str(label).strip().lower()
    if text == class_name.lower() or text in POSITIVE:
        return 1.0
    if text in NEGATIVE:
        return 0.0
    return None


def inside(root: Path, relative: str, source: Path) -> Path:
    """The image path of a row, refused unless it is relative and stays inside the dataset folder."""
    path = Path(relative)
    resolved = (root / path).resolve()
    if path.is_absolute() or not resolved.is_relative_to(root.resolve()):
        raise FinetuneError(f"{source}: image {relative!r} is outside the dataset folder (untrusted dataset)")
    return resolved


def labelled_views(root, class_name: str, unknown: dict[str, int] | None = None
                   ) -> tuple[list[LabelledView], dict[str, int]]:
    """The usable views and the counts of skipped rows by reason; ``unknown`` (when given) gets the
    views per label text that is not the model's class or its absence (e.g. 'BI-RADS 3')."""
    root = Path(root)
    source, rows = read_rows(root)
    views, skipped = [], {}
    unknown = {} if unknown is None else unknown

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for row in rows:
        view = str(row.get("view") or "").strip().upper()
        if view == "EXAM":
            skip("exam rows")
            continue
        image = str(row.get("image") or "").strip()
        if not image:
            skip("no image")
            continue
        path = inside(root, image, source)
        try:
            split_view_name(view)
        except ValueError as exc:
            raise FinetuneError(f"{source}: case {row.get('case')!r}: {exc}") from exc
        target = target_of(row.get("label", ""), class_name)
        if target is None:
            text = str(row.get("label", "")).strip()
            skip(f"label {text or '(empty)'!r}")
            if text:
                unknown[text] = unknown.get(text, 0) + 1
            continue
        if not path.is_file():
            raise FinetuneError(f"{path}: image of {row.get('case')} {view} in {source.name} is missing")
        wall = str(row.get("chest_wall") or "").strip().lower()
        if wall not in ("", "left", "right"):
            raise FinetuneError(f"{source}: case {row.get('case')!r} {view}: chest_wall must be left, right or "
                                f"empty, got {wall!r}")
        views.append(LabelledView(str(row.get("case") or ""), view, path, wall or None, target))
    if not views:
        why = ", ".join(f"{n} {k}" for k, n in sorted(skipped.items())) or "no rows"
        raise FinetuneError(f"{source}: no view with an image and a usable label ({why}); labels are "
                            f"{class_name}/malignant/abnormal/positive/1 or normal/benign/negative/0")
    return views, skipped


def load_view(v: LabelledView, card) -> np.ndarray:
    """The view's image prepared for the model exactly as inference prepares it (float32 (h, w))."""
    return load_prepared(v, card).image


def load_prepared(v: LabelledView, card) -> PreparedMammo:
    """The view prepared as inference prepares it, with its breast mask (where a synthetic lesion may go)."""
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(v.image))
    except RuntimeError as exc:
        raise FinetuneError(f"{v.image}: not a readable image ({str(exc).strip().splitlines()[-1]})") from exc
    pixels = sitk.GetArrayFromImage(img)
    if pixels.ndim == 3 and pixels.shape[0] == 1:
        pixels = pixels[0]
    if pixels.ndim != 2:
        raise FinetuneError(f"{v.image}: a mammogram view is one 2D image, got shape {pixels.shape}")
    spacing = img.GetSpacing()  # SimpleITK order: (column, row, ...)
    inp = card.input
    try:
        prepared = prepare(pixels.astype(np.float32), (float(spacing[1]), float(spacing[0])), v.view[0], v.view[1:],
                           chest_wall=v.chest_wall, target_spacing=float(inp.get("spacing_mm", 0.42)),
                           margin=int(inp.get("crop_margin_px", 26)), normalization=card.normalization or None)
    except ValueError as exc:
        raise FinetuneError(f"{v.image}: {exc}") from exc
    return prepared


def split_cases(views: list[LabelledView], val_fraction: float, seed: int) -> tuple[list[int], list[int], str]:
    """(training, validation) view indices, split by case; a seeded permutation of the cases where
    training has both classes, and validation too when some permutation allows it. The third
    value is a note when validation cannot hold both classes."""
    cases = sorted({v.case for v in views})
    n_val = max(1, round(val_fraction * len(cases))) if len(cases) > 1 and val_fraction > 0 else 0
    n_val = min(n_val, len(cases) - 1)
    rng = np.random.default_rng(seed)

    def classes(idx) -> set[float]:
        return {views[i].target for i in idx}

    fallback = None
    for _ in range(200):
        val_cases = set(np.asarray(cases)[rng.permutation(len(cases))[:n_val]].tolist())
        val = [i for i, v in enumerate(views) if v.case in val_cases]
        train = [i for i, v in enumerate(views) if v.case not in val_cases]
        if len(classes(train)) < 2:
            continue
        if len(classes(val)) == 2:
            return train, val, ""
        fallback = fallback or (train, val)
    if fallback is None:
        if len(classes(range(len(views)))) < 2:
            only = "positive" if views[0].target else "negative"
            raise FinetuneError(f"all {len(views)} usable views are {only}: fine-tuning needs positive and negative "
                                "views")
        raise FinetuneError(f"the {len(cases)} cases cannot be split so that training holds positive and negative "
                            f"views with {n_val} validation case(s): add cases or lower the validation fraction")
    train, val = fallback
    note = ("no validation cases" if not val else
            f"validation views are all {'positive' if views[val[0]].target else 'negative'}: AUC undefined")
    return train, val, note


def exam_view_cases(net: torch.nn.Module, card, views: list[LabelledView], device) -> DomainCases:
    """Every usable view for the new version's domain description: prepared as inference prepares
    it, one forward pass of the exam network (the trunk is the watched layer)."""
    from inference.classify import view_probability

    def cases():
        for v in views:
            yield lambda v=v: view_probability(net, load_view(v, card), device=device)
    return DomainCases(len(views), cases, "views", device)


def plan_exam(dataset, card, val_fraction: float, seed: int) -> Plan:
    """The checked plan of fine-tuning the exam classifier: usable views, the split by case, and the
    view labels that are neither the model's class nor its absence (they would be skipped)."""
    name = card.classes[0]
    unknown: dict[str, int] = {}
    views, skipped = labelled_views(dataset, name, unknown)
    train_idx, val_idx, note = split_cases(views, val_fraction, seed)
    labels = LabelCheck(f"{card.name} {card.version}",
                        ["/".join((name, *POSITIVE)), "/".join(NEGATIVE)], unknown, {}, "views")
    return Plan(card, labels, train_idx, val_idx, len({views[i].case for i in val_idx}),
                len({v.case for v in views}), "views", (views, skipped), [note] if note else [])


def finetune_exam(dataset, checked: Plan, epochs: int, steps_per_epoch: int, lr: float, batch: int, seed: int,
                  device: str, out_dir, progress: Progress | None, should_stop, augment: str = "none",
                  augment_count: int | None = None):
    """Fine-tune the plan's exam classifier on ``dataset``; returns the new card (None on torchrun ranks > 0).

    ``progress`` gets {"epoch", "loss", "val_auc": {class: auc}, "val_accuracy"} after each epoch
    (val_auc is empty and the card says why when validation lacks a class; val_accuracy is None
    without validation cases).

    ``augment`` ("classic", "cgan") adds synthetic positive views made from the TRAINING split
    ("cgan": lesions infilled into its negative views; "classic": its positive views transformed) with
    target 1; their trunk features are cached like the real views'. Validation is untouched.
    """
    card = checked.card
    name = card.classes[0]
    views, skipped = checked.data
    train_idx, val_idx = list(checked.train_idx), list(checked.val_idx)
    note = "; ".join(checked.notes)
    run = start_run(device, seed, len(views), 0.0, split=(train_idx, val_idx))
    dev, rank, world, rng = run.device, run.rank, run.world, run.rng  # rng: each process its own draws
    net, card = registry.load_model(card, device=dev)
    net.eval()  # frozen trunk; BatchNorm on running statistics (see the module docstring)
    for p in net.trunk.parameters():
        p.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]

    feats: dict[int, list[torch.Tensor]] = {}  # view -> trunk features [as is, mirrored up-down]
    training = set(train_idx)
    prepared: dict[int, PreparedMammo] = {}  # training views, kept only while synthesizing from them

    def cache(i: int, image: np.ndarray, mirrored_too: bool) -> None:
        if should_stop is not None and should_stop():
            raise Stopped("fine-tuning cancelled")
        x = torch.from_numpy(np.asarray(image, np.float32)).to(dev)[None, None]
        feats[i] = [net.trunk(x)] + ([net.trunk(x.flip(2))] if mirrored_too else [])

    with torch.no_grad():
        for i, v in enumerate(views):
            prep = load_prepared(v, card)
            cache(i, prep.image, i in training)
            if augment != "none" and i in training:
                prepared[i] = prep
    aug = NONE
    if augment != "none":
        normals = [i for i in train_idx if views[i].target == 0.0]
        positives = [i for i in train_idx if views[i].target == 1.0]
        aug = synthesize(augment, [prepared[i].image for i in normals], [(prepared[i].image, None) for i in positives],
                         len(train_idx), augment_count, seed, dev, progress if rank == 0 else None, should_stop,
                         breast_masks=[prepared[i].breast for i in normals])
        prepared.clear()
        with torch.no_grad():
            for j, image in enumerate(aug.synthetic.images):
                cache(len(views) + j, image, True)
    synthetic_idx = list(range(len(views), len(views) + aug.count))
    targets = torch.tensor([v.target for v in views] + [1.0] * aug.count, device=dev)
    by_class = [[i for i in train_idx if views[i].target == t] for t in (1.0, 0.0)]
    by_class[0] += synthetic_idx

    def logit(i: int, mirrored: bool = False) -> torch.Tensor:
        return net.score_map(None, features=feats[i][int(mirrored)]).flatten(1).amax(1)

    def validate() -> tuple[dict[str, float], float | None]:
        if not val_idx:
            return {}, None
        with torch.no_grad():
            scores = np.array([float(logit(i)) for i in val_idx])
        truth = np.array([views[i].target for i in val_idx]) > 0.5
        value = auc(scores, truth)
        return ({name: value} if np.isfinite(value) else {}), float(((scores > 0) == truth).mean())

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    auc_before, acc_before = validate() if rank == 0 else ({}, None)
    history = []
    for epoch in range(1, epochs + 1):
        losses = []
        for _ in range(steps_per_epoch):
            if should_stop is not None and should_stop():
                raise Stopped("fine-tuning cancelled")
            opt.zero_grad(set_to_none=True)
            total = 0.0
            first = int(rng.integers(2))
            for b in range(batch):
                pool = by_class[(first + b) % 2]
                i = int(pool[rng.integers(len(pool))])
                loss = F.binary_cross_entropy_with_logits(logit(i, bool(rng.integers(2))), targets[i:i + 1]) / batch
                loss.backward()
                total += float(loss.detach())
            if world > 1:
                import torch.distributed as dist

                for p in params:
                    dist.all_reduce(p.grad)
                    p.grad /= world
            opt.step()
            losses.append(total)
        val_auc, val_acc = validate() if rank == 0 else ({}, None)
        record = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
                  "val_auc": val_auc, "val_accuracy": val_acc}
        history.append(record)
        if progress is not None and rank == 0:
            progress(record)
    for p in net.parameters():
        p.requires_grad_(True)
    if run.finished_worker():
        return None
    n_cases = len({v.case for v in views})
    n_val_cases = len({views[i].case for i in val_idx})
    synthetic = f" + {aug.count} synthetic positive ({augment})" if aug.count else ""
    summary = (f"{len(train_idx)} training{synthetic} and {len(val_idx)} validation views of "
               f"{n_cases - n_val_cases} and {n_val_cases} cases, {epochs} epochs x {steps_per_epoch} steps of "
               f"{batch} views (seed {seed})"
               + (f"; skipped {', '.join(f'{n} {k}' for k, n in sorted(skipped.items()))}" if skipped else ""))
    metrics = {"val_auc_before": auc_before, "val_accuracy_before": acc_before,
               "val_auc": history[-1]["val_auc"] if history else auc_before,
               "val_accuracy": history[-1]["val_accuracy"] if history else acc_before,
               "n_train_views": len(train_idx), "n_val_views": len(val_idx),
               "n_positive_train_views": len(by_class[0]) - aug.count, "n_synthetic_train_views": aug.count,
               "skipped_rows": skipped, "epochs": history}
    if note:
        metrics["val_auc_note"] = note
    metric, old_score, new_score = activation.classifier_scores(metrics["val_auc_before"], metrics["val_auc"],
                                                                acc_before, metrics["val_accuracy"])
    verdict = activation.record(metric, old_score, new_score, n_val_cases, f"{card.name} {card.version}")
    new = save_version(net, checked, dataset, summary, metrics, verdict, out_dir,
                       {"processes": world, "finetune": "trunk frozen; top and score trained, BatchNorm statistics "
                                                         "kept"}, exam_view_cases(net, card, views, dev), aug)
    run.close()
    return new
