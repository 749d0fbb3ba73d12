"""AI ▸ Import model…: bring in a model made with another tool (nnU-Net v2 folder, MONAI bundle,
ONNX, TorchScript, torch.export) and write its model card.

The dialog only shows and edits what ``inference.formats`` decides: ``inspect`` reads the artefact
(nothing executed) into an ImportPlan whose card is prefilled from the files; the user fills in
what the files do not say (an ONNX file does not know its modality), and, when running the model
would execute code from its files (a bundle's ``$`` expressions), reads that code and confirms it.
Reading the plan and copying the artefact both run on a worker, so a large folder never freezes
the window; every refusal (NotImportable, an unreadable file) is shown here, never raised.
"""
from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import Cancelled, LightboxError
from .workers import Committed, TaskRunner

FORMAT_NAMES = {"nnunet-v2": "nnU-Net v2 trained model folder", "monai-bundle": "MONAI bundle",
                "onnx": "ONNX model", "torchscript": "TorchScript model", "torch-export": "torch.export program"}
TASKS = ("segmentation-3d", "segmentation-2d", "image-classifier", "patch-classifier", "exam-classifier")
MODALITIES = ("CT", "MR", "MG")
MODEL_FILES = "Model files (*.onnx *.pt *.pth *.ts *.pt2 *.zip);;All files (*)"
ALWAYS_NEEDED = ("name", "task", "modality")  # a card without them cannot be written (version defaults to 1)
CODE_HEADING = "This model runs the following code from its files:"
TRUST_TEXT = "I have read this and trust the source"
NEEDED_STYLE = "background: #fff4c2; border: 1px solid #d99a00; border-radius: 2px;"
INVALID_STYLE = "background: #ffe0e0; border: 1px solid #c62828; border-radius: 2px;"

# (field key, label, tooltip); the key is the card's own, except spacing and patch_size (in the card's input)
FIELDS = (
    ("name", "Name", "Name the model is listed and picked by (lightbox analyze --model NAME)"),
    ("version", "Version", "Version of this model; a new import of the same name needs another version"),
    ("task", "Task", "segmentation-3d for CT/MR volumes; segmentation-2d or a classifier for 2D images"),
    ("modality", "Modality", "The images it was trained on (CT, MR, MG): Analyze offers it for those"),
    ("classes", "Classes", "One name per output channel in order, comma separated; a segmentation's first is the "
                           "background (e.g. background, liver, tumour)"),
    ("spacing", "Spacing (mm)", "Voxel size the network was trained at: z, y, x (e.g. 3, 1.5, 1.5); row, col for 2D"),
    ("patch_size", "Patch size", "The window the network sees, in voxels: z, y, x (e.g. 32, 64, 64); rows, cols for 2D"),
    ("normalization", "Normalisation", "How intensities were scaled in training: one word (zscore, minmax, none) or "
                                       'a JSON object, e.g. {"kind": "hu_window", "window": [-160, 240]}'),
    ("source", "Source", "Where the model comes from: a URL, a paper, a colleague"),
    ("licence", "Licence", "The weights' licence as their author gives it"),
)
INPUT_FIELDS = {"spacing": "spacing_mm", "patch_size": "patch_size"}  # field -> key in the card's input
# what a format may call a field in ``plan.needs`` -> the field that fills it ("input": see needed())
NEED_ALIASES = {"spacing_mm": "spacing", "input.spacing_mm": "spacing", "input.patch_size": "patch_size",
                "normalisation": "normalization", "license": "licence"}
_SPLIT = re.compile(r"[,;\s×x]+")


def format_name(fmt: str) -> str:
    return FORMAT_NAMES.get(fmt, fmt)


def parse_spacing(text: str) -> list[float] | None:
    """'3, 1.5, 1.5' / '3 x 1.5 x 1.5' -> [3.0, 1.5, 1.5]; None for empty; ValueError when not 2-3 positive numbers."""
    parts = [p for p in _SPLIT.split(text.strip()) if p]
    if not parts:
        return None
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"spacing {text!r}: expected 2 or 3 numbers in mm, e.g. 3, 1.5, 1.5") from None
    if len(values) not in (2, 3) or any(not v > 0 for v in values):
        raise ValueError(f"spacing {text!r}: expected 2 or 3 positive numbers in mm, e.g. 3, 1.5, 1.5")
    return values


