"""Learning from few positives, measured: fine-tune with no, classic or cGAN augmentation, score on the ladder.

    python benchmarks/bench_augment.py [--seeds 2] [--positives 5] [--normals 50] [--device auto] [--json OUT]
    python benchmarks/bench_augment.py --quick      # the smoke test's tiny run (about a minute)
    python benchmarks/bench_augment.py --full       # GPU size: more exams, seeds, steps and test views

Issue 17 asks whether Wu et al.'s cGAN lesion infill beats traditional augmentation when a classifier
is fine-tuned from a handful of positive exams. The regime: ``--positives`` exams with a lesion in one
breast (both its views; masses and calcification clusters alternate) and ``--normals`` normal exams,
rendered at the training rung's difficulty (``--train-level``, default the middle of the ladder, where
the starting model is not already perfect) and written to disk by the app's own exporter
(``viewer.core.export.training.export_exam``: classification rows + a 2D segmentation pair per view),
so fine-tuning reads exactly what a user's export holds.

The same starting model is then fine-tuned three ways, ``inference.finetune.finetune(dataset, model,
augment=none|classic|cgan, seed=s)``, once per seed (the seed drives the split, the draws and the
synthetic lesions), and every new version plus the starting model scores the views of every ladder
rung (``inference.ladder.mammo_cases``, fixed test seed, never the training seeds): the view AUC (a
view's most suspicious patch) and, for patch classifiers, the lesion-patch AUC (the patch on the lesion
vs a same-size window in a normal breast; see :func:`score_ladder`), both from one
``inference.ladder.lesion_map`` per view and model.

Pooling over seeds: a method's AUC on a rung is the MEAN over seeds of the per-seed view AUC (each seed
is one fine-tuned model; pooling raw scores across models would mix their calibrations). Its 95 %
interval comes from a stratified bootstrap of the rung's test views: one resample of the views is
applied to every seed and every method together, so the ``cgan - classic`` column is a PAIRED
difference with its own interval. The intervals cover test-view sampling; the spread between seeds
is printed beside them (sd over seeds).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

METHODS = ("none", "classic", "cgan")
VIEWS = ("RCC", "LCC", "RMLO", "LMLO")
TRAIN_SEED0 = 7_300_000  # training exams; the ladder's test views use TEST_SEED, far from these
TEST_SEED = 17


@dataclass(frozen=True)
class Settings:
    model: str = "mammo-patch"
    models_from: tuple[str, ...] = ()  # folders of extra models for the run (e.g. an infill cGAN)
    positives: int = 5  # positive exams (one breast with a lesion, both its views)
    normals: int = 50  # normal exams
    seeds: int = 2
    train_level: int | None = None  # ladder level of the training lesions (None: the middle one)
    test_n: int = 12  # test views per class per rung
    epochs: int = 4
    steps: int = 15
    augment_count: int | None = None  # synthetic positives (None: the fine-tuner's default rule)
    size: tuple[int, int] = (832, 640)
    device: str = "auto"
    n_boot: int = 1000


PRESETS = {
    "quick": dict(positives=2, normals=3, seeds=1, test_n=3, epochs=1, steps=2, size=(416, 320), n_boot=200),
    "demo": {},
    "full": dict(positives=5, normals=50, seeds=5, test_n=60, epochs=10, steps=40, n_boot=2000),
}


# ----------------------------------------------------------------------------------------------
# the few-positive dataset, written by the app's exporter
# ----------------------------------------------------------------------------------------------
def training_rungs(level: int | None):
    """(mass rung, calcification rung) of the training lesions: the given ladder level, else the middle."""
    from inference.ladder import MAMMO_RUNGS

    by_kind = {k: sorted((r for r in MAMMO_RUNGS if r.kind == k), key=lambda r: r.level)
               for k in ("mass", "calcification")}
    picked = []
    for kind, rungs in by_kind.items():
        if not rungs:
            raise SystemExit(f"the ladder has no {kind} rung")
        want = rungs[len(rungs) // 2].level if level is None else level
        match = [r for r in rungs if r.level == want]
        if not match:
            raise SystemExit(f"no {kind} rung at level {want}; levels are {[r.level for r in rungs]}")
        picked.append(match[0])
    return tuple(picked)


def render_exam(seed: int, lesion_rung, lesion_side: str | None, size) -> dict:
    """{view: (pixels uint16, label map uint8 (1 mass, 2 calcification))} of one woman's four views;
    ``lesion_side`` R/L has the rung's lesion in both its views, None is a normal exam. The rung's
    difficulty parameters (density included) apply to every view, so normals match the positives."""
    from inference.phantoms import mammo_image_with_truth

    params = dict(lesion_rung.params)
    views = {}
    for name in VIEWS:
        side, view = name[0], name[1:]
        lesion = side == lesion_side
        img, masks, _truth = mammo_image_with_truth(
            side, view, size=size, seed=seed, mass=lesion and lesion_rung.kind == "mass",
            calcifications=lesion and lesion_rung.kind == "calcification", **params)
        label = np.zeros(img.shape, np.uint8)
        if lesion:
            label[masks["mass"] > 0] = 1
            label[masks["calcification"] > 0] = 2
        views[name] = (np.ascontiguousarray(img.astype(np.uint16)), label)
    return views


def write_dataset(root: Path, settings: Settings) -> tuple[Path, dict]:
    """The few-positive dataset on disk (export_exam, one call per exam); returns (folder, summary)."""
    from inference.phantoms import mammo_spacing
    from viewer.core.export.training import export_exam
    from viewer.core.volume import SourceInfo, Volume

    mass_rung, calc_rung = training_rungs(settings.train_level)
    spacing = np.array([1.0, *mammo_spacing(settings.size)])
    folder, n_lesion_views = None, 0
    for i in range(settings.positives + settings.normals):
        positive = i < settings.positives
        rung = (mass_rung, calc_rung)[i % 2]  # a normal exam takes the rung's density, not its lesion
        side = ("R", "L")[(i // 2) % 2] if positive else None
        seed = TRAIN_SEED0 + i
        views, classes, labels = {}, {}, {}
        for name, (pixels, label) in render_exam(seed, rung, side, settings.size).items():
            info = SourceInfo(modality="MG", series_uid=f"2.25.{seed}{VIEWS.index(name)}", laterality=name[0],
                              view_position=name[1:])
            views[name] = (Volume(pixels[None], spacing, info=info), None)
            classes[name] = "malignant" if name[0] == side else "normal"
            labels[name] = (label[None], {1: "mass", 2: "calcification"}, None)
            n_lesion_views += int(label.any())
        classes["exam"] = "malignant" if positive else "normal"
        out = export_exam(root, views, classes, labels=labels, dataset_name="Dataset917_FewPositives")
        folder = Path(out["dataset"])
    summary = {"positive_exams": settings.positives, "normal_exams": settings.normals,
               "views": 4 * (settings.positives + settings.normals), "lesion_views": n_lesion_views,
               "train_rungs": [mass_rung.name, calc_rung.name]}
    return folder, summary


# ----------------------------------------------------------------------------------------------
# fine-tuning three ways
# ----------------------------------------------------------------------------------------------
def finetune_all(dataset: Path, settings: Settings, out: Path, log) -> tuple[dict[str, list], dict[str, str]]:
    """({method: [new card per seed]}, {method: why it could not run}): a method the fine-tuner refuses
    (e.g. cgan with no infill cGAN installed) is left out of the table with its reason, not a crash."""
    from inference import registry
    from inference.finetune import FinetuneError, finetune

    versions: dict[str, list] = {}
    missing: dict[str, str] = {}
    for method in METHODS:
        versions[method] = []
        for s in range(settings.seeds):
            t0 = time.perf_counter()
            try:
                card = finetune(dataset, settings.model, epochs=settings.epochs, steps_per_epoch=settings.steps,
                                seed=s, device=settings.device, out_dir=out, augment=method,
                                augment_count=settings.augment_count, allow_no_validation=True,
                                ignore_extra_labels=True)
            except (FinetuneError, registry.ModelError) as exc:
                if method == "none":
                    raise
                missing[method] = str(exc)
                log(f"  {method:8s}: not run: {exc}")
                versions.pop(method)
                break
            aug = card.extra.get("augmentation", {})
            log(f"  {method:8s} seed {s}: {card.name} {card.version} in {time.perf_counter() - t0:.0f} s "
                f"({aug.get('n_synthetic', 0)} synthetic)")
            versions[method].append(card)
    return versions, missing


# ----------------------------------------------------------------------------------------------
# scoring on the ladder
# ----------------------------------------------------------------------------------------------
def score_ladder(models: dict[str, list], settings: Settings, log) -> dict:
    """{rung name: {"labels": (n,), "scores": {key: (seeds, n)}, "lesion_scores": {key: (seeds, n)}}} for
    every mammography rung; the models of each key score the same test views.

    "scores" are view scores (a view's most suspicious patch). "lesion_scores" ask whether the model's
    response AT the lesion rises above normal tissue, which the view score cannot show once the lesion is
    fainter than the densest tissue: a positive view's score is its highest patch on the lesion, a normal
    view's the highest patch of a window of the same size at a random place in its breast (positive k and
    normal k are paired by size; the place is fixed by the test seed, the same for every model). Patch
    classifiers only (an exam classifier has no patches): else "lesion_scores" is empty."""
    from inference.device import pick_device
    from inference.ladder import MAMMO_RUNGS, lesion_map, load_classifier, mammo_cases, view_score

    device = str(pick_device(settings.device))
    for cards in models.values():
        for card in cards:  # the ladder caches models by name and version: make sure it holds THIS one
            if load_classifier(card, device)[1].sha256 != card.sha256:
                raise RuntimeError(f"{card.name} {card.version}: the ladder holds other weights of that version")
    patchy = all(card.task == "patch-classifier" for cards in models.values() for card in cards)
    out = {}
    for rung in MAMMO_RUNGS:
        t0 = time.perf_counter()
        cases = mammo_cases(rung, settings.test_n, settings.test_n, seed=TEST_SEED, size=settings.size)
        labels = np.array([c.label for c in cases], bool)
        scores, lesion_scores = {}, {}
        for key, cards in models.items():
            if not patchy:
                scores[key] = np.array([[view_score(card, c.image, c.spacing, c.laterality, c.view, device=device)
                                         for c in cases] for card in cards])
                continue
            view_rows, lesion_rows = [], []
            for card in cards:
                maps = [lesion_map(card, c.image, c.spacing, c.laterality, c.view, device=device) for c in cases]
                view_rows.append([m.view_score() for m in maps])
                lesion_rows.append(lesion_window_scores(cases, maps, rung.kind))
            scores[key], lesion_scores[key] = np.array(view_rows), np.array(lesion_rows)
        out[rung.name] = {"rung": rung, "labels": labels, "scores": scores, "lesion_scores": lesion_scores}
        log(f"  scored {rung.name} ({len(cases)} views) in {time.perf_counter() - t0:.0f} s")
    return out


def lesion_window_scores(cases, maps, kind: str) -> list[float]:
    """Each view's lesion-window score (see :func:`score_ladder`): positives first, as mammo_cases gives
    them; normal k borrows the window size of positive k (cycling when there are more normals)."""
    positives = [i for i, c in enumerate(cases) if c.label]
    windows = {}
    for i in positives:
        window = maps[i].lesion_window(cases[i].masks[kind])
        if window is None:
            raise RuntimeError(f"rung {cases[i].rung} view {i}: a positive view without its {kind} mask")
        windows[i] = window
    out = []
    for i, (case, m) in enumerate(zip(cases, maps)):
        if case.label:
            out.append(m.window_score(windows[i]))
        else:
            k = (i - len(positives)) % len(positives) if positives else 0
            like = windows[positives[k]] if positives else (0, 1, 0, 1)
            out.append(m.window_score(m.random_window(like, np.random.default_rng([TEST_SEED, case.seed]))))
    return out


def auc_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """View AUC of every row of ``scores`` (rows = models or bootstrap draws; Mann-Whitney, ties half)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=-1)
    pos = labels.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return np.full(scores.shape[:-1], np.nan)
    return (ranks[..., pos].sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def paired_bootstrap(labels: np.ndarray, scores: dict[str, np.ndarray], n_boot: int, seed: int = 0) -> dict:
    """{key: (mean AUC over seeds, lo95, hi95, sd over seeds)} and {"cgan-classic": (diff, lo, hi, nan)}
    from one stratified resample of the views shared by every key and seed (see the module docstring)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    draws = np.concatenate([pos[rng.integers(len(pos), size=(n_boot, len(pos)))],
                            neg[rng.integers(len(neg), size=(n_boot, len(neg)))]], axis=1)
    draw_labels = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    point, boot = {}, {}
    for key, s in scores.items():  # s: (seeds, views)
        per_seed = auc_rows(s, labels)
        point[key] = (float(np.mean(per_seed)), float(np.std(per_seed)))
        boot[key] = auc_rows(s[:, draws], draw_labels).mean(0)  # (n_boot,)
    out = {k: (point[k][0], *np.percentile(boot[k], [2.5, 97.5]).tolist(), point[k][1]) for k in scores}
    if "cgan" in scores and "classic" in scores:
        diff = boot["cgan"] - boot["classic"]
        out["cgan-classic"] = (point["cgan"][0] - point["classic"][0], *np.percentile(diff, [2.5, 97.5]).tolist(),
                               float("nan"))
    return out


# ----------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------
def cell(value) -> str:
    if value is None:
        return f"{'n/a':21s}"
    auc, lo, hi, _sd = value
    return f"{auc:.3f} [{lo:.3f}, {hi:.3f}]"


def table(results: dict, start_key: str, metric: str = "auc") -> list[str]:
    head = f"{'rung':28s} | {'start':21s} | {'none':21s} | {'classic':21s} | {'cgan':21s} | cgan - classic"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        row = r[metric]
        diff = row.get("cgan-classic")
        lines.append(f"{name:28s} | " + " | ".join(cell(row.get(k)) for k in (start_key, *METHODS))
                     + " | " + (f"{diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}]" if diff else "-"))
    return lines


@contextmanager
def private_model_folder(folder: Path, bring=()):
    """LIGHTBOX_MODELS_DIR pointed at a fresh folder while the benchmark runs: the new versions (each a
    distinct version number, so the ladder's view_score finds each by name and version) and the pin of the
    starting version live there, and the user's own model folder and pins are neither read nor changed.
    ``bring``: folders whose models are copied in first (an infill cGAN trained elsewhere, say)."""
    import shutil

    from inference import registry

    folder.mkdir(parents=True, exist_ok=True)
    for source in bring:
        cards = sorted(Path(source).glob("*.json"))
        if not cards:
            raise SystemExit(f"bench_augment: {source}: no model card (*.json) there")
        for path in cards:
            card = registry.load_card(path)  # a broken card is refused here, naming the file
            shutil.copy2(path, folder / path.name)
            shutil.copy2(card.weights_path, folder / card.weights_path.name)
    before = os.environ.get("LIGHTBOX_MODELS_DIR")
    os.environ["LIGHTBOX_MODELS_DIR"] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("LIGHTBOX_MODELS_DIR", None)
        else:
            os.environ["LIGHTBOX_MODELS_DIR"] = before


def run(settings: Settings, log=lambda text: print(text, file=sys.stderr, flush=True)) -> dict:
    """The whole benchmark; returns the JSON-able results (settings, timings, per-rung AUCs)."""
    import torch

    from inference import activation, registry
    from inference.finetune_common import parent_card

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_augment-") as tmp_name, \
            private_model_folder(Path(tmp_name) / "models", settings.models_from):
        tmp = Path(tmp_name)
        start = parent_card(settings.model)
        activation.pin(start.name, start.version)  # every run starts from it, not from the last one written
        start_key = f"start ({start.version})"
        log(f"writing {settings.positives} positive + {settings.normals} normal exams ...")
        dataset, summary = write_dataset(tmp / "datasets", settings)
        t_data = time.perf_counter()
        log(f"fine-tuning {settings.model} {start.version} three ways x {settings.seeds} seeds ...")
        versions, missing = finetune_all(dataset, settings, registry.user_models_dir(), log)
        t_train = time.perf_counter()
        log("scoring the ladder ...")
        models = {start_key: [start], **versions}
        scored = score_ladder(models, settings, log)
        t_score = time.perf_counter()
        registry_note = {m: [f"{c.name} {c.version}" for c in cards] for m, cards in versions.items()}
        augmentation = {m: cards[0].extra.get("augmentation", {}) for m, cards in versions.items()}
    results = {}
    for name, r in scored.items():
        auc = paired_bootstrap(r["labels"], r["scores"], settings.n_boot)
        lesion_auc = paired_bootstrap(r["labels"], r["lesion_scores"], settings.n_boot) if r["lesion_scores"] else {}
        results[name] = {"level": r["rung"].level, "kind": r["rung"].kind, "description": r["rung"].description,
                         "n_positive": int(r["labels"].sum()), "n_normal": int((~r["labels"]).sum()), "auc": auc,
                         "lesion_auc": lesion_auc}
    return {"settings": {**asdict(settings), "size": list(settings.size)}, "start_model": f"{start.name} "
            f"{start.version}", "start_key": start_key, "dataset": summary, "versions": registry_note,
            "augmentation": {m: {k: v for k, v in a.items() if k != "grid"} for m, a in augmentation.items()},
            "not_run": missing,
            "seconds": {"dataset": round(t_data - t0, 1), "finetune": round(t_train - t_data, 1),
                        "score": round(t_score - t_train, 1), "total": round(time.perf_counter() - t0, 1)},
            "load_average": list(os.getloadavg()), "rungs": results}


def report(out: dict) -> str:
    s = out["settings"]
    lines = [f"bench_augment: {out['start_model']} fine-tuned on {s['positives']} positive + {s['normals']} normal "
             f"exams ({out['dataset']['lesion_views']} lesion views; training rungs "
             f"{', '.join(out['dataset']['train_rungs'])}), {s['epochs']} epochs x {s['steps']} steps, "
             f"{s['seeds']} seed(s), augment count {s['augment_count'] or 'default'}; {s['test_n']} + {s['test_n']} "
             f"test views per rung at {s['size'][0]}x{s['size'][1]}; device {s['device']}",
             "view AUC, mean over seeds [95 % stratified bootstrap of the test views, paired across methods]", ""]
    lines += table(out["rungs"], out["start_key"])
    if any(r.get("lesion_auc") for r in out["rungs"].values()):
        lines += ["", "lesion-patch AUC: the highest patch on the lesion vs the highest patch of a same-size window at a "
                  "random place in a normal breast (does the model respond AT the lesion?), same bootstrap", ""]
        lines += table(out["rungs"], out["start_key"], "lesion_auc")
    lines += [f"{m}: not run: {why}" for m, why in out["not_run"].items()]
    t = out["seconds"]
    lines += ["", f"time: dataset {t['dataset']:.0f} s, fine-tuning {t['finetune']:.0f} s, scoring {t['score']:.0f} s, "
              f"total {t['total']:.0f} s (load average {out['load_average'][0]:.1f})"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the smoke test's tiny run")
    size.add_argument("--full", action="store_true", help="GPU size")
    ap.add_argument("--model", default=None, help="classifier to fine-tune (default mammo-patch)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--positives", type=int, default=None, help="positive exams")
    ap.add_argument("--normals", type=int, default=None, help="normal exams")
    ap.add_argument("--train-level", type=int, default=None, help="ladder level of the training lesions")
    ap.add_argument("--test-n", type=int, default=None, help="test views per class per rung")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--augment-count", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--models", action="append", default=[], metavar="DIR",
                    help="also use the models in DIR (e.g. an infill cGAN from python -m inference.infill demo)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    settings = replace(Settings(), **PRESETS["quick" if args.quick else "full" if args.full else "demo"])
    chosen = {k: getattr(args, k) for k in ("model", "seeds", "positives", "normals", "train_level", "test_n",
                                             "epochs", "steps", "augment_count") if getattr(args, k) is not None}
    settings = replace(settings, device=args.device, models_from=tuple(args.models), **chosen)
    for name in ("seeds", "positives", "normals", "test_n", "epochs", "steps"):
        if getattr(settings, name) < 1:
            print(f"bench_augment: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    out = run(settings)
    print(report(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
