"""What every fine-tuner shares: dataset reading, label checks, the validation split, the training run
(device, seed, DistributedDataParallel), the segmentation training loop, and writing a new version.

``finetune`` (the dispatcher and 3D segmentation), ``finetune_seg2d`` and ``finetune_exam`` all import
this module and none of them imports another, so the variants no longer import their dispatcher back.
"""
from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from inference import activation, registry
from inference.device import pick_device

Progress = Callable[[dict], None]
Warn = Callable[[str], None]
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


# --- 2D mammography views (the lesion U-Net and the patch classifier read the same exports) ---
def check_modality(meta: dict, card, root) -> None:
    """A CT or MR dataset must not silently train a mammography model: refuse, naming the channel."""
    channels = {str(k): str(v) for k, v in (meta.get("channel_names") or meta.get("modality") or {}).items()}
    wanted = str(card.modality).upper()
    if channels and not any(v.upper() == wanted for v in channels.values()):
        named = ", ".join(f"channel {k} is {v!r}" for k, v in channels.items())
        raise FinetuneError(f"{Path(root) / 'dataset.json'}: {named}; {card.name} reads {wanted} "
                            f"(mammography) views, not this modality")


def read_view(image: Path, label: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(pixels (rows, cols), labels (rows, cols), spacing (row, col) mm) of one exported view."""
    import SimpleITK as sitk

    def read(path: Path):
        try:
            return sitk.ReadImage(str(path))
        except RuntimeError as exc:  # ITK's I/O errors: name the file, keep ITK's last line
            raise FinetuneError(f"{path}: cannot be read ({str(exc).strip().splitlines()[-1]})") from exc

    img, lab = read(image), read(label)
    if img.GetSize() != lab.GetSize():
        raise FinetuneError(f"{label.name}: size {lab.GetSize()} differs from its image {img.GetSize()}")
    pixels = sitk.GetArrayFromImage(img)
    labels = sitk.GetArrayFromImage(lab)
    spacing = tuple(float(s) for s in reversed(img.GetSpacing()))  # array order
    if pixels.ndim == 3:
        if pixels.shape[0] != 1:
            raise FinetuneError(f"{image.name}: a volume of {pixels.shape[0]} slices; a 2D model trains on "
                                "single views of shape (1, rows, cols)")
        pixels, labels, spacing = pixels[0], labels[0], spacing[1:]
    if pixels.ndim != 2:
        raise FinetuneError(f"{image.name}: shape {pixels.shape} is not one 2D view")
    return pixels, labels, (float(spacing[0]), float(spacing[1]))


def check_label_values(labels: np.ndarray, lut: np.ndarray, label: Path) -> None:
    """Every value of a label map must be one of dataset.json's labels (``lut``: value -> model class)."""
    if labels.size and int(labels.max()) >= len(lut):
        raise FinetuneError(f"{label.name}: label value {int(labels.max())} is not in dataset.json")
    if labels.size and int(labels.min()) < 0:
        raise FinetuneError(f"{label.name}: negative label values")


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


def exam_of_pairs(root, pairs: list[tuple[Path, Path]]) -> list[str]:
    """Each (image, label) pair's exam: the ``exam_case`` its provenance line names (a view exported with
    its exam by ``export_exam``), else the pair's own case. Views of one woman must not straddle the split:
    her other view of the same lesion would make validation an easy look-up."""
    exam_of: dict[str, str] = {}
    path = Path(root) / "provenance.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    except (OSError, UnicodeDecodeError):
        lines = []  # provenance is optional here: without it every view is its own exam
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        extra = record.get("extra") if isinstance(record, dict) else None
        if isinstance(extra, dict) and extra.get("exam_case") and record.get("case"):
            exam_of[str(record["case"])] = str(extra["exam_case"])
    cases = [image.name.rsplit("_0000", 1)[0] for image, _label in pairs]
    return [exam_of.get(case, case) for case in cases]


def split_by_exam(exams: list[str], val_fraction: float, seed: int) -> tuple[list[int], list[int], int]:
    """(training, validation) item indices and the number of validation exams: :func:`split_indices` over
    the exams, each exam's items kept together (items that are their own exams split exactly as before)."""
    order = list(dict.fromkeys(exams))
    members: dict[str, list[int]] = {e: [] for e in order}
    for i, e in enumerate(exams):
        members[e].append(i)
    train_g, val_g = split_indices(len(order), val_fraction, seed)
    return ([i for g in train_g for i in members[order[g]]], [i for g in val_g for i in members[order[g]]],
            len(val_g))


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
                 out_dir=None, extra=None, domain_cases: DomainCases | None = None, augmentation=None):
    """Write ``net`` as a new version of the plan's parent (side by side with the older ones) and return
    its card. ``summary`` describes the training data; the parent's metrics are kept in the card;
    ``verdict`` (:func:`inference.activation.record`) decides whether Analyze may use it. The domain
    description is recomputed from ``domain_cases`` (:func:`version_domain`); ``extra["domain_note"]``
    says what it was fitted on, or why the parent's was kept. ``extra["augmentation"]`` says which
    synthetic positives joined training (``finetune_augment.Augmentation``; none given: {"augment": "none"}),
    with their real-vs-synthetic grid PNG beside the weights."""
    card = checked.card
    folder = Path(out_dir) if out_dir is not None else registry.user_models_dir()
    domain, domain_note = version_domain(card, net, domain_cases, dataset)
    version = free_version(card, folder)
    stem = f"{card.name}-{version}"
    augmented = (augmentation.record(folder, stem) if augmentation is not None
                 else {"augment": "none", "n_synthetic": 0})
    inherited = {k: v for k, v in card.extra.items()
                 if k not in ("activation", "label_warnings", "domain_note", "augmentation")}
    notes = {"label_warnings": checked.labels.warnings()} if checked.labels.warnings() else {}
    if checked.labels.unknown:
        notes["ignored_labels"] = dict(checked.labels.unknown)
    new = replace(card, version=version, sha256="", path=None, domain=domain,
                  training_data=(f"fine-tuned from {card.name} {card.version} on {Path(dataset).name}: {summary}; "
                                 f"parent: {card.training_data}"),
                  metrics={**metrics, "parent_metrics": card.metrics},
                  extra={**inherited, "parent": f"{card.name} {card.version}", **(extra or {}), **notes,
                         "augmentation": augmented, "activation": verdict, "domain_note": domain_note,
                         "finetuned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    path = registry.save_model(net.cpu(), new, folder, stem=stem)
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


