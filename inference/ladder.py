"""The phantom difficulty ladder: graded synthetic cases and the statistics to score models on them.

On the default phantoms every shipped model is perfect (view AUC 1.000), so they cannot tell
one training method from another. The ladder renders the same phantoms at rising difficulty:
fainter, smaller, smooth masses in denser breasts; fewer, tinier, fainter calcifications;
CT liver lesions closer to the liver's own attenuation. Each rung is a fixed set of the
generator's difficulty keywords (inference.phantoms), so a rung is reproducible from its name
and a seed, and every case keeps its exact masks and true class. Rungs share case seeds: two
rungs differ only in difficulty, not in which breasts were drawn.

Scores get 95 % bootstrap intervals (percentile, stratified by class for the AUC), because a
rung of a few dozen cases has wide error bars and a comparison must say so.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from inference import phantoms

MAMMO_SIZE = (832, 640)  # half the demo matrix, same 233 x 179 mm field of view: fast to render
CT_SHAPE, CT_SPACING = (60, 128, 128), (5.0, 2.8, 2.8)  # the demo CT's field of view, coarser
_CASE_SEED0 = 700_000  # disjoint from the training (1000+) and held-out (900000+) phantom seeds


@dataclass(frozen=True)
class Rung:
    """One difficulty step: the phantom keywords that make it, and what a reader would see."""

    name: str
    level: int  # 0 = obvious; higher = harder
    kind: str  # "mass" | "calcification" | "ct-lesion"
    params: dict = field(hash=False)  # difficulty keywords of mammo_image_with_truth / ct_phantom
    description: str = ""


# Calibrated on the shipped models and by eye (docs/ladder.md): contrast is what the models feel most,
# so it falls fastest; size, spiculation and density fall with it, as in a real hard case.
MAMMO_RUNGS: tuple[Rung, ...] = (
    Rung("mass-0", 0, "mass", dict(mass_contrast=900.0, mass_radius_mm=7.0, spiculation=0.6,
                                   fibroglandular_fraction=0.15),
         "obvious: 14 mm spiculated mass, bright, fatty breast"),
    Rung("mass-1", 1, "mass", dict(mass_contrast=600.0, mass_radius_mm=5.0, spiculation=0.4,
                                   fibroglandular_fraction=0.3),
         "10 mm spiculated mass, two thirds contrast, scattered density"),
    Rung("mass-2", 2, "mass", dict(mass_contrast=420.0, mass_radius_mm=4.0, spiculation=0.2,
                                   fibroglandular_fraction=0.5),
         "8 mm mildly spiculated mass, faint, heterogeneously dense"),
    Rung("mass-3", 3, "mass", dict(mass_contrast=250.0, mass_radius_mm=3.0, spiculation=0.0,
                                   fibroglandular_fraction=0.7),
         "6 mm smooth mass, very faint, dense breast"),
    Rung("mass-4", 4, "mass", dict(mass_contrast=80.0, mass_radius_mm=2.5, spiculation=0.0,
                                   fibroglandular_fraction=0.85),
         "a radiologist would miss it: 5 mm smooth mass at noise level, extremely dense"),
    Rung("calc-0", 0, "calcification", dict(calc_count=12, calc_radius_mm=0.25, calc_contrast=2000.0,
                                            fibroglandular_fraction=0.15),
         "obvious: 12 bright 0.5 mm calcifications, fatty breast"),
    Rung("calc-1", 1, "calcification", dict(calc_count=8, calc_radius_mm=0.2, calc_contrast=900.0,
                                            fibroglandular_fraction=0.3),
         "8 calcifications of 0.4 mm, under half brightness"),
    Rung("calc-2", 2, "calcification", dict(calc_count=5, calc_radius_mm=0.15, calc_contrast=600.0,
                                            fibroglandular_fraction=0.5),
         "5 faint 0.3 mm calcifications, heterogeneously dense"),
    Rung("calc-3", 3, "calcification", dict(calc_count=3, calc_radius_mm=0.12, calc_contrast=400.0,
                                            fibroglandular_fraction=0.7),
         "3 very faint 0.25 mm calcifications, dense breast"),
    Rung("calc-4", 4, "calcification", dict(calc_count=2, calc_radius_mm=0.1, calc_contrast=150.0,
                                            fibroglandular_fraction=0.85),
         "a radiologist would miss it: 2 tiny calcifications at noise level, extremely dense"),
)

CT_RUNGS: tuple[Rung, ...] = (
    Rung("ct-0", 0, "ct-lesion", dict(lesion_contrast_hu=-60.0, lesion_radius_mm=14.0),
         "obvious: 28 mm liver lesions 60 HU below the liver"),
    Rung("ct-1", 1, "ct-lesion", dict(lesion_contrast_hu=-45.0, lesion_radius_mm=11.0),
         "22 mm liver lesions, -45 HU"),
    Rung("ct-2", 2, "ct-lesion", dict(lesion_contrast_hu=-35.0, lesion_radius_mm=9.0),
         "18 mm liver lesions, -35 HU"),
    Rung("ct-3", 3, "ct-lesion", dict(lesion_contrast_hu=-25.0, lesion_radius_mm=7.0),
         "14 mm liver lesions, -25 HU (twice the noise)"),
    Rung("ct-4", 4, "ct-lesion", dict(lesion_contrast_hu=-10.0, lesion_radius_mm=5.0),
         "a radiologist would miss it: 10 mm liver lesions 10 HU below the liver, under the noise"),
)


def rungs(kind: str | None = None) -> tuple[Rung, ...]:
    """Every rung (mammography then CT), or those of one kind, obvious first."""
    every = MAMMO_RUNGS + CT_RUNGS
    return every if kind is None else tuple(r for r in every if r.kind == kind)


def rung_named(name: str) -> Rung:
    for r in MAMMO_RUNGS + CT_RUNGS:
        if r.name == name:
            return r
    raise ValueError(f"no ladder rung {name!r}; rungs are {', '.join(r.name for r in rungs())}")


# --------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------
@dataclass
class LadderView:
    """One synthetic view of a rung, with its exact truth."""

    image: np.ndarray  # (rows, cols) uint16 modality values, raw orientation (chest wall left)
    spacing: tuple[float, float]  # (row, col) mm
    laterality: str  # "R" | "L"
    view: str  # "CC" | "MLO"
    label: int  # 1 = the rung's lesion is present, 0 = normal
    masks: dict  # "breast", "mass", "calcification": uint8 0/1 on the image grid, exact
    seed: int
    rung: str


def _case(i: int, seed: int) -> tuple[int, str, str]:
    """(phantom seed, laterality, view) of case i: sides and views alternate evenly."""
    return _CASE_SEED0 + 10_000 * int(seed) + i, "RL"[i % 2], ("CC", "MLO")[(i // 2) % 2]


def mammo_cases(rung: Rung | str, n_positive: int, n_normal: int, seed: int = 0, size=MAMMO_SIZE,
                should_stop=None) -> list[LadderView]:
    """n_positive views with the rung's lesion and n_normal without, positives first.

    Normals get the rung's breast density too (a dense-breast rung has dense normals), so
    density alone never gives the answer. Positives and normals come from different breasts.
    """
    r = rung_named(rung) if isinstance(rung, str) else rung
    if r.kind not in ("mass", "calcification"):
        raise ValueError(f"rung {r.name!r} is a {r.kind} rung, not a mammography one")
    spacing = phantoms.mammo_spacing(size)
    lesion_keys = {"mass": ("mass_contrast", "mass_radius_mm", "spiculation"),
                   "calcification": ("calc_count", "calc_radius_mm", "calc_contrast")}[r.kind]
    out = []
    for i in range(int(n_positive) + int(n_normal)):
        if should_stop is not None and should_stop():
            break
        positive = i < n_positive
        case_seed, side, view = _case(i, seed)
        kw = {k: v for k, v in r.params.items() if positive or k not in lesion_keys}
        img, masks, _truth = phantoms.mammo_image_with_truth(
            side, view, size, case_seed, mass=positive and r.kind == "mass",
            calcifications=positive and r.kind == "calcification", **kw)
        out.append(LadderView(img, spacing, side, view, int(positive), masks, case_seed, r.name))
    return out


def ct_cases(rung: Rung | str, n: int, seed: int = 0, shape=CT_SHAPE, spacing=CT_SPACING):
    """n CT phantoms of a CT rung as (hu, masks, spacing); the liver lesions are the rung's (the
    generator drops a lesion that does not fit, so a rare phantom may have none)."""
    r = rung_named(rung) if isinstance(rung, str) else rung
    if r.kind != "ct-lesion":
        raise ValueError(f"rung {r.name!r} is a {r.kind} rung, not a CT one")
    for i in range(int(n)):
        hu, masks = phantoms.ct_phantom(shape, spacing, _CASE_SEED0 + 10_000 * int(seed) + i, **r.params)
        yield hu, masks, tuple(spacing)


# --------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------
def _percentile_interval(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.nanpercentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney; ties count half); nan without both classes."""
    s, y = np.asarray(scores, float), np.asarray(labels).astype(bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    return float(_pair_matrix(pos, neg).mean())


def _pair_matrix(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """1 where a positive outscores a negative, 0.5 on ties, 0 otherwise."""
    return (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])


def bootstrap_auc(scores, labels, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(AUC, lo95, hi95): positives and negatives resampled separately (each rung keeps its
    case mix), percentile interval. Exact per resample through the pair matrix, no ranking loop."""
    s, y = np.asarray(scores, float), np.asarray(labels).astype(bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        raise ValueError(f"an AUC needs positives and normals, got {len(pos)} and {len(neg)}")
    m = _pair_matrix(pos, neg)
    rng = np.random.default_rng(seed)
    cp = np.stack([np.bincount(rng.integers(0, len(pos), len(pos)), minlength=len(pos)) for _ in range(n_boot)])
    cn = np.stack([np.bincount(rng.integers(0, len(neg), len(neg)), minlength=len(neg)) for _ in range(n_boot)])
    boots = np.einsum("bi,ij,bj->b", cp, m, cn) / (len(pos) * len(neg))
    return (float(m.mean()), *_percentile_interval(boots))


def bootstrap_mean(values, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo95, hi95) of per-case values (e.g. Dice), percentile bootstrap interval."""
    v = np.asarray(values, float)
    if v.size == 0:
        raise ValueError("a mean needs at least one value")
    rng = np.random.default_rng(seed)
    boots = v[rng.integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    return (float(v.mean()), *_percentile_interval(boots))


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty (nothing to find, nothing found)."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * float((p & t).sum()) / denom


# --------------------------------------------------------------------------
# models: any installed one, by card or "NAME[:VERSION]" (the active version when none is given)
# --------------------------------------------------------------------------
CLASSIFIER_TASKS = ("exam-classifier", "patch-classifier")
_MODELS: dict = {}


def resolve(name_or_card):
    """A card from a ModelCard or "NAME[:VERSION]"; without a version, the one Analyze would use."""
    from inference import activation, registry

    if isinstance(name_or_card, registry.ModelCard):
        return name_or_card
    name, _, version = str(name_or_card).partition(":")
    if version:
        return registry.find_model(name, version)
    card, _why = activation.active_version(name, registry.available_models())
    if card is None:
        return registry.find_model(name)  # raises with the folders searched when absent
    return card


def load(model_or_card, device: str = "cpu"):
    """(model, card) from "NAME[:VERSION]", a card, or an already loaded (model, card) pair; cached,
    so scoring a rung view by view loads each model once."""
    if isinstance(model_or_card, tuple):
        return model_or_card
    card = resolve(model_or_card)
    # the weights' sha256 too: a new version written to the same path must not get the old network
    key = (card.name, str(card.version), str(card.path), str(card.sha256), str(device))
    if key not in _MODELS:
        from inference import registry

        _MODELS[key] = registry.load_model(card, device=device)
    return _MODELS[key]


def load_classifier(model_or_card, device: str = "cpu"):
    """(model, card) of a Lightbox mammography classifier; a clear error for anything else."""
    model, card = load(model_or_card, device)
    if card.task not in CLASSIFIER_TASKS or card.modality.upper() != "MG":
        raise ValueError(f"{card.name} {card.version} is a {card.modality} {card.task}, "
                         f"not a mammography classifier ({' / '.join(CLASSIFIER_TASKS)})")
    if card.imported:
        raise ValueError(f"{card.name} {card.version} is an imported model; the ladder scores Lightbox's "
                         "own mammography classifiers (their card says how a view is prepared)")
    return model, card


def view_score(card_or_name, image, spacing, laterality, view, device: str = "cpu") -> float:
    """Suspicion score of one raw view by any installed mammography classifier.

    card_or_name: "NAME[:VERSION]", a ModelCard, or a (model, card) pair (e.g. fresh from fine-tuning).
    Exam classifiers give their view probability. A patch classifier has no view output, so its
    score is the highest lesion probability (every class but background and normal) over patch
    centres inside the breast: a view is as suspicious as its most suspicious patch.
    """
    from inference import classify

    model, card = load_classifier(card_or_name, device)
    if card.task == "exam-classifier":
        return float(classify.view_probability(model, _prepare(card, image, spacing, laterality, view).image,
                                               device=device))
    return lesion_map((model, card), image, spacing, laterality, view, device).view_score()


def _prepare(card, image, spacing, laterality, view):
    from inference.preprocess.mammo import prepare

    inp = card.input or {}
    return prepare(image, spacing, laterality, view, target_spacing=float(inp.get("spacing_mm", 0.42)),
                   margin=int(inp.get("crop_margin_px", 26)), normalization=card.normalization or None)


@dataclass
class LesionMap:
    """A patch classifier's lesion probability at every patch centre of one view, with where the
    centres lie: the view score and a window's score (a lesion's own patches) both come from it."""

    prob: np.ndarray  # (H', W') summed probability of the lesion classes
    inside: np.ndarray  # bool (H', W'): the centre lies inside the breast
    rows: np.ndarray  # (H',) centre row on the model grid
    cols: np.ndarray  # (W',)
    prepared: object  # preprocess.mammo.PreparedMammo

    def view_score(self) -> float:
        return float(self.prob[self.inside].max()) if self.inside.any() else float(self.prob.max())

    def lesion_window(self, mask: np.ndarray) -> tuple[int, int, int, int] | None:
        """(r0, r1, c0, c1) heatmap cells whose patch centre lies on the lesion of ``mask`` (raw image
        grid, nonzero = lesion) or within half a stride of its bounding box; None if the mask is empty."""
        from inference.preprocess.mammo import to_model

        on_model = to_model(np.asarray(mask, np.float32), self.prepared.geometry) > 0
        if not on_model.any():
            return None
        rr, cc = np.nonzero(on_model)
        half = (self.rows[1] - self.rows[0]) / 2.0 if len(self.rows) > 1 else 0.0

        def span(centres, lo, hi):
            near = np.flatnonzero((centres >= lo - half) & (centres <= hi + half))
            if not len(near):  # a lesion between two centres: the nearest one
                near = np.array([int(np.argmin(np.abs(centres - (lo + hi) / 2.0)))])
            return int(near[0]), int(near[-1]) + 1

        return (*span(self.rows, rr.min(), rr.max()), *span(self.cols, cc.min(), cc.max()))

    def window_score(self, window: tuple[int, int, int, int]) -> float:
        r0, r1, c0, c1 = window
        return float(self.prob[r0:r1, c0:c1].max())

    def random_window(self, like: tuple[int, int, int, int], rng) -> tuple[int, int, int, int]:
        """A window the size of ``like`` centred on a random in-breast patch centre: the normal view's
        counterpart of a lesion window."""
        h, w = like[1] - like[0], like[3] - like[2]
        cells = np.argwhere(self.inside) if self.inside.any() else np.argwhere(np.ones_like(self.inside))
        r, c = cells[int(rng.integers(len(cells)))]
        r0 = int(np.clip(r - h // 2, 0, max(0, self.prob.shape[0] - h)))
        c0 = int(np.clip(c - w // 2, 0, max(0, self.prob.shape[1] - w)))
        return r0, r0 + h, c0, c0 + w


def lesion_map(card_or_name, image, spacing, laterality, view, device: str = "cpu") -> LesionMap:
    """The :class:`LesionMap` of one raw view by a mammography patch classifier (dense heatmap)."""
    from inference import heatmap as hm

    model, card = load_classifier(card_or_name, device)
    if card.task != "patch-classifier":
        raise ValueError(f"{card.name} {card.version} is a {card.task}: only a patch classifier has a lesion map")
    prepared = _prepare(card, image, spacing, laterality, view)
    probs = hm.dense_heatmap(model, prepared.image, device=device)
    lesion = [i for i, c in enumerate(card.classes) if str(c).lower() not in ("background", "normal")]
    if not lesion:
        raise ValueError(f"{card.name} {card.version} has no lesion class among {card.classes}")
    p = probs[lesion].sum(axis=0)
    origin, step = hm.centers(model.patch_size, model.stride)
    rows = origin + step * np.arange(p.shape[0])
    cols = origin + step * np.arange(p.shape[1])
    ri = np.clip(np.rint(rows).astype(int), 0, prepared.breast.shape[0] - 1)
    ci = np.clip(np.rint(cols).astype(int), 0, prepared.breast.shape[1] - 1)
    return LesionMap(p, prepared.breast[np.ix_(ri, ci)], rows, cols, prepared)


# --------------------------------------------------------------------------
# one model on one rung
# --------------------------------------------------------------------------
@dataclass
class RungScore:
    """A model's number on a rung, with its 95 % interval; value None (and a note) when not scorable."""

    rung: str
    description: str
    model: str  # "name version"
    metric: str  # "view AUC" | "mass Dice" | "liver-lesion Dice" ...
    value: float | None
    lo: float | None
    hi: float | None
    n_cases: int
    note: str = ""

    def to_dict(self) -> dict:
        return {"rung": self.rung, "description": self.description, "model": self.model, "metric": self.metric,
                "value": _round(self.value), "ci95": [_round(self.lo), _round(self.hi)],
                "n_cases": self.n_cases, "note": self.note}


def _round(x):
    return None if x is None else round(float(x), 4)


def _class_index(card, kind: str) -> int | None:
    """Index of the card's class for a rung kind ("mass", "calcification", "ct-lesion")."""
    wanted = {"mass": ("mass",), "calcification": ("calcification", "calcifications", "calc"),
              "ct-lesion": ("lesions", "lesion", "tumor", "tumour")}[kind]
    names = [str(c).lower() for c in card.classes]
    return next((names.index(w) for w in wanted if w in names), None)


def applies(card, r: Rung) -> bool:
    """Whether the ladder has a number for this model on this rung's modality at all."""
    if card.imported:
        return False
    if r.kind == "ct-lesion":
        return card.task == "segmentation-3d" and card.modality.upper() == "CT"
    return card.modality.upper() == "MG" and card.task in CLASSIFIER_TASKS + ("segmentation-2d",)


def score_rung(model_or_card, r: Rung | str, n: int, seed: int = 0, device: str = "cpu", n_boot: int = 1000,
               cases: list | None = None, should_stop=None) -> RungScore:
    """Score a model on a rung: view AUC (n lesion views vs n normals) for a classifier, Dice of the
    rung's lesion class on the n lesion views for a 2D segmenter, liver-lesion Dice on n CT phantoms
    for a 3D segmenter. `cases` reuses mammo_cases(r, n, n, seed) made for another model."""
    r = rung_named(r) if isinstance(r, str) else r
    model, card = load(model_or_card, device)
    who = f"{card.name} {card.version}"
    if not applies(card, r):
        raise ValueError(f"{who} ({card.modality} {card.task}) has no score on rung {r.name} ({r.kind})")
    if card.task in CLASSIFIER_TASKS:
        cases = cases if cases is not None else mammo_cases(r, n, n, seed, should_stop=should_stop)
        scores = [view_score((model, card), c.image, c.spacing, c.laterality, c.view, device) for c in cases]
        value, lo, hi = bootstrap_auc(scores, [c.label for c in cases], n_boot, seed)
        return RungScore(r.name, r.description, who, "view AUC", value, lo, hi, len(cases))
    idx = _class_index(card, r.kind)
    label = {"mass": "mass Dice", "calcification": "calcification Dice", "ct-lesion": "liver-lesion Dice"}[r.kind]
    if idx is None:
        return RungScore(r.name, r.description, who, label, None, None, None, 0,
                         f"no {r.kind} class among {list(card.classes)}")
    if r.kind == "ct-lesion":
        values = _ct_dice(model, card, idx, r, n, seed, device)
    else:
        from inference import segment

        cases = cases if cases is not None else mammo_cases(r, n, 0, seed, should_stop=should_stop)
        values = []
        for c in (c for c in cases if c.label == 1):
            labels, _p = segment.segment_image(model, card, c.image, c.spacing, c.laterality, c.view, device)
            values.append(dice(labels == idx, c.masks[r.kind]))
    value, lo, hi = bootstrap_mean(values, n_boot, seed)
    return RungScore(r.name, r.description, who, label, value, lo, hi, len(values))


def _ct_dice(model, card, idx: int, r: Rung, n: int, seed: int, device: str) -> list[float]:
    """Lesion Dice inside the liver (the rung grades the liver lesions; the lung nodules stay easy)."""
    from inference import segment

    values = []
    for hu, masks, spacing in ct_cases(r, n, seed):
        labels, _p = segment.segment_volume(model, card, hu, spacing, device=device, probabilities="none")
        liver = masks["liver"].astype(bool)
        truth = masks["lesions"].astype(bool) & liver
        if truth.any():  # a lesion that did not fit the liver is dropped; nothing found then scores nothing
            values.append(dice((labels == idx) & liver, truth))
    return values
