"""What the Train dialog offers, in words: which models can be fine-tuned (ours by task, imported ones by
``inference.finetune_imported.trainable``), which augmentation applies to which model, what each augmentation
does (the cGAN named by its card), and what a new version's card says about the augmentation it had.

No Qt here: the dialog only turns these into widgets, and the rules can be tested without one."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FINETUNABLE = {"segmentation-3d": "3D segmentation", "segmentation-2d": "2D segmentation",
               "exam-classifier": "exam classifier", "patch-classifier": "patch classifier",
               "lesion-infill": "lesion infill cGAN"}  # task -> words for the model list
AUGMENT_TASKS = ("segmentation-2d", "exam-classifier", "patch-classifier")  # mammography models that learn lesions
INFILL_MODEL = "mammo-infill-cgan"
AUGMENT_NAMES = {"none": "None", "classic": "Classic", "cgan": "cGAN infill"}


@dataclass(frozen=True)
class ModelEntry:
    """One line of the model list: the item data is ``name``; ``reason`` (not None) disables it."""

    name: str
    text: str
    reason: str | None = None


def model_entries(cards) -> list[ModelEntry]:
    """Our fine-tunable models by name, then every imported model; an imported one that cannot be trained
    carries the reason E's ``trainable`` gives (shown as the disabled item's tooltip)."""
    ours: dict[str, str] = {}
    imported: dict[str, object] = {}
    for card in cards:
        if card.imported:
            imported.setdefault(card.name, card)
        elif card.task in FINETUNABLE:
            ours.setdefault(card.name, card.task)
    entries = [ModelEntry(name, f"{name} ({FINETUNABLE[task]})") for name, task in sorted(ours.items())]
    for name, card in sorted(imported.items()):
        entries.append(ModelEntry(name, f"{name} (imported {card.architecture}, {card.task})", untrainable(card)))
    return entries


def untrainable(card) -> str | None:
    """Why an imported model cannot be fine-tuned (None: it can)."""
    from inference.finetune import FinetuneError, imported_module

    try:
        return imported_module().trainable(card)
    except FinetuneError as exc:  # an installation without the imported-model fine-tuners: say so
        return str(exc)


def augment_reason(card) -> str | None:
    """Why the augmentation choice does not apply to ``card`` (None: it does). Synthetic lesions are
    mammograms with a mass or calcifications infilled: they teach the mammography lesion models only."""
    if card is None:
        return None
    if card.task == "lesion-infill":
        return f"{card.name} is the lesion generator itself: it trains on the dataset's real positives"
    if card.task not in AUGMENT_TASKS or str(card.modality).upper() != "MG":
        words = FINETUNABLE.get(card.task, card.task)
        return (f"{card.name} is a {card.modality} {words} model: synthetic lesions are made for the mammography "
                "models (lesion U-Net, patch and exam classifiers)")
    if card.imported:
        return f"{card.name} is imported: augmentation applies to Lightbox's own mammography models"
    return None


def infill_card():
    """The cGAN version synthesis would use now (``inference.infill.infill_card``: pinned or the newest
    eligible), or None when none is installed or every version is kept out of use."""
    from inference import infill, registry

    try:
        return infill.infill_card()
    except registry.ModelError:
        return None


def augment_tooltips(infill) -> dict[str, str]:
    """method -> what it does, the cGAN's line naming its version and training data from its card."""
    if infill is None:
        gan = f"No version of {INFILL_MODEL} is installed or in use: cGAN infill is not available."
    else:
        gan = (f"Adds synthetic positives: normal views of the training split with a mass or calcifications "
               f"infilled by the conditional GAN {infill.name} {infill.version} (the version in use; trained on "
               f"{infill.training_data or 'data its card does not name'}). The infilled mask is the label.")
    return {
        "none": "Trains on the dataset's own views only.",
        "classic": "Adds synthetic positives made from the dataset's real positives by flips, 90° rotations, "
                   "small scaling and intensity/gamma jitter (image and label move together).",
        "cgan": gan,
    }


def augmentation_summary(card) -> str:
    """'augmentation: cGAN infill, 12 synthetic positives by mammo-infill-cgan 1.0 (trained on ...)' from a new
    version's card; '' when the card records none."""
    record = (card.extra or {}).get("augmentation") if card is not None else None
    if not isinstance(record, dict):
        return ""
    method = str(record.get("augment", "none"))
    if method == "none":
        return "augmentation: none"
    n = record.get("n_synthetic", record.get("count"))
    text = f"augmentation: {AUGMENT_NAMES.get(method, method)}"
    if n is not None:
        text += f", {n} synthetic positive{'s' if n != 1 else ''}"
    if record.get("infill_model"):
        text += f" by {record['infill_model']}"
        if record.get("infill_training"):
            text += f" (trained on {record['infill_training']})"
    return text


def grid_path(card) -> Path | None:
    """The version's saved real-vs-synthetic grid (card.extra["augmentation"]["grid"], absolute or beside
    the card), or None when it records none."""
    record = (card.extra or {}).get("augmentation") if card is not None else None
    grid = record.get("grid") if isinstance(record, dict) else None
    if not grid:
        return None
    path = Path(grid)
    if not path.is_absolute() and card.path is not None:
        path = Path(card.path) / path
    return path
