"""Describe what the demo models were trained on, and write it into their cards' "domain".

    python -m inference.domain_fit            # recompute the 4 shipped descriptions, rewrite the cards
    python -m inference.domain_fit --check    # recompute, compare with the cards, exit 1 when stale
    python -m inference.domain_fit --only mammo-exam

Each description comes from the model's own training phantoms (same generators and seeds as
inference.train_seg / inference.train_mammo), run through the same inference path Analyze uses,
so the features are the ones ``inference.domain.watch`` sees on a real analysis:

- ct-organs-unet3d: all 24 training volumes (seeds 0-23, the 4 scanner geometries), segment_volume;
- mammo-lesion-unet2d: every third of its 120 training views (40 views, both sides, CC and MLO,
  the 3 detector sizes), segment_image;
- mammo-patch / mammo-exam: all 48 training exams x 4 views (seeds 1000-1047, 1109x853 px),
  prepared as analyze_view prepares them; dense_heatmap and the exam network's forward pass.

Only the "domain" key of each card is rewritten (same key order, same formatting); the weights,
their sha256 and inference/shipped_models.json stay as they are. Fine-tuning calls
``describe_embedding`` with the NEW network on its own training cases for a new version, plus
``DEMO_SUBSET`` (a few of the demo training cases) when the parent was described from them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from inference import domain as dom
from inference import registry

AXES, MARGIN = 16, 3.0


def _runner(card, module: nn.Module, case, device) -> Callable[[], object]:
    """One training case -> a call that runs the model on it the way Analyze does."""
    if callable(case):
        return case
    if card.task == "segmentation-3d":
        from inference.segment import segment_volume

        image, spacing = case[:2]
        return lambda: segment_volume(module, card, image, spacing, device=device, probabilities="none")
    image, spacing, laterality, view = case
    if card.task == "segmentation-2d":
        from inference.segment import segment_image

        return lambda: segment_image(module, card, image, spacing, laterality, view, device=device)
    if card.task in ("patch-classifier", "exam-classifier"):
        from inference import heatmap as hm
        from inference.classify import view_probability
        from inference.preprocess.mammo import prepare

        def run():
            inp = card.input or {}
            prep = prepare(image, spacing, laterality, view, target_spacing=float(inp.get("spacing_mm", 0.42)),
                           margin=int(inp.get("crop_margin_px", 26)), normalization=card.normalization or None)
            if card.task == "patch-classifier":
                return hm.dense_heatmap(module, prep.image, device=device)
            return view_probability(module, prep.image, device=device)
        return run
    raise dom.DomainError(f"model {card.name!r}: no standard runner for task {card.task!r}; "
                          "pass each case as a callable that runs the model")


def collect(card, module: nn.Module, samples: Iterable, device="cpu", log=None) -> list[np.ndarray]:
    """Pooled embedding samples of each training case, one (n_i, D) array per case."""
    layer = dom.embedding_layer(card, module)
    module = module.to(device).eval()
    out = []
    for i, case in enumerate(samples):
        w = dom.FeatureWatch(card, module, layer)
        with w:
            _runner(card, module, case, device)()
        if w.problem:
            raise dom.DomainError(w.problem)
        out.append(w.samples)
        if log and (i + 1) % 10 == 0:
            log(f"  {card.name}: {i + 1} cases")
    return out


def describe_embedding(card, module: nn.Module, samples: Iterable, *, axes: int = AXES, margin: float = MARGIN,
                       note: str = "", device="cpu") -> dict:
    """The "embedding" description of `module` (the card's network) from its training cases.

    samples: an iterable (a generator is fine) of training cases, each
      - (hu (z, y, x), spacing_mm (z, y, x)) for a "segmentation-3d" card (run with segment_volume);
      - (pixels (rows, cols), spacing_mm (row, col), "R"|"L", "CC"|"MLO") for an MG card
        ("segmentation-2d": segment_image; "patch-classifier": prepare + dense_heatmap;
        "exam-classifier": prepare + the network's forward pass), raw as loaded (not prepared);
      - or a zero-argument callable that runs `module` once on one case (any other task).
    At least 3 cases; the card's domain["layer"] (if any) picks the layer. Returns a dict for
    card.domain (save it with registry.save_card).
    """
    images = collect(card, module, samples, device)
    return dom.fit_embedding(images, layer=dom.embedding_layer_name(card, module), axes=axes, margin=margin,
                             note=note)


# --------------------------------------------------------------------------
# the demo models' training cases
# --------------------------------------------------------------------------
def ct_cases():
    from inference import phantoms
    from inference.train_seg import CT_GEOMETRIES

    for i in range(24):  # train_ct: seeds seed*10000 + i, geometry i % 4 (seed 0)
        shape, spacing = CT_GEOMETRIES[i % len(CT_GEOMETRIES)]
        hu, _ = phantoms.ct_phantom(shape=shape, spacing=spacing, seed=i)
        yield hu, spacing


def mammo_seg_cases(step: int = 3):
    from inference import phantoms
    from inference.train_seg import MG_SIZES

    for i in range(0, 120, step):  # train_mammo (train_seg): seed i // 4, the same size/side/view/findings
        lat, view = ("R", "L")[i % 2], ("CC", "MLO")[(i // 2) % 2]
        size = MG_SIZES[(i // 4) % len(MG_SIZES)]
        img, _ = phantoms.mammo_image(lat, view, size=size, seed=i // 4, mass=(i % 5) != 4, calcifications=(i % 3) == 0)
        yield img, phantoms.mammo_spacing(size), lat, view


def mammo_cls_cases(exams: int = 48):
    from inference import phantoms
    from inference.train_mammo import SOURCE_SIZE, TRAIN_SEED0, lesion_plan

    spacing = phantoms.mammo_spacing(SOURCE_SIZE)
    for seed in range(TRAIN_SEED0, TRAIN_SEED0 + exams):
        plan = lesion_plan(seed)
        for name in phantoms.MG_VIEWS:
            mass, calcs = plan[name[0]]
            img, _ = phantoms.mammo_image(name[0], name[1:], SOURCE_SIZE, seed, mass=mass, calcifications=calcs)
            yield img, spacing, name[0], name[1:]


DEMO = {
    "ct-organs-unet3d": (ct_cases, "24 training phantoms (seeds 0-23, 4 scanner geometries), segment_volume tiles"),
    "mammo-lesion-unet2d": (mammo_seg_cases, "40 of the 120 training views (every third), segment_image tiles"),
    "mammo-patch": (mammo_cls_cases, "48 training exams x 4 views (seeds 1000-1047), one dense pass per view"),
    "mammo-exam": (mammo_cls_cases, "48 training exams x 4 views (seeds 1000-1047), one forward pass per view"),
}


# --------------------------------------------------------------------------
# what a fine-tuned version keeps of the demo training domain
# --------------------------------------------------------------------------
def ct_subset():
    """4 of the 24 CT training phantoms: seeds 1 and 5 (60 x 128 x 128 at 5 x 2.8 x 2.8 mm) and 2 and 6
    (96 x 192 x 192 at 3 x 1.8 x 1.8 mm), about 25 s on 2 cores. The 2 geometries whose phantoms are
    quickest to make and segment; fitted with the shipped network, these 4 alone keep held-out
    phantoms of all 4 geometries at scores <= 1.5 against a threshold of 3.3 (seeds 1 and 5 alone
    left a 3 mm phantom at the threshold)."""
    from inference import phantoms
    from inference.train_seg import CT_GEOMETRIES

    for i in (1, 2, 5, 6):  # train_ct: seed i, geometry i % 4
        shape, spacing = CT_GEOMETRIES[i % len(CT_GEOMETRIES)]
        hu, _ = phantoms.ct_phantom(shape=shape, spacing=spacing, seed=i)
        yield hu, spacing


# model -> (a few of its demo training cases, what they are): added to a fine-tuned version's own
# cases when its parent's description was made from the demo phantoms, so that the domain the
# version was first trained on still counts as in domain
DEMO_SUBSET = {
    "ct-organs-unet3d": (ct_subset, "4 of the 24 CT training phantoms (seeds 1, 2, 5, 6; 2 scanner geometries)"),
    "mammo-lesion-unet2d": (lambda: mammo_seg_cases(step=11),  # step 11: all 3 sizes, both sides and views
                            "11 of the 120 mammography training views (every eleventh)"),
    "mammo-patch": (lambda: mammo_cls_cases(exams=3), "3 training exams x 4 views (seeds 1000-1002)"),
    "mammo-exam": (lambda: mammo_cls_cases(exams=3), "3 training exams x 4 views (seeds 1000-1002)"),
}


def from_demo_phantoms(desc: dict | None, name: str) -> bool:
    """`desc` (a card's domain) was fitted on demo training phantoms of model `name`: the shipped
    description itself, or a fine-tuned version's that added DEMO_SUBSET (fit["demo_cases"])."""
    fit = (desc or {}).get("fit") or {}
    if (desc or {}).get("kind") != "embedding" or name not in DEMO:
        return False
    return fit.get("note") == DEMO[name][1] or bool(fit.get("demo_cases"))


def write_domain(json_path: Path, desc: dict) -> None:
    """Rewrite only the card's "domain" key (placed before "extra", as ModelCard orders it)."""
    data = json.loads(json_path.read_text(encoding="utf-8"))
    out = {}
    for k, v in data.items():
        if k == "extra" and "domain" not in data:
            out["domain"] = desc
        if k != "domain":
            out[k] = v
        else:
            out["domain"] = desc
    out.setdefault("domain", desc)
    registry._atomic_write(json_path, (json.dumps(out, indent=2, allow_nan=False) + "\n").encode())


def _same(old: dict, new: dict, tol: float = 0.05) -> bool:
    """Stored and recomputed descriptions agree (same layer and width, threshold within tol)."""
    try:
        return (old.get("layer") == new.get("layer") and old["mean"]["shape"] == new["mean"]["shape"]
                and abs(float(old["threshold"]) - float(new["threshold"])) <= tol * float(new["threshold"]))
    except (KeyError, TypeError):
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inference.domain_fit", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="recompute and compare; exit 1 when a card is stale")
    ap.add_argument("--only", choices=sorted(DEMO), action="append")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--features", type=Path, default=None,
                    help="folder to keep the collected training features in (reused when present: refits in seconds)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    stale = 0
    for name in args.only or sorted(DEMO):
        json_path = registry.shipped_models_dir() / f"{name}.json"
        module, card = registry.load_model(json_path, device="cpu")
        cases, note = DEMO[name]
        log(f"{name}: {note}")
        cache = args.features / f"{name}-{card.sha256[:12]}.npz" if args.features else None
        if cache is not None and cache.is_file():
            with np.load(cache) as z:
                images = [z[k] for k in sorted(z.files, key=int)]
        else:
            images = collect(card, module, cases(), log=log)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cache, **{str(i): f for i, f in enumerate(images)})
        desc = dom.fit_embedding(images, layer=dom.embedding_layer_name(card, module), axes=AXES, margin=MARGIN,
                                 note=note)
        log(f"{name}: threshold {desc['threshold']} ({desc['fit']})")
        if args.check:
            if not _same(card.domain or {}, desc):
                stale += 1
                print(f"{json_path}: domain description is missing or stale; run python -m inference.domain_fit",
                      file=sys.stderr)
        else:
            write_domain(json_path, desc)
            log(f"wrote {json_path}")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
