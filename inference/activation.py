"""Which version of a model Analyze uses: one rule, shared by Analyze, the CLI and AI ▸ Models….

A fine-tuned version records in its card how it compared with its parent on the same validation
cases (``card.extra["activation"]``, written by ``inference.finetune``):

* "better": its validation score is not worse than its parent's; it may be used automatically;
* "not better": kept for the record, never used unless the user pins it;
* "unvalidated": trained without validation (explicitly allowed); never used unless pinned.

A version without that record (a shipped model, an import) has no validation history and is
eligible. The rule for a model name: the version the user pinned in AI ▸ Models… if it is
installed, else the newest eligible version. Pins live in the user model folder
(``state/active.json``, written atomically), so they survive restarts and every process agrees.
The file is in a sub-folder because every ``*.json`` beside the weights is read as a model card.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, MutableMapping
from pathlib import Path

log = logging.getLogger(__name__)

def _registry():
    """inference.registry, imported when first needed: it imports torch, and Analyze's module imports
    this one just to hold the pins."""
    from inference import registry

    return registry


BETTER, NOT_BETTER, UNVALIDATED = "better", "not better", "unvalidated"
PINNED, BETTER_ON_VALIDATION, NEWEST = "pinned", "better on validation", "newest"
ACTIVE_FILE = Path("state") / "active.json"


# --------------------------------------------------------------------------
# scores: one number per validation, the same definition for the parent and the new version
# --------------------------------------------------------------------------
def dice_scores(before: dict, after: dict) -> tuple[float, float]:
    """(parent, new) mean foreground Dice over the classes either one scored on the validation cases.
    A class missing from one side was neither predicted nor present there: a perfect 1.0 (so a model
    that stops predicting a class absent from the data gains, and one that starts predicting it loses).
    No class scored by either: both 1.0 (nothing to find, nothing found)."""
    names = sorted(set(before) | set(after))
    if not names:
        return 1.0, 1.0
    return (float(sum(before.get(k, 1.0) for k in names) / len(names)),
            float(sum(after.get(k, 1.0) for k in names) / len(names)))


def classifier_scores(auc_before: dict, auc_after: dict, acc_before, acc_after) -> tuple[str, float | None,
                                                                                          float | None]:
    """(metric, parent, new): the AUC when the validation views hold both classes, else the accuracy."""
    shared = sorted(set(auc_before) & set(auc_after))
    if shared:
        k = shared[0]
        return f"AUC {k}", float(auc_before[k]), float(auc_after[k])
    if acc_before is None or acc_after is None:
        return "accuracy", None, None
    return "accuracy", float(acc_before), float(acc_after)


def record(metric: str, parent_score: float | None, score: float | None, validation_cases: int,
           parent: str) -> dict:
    """The card's ``extra["activation"]``: the verdict and both numbers it rests on."""
    if not validation_cases or score is None or parent_score is None:
        status = UNVALIDATED
    else:
        status = BETTER if score >= parent_score else NOT_BETTER
    return {"status": status, "score": score, "parent_score": parent_score, "metric": metric,
            "validation_cases": int(validation_cases), "parent": parent}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def activation_of(card) -> dict | None:
    """The card's activation record; for a version fine-tuned before records existed, one worked out
    from its metrics (empty validation: unvalidated). None: no validation history (shipped, imported)."""
    extra = card.extra or {}
    rec = extra.get("activation")
    if isinstance(rec, dict) and rec.get("status") in (BETTER, NOT_BETTER, UNVALIDATED):
        return rec
    if not extra.get("parent"):
        return None
    m = card.metrics or {}
    if "val_dice" in m:
        n = int(m.get("n_val_cases", 1))
        before, after = m.get("val_dice_before") or {}, m.get("val_dice") or {}
        if not before and not after:
            return record("mean Dice", None, None, 0, extra["parent"])
        old, new = dice_scores(before, after)
        return record("mean Dice", old, new, n, extra["parent"])
    if "val_auc" in m or "val_accuracy" in m:
        metric, old, new = classifier_scores(m.get("val_auc_before") or {}, m.get("val_auc") or {},
                                             m.get("val_accuracy_before"), m.get("val_accuracy"))
        return record(metric, old, new, int(m.get("n_val_views", 0)) if _finite(new) else 0, extra["parent"])
    return record("", None, None, 0, extra["parent"])


def status_of(card) -> str | None:
    """"better", "not better", "unvalidated", or None for a version without validation history."""
    rec = activation_of(card)
    return rec["status"] if rec else None


def eligible(card) -> bool:
    """Whether the rule may choose this version without a pin."""
    return status_of(card) not in (NOT_BETTER, UNVALIDATED)


# --------------------------------------------------------------------------
# pins: the user's explicit choice, persisted
# --------------------------------------------------------------------------
def active_path() -> Path:
    return _registry().user_models_dir() / ACTIVE_FILE


def pins() -> dict[str, str]:
    """{model name: pinned version}; an unreadable file is logged and treated as no pins."""
    path = active_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("%s: cannot read the pinned model versions (%s); using the rule for every model", path, exc)
        return {}
    pinned = data.get("pinned") if isinstance(data, dict) else None
    if not isinstance(pinned, dict):
        log.warning("%s: no \"pinned\" object; using the rule for every model", path)
        return {}
    return {str(k): str(v) for k, v in pinned.items()}


def _write(pinned: dict[str, str]) -> None:
    text = json.dumps({"pinned": dict(sorted(pinned.items()))}, indent=2) + "\n"
    _registry()._atomic_write(active_path(), text.encode())


def pin(name: str, version: str) -> None:
    """Analyze uses ``version`` of ``name`` whatever its validation says (AI ▸ Models… "Use this version")."""
    pinned = pins()
    pinned[str(name)] = str(version)
    _write(pinned)


