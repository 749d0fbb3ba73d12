"""`lightbox models import PATH` and `lightbox models list`: bringing models made elsewhere.

An import shows what the artefact says (format, task, modality, classes, spacing), what the user
must still fill in, and every piece of code that running it would execute; that code is accepted
with --yes or at a prompt, never silently.
"""
from __future__ import annotations

import json
import sys

CARD_FIELDS = ("name", "version", "task", "modality", "classes", "source", "licence")


def _say(msg: str = "") -> None:
    print(msg, file=sys.stderr)


def _overrides(args) -> dict:
    """Card fields given on the command line (--name, --modality, ..., --set KEY=JSON)."""
    out: dict = {}
    for key in ("name", "version", "task", "modality", "source", "licence"):
        value = getattr(args, key, None)
        if value:
            out[key] = value.upper() if key == "modality" else value
    if args.classes:
        out["classes"] = [c.strip() for c in args.classes.split(",") if c.strip()]
    if args.spacing:
        try:
            spacing = [float(v) for v in args.spacing.split(",")]
        except ValueError as exc:
            raise ValueError(f"--spacing {args.spacing!r}: expected Z,Y,X in mm, e.g. 3,1.5,1.5") from exc
        out["input"] = {"spacing_mm": spacing}
    for item in args.set or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE (VALUE as JSON, e.g. input.patch_size=[32,64,64])")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = out
        *path, last = key.strip().split(".")
        for part in path:
            target = target.setdefault(part, {})
        target[last] = value
    return out


def _merge(card: dict, overrides: dict) -> dict:
    merged = dict(card)
    for key, value in overrides.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged


def show_plan(plan) -> None:
    card = plan.card
    _say(f"{plan.source}: {plan.format}")
    for key in CARD_FIELDS:
        value = card.get(key)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        _say(f"  {key:9s} {value if value not in (None, '') else '-'}")
    inp = card.get("input") or {}
    if inp:
        _say(f"  input     {json.dumps(inp)}")
    if card.get("normalization"):
        _say(f"  normal.   {json.dumps(card['normalization'])[:200]}")
    for note in plan.notes:
        _say(f"  note: {note}")
    if plan.needs:
        _say(f"  still needed: {', '.join(plan.needs)}")
    if plan.runs_code:
        _say("  running this model executes code from its files:")
        for line in plan.runs_code:
            _say(f"    {line}")


def _confirm(plan, yes: bool) -> bool:
    if not plan.runs_code or yes:
        return True
    if sys.stdin.isatty():
        answer = input("Import it and allow this code to run whenever the model is used? [y/N] ")
        return answer.strip().lower() in ("y", "yes")
    return False


def cmd_import(args) -> int:
    from inference import formats

    from .cli import _fail

    try:
        plan = formats.inspect(args.path, format=args.format)
    except formats.NotImportable as exc:
        return _fail(str(exc))
    try:
        overrides = _overrides(args)
    except ValueError as exc:
        return _fail(str(exc))
    plan.card = _merge(plan.card, overrides)
    show_plan(plan)
    missing = [k for k in plan.needs if not formats.filled(plan.card, k)]
    if missing:
        return _fail(f"{args.path}: fill in {', '.join(missing)} (e.g. " + " ".join(_hint(k) for k in missing) + ")")
    if not _confirm(plan, args.yes):
        return _fail(f"{args.path}: not imported: the model runs code from its files; read it above and rerun "
                     "with --yes to accept it")
    try:
        card = formats.install(plan, confirmed=True, dest=args.dest)
    except formats.NotImportable as exc:
        return _fail(str(exc))
    _say(f"imported {card.name} {card.version} ({card.architecture}, {card.task}, {card.modality}) to {card.path}")
    print(json.dumps(card.to_dict(), indent=2) if args.json else f"{card.name}:{card.version}")
    return 0


def _hint(key: str) -> str:
    return {"modality": "--modality CT", "task": "--task segmentation-3d", "classes": "--classes background,liver",
            "input.spacing_mm": "--spacing 3,1.5,1.5", "spacing_mm": "--spacing 3,1.5,1.5",
            "normalization": "--set 'normalization={\"kind\":\"zscore\"}'"}.get(key, f"--set {key}=...")


def model_rows() -> tuple[list[dict], list[str]]:
    """Every installed model with its card, trust and whether Analyze uses it; broken cards as problems."""
    from inference.registry import ModelError, available_models, check_model

    from .analysis.run import candidates

    problems: list[str] = []
    cards = available_models(problems=problems)
    active: dict[tuple, tuple] = {}
    for task, modality in {(c.task, c.modality.upper()) for c in cards}:
        first = next(iter(candidates(task, modality)), None)
        if first is not None:
            active[(task, modality)] = (first.name, first.version, str(first.path))
    rows = []
    for card in cards:
        try:
            trust = check_model(card)
        except ModelError as exc:
            trust = f"broken: {exc}"
        row = card.to_dict()
        row.update({"folder": str(card.path), "format": card.architecture if card.imported else "lightbox",
                    "trust": trust, "active": active.get((card.task, card.modality.upper())) == (
                        card.name, card.version, str(card.path))})
        activation = (card.extra or {}).get("activation")
        if activation:
            row["activation"] = activation
        rows.append(row)
    return rows, problems


def cmd_list(args) -> int:
    rows, problems = model_rows()
    if args.json:
        print(json.dumps({"models": rows, "problems": problems}, indent=2))
        return 0
    for r in rows:
        mark = "*" if r["active"] else " "
        classes = ", ".join(r.get("classes") or [])
        print(f"{mark} {r['name']}:{r['version']}  {r['format']}  {r['task']}  {r['modality']}  [{classes}]  "
              f"{r['trust'] if not r['trust'].startswith('broken') else 'BROKEN'}")
    for p in problems:
        print(f"  problem: {p}")
    _say("* = the version Analyze uses for its task and modality")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="import models (MONAI bundle, nnU-Net v2 folder, ONNX, TorchScript) and list them")
    msub = p.add_subparsers(dest="models_command", required=True)
    q = msub.add_parser("import", help="import a MONAI bundle (folder or .zip), an nnU-Net v2 trained model folder, "
                                       "an ONNX file or a TorchScript / torch.export file")
    q.add_argument("path")
    q.add_argument("--yes", action="store_true", help="accept the code the model's files run (listed first)")
    q.add_argument("--format", default=None, choices=("nnunet-v2", "monai-bundle", "onnx", "torchscript", "torch-export"),
                   help="skip detection")
    for key, what in (("name", "model name"), ("version", "version"), ("task", "segmentation-3d, segmentation-2d, ..."),
                      ("modality", "CT, MR or MG"), ("source", "where it comes from"), ("licence", "its licence")):
        q.add_argument(f"--{key}", default=None, help=what)
    q.add_argument("--classes", default=None, help="comma-separated class names, background first")
    q.add_argument("--spacing", default=None, help="input spacing Z,Y,X in mm")
    q.add_argument("--set", action="append", metavar="KEY=JSON", help="any other card field, e.g. "
                   "normalization='{\"kind\":\"zscore\"}' or input.patch_size=[32,64,64] (repeatable)")
    q.add_argument("--dest", default=None, help="model folder (default: the user's model folder)")
    q.add_argument("--json", action="store_true", help="print the written card")
    q.set_defaults(func=cmd_import)
    q = msub.add_parser("list", help="every installed model and its card; * marks the one Analyze uses")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)
