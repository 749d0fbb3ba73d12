"""AI ▸ Models: every installed model (shipped, fine-tuned, imported) with its whole card, which version
Analyze uses and why (pinned, better on validation, newest), how each fine-tuned version compared with
its parent, whether its weights are the shipped ones, and where to put new ones.

The choice itself is inference.activation's rule, the one Analyze and the CLI follow; this dialog only
shows it and lets the user pin a version ("Use this version") or go back to the rule ("Use the rule")."""
from __future__ import annotations

import json

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPushButton,
    QTextEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

COLUMNS = ["Model", "Version", "Task", "Modality", "Source", "Weights", "Analyze", "Validation", "Format"]
COL = {name: i for i, name in enumerate(COLUMNS)}
TRUST_TEXT = {
    "verified": "verified: the weights are the ones shipped with Lightbox (sha256 in the package's list)",
    "unverified": "unverified: the weights match this card's sha256, but they were not shipped with Lightbox "
                  "(a fine-tuned or imported model; whoever could write the file could also write the card)",
}
WHY_TEXT = {
    "pinned": "pinned: you chose it here (\"Use the rule\" undoes that)",
    "better on validation": "better on validation: not worse than its parent on the same validation cases",
    "newest": "newest: the newest version without a verdict against it (shipped or imported)",
    "fallback": "fallback: the version the rule picks fails its weights check",
}


def validation_text(card) -> str:
    """Short column text: 'better 0.812 ≥ 0.790', 'not better 0.700 < 0.790', 'unvalidated', ''."""
    from inference.activation import BETTER, UNVALIDATED, activation_of, fmt

    rec = activation_of(card)
    if rec is None:
        return ""
    if rec["status"] == UNVALIDATED:
        return UNVALIDATED
    sign = "≥" if rec["status"] == BETTER else "<"
    return f"{rec['status']} {fmt(rec.get('score'))} {sign} {fmt(rec.get('parent_score'))}"


def card_lines(card, check: str, use_note: str) -> list[str]:
    """Everything the card says, in words: what the model is, what it expects, where it comes from,
    what it may be used for, and what Analyze does with it."""
    from inference.activation import describe

    imported = card.imported
    extra = card.extra or {}
    spacing = card.input.get("spacing_mm", card.input.get("spacing"))
    domain = card.domain or {}
    lines = [f"{card.name} {card.version} — {card.task}, {card.modality}", f"Analyze: {use_note}",
             f"Weights {TRUST_TEXT.get(check, check)}", "",
             f"Format: {card.architecture} ({'imported' if imported else 'Lightbox network'})",
             f"Task: {card.task}", f"Modality: {card.modality}",
             f"Classes: {', '.join(map(str, card.classes)) or '(none listed)'}",
             f"Spacing: {json.dumps(spacing) if spacing is not None else '(not given)'}",
             f"Input: {json.dumps(card.input)}",
             f"Normalisation: {json.dumps(card.normalization) if card.normalization else '(none)'}",
             f"Source: {card.source or '(not given)'}", f"Licence: {card.licence or '(not given)'}",
             f"sha256: {card.sha256 or '(none)'}",
             "Domain description: " + (f"present (threshold {domain.get('threshold')}): analyses say when an image "
                                       "is unlike the training data" if domain else
                                       "absent: no check whether an image is like the training data")]
    if imported:
        code = (extra.get("import") or {}).get("code_confirmed") or []
        lines.append("Code confirmed at import: " + ("none (the model runs no code from its files)" if not code
                                                     else f"{len(code)} item(s)"))
        lines += [f"  {c}" for c in code]
    verdict = describe(card)
    if verdict:
        lines += ["", f"Validation: {verdict}"]
    for w in extra.get("label_warnings") or []:
        lines.append(f"  warning at training: {w}")
    for name, count in (extra.get("ignored_labels") or {}).items():
        lines.append(f"  ignored at training: dataset label {name!r} ({count}), not a class of the model")
    lines += ["", f"Disclaimer: {card.disclaimer or '(none)'}", "", f"Training data: {card.training_data}", "",
              "Held-out metrics:"]
    lines += [f"  {k}: {v}" for k, v in card.metrics.items() if k != "epochs"]
    lines += ["", f"Weights: {card.path / card.weights if card.path is not None else card.weights}"]
    return lines


