"""Score installed models on the phantom difficulty ladder (inference.ladder), rung by rung.

    python benchmarks/bench_ladder.py [--model NAME[:VERSION]]... [--n 12] [--ct-n 4] [--seed 0]
                                      [--rungs mass-0,calc-4,...] [--device cpu] [--json OUT]

On the default phantoms every shipped model scores 1.000, so they cannot rank methods; the ladder
renders the same phantoms from "obvious" to "a radiologist would miss it" (docs/ladder.md).
Per rung: mammography classifiers (exam and patch) get the view AUC over --n lesion views and
--n normals; 2D lesion segmenters the Dice of the rung's lesion class on the lesion views (a model
without that class says so); 3D CT segmenters with a lesion class the liver-lesion Dice on --ct-n
phantoms. Every number has a 95 % bootstrap interval. No --model: the active version of every
installed Lightbox mammography classifier / segmenter and CT segmenter.
Cases are generated once per rung and shared by the models, so models are compared on the same views.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def default_models() -> list:
    """The active version of every installed model the ladder can score."""
    from inference import activation, ladder, registry

    cards = registry.available_models()
    out = []
    for name in dict.fromkeys(c.name for c in cards):
        card, _why = activation.active_version(name, cards)
        if card is not None and any(ladder.applies(card, r) for r in ladder.rungs()):
            out.append(card)
    return out


def pick_rungs(spec: str | None) -> list:
    from inference import ladder

    if not spec:
        return list(ladder.rungs())
    return [ladder.rung_named(name.strip()) for name in spec.split(",") if name.strip()]


def fmt_value(s) -> str:
    if s.value is None:
        return f"n/a ({s.note})"
    return f"{s.value:.3f} [{s.lo:.3f}, {s.hi:.3f}]"


def table(scores: list) -> str:
    """rung | description | metric | value [lo, hi], one block per model."""
    lines = []
    for model in dict.fromkeys(s.model for s in scores):
        mine = [s for s in scores if s.model == model]
        width = max(len(s.description) for s in mine)
        lines += ["", f"{model}", f"{'rung':<7} | {'description':<{width}} | {'metric':<18} | value [95 % CI]  (n)"]
        lines.append("-" * len(lines[-1]))
        for s in mine:
            lines.append(f"{s.rung:<7} | {s.description:<{width}} | {s.metric:<18} | {fmt_value(s)}  ({s.n_cases})")
    return "\n".join(lines)


def run(models: list, rungs: list, n: int, ct_n: int, seed: int, device: str, n_boot: int, log) -> list:
    """Every (model, rung) pair the ladder has a number for; cases made once per rung."""
    from inference import ladder

    loaded = [ladder.load(m, device) for m in models]
    scores = []
    for r in rungs:
        users = [(model, card) for model, card in loaded if ladder.applies(card, r)]
        if not users:
            continue
        t0 = time.perf_counter()
        cases = ladder.mammo_cases(r, n, n, seed) if r.kind != "ct-lesion" else None
        for model, card in users:
            s = ladder.score_rung((model, card), r, ct_n if r.kind == "ct-lesion" else n, seed, device,
                                  n_boot, cases=cases)
            scores.append(s)
        log(f"{r.name}: {', '.join(f'{s.model} {fmt_value(s)}' for s in scores[-len(users):])} "
            f"({time.perf_counter() - t0:.0f} s)")
    return scores


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[], metavar="NAME[:VERSION]",
                    help="model to score (repeatable); default: every installed model the ladder can score")
    ap.add_argument("--n", type=int, default=12, help="mammography views per class per rung (default 12)")
    ap.add_argument("--ct-n", type=int, default=4, help="CT phantoms per CT rung (default 4; ~10 s each on CPU)")
    ap.add_argument("--seed", type=int, default=0, help="case seed (rungs share cases) and bootstrap seed")
    ap.add_argument("--rungs", help="comma-separated rung names (default: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the numbers as JSON")
    args = ap.parse_args(argv)

    import torch

    from inference import ladder, registry

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.n < 1 or args.ct_n < 1:
        print("--n and --ct-n must be at least 1", file=sys.stderr)
        return 2
    try:
        rungs = pick_rungs(args.rungs)
        models = [ladder.resolve(m) for m in args.model] or default_models()
        for card in models:
            if not any(ladder.applies(card, r) for r in rungs):
                raise ValueError(f"{card.name} {card.version} ({card.modality} {card.task}) has no score on "
                                 f"the chosen rungs")
    except (ValueError, registry.ModelError) as exc:
        print(f"bench_ladder: {exc}", file=sys.stderr)
        return 2
    if not models:
        print("bench_ladder: no installed model the ladder can score", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    scores = run(models, rungs, args.n, args.ct_n, args.seed, args.device, args.n_boot,
                 lambda msg: print(msg, file=sys.stderr, flush=True))
    elapsed = time.perf_counter() - t0
    print(table(scores))
    command = "python benchmarks/bench_ladder.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\n{len(scores)} scores in {elapsed:.0f} s; {command.strip()}")
    if args.json:
        doc = {"command": command.strip(), "n": args.n, "ct_n": args.ct_n, "seed": args.seed,
               "n_boot": args.n_boot, "elapsed_s": round(elapsed, 1),
               "rungs": {r.name: {"kind": r.kind, "level": r.level, "params": r.params,
                                  "description": r.description} for r in rungs},
               "scores": [s.to_dict() for s in scores]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