def unpin(name: str) -> None:
    """Back to the rule for ``name`` (AI ▸ Models… "Use the rule")."""
    pinned = pins()
    if pinned.pop(str(name), None) is not None:
        _write(pinned)


class PinnedVersions(MutableMapping):
    """The pins as a mapping (name -> version), read from and written to ``active.json`` on every
    access: for callers written when the choice was an in-memory dict."""

    def __getitem__(self, name: str) -> str:
        return pins()[name]

    def __setitem__(self, name: str, version: str) -> None:
        pin(name, version)

    def __delitem__(self, name: str) -> None:
        if name not in pins():
            raise KeyError(name)
        unpin(name)

    def __iter__(self) -> Iterator[str]:
        return iter(pins())

    def __len__(self) -> int:
        return len(pins())

    def __repr__(self) -> str:
        return f"PinnedVersions({pins()!r})"


# --------------------------------------------------------------------------
# the rule
# --------------------------------------------------------------------------
def _newest_first(cards: list) -> list:
    """Newest version first; of two cards with the same version the later one (the user's folder) first."""
    order = sorted(range(len(cards)), key=lambda i: (_registry()._version_key(cards[i].version), i), reverse=True)
    return [cards[i] for i in order]


def active_version(name: str, cards: list, pinned: dict[str, str] | None = None) -> tuple[object | None, str]:
    """(the card Analyze uses for model ``name`` among ``cards``, why: "pinned", "better on validation"
    or "newest"); (None, "") when no version may be chosen (all are "not better" or "unvalidated")."""
    pinned = pins() if pinned is None else pinned
    mine = _newest_first([c for c in cards if c.name == name])
    want = pinned.get(name)
    for card in mine:
        if want is not None and card.version == want:
            return card, PINNED
    for card in mine:
        if eligible(card):
            return card, BETTER_ON_VALIDATION if status_of(card) == BETTER else NEWEST
    return None, ""


def ranked(cards: list) -> list:
    """``cards`` in the order Analyze tries them: per model, the active version, then the other
    eligible versions newest first (fallbacks when one fails its checksum); versions that are "not
    better" or "unvalidated" only when pinned. Models with a pin come first, then by their active
    version, newest first."""
    pinned = pins()
    groups = []
    for name in dict.fromkeys(c.name for c in cards):
        active, why = active_version(name, cards, pinned)
        if active is None:
            continue
        rest = [c for c in _newest_first([c for c in cards if c.name == name]) if c is not active and eligible(c)]
        position = next(i for i, c in enumerate(cards) if c is active)
        groups.append((why == PINNED, _registry()._version_key(active.version), position, [active] + rest))
    groups.sort(key=lambda g: g[:3], reverse=True)
    return [c for g in groups for c in g[3]]


def fmt(x) -> str:
    return f"{x:.3f}" if _finite(x) else "–"


def _cases(n) -> str:
    return f"{n} validation case{'s' if n != 1 else ''}"


def describe(card) -> str:
    """One line on how a version compared with its parent, e.g. "better: mean Dice 0.812 ≥ 0.790 of its
    parent ct-organs-unet3d 1 on the same 2 validation cases"; "" without validation history."""
    rec = activation_of(card)
    if rec is None:
        return ""
    if rec["status"] == UNVALIDATED:
        return "unvalidated: trained without validation cases; used only if you choose it"
    sign = "≥" if rec["status"] == BETTER else "<"
    return (f"{rec['status']}: {rec.get('metric') or 'score'} {fmt(rec.get('score'))} {sign} "
            f"{fmt(rec.get('parent_score'))} of its parent {rec.get('parent', '')} on the same "
            f"{_cases(rec.get('validation_cases', 0))}")


def _in_model_folder(card) -> bool:
    if card.path is None:
        return True
    try:
        here = Path(card.path).resolve()
        return any(here == Path(d).resolve() for d in _registry().model_dirs())
    except OSError:
        return False


def outcome(card, cards: list | None = None) -> str:
    """What a finished fine-tuning run means for Analyze, in words: "activated: …" or "kept, not
    better (mean Dice 0.700 < 0.790 …): Analyze still uses NAME VERSION". ``cards``: the installed
    versions (default: the registry's); the new card is added when it was written elsewhere."""
    if not _in_model_folder(card):
        return (f"{describe(card) or 'no validation history'}; written to {card.path}, which Analyze does not read "
                f"(your model folder is {_registry().user_models_dir()})")
    if cards is None:
        cards = _registry().available_models()
    if not any(c.name == card.name and c.version == card.version for c in cards):
        cards = [*cards, card]
    active, why = active_version(card.name, cards)
    rec = activation_of(card) or {}
    status = rec.get("status")
    numbers = (f"{rec.get('metric')} {fmt(rec.get('score'))} {'≥' if status == BETTER else '<'} "
               f"{fmt(rec.get('parent_score'))} of {rec.get('parent')} on the same "
               f"{_cases(rec.get('validation_cases', 0))}")
    if active is None:
        uses = "Analyze has no version of it to use"
    else:
        uses = f"Analyze still uses {active.name} {active.version}" + (" (pinned in AI ▸ Models…)"
                                                                      if why == PINNED else "")
    if active is not None and active.version == card.version:
        if why == BETTER_ON_VALIDATION:
            return f"activated: {numbers}; Analyze uses it now"
        return f"activated ({why}): Analyze uses it now"
    if status == NOT_BETTER:
        return f"kept, not better ({numbers}): {uses}"
    if status == UNVALIDATED:
        return f"kept, unvalidated (trained without validation cases): {uses}; choose it in AI ▸ Models… to use it"
    if status == BETTER:
        return f"better on validation ({numbers}), but {uses}"
    return f"kept: {uses}"
