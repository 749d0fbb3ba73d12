"""Segment ▸ Export for training…: where to (dataset root and name), what (the shown image's corrected
segmentation; for a 4-view mammogram the class of each view and of the exam), and the promise that
it is de-identified (the re-identification mapping only when asked for).

The dialog only collects an :class:`ExportRequest`; the editor controller runs it on the window's
worker. Whether the chosen dataset can take this image is asked of ``DatasetWriter`` itself
(``refusal``), and whether its pixels may carry burned-in patient data of ``pixel_safety``, so the
warning shown before export is the error the export would fail with: an image marked
BurnedInAnnotation=YES disables Export; one where burned-in text is common (US, secondary captures)
needs the "I have checked" box ticked.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.export.dataset import (
    DEFAULT_NAME,
    EXAM_VIEW,
    DatasetWriter,
    ExportError,
    existing_datasets,
)
from ..core.export.pixel_safety import PixelFindings, inspect_sources
from ..core.volume import Volume
from .settings import settings

CLASS_ITEMS = ("", "normal", "suspicious")  # "" = not labelled: no row for that view
SUSPICIOUS_AT = 0.5  # an AI probability at or above this is suggested as "suspicious"
ROOT_KEY = "export/root"
DATASET_KEY = "export/dataset"
DEID_TEXT = ("De-identification is always on: DICOM PS3.15 basic profile, patient names and IDs "
             "replaced by pseudonyms, dates shifted, UIDs remapped. Images are written as NIfTI "
             "(no patient data in the header).")
MAPPING_WARNING = ("The mapping file re-identifies the patients (it contains PHI): keep it apart "
                   "from the dataset and never share it with it.")
PIXELS_CONFIRM = "I have checked these images carry no burned-in patient data"
PIXELS_CONFIRM_OPT_IN = "the box below ticked"
WARN_STYLE = "color: #c0392b;"
HINT_STYLE = "color: #2f6fa8; font-style: italic;"


def suggested_class(probability: float) -> str:
    return "suspicious" if probability >= SUSPICIOUS_AT else "normal"


@dataclass(frozen=True)
class ExportSubject:
    """What the screen offers for export (built by the editor controller)."""

    image: Volume | None  # the image whose channel the dataset must accept
    segmentation: str = ""  # e.g. "liver, tumour (4210 voxels)"; "" = no corrected segmentation
    label_names: dict[int, str] = field(default_factory=dict)
    views: tuple[str, ...] = ()  # the mammography views shown ("RCC", ...); () for other images
    suggestions: dict[str, tuple[str, float]] = field(default_factory=dict)  # view/"exam" -> (class, p) by the AI
    sources: tuple = ()  # (volume, series) of every image whose pixels go out; () = just ``image``


@dataclass(frozen=True)
class ExportRequest:
    root: str
    dataset: str
    segmentation: bool
    classes: dict[str, str]  # labelled views and "exam" only
    keep_mapping: bool
    allow_unverified_pixels: bool = False  # the user ticked PIXELS_CONFIRM


class ExportDialog(QDialog):
    """Collects an ExportRequest; Export is enabled only when the chosen dataset can take it."""

    def __init__(self, subject: ExportSubject, parent: QWidget | None = None, browse_from: str = ""):
        super().__init__(parent)
        self.subject = subject
        self.setWindowTitle("Export for training")
        remembered = settings()
        self.browse_from = browse_from  # where Browse… starts before a root is chosen (no default root:
        # a dataset written into the study's own folder by accident would mix data with its source)
        self.root = QLineEdit(str(remembered.value(ROOT_KEY, "") or ""))
        self.root.setPlaceholderText("folder that holds the datasets")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        root_row = QHBoxLayout()
        root_row.addWidget(self.root, 1)
        root_row.addWidget(browse)
        self.dataset = QComboBox()
        self.dataset.setEditable(True)
        self.dataset.setMinimumContentsLength(28)
        self.dataset.setToolTip("An existing dataset in the root (appended to), or a new name (created)")
        self._wanted_name = str(remembered.value(DATASET_KEY, "") or DEFAULT_NAME)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.warning = QLabel()
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet(WARN_STYLE)
        self.warning.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        where = QFormLayout()
        where.addRow("Dataset root", root_row)
        where.addRow("Dataset", self.dataset)
        where.addRow("", self.summary)

        what = QGroupBox("What is exported")
        what_layout = QVBoxLayout(what)
        none = "none for the shown views" if subject.views else "none for the shown image"
        self.segmentation = QCheckBox(f"Corrected segmentation: {subject.segmentation or none}")
        self.segmentation.setChecked(bool(subject.segmentation))
        self.segmentation.setEnabled(bool(subject.segmentation))
        what_layout.addWidget(self.segmentation)
        self.class_boxes: dict[str, QComboBox] = {}
        self.class_hints: dict[str, QLabel] = {}
        if subject.views:
            what_layout.addWidget(self._class_grid())

        deid = QGroupBox("De-identification")
        deid_layout = QVBoxLayout(deid)
        self.deid_text = QLabel(DEID_TEXT)
        self.deid_text.setWordWrap(True)
        self.keep_mapping = QCheckBox("Keep the re-identification mapping (deid-mapping-CASE.json)")
        self.mapping_warning = QLabel(MAPPING_WARNING)
        self.mapping_warning.setWordWrap(True)
        deid_layout.addWidget(self.deid_text)
        deid_layout.addWidget(self.keep_mapping)
        deid_layout.addWidget(self.mapping_warning)
        # burned-in text: read once (headers only); the export itself checks again
        self.pixels, self.pixel_refusal = self._inspect_pixels()
        unverified = self.pixels.needs_confirmation(PIXELS_CONFIRM_OPT_IN)
        self.pixel_note = QLabel(str(unverified) if unverified and not self.pixel_refusal else "")
        self.pixel_note.setWordWrap(True)
        self.pixel_note.setStyleSheet(WARN_STYLE)
        self.pixel_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.pixels_checked = QCheckBox(PIXELS_CONFIRM)
        for widget in (self.pixel_note, self.pixels_checked):
            widget.setVisible(bool(unverified) and not self.pixel_refusal)
            deid_layout.addWidget(widget)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.export_button.setDefault(True)
        self.buttons.accepted.connect(self._accept)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(where)
        layout.addWidget(what)
        layout.addWidget(deid)
        layout.addWidget(self.warning)
        layout.addWidget(self.buttons)

        self.root.textChanged.connect(self._root_changed)
        self.dataset.currentTextChanged.connect(lambda _t: self.refresh())
        self.segmentation.toggled.connect(lambda _on: self.refresh())
        self.keep_mapping.toggled.connect(self._mapping_toggled)
        self.pixels_checked.toggled.connect(lambda _on: self.refresh())
        self._mapping_toggled(False)
        self._root_changed()

    # -- the parts ------------------------------------------------------------------------------
    def _inspect_pixels(self) -> tuple[PixelFindings, str]:
        """(findings, the refusal's text or "") for the images whose pixels this export writes."""
        sources = self.subject.sources or ((self.subject.image, None),)
        try:
            findings = inspect_sources((v, s) for v, s in sources if v is not None or s is not None)
        except ExportError as exc:  # a source that cannot be read any more: the export would refuse it
            return PixelFindings(), str(exc)
        refusal = findings.refusal()
        return findings, str(refusal) if refusal else ""

    def _class_grid(self) -> QWidget:
        box = QWidget()
        grid = QGridLayout(box)
        grid.setContentsMargins(0, 4, 0, 0)
        note = QLabel("Classes for the classifier (empty = not labelled; every view's image is exported "
                      "when any class is given):")
        note.setWordWrap(True)
        grid.addWidget(note, 0, 0, 1, 3)
        for row, view in enumerate((*self.subject.views, EXAM_VIEW), start=1):
            combo = QComboBox()
            combo.setEditable(True)
            combo.addItems(CLASS_ITEMS)
            combo.setObjectName(f"class-{view}")
            hint = QLabel()
            hint.setStyleSheet(HINT_STYLE)
            suggestion = self.subject.suggestions.get(view)
            if suggestion is not None:
                combo.setCurrentText(suggestion[0])
            combo.currentTextChanged.connect(lambda _t, v=view: self._class_changed(v))
            grid.addWidget(QLabel("Exam" if view == EXAM_VIEW else view), row, 0)
            grid.addWidget(combo, row, 1)
            grid.addWidget(hint, row, 2)
            grid.setColumnStretch(2, 1)
            self.class_boxes[view] = combo
            self.class_hints[view] = hint
            self._show_hint(view)
        return box

    def _class_changed(self, view: str) -> None:
        self._show_hint(view)
        self.refresh()

    def _show_hint(self, view: str) -> None:
        """Mark the AI's suggestion as such, and say when the user changed it."""
        suggestion = self.subject.suggestions.get(view)
        hint = self.class_hints[view]
        if suggestion is None:
            hint.setText("")
        else:
            label, p = suggestion
            chosen = self.class_boxes[view].currentText().strip()
            hint.setText(f"AI suggestion (p = {p:.2f}): confirm or correct" if chosen == label
                         else f"corrected (the AI suggested {label}, p = {p:.2f})")

    def _mapping_toggled(self, on: bool) -> None:
        self.mapping_warning.setStyleSheet(WARN_STYLE if on else "color: #666;")

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset root",
                                                  self.root.text() or self.browse_from or str(Path.home()))
        if folder:
            self.root.setText(folder)

    def _root_changed(self, *_args) -> None:
        """List the root's datasets in the combo, keeping the name being typed or chosen."""
        current = self.dataset.currentText().strip() or self._wanted_name
        names = existing_datasets(self.root.text().strip()) if self.root.text().strip() else []
        self.dataset.blockSignals(True)
        self.dataset.clear()
        self.dataset.addItems(names)
        self.dataset.setCurrentText(current)
        self.dataset.blockSignals(False)
        self.refresh()

    # -- state ----------------------------------------------------------------------------------
    def classes(self) -> dict[str, str]:
        return {v: c.currentText().strip() for v, c in self.class_boxes.items() if c.currentText().strip()}

    def request(self) -> ExportRequest:
        return ExportRequest(self.root.text().strip(), self.dataset.currentText().strip() or DEFAULT_NAME,
                             self.segmentation.isChecked(), self.classes(), self.keep_mapping.isChecked(),
                             self.pixels_checked.isChecked())

    def problem(self) -> str | None:
        """Why Export cannot run now (shown above the buttons), or None."""
        root, name = self.root.text().strip(), self.dataset.currentText().strip() or DEFAULT_NAME
        self.summary.setText("")
        if self.pixel_refusal:  # first: no dataset choice makes this image exportable
            return self.pixel_refusal
        if not root:
            return "Choose the dataset root folder."
        try:
            writer = DatasetWriter(root, name, create=False)
        except ExportError as exc:
            return f"This dataset cannot be appended to: {exc}"
        self.summary.setText(_describe(writer, name))
        segmentation = self.segmentation.isChecked()
        if not segmentation and not self.classes():
            return ("Nothing to export: choose a class for a view or the exam." if self.subject.views else
                    "Nothing to export: draw or load a segmentation of the shown image first.")
        refusal = writer.refusal(self.subject.image, self.subject.label_names if segmentation else None)
        if refusal:
            return f"This dataset cannot take this image: {refusal}"
        if self.pixels.unverified and not self.pixels_checked.isChecked():
            return f"Check the images for burned-in patient data, then tick \u201c{PIXELS_CONFIRM}\u201d."
        return None

    def refresh(self) -> None:
        problem = self.problem()
        self.warning.setText(problem or "")
        self.warning.setVisible(bool(problem))
        self.export_button.setEnabled(problem is None)

    def _accept(self) -> None:
        if self.problem() is not None:
            return
        s = settings()
        s.setValue(ROOT_KEY, self.root.text().strip())
        s.setValue(DATASET_KEY, self.dataset.currentText().strip())
        s.sync()
        self.accept()


def _describe(writer: DatasetWriter, typed: str) -> str:
    """One line on the chosen dataset: what it holds, or that it will be created (and as what name)."""
    if not writer.exists:
        renamed = f" as {writer.name}" if writer.name != typed.strip() else ""
        return f"New dataset: created{renamed} in {writer.root}"
    s = writer.summary()
    parts = [_count(s["segmentation_cases"], "segmentation case")]
    if s["classified_cases"]:
        parts.append(_count(s["classified_cases"], "classified case"))
    parts.append("labels: " + (", ".join(s["labels"]) if s["labels"] else "none yet"))
    parts.append(f"channel {s['channel'] or 'not set yet'}")
    return " · ".join(parts)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"
