"""AI ▸ Models: what models are installed (shipped and the user's own), what they were trained on,
their held-out metrics, whether their weights are the shipped ones, and where to put new ones."""
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

COLUMNS = ["Model", "Version", "Task", "Modality", "Source", "Weights"]
TRUST_TEXT = {
    "verified": "verified: the weights are the ones shipped with Lightbox (sha256 in the package's list)",
    "unverified": "unverified: the weights match this card's sha256, but they were not shipped with Lightbox "
                  "(a fine-tuned or imported model; whoever could write the file could also write the card)",
}


class ModelsDialog(QDialog):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("AI models")
        self.resize(820, 560)
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
        self.use_button.setToolTip("Analyze uses the selected version of this model (default: the newest)")
        self.use_button.clicked.connect(self.use_selected)
        self.newest_button = QPushButton("Use newest")
        self.newest_button.clicked.connect(self.use_newest)
        reload_button = QPushButton("Reload")
        reload_button.clicked.connect(self.reload)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.addButton(open_folder, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(reload_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.use_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.newest_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.controller = None  # set by the analysis controller: it remembers the choice
        layout = QVBoxLayout(self)
        layout.addWidget(self.tree, 2)
        layout.addWidget(self.details, 2)
        layout.addWidget(self.folder_label)
        layout.addWidget(buttons)
        self.cards: list = []
        self.checks: list[str] = []  # per card: "verified", "unverified" or "refused: why"
        self.problems: list[str] = []
        self.reload()

    def reload(self) -> None:
        from inference.registry import (
            ModelError,
            available_models,
            check_model,
            shipped_models_dir,
            user_models_dir,
        )

        from ..analysis.run import PREFERRED_VERSIONS

        self.problems = []
        self.cards = available_models(problems=self.problems)
        self.checks = []
        shipped = shipped_models_dir().resolve()
        self.tree.clear()
        for card in self.cards:
            source = "shipped" if card.path is not None and card.path.resolve() == shipped else "yours"
            if PREFERRED_VERSIONS.get(card.name) == card.version:
                source += ", in use"
            try:
                check = check_model(card)
            except ModelError as exc:
                check = f"refused: {exc}"
            self.checks.append(check)
            item = QTreeWidgetItem([card.name, card.version, card.task, card.modality, source,
                                    "⚠ refused" if check.startswith("refused") else check])
            item.setToolTip(5, TRUST_TEXT.get(check, check))
            if check != "verified":
                item.setForeground(5, QColor("#b26a00") if check == "unverified" else QColor("#c62828"))
            self.tree.addTopLevelItem(item)
        for i in range(len(COLUMNS)):  # before the problem rows: their long lines span the row instead
            self.tree.resizeColumnToContents(i)
        for p in self.problems:
            item = QTreeWidgetItem([f"⚠ {p}"] + [""] * (len(COLUMNS) - 1))
            item.setToolTip(0, p)
            self.tree.addTopLevelItem(item)
            item.setFirstColumnSpanned(True)
        user = user_models_dir()
        self.folder_label.setText(
            f"Your models: {user}\nPut a weights file (.safetensors, or a TorchScript .pt) there with a JSON card "
            "beside it (same fields as the shipped cards, including the weights' sha256). Loading checks the "
            "checksum and never unpickles. A newer version of a model replaces the shipped one for Analyze; "
            "one whose weights fail the check is skipped. Only the shipped weights are \"verified\": yours "
            "are \"unverified\" (they match their own card, which anyone who can write the file can also write).")
        if self.cards:
            self.tree.setCurrentItem(self.tree.topLevelItem(0))

    def selected_card(self):
        idx = self.tree.indexOfTopLevelItem(self.tree.currentItem()) if self.tree.currentItem() else -1
        return self.cards[idx] if 0 <= idx < len(self.cards) else None

    def use_selected(self) -> None:
        card = self.selected_card()
        if card is not None and self.controller is not None:
            self.controller.use_version(card.name, card.version)
            self.reload()

    def use_newest(self) -> None:
        card = self.selected_card()
        if card is not None and self.controller is not None:
            self.controller.use_version(card.name, None)
            self.reload()

    def model_names(self) -> list[str]:
        return [c.name for c in self.cards]

    def _show_card(self, item, _previous=None) -> None:
        idx = self.tree.indexOfTopLevelItem(item) if item is not None else -1
        if not 0 <= idx < len(self.cards):
            self.details.setPlainText("\n".join(self.problems))
            return
        card = self.cards[idx]
        check = self.checks[idx]
        text = [f"{card.name} {card.version} — {card.task}, {card.modality}",
                f"Weights {TRUST_TEXT.get(check, check)}", "", card.disclaimer, "",
                f"Classes: {', '.join(card.classes)}", f"Input: {json.dumps(card.input)}",
                f"Normalization: {json.dumps(card.normalization)}", "", f"Training data: {card.training_data}",
                "", "Held-out metrics:"]
        text += [f"  {k}: {v}" for k, v in card.metrics.items()]
        text += ["", f"Weights: {card.weights_path}", f"sha256: {card.sha256}"]
        self.details.setPlainText("\n".join(text))

    def open_user_folder(self) -> None:
        from inference.registry import user_models_dir

        folder = user_models_dir()
        folder.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))