class ModelsDialog(QDialog):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("AI models")
        self.resize(980, 620)
        self.in_use_label = QLabel(self)
        self.in_use_label.setWordWrap(True)
        self.in_use_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.tree = QTreeWidget(self)
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setRootIsDecorated(False)
        self.tree.currentItemChanged.connect(self._show_card)
        self.details = QTextEdit(self)
        self.details.setReadOnly(True)
        self.folder_label = QLabel(self)
        self.folder_label.setWordWrap(True)
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        open_folder = QPushButton("Open my models folder")
        open_folder.clicked.connect(self.open_user_folder)
        self.use_button = QPushButton("Use this version")
        self.use_button.setToolTip("Pin: Analyze uses the selected version of this model, whatever its validation "
                                   "says, until you choose \"Use the rule\"")
        self.use_button.clicked.connect(self.use_selected)
        self.rule_button = QPushButton("Use the rule")
        self.rule_button.setToolTip("Unpin: Analyze uses the newest version of this model that was not worse than "
                                    "its parent on validation")
        self.rule_button.clicked.connect(self.use_rule)
        reload_button = QPushButton("Reload")
        reload_button.clicked.connect(self.reload)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.addButton(open_folder, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(reload_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.use_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.rule_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.controller = None  # set by the analysis controller: it forgets cached results of another version
        layout = QVBoxLayout(self)
        layout.addWidget(self.in_use_label)
        layout.addWidget(self.tree, 2)
        layout.addWidget(self.details, 2)
        layout.addWidget(self.folder_label)
        layout.addWidget(buttons)
        self.cards: list = []
        self.checks: list[str] = []  # per card: "verified", "unverified" or "refused: why"
        self.used: dict[tuple, tuple] = {}  # (task, modality) -> (card, why) Analyze uses
        self.problems: list[str] = []
        self.reload()

    def reload(self) -> None:
        from inference.registry import ModelError, available_models, check_model, shipped_models_dir

        self.problems = []
        self.cards = available_models(problems=self.problems)
        self.checks = []
        for card in self.cards:
            try:
                self.checks.append(check_model(card))
            except ModelError as exc:
                self.checks.append(f"refused: {exc}")
        self.used = self._analyze_uses()
        in_use = {id(card): why for card, why in self.used.values()}
        shipped = shipped_models_dir().resolve()
        current = self.selected_card()
        self.tree.clear()
        for card, check in zip(self.cards, self.checks):
            source = "shipped" if card.path is not None and card.path.resolve() == shipped else \
                "imported" if card.imported else "yours"
            item = QTreeWidgetItem([card.name, card.version, card.task, card.modality, source,
                                    "⚠ refused" if check.startswith("refused") else check,
                                    f"✔ in use ({in_use[id(card)]})" if id(card) in in_use else "",
                                    validation_text(card), card.architecture])
            item.setToolTip(COL["Weights"], TRUST_TEXT.get(check, check))
            if id(card) in in_use:
                item.setToolTip(COL["Analyze"], WHY_TEXT.get(in_use[id(card)], in_use[id(card)]))
            if check != "verified":
                item.setForeground(COL["Weights"], QColor("#b26a00") if check == "unverified" else QColor("#c62828"))
            if validation_text(card).startswith(("not better", "unvalidated")):
                item.setForeground(COL["Validation"], QColor("#c62828"))
            self.tree.addTopLevelItem(item)
        for i in range(len(COLUMNS)):  # before the problem rows: their long lines span the row instead
            self.tree.resizeColumnToContents(i)
        for p in self.problems:
            item = QTreeWidgetItem([f"⚠ {p}"] + [""] * (len(COLUMNS) - 1))
            item.setToolTip(0, p)
            self.tree.addTopLevelItem(item)
            item.setFirstColumnSpanned(True)
        self.in_use_label.setText(self.in_use_text())
        self.folder_label.setText(self._folder_text())
        if self.cards:
            again = next((i for i, c in enumerate(self.cards) if current is not None
                          and (c.name, c.version, c.path) == (current.name, current.version, current.path)), 0)
            self.tree.setCurrentItem(self.tree.topLevelItem(again))

    def _analyze_uses(self) -> dict[tuple, tuple]:
        """(task, modality) -> (card, why): the first card in Analyze's order whose weights pass the check."""
        from inference.activation import active_version, pins, ranked

        pinned = pins()
        refused = {id(c) for c, check in zip(self.cards, self.checks) if check.startswith("refused")}
        used = {}
        for key in dict.fromkeys((c.task, c.modality.upper()) for c in self.cards):
            same = [c for c in self.cards if (c.task, c.modality.upper()) == key]
            card = next((c for c in ranked(same) if id(c) not in refused), None)
            if card is not None:
                active, why = active_version(card.name, same, pinned)
                used[key] = (card, why if active is card else "fallback")
        return used

    def in_use_text(self) -> str:
        """'Analyze uses: ct-organs-unet3d 1.1 for CT segmentation-3d (better on validation); …'."""
        if not self.used:
            return "Analyze uses: no model (none installed passes its checks)"
        parts = [f"{card.name} {card.version} for {mod} {task} ({why})"
                 for (task, mod), (card, why) in self.used.items()]
        return "Analyze uses: " + "; ".join(parts)

    def _folder_text(self) -> str:
        from inference.registry import user_models_dir

        return (f"Your models: {user_models_dir()}\nImport a model (AI ▸ Import model…) or put a weights file "
                "(.safetensors, or a TorchScript .pt) there with a JSON card beside it (same fields as the shipped "
                "cards, including the weights' sha256). Loading checks the checksum and never unpickles. Analyze "
                "uses, per model, the version you pinned here, else the newest one not shown worse than its "
                "parent on validation; a fine-tuned version that was not better, or was trained without "
                "validation, is used only if you pin it. One whose weights fail the check is skipped. Only the "
                "shipped weights are \"verified\": yours are \"unverified\" (they match their own card, which "
                "anyone who can write the file can also write).")

    def selected_card(self):
        item = self.tree.currentItem()
        idx = self.tree.indexOfTopLevelItem(item) if item is not None else -1
        return self.cards[idx] if 0 <= idx < len(self.cards) else None

    def use_selected(self) -> None:
        """Pin the selected version."""
        card = self.selected_card()
        if card is not None:
            self._choose(card.name, card.version)

    def use_rule(self) -> None:
        """Unpin the selected model: the rule chooses its version again."""
        card = self.selected_card()
        if card is not None:
            self._choose(card.name, None)

    def _choose(self, name: str, version: str | None) -> None:
        from inference import activation

        if self.controller is not None:  # it also forgets results cached for the other version
            self.controller.use_version(name, version)
        elif version is None:
            activation.unpin(name)
        else:
            activation.pin(name, version)
        self.reload()

    def model_names(self) -> list[str]:
        return [c.name for c in self.cards]

    def use_note(self, card) -> str:
        """What Analyze does with this card, in words."""
        key = (card.task, card.modality.upper())
        used, why = self.used.get(key, (None, ""))
        if used is card:
            return f"uses this version ({WHY_TEXT.get(why, why)})"
        if used is None:
            return f"uses no model for {card.modality} {card.task}"
        return f"uses {used.name} {used.version} for {card.modality} {card.task} ({why})"

    def _show_card(self, item, _previous=None) -> None:
        idx = self.tree.indexOfTopLevelItem(item) if item is not None else -1
        if not 0 <= idx < len(self.cards):
            self.details.setPlainText("\n".join(self.problems))
            return
        card = self.cards[idx]
        self.details.setPlainText("\n".join(card_lines(card, self.checks[idx], self.use_note(card))))

    def open_user_folder(self) -> None:
        from inference.registry import user_models_dir

        folder = user_models_dir()
        folder.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))