def parse_patch(text: str) -> list[int] | None:
    """'32, 64, 64' -> [32, 64, 64]; None for empty; ValueError when not 2-3 positive whole numbers."""
    parts = [p for p in _SPLIT.split(text.strip()) if p]
    if not parts:
        return None
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or min(values) < 1:
        raise ValueError(f"patch size {text!r}: expected 2 or 3 positive whole numbers, e.g. 32, 64, 64")
    return values


def _numbers(values) -> str:
    return ", ".join(f"{float(v):g}" for v in values) if values else ""


def parse_normalization(text: str) -> dict | None:
    """A word -> {"kind": word}; a JSON object as written; None for empty; ValueError otherwise."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"normalisation: not valid JSON ({exc.msg} at character {exc.pos})") from None
        if not isinstance(value, dict) or not value:
            raise ValueError("normalisation: the JSON must be a non-empty object")
        return value
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", text):
        raise ValueError(f"normalisation {text!r}: one word (zscore, ct, none) or a JSON object")
    return {"kind": text}


def show_normalization(value) -> str:
    if isinstance(value, dict) and set(value) == {"kind"}:
        return str(value["kind"])
    return json.dumps(value, separators=(", ", ": ")) if value else ""


def parse_classes(text: str) -> list[str] | None:
    names = [c.strip() for c in text.split(",") if c.strip()]
    return names or None


class ImportModelDialog(QDialog):
    """Choose a file or folder, check and complete its card, confirm any code, import."""

    imported = Signal(object)  # the installed ModelCard

    def __init__(self, parent: QWidget | None = None, dest=None):
        super().__init__(parent)
        self.setWindowTitle("Import a model")
        self.resize(720, 640)
        self.dest = dest  # None: the user model folder (LIGHTBOX_MODELS_DIR); tests give a folder
        self.runner = TaskRunner(self)
        self.task = None  # the running Worker
        self.task_kind = ""  # "inspect" | "install"
        self.plan = None
        self.installed = None  # the ModelCard once imported
        self.message = ""  # what the import did, in words (also for the window's status bar)
        self.extra_fields: dict[str, QLineEdit] = {}  # needs no standard field covers

        self.path = QLineEdit()
        self.path.setPlaceholderText("an .onnx, .pt, .ts, .pt2 or .zip file, or an nnU-Net / MONAI bundle folder")
        self.path.returnPressed.connect(lambda: self.open_path(self.path.text().strip()))
        self.file_button = QPushButton("File…")
        self.file_button.setToolTip("An ONNX, TorchScript, torch.export file or a zipped MONAI bundle")
        self.file_button.clicked.connect(self.choose_file)
        self.folder_button = QPushButton("Folder…")
        self.folder_button.setToolTip("An nnU-Net v2 trained model folder (dataset.json, plans.json, fold_N) "
                                      "or a MONAI bundle folder (configs/, models/)")
        self.folder_button.clicked.connect(self.choose_folder)
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(self.file_button)
        row.addWidget(self.folder_button)

        self.format_label = QLabel("Choose a model file or folder.")
        self.format_label.setWordWrap(True)
        self.format_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        card_box = QGroupBox("Model card")
        self.form = QFormLayout(card_box)
        self.fields: dict[str, QWidget] = {}
        self.labels: dict[str, QLabel] = {}
        self.tips: dict[str, str] = {}
        for key, label, tip in FIELDS:
            if key == "task":
                widget = self._combo(TASKS)
            elif key == "modality":
                widget = self._combo(MODALITIES)
            else:
                widget = QLineEdit()
                widget.textEdited.connect(self._update_state)
            widget.setToolTip(tip)
            self.tips[key] = tip
            self.fields[key] = widget
            self.labels[key] = QLabel(label)
            self.form.addRow(self.labels[key], widget)
        self.suggest_button = QPushButton("Use the file's suggestions")
        self.suggest_button.setToolTip("Fill the empty fields with what the file suggests (shown greyed); check them")
        self.suggest_button.clicked.connect(self.use_suggestions)
        self.suggest_button.hide()
        self.needs_hint = QLabel("")
        self.needs_hint.setWordWrap(True)
        self.needs_hint.setStyleSheet("color: #8a5a00;")
        self.form.addRow(self.suggest_button)

        self.notes = QLabel("")
        self.notes.setWordWrap(True)
        self.notes.setTextFormat(Qt.TextFormat.PlainText)
        self.notes.setStyleSheet("color: #555;")

        self.code_box = QGroupBox(CODE_HEADING)
        self.code_box.setStyleSheet("QGroupBox { font-weight: bold; color: #b71c1c; border: 2px solid #c62828; "
                                    "border-radius: 4px; margin-top: 1.2em; padding-top: 4px; } "
                                    "QGroupBox::title { subcontrol-origin: margin; left: 8px; padding: 0 4px; }")
        self.code_list = QPlainTextEdit()
        self.code_list.setReadOnly(True)
        self.code_list.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.code_list.setMinimumHeight(90)
        self.code_list.setStyleSheet("font-family: monospace; font-weight: normal; color: #222;")
        self.code_why = QLabel("Importing copies these files; Analyze would then run this code with your rights. "
                               "Import only models from a source you trust.")
        self.code_why.setWordWrap(True)
        self.code_why.setStyleSheet("font-weight: normal; color: #444;")
        self.trust = QCheckBox(TRUST_TEXT)
        self.trust.setStyleSheet("font-weight: bold; color: #222;")
        self.trust.toggled.connect(self._update_state)
        code_layout = QVBoxLayout(self.code_box)
        code_layout.addWidget(self.code_list, 1)
        code_layout.addWidget(self.code_why)
        code_layout.addWidget(self.trust)
        self.code_box.hide()

        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setMaximumHeight(12)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.import_button = QPushButton("Import")
        self.import_button.setDefault(True)
        self.import_button.clicked.connect(self.import_model)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addWidget(self.progress, 1)
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.import_button)
        buttons.addWidget(self.close_button)

        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.format_label)
        layout.addWidget(card_box)
        layout.addWidget(self.needs_hint)
        layout.addWidget(self.notes)
        layout.addWidget(self.code_box, 1)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self._set_card_enabled(False)
        self._update_state()

    def _combo(self, items) -> QComboBox:
        box = QComboBox()
        box.setEditable(True)
        box.addItems(["", *items])
        box.editTextChanged.connect(self._update_state)
        return box

    # -- choosing ---------------------------------------------------------------------------------
    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model file", self._start_dir(), MODEL_FILES)
        if path:
            self.open_path(path)

    def choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model folder (nnU-Net v2 or MONAI bundle)", self._start_dir())
        if path:
            self.open_path(path)

    def _start_dir(self) -> str:
        current = Path(self.path.text().strip()) if self.path.text().strip() else None
        return str(current.parent if current is not None and current.parent.exists() else Path.home())

    def open_path(self, path) -> None:
        """Read the plan of ``path`` on a worker; the form fills when it is read."""
        if not str(path):
            return
        from inference.formats import NotImportable, inspect
        from inference.registry import ModelError

        path = Path(path)
        self.path.setText(str(path))
        self.plan = None
        self.installed = None
        self._set_card_enabled(False)
        self.format_label.setText(f"Reading {path.name}…")

        def job(_progress, _should_stop):
            try:
                return inspect(path)
            except (NotImportable, ModelError, OSError) as exc:
                raise LightboxError(str(exc)) from exc

        self._start("inspect", job, self.show_plan)

    # -- the plan ---------------------------------------------------------------------------------
    def show_plan(self, plan) -> None:
        """Fill the form from ``plan`` (an inference.formats.ImportPlan); the needed fields are highlighted."""
        self.plan = plan
        self.installed = None
        card = plan.card
        self.path.setText(str(plan.source))
        self.format_label.setText(f"Detected format: <b>{escape(format_name(plan.format))}</b> — "
                                  f"{escape(str(plan.source))}")
        self._set_text("name", str(card.get("name", "")))
        self._set_text("version", str(card.get("version", "")))
        self._set_text("task", str(card.get("task", "")))
        self._set_text("modality", str(card.get("modality", "")))
        self._set_text("classes", ", ".join(str(c) for c in card.get("classes") or []))
        given = card.get("input") or {}
        self._set_text("spacing", _numbers(given.get("spacing_mm")))
        self._set_text("patch_size", ", ".join(str(int(v)) for v in given.get("patch_size") or []))
        self._set_text("normalization", show_normalization(card.get("normalization")))
        self._set_text("source", str(card.get("source", "")))
        self._set_text("licence", str(card.get("licence", "")))
        self._show_suggestions()
        self._rebuild_extra_fields()
        notes = list(plan.notes)
        self.notes.setText("\n".join(f"• {n}" for n in notes))
        self.notes.setVisible(bool(notes))
        self.trust.setChecked(False)
        self.code_list.setPlainText("\n".join(plan.runs_code))
        self.code_box.setVisible(bool(plan.runs_code))
        self.status.setText("")
        self.status.setStyleSheet("")
        self._set_card_enabled(True)
        self._update_state()

    @property
    def suggested(self) -> dict:
        """What the file suggests for fields it cannot decide (ONNX/TorchScript: extra.suggested)."""
        return dict(((self.plan.card.get("extra") or {}).get("suggested") or {}) if self.plan else {})

    def _suggestion_texts(self) -> dict[str, str]:
        sug = self.suggested
        inp = sug.get("input") or {}
        texts = {"classes": ", ".join(sug.get("classes") or []),
                 "spacing": _numbers(inp.get("spacing_mm")),
                 "patch_size": ", ".join(str(int(v)) for v in inp.get("patch_size") or []),
                 "normalization": show_normalization(sug.get("normalization"))}
        return {k: v for k, v in texts.items() if v}

    def _show_suggestions(self) -> None:
        """Suggestions are greyed placeholders: the user accepts them (button) or types better ones."""
        texts = self._suggestion_texts()
        for key, widget in self.fields.items():
            if isinstance(widget, QLineEdit):
                widget.setPlaceholderText(f"suggested: {texts[key]}" if key in texts else "")
        self.suggest_button.setVisible(bool(texts))

    def use_suggestions(self) -> None:
        """Fill each empty field the file has a suggestion for."""
        for key, text in self._suggestion_texts().items():
            if not self._text(key):
                self._set_text(key, text)
        self._update_state()

    def _set_text(self, key: str, text: str) -> None:
        widget = self.fields[key]
        if isinstance(widget, QComboBox):
            widget.setEditText(text)
        else:
            widget.setText(text)
            widget.setCursorPosition(0)  # a long value shows its start

    def _text(self, key: str) -> str:
        widget = self.fields.get(key) or self.extra_fields.get(key)
        return (widget.currentText() if isinstance(widget, QComboBox) else widget.text()).strip()

    def _rebuild_extra_fields(self) -> None:
        for key, widget in self.extra_fields.items():
            self.form.removeRow(widget)
            self.labels.pop(key, None)
        self.extra_fields = {}
        for need in self.needed():
            if need in self.fields:
                continue
            edit = QLineEdit(str(self.plan.card.get(need) or ""))
            self.tips[need] = f"{need}: this format needs it in the card"
            edit.setToolTip(self.tips[need])
            edit.textEdited.connect(self._update_state)
            self.extra_fields[need] = edit
            self.labels[need] = QLabel(need)
            self.form.insertRow(self.form.rowCount() - 1, self.labels[need], edit)  # above the button

    def needed(self) -> list[str]:
        """Fields that must be filled before Import: the format's needs and what every card has.

        A need for the card's ``input`` means the spacing the network was trained at (a classifier
        may go without: it sees the whole image resized) and a patch size when the file leaves it free."""
        if self.plan is None:
            return []
        keys: list[str] = []
        for need in self.plan.needs:
            if need == "input":
                if not self._text("task").endswith("classifier"):
                    keys.append("spacing")
                if not self._known_input().get("patch_size"):
                    keys.append("patch_size")
            else:
                keys.append(NEED_ALIASES.get(need, need))
        return list(dict.fromkeys(keys + list(ALWAYS_NEEDED)))

    def _known_input(self) -> dict:
        """The card's input as the file gives it, its suggestions underneath (None values dropped)."""
        suggested = {k: v for k, v in (self.suggested.get("input") or {}).items() if v is not None}
        given = {k: v for k, v in ((self.plan.card.get("input") or {}) if self.plan else {}).items() if v is not None}
        return {**suggested, **given}

    def parsed(self) -> tuple[dict, dict[str, str]]:
        """({field: value} of the fields filled in, {field: why its text is not valid})."""
        out: dict = {}
        errors: dict[str, str] = {}
        for key in ("name", "version", "task", "source", "licence", *self.extra_fields):
            out[key] = self._text(key)
        out["modality"] = self._text("modality").upper()
        out["classes"] = parse_classes(self._text("classes"))
        for key, parse in (("spacing", parse_spacing), ("patch_size", parse_patch),
                           ("normalization", parse_normalization)):
            try:
                out[key] = parse(self._text(key))
            except ValueError as exc:
                errors[key] = str(exc)
        return {k: v for k, v in out.items() if v not in (None, "", [])}, errors

    def values(self) -> tuple[dict, dict[str, str]]:
        """(overrides for install(), {field: why its text is not valid}); spacing and patch size go
        into the card's input, over what the file says and suggests."""
        fields, errors = self.parsed()
        out = {k: v for k, v in fields.items() if k not in INPUT_FIELDS}
        typed = {INPUT_FIELDS[k]: fields[k] for k in INPUT_FIELDS if k in fields}
        if typed or "input" in (self.plan.needs if self.plan else []):
            inp = {**self._known_input(), **typed}
            if inp:
                out["input"] = inp
        return out, errors

    def missing(self) -> list[str]:
        """Needed fields still empty (as their labels name them)."""
        fields, _errors = self.parsed()
        return [k for k in self.needed() if k not in fields]

    # -- state ------------------------------------------------------------------------------------
    def _set_card_enabled(self, on: bool) -> None:
        for widget in (*self.fields.values(), *self.extra_fields.values()):
            widget.setEnabled(on)

    def _update_state(self, *_args) -> None:
        busy = self.task is not None
        for button in (self.file_button, self.folder_button):
            button.setEnabled(not busy)
        self.path.setEnabled(not busy)
        if self.plan is None:
            self.import_button.setEnabled(False)
            self.needs_hint.setText("")
            return
        _values, errors = self.values()
        missing = self.missing()
        for key, widget in (*self.fields.items(), *self.extra_fields.items()):
            style = INVALID_STYLE if key in errors else NEEDED_STYLE if key in missing else ""
            widget.setStyleSheet(style)
            label = self.labels[key]
            label.setStyleSheet("font-weight: bold; color: #8a5a00;" if key in missing else
                                "color: #c62828;" if key in errors else "")
            widget.setToolTip(errors.get(key, self.tips.get(key, "")))
        hints = []
        if missing:
            names = ", ".join(self.labels[k].text().lower() for k in missing)
            hints.append(f"Fill in the highlighted field{'s' if len(missing) > 1 else ''} ({names}): "
                         "the model's files do not say.")
        hints += list(errors.values())
        if self.plan.runs_code and not self.trust.isChecked():
            hints.append("Read the code below and tick the box to confirm before importing.")
        self.needs_hint.setText("\n".join(hints))
        self.needs_hint.setVisible(bool(hints))
        self.import_button.setEnabled(not busy and self.installed is None and not missing and not errors
                                      and (not self.plan.runs_code or self.trust.isChecked()))

    # -- importing --------------------------------------------------------------------------------
    def import_model(self) -> None:
        if self.plan is None or not self.import_button.isEnabled():
            return
        from inference.formats import NotImportable, install
        from inference.registry import ModelError

        plan, confirmed, dest = self.plan, self.trust.isChecked(), self.dest
        overrides, _errors = self.values()

        def job(progress, should_stop):
            from inference.segment import Cancelled as StoppedCopy

            try:  # Cancel works between copied files; the card is written when install returns
                card = install(plan, overrides, confirmed=confirmed, dest=dest,
                               progress=lambda f, _what: progress(int(f * 1000), 1000), should_stop=should_stop)
            except StoppedCopy as exc:
                raise Cancelled("import cancelled") from exc
            except (NotImportable, ModelError, OSError) as exc:
                raise LightboxError(str(exc)) from exc
            return Committed((card, model_in_use(card)))

        self.status.setStyleSheet("")
        self.status.setText(f"Copying {Path(plan.source).name} into the model folder…")
        self._start("install", job, self._installed)

    def _installed(self, payload) -> None:
        card, in_use = payload
        self.installed = card
        self.message = imported_message(card, in_use)
        self.status.setStyleSheet("color: #2e7d32; font-weight: bold;")
        self.status.setText(self.message)
        self._set_card_enabled(False)
        self._update_state()
        self.imported.emit(card)

    # -- the worker -------------------------------------------------------------------------------
    def _start(self, kind: str, job, on_done) -> None:
        if self.task is not None:
            self.task.cancel()
        self.task_kind = kind
        self.progress.show()
        self.cancel_button.show()
        self.cancel_button.setEnabled(kind == "inspect")
        self.cancel_button.setToolTip("" if kind == "inspect" else
                                      "The copy is staged and appears whole or not at all; it cannot stop half-way")
        worker = None

        def mine(cb):
            def call(*args):
                if self.task is worker:
                    self._end()
                    cb(*args)
            return call

        worker = self.runner.start(job, f"model {kind}", on_finished=mine(on_done), on_failed=mine(self._failed),
                                   on_cancelled=mine(self._cancelled))
        self.task = worker
        self._update_state()

    def _end(self) -> None:
        self.task = None
        self.progress.hide()
        self.cancel_button.hide()
        self._update_state()

    def _failed(self, message: str) -> None:
        self.status.setStyleSheet("color: #c62828;")
        if self.task_kind == "inspect":
            self.format_label.setText("Choose a model file or folder.")
            self.status.setText(f"Cannot import: {message}")
        else:
            self.status.setText(f"Import failed, nothing was installed: {message}")
        self._set_card_enabled(self.plan is not None)
        self._update_state()

    def _cancelled(self) -> None:
        self.status.setStyleSheet("")
        self.status.setText("Cancelled.")
        self.format_label.setText("Choose a model file or folder.")
        self._set_card_enabled(self.plan is not None)
        self._update_state()

    def cancel(self) -> None:
        if self.task is not None and self.task_kind == "inspect":
            self.task.cancel()
            self.task = None  # its answer, whenever it comes, is not wanted any more
            self._end()
            self._cancelled()

    @property
    def busy(self) -> bool:
        return self.task is not None

    def shutdown(self) -> None:
        self.runner.shutdown()

    def reject(self) -> None:
        if self.task is not None and self.task_kind == "install":
            self.status.setText("Wait for the copy to finish (it is staged: whole or nothing).")
            return
        self.cancel()
        super().reject()


def model_in_use(card):
    """The card Analyze now picks for ``card``'s task and modality (None when it cannot tell)."""
    from inference.registry import ModelError

    from ..analysis.run import pick_card

    try:
        return pick_card(card.task, card.modality)
    except (ModelError, OSError):
        return None


def imported_message(card, in_use=None) -> str:
    """What the import means for Analyze: the new model is used, or which one still is and how to switch."""
    said = f"Imported {card.name} {card.version}"
    if in_use is None:
        return f"{said}, but Analyze cannot use it: its files do not verify (see AI ▸ Models…)"
    if (in_use.name, in_use.version) == (card.name, card.version):
        return f"{said}: Analyze uses it for {card.modality} {card.task}"
    return (f"{said}; Analyze still uses {in_use.name} {in_use.version} for {card.modality} {card.task} "
            f"(choose {card.name} in AI ▸ Models… ▸ Use this version)")
