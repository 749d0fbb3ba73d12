"""Results of an analysis: scores per view / breast / class, and how the AI maps are shown.

Only widgets here: the controller (analysis_controller.py) fills the scores and
listens to the controls (which heatmap, opacity, threshold, colormap; label
opacity and outline).
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QSlider,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..analysis.results import DISCLAIMER, AnalysisResult

COLORMAPS = ("inferno", "jet", "hot", "viridis")
NO_HEATMAP = "(none)"


def _fmt_score(name: str, value: float) -> str:
    if name.endswith("mL") or name.endswith("mm2"):
        return f"{value:.1f}"
    return f"{value:.3f}"


def _slider(lo: int, hi: int, value: int, tip: str) -> QSlider:
    s = QSlider(Qt.Orientation.Horizontal)
    s.setRange(lo, hi)
    s.setValue(value)
    s.setToolTip(tip)
    return s


class AnalysisPanel(QWidget):
    heatmap_chosen = Signal(str)  # overlay name, or NO_HEATMAP
    heatmap_style_changed = Signal()  # opacity / threshold / colormap
    labels_style_changed = Signal()  # opacity / outline

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = QLabel("No analysis yet. Press Analyze (A) on a CT series or a mammography exam.")
        self.title.setWordWrap(True)
        self.scores = QTreeWidget(self)
        self.scores.setHeaderLabels(["Result", "Score"])
        self.scores.setRootIsDecorated(True)
        self.scores.setColumnWidth(0, 190)

        heat_box = QGroupBox("Heatmap (H)")
        self.heatmap_combo = QComboBox()
        self.heatmap_combo.setToolTip("Which probability map to show on the images")
        self.heatmap_combo.currentTextChanged.connect(self._heatmap_combo_changed)
        self.opacity = _slider(0, 100, 50, "Heatmap opacity")
        self.threshold = _slider(0, 100, 30, "Hide probabilities below this value")
        self.threshold_label = QLabel("0.30")
        self.colormap = QComboBox()
        self.colormap.addItems(COLORMAPS)
        form = QFormLayout(heat_box)
        form.addRow("Map", self.heatmap_combo)
        form.addRow("Opacity", self.opacity)
        form.addRow("Threshold", self.threshold)
        form.addRow("", self.threshold_label)
        form.addRow("Colours", self.colormap)

        seg_box = QGroupBox("Segmentation (S)")
        self.label_opacity = _slider(0, 100, 45, "Label map opacity")
        self.outline = QCheckBox("Outline only")
        form2 = QFormLayout(seg_box)
        form2.addRow("Opacity", self.label_opacity)
        form2.addRow("", self.outline)

        self.models = QLabel("")
        self.models.setWordWrap(True)
        self.models.setTextFormat(Qt.TextFormat.PlainText)
        self.models.setStyleSheet("color: #777;")
        disclaimer = QLabel(DISCLAIMER)
        disclaimer.setWordWrap(True)
        disclaimer.setStyleSheet("color: #b36b00;")

        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.scores, 1)
        layout.addWidget(heat_box)
        layout.addWidget(seg_box)
        layout.addWidget(self.models)
        layout.addWidget(disclaimer)

        for w in (self.opacity, self.threshold):
            w.valueChanged.connect(self._heat_style)
        self.colormap.currentTextChanged.connect(self._heat_style)
        self.label_opacity.valueChanged.connect(lambda _v: self.labels_style_changed.emit())
        self.outline.toggled.connect(lambda _on: self.labels_style_changed.emit())
        self.set_heatmaps([])

    # -- values the controller reads --------------------------------------------------------
    @property
    def heatmap_opacity(self) -> float:
        return self.opacity.value() / 100.0

    @property
    def heatmap_threshold(self) -> float:
        return self.threshold.value() / 100.0

    @property
    def heatmap_colormap(self) -> str:
        return self.colormap.currentText()

    @property
    def labels_opacity(self) -> float:
        return self.label_opacity.value() / 100.0

    @property
    def labels_outline(self) -> bool:
        return self.outline.isChecked()

    @property
    def chosen_heatmap(self) -> str:
        return self.heatmap_combo.currentText()

    # -- filling -------------------------------------------------------------------------------
    def set_heatmaps(self, names: list[str], chosen: str | None = None) -> None:
        self.heatmap_combo.blockSignals(True)
        self.heatmap_combo.clear()
        self.heatmap_combo.addItems([*names, NO_HEATMAP] if names else [NO_HEATMAP])
        if chosen in names:
            self.heatmap_combo.setCurrentText(chosen)
        self.heatmap_combo.blockSignals(False)
        self.heatmap_combo.setEnabled(bool(names))

    def show_result(self, result: AnalysisResult | None, cached: bool = False) -> None:
        self.scores.clear()
        if result is None:
            self.title.setText("No analysis yet. Press Analyze (A) on a CT series or a mammography exam.")
            self.models.setText("")
            return
        what = "4-view mammography exam" if result.kind == "mammo-exam" else "CT segmentation"
        when = "from the cache" if cached else f"in {result.seconds:.1f} s on {result.device}"
        self.title.setText(f"{what}, {when}")
        if result.exam_scores:
            exam = QTreeWidgetItem(["Exam score per breast", ""])
            for side, p in result.exam_scores.items():
                exam.addChild(QTreeWidgetItem([{"R": "Right breast", "L": "Left breast"}.get(side, side),
                                               f"{p:.3f}"]))
            self.scores.addTopLevelItem(exam)
            exam.setExpanded(True)
        for sr in result.series.values():
            item = QTreeWidgetItem([sr.title, ""])
            for name, value in sr.scores.items():
                item.addChild(QTreeWidgetItem([name, _fmt_score(name, value)]))
            self.scores.addTopLevelItem(item)
            item.setExpanded(True)
        self.models.setText("Models: " + "; ".join(f"{role}: {m}" for role, m in result.models.items()))
        if result.warnings:
            self.models.setText(self.models.text() + "\n" + "\n".join(result.warnings))

    def score_texts(self) -> dict[str, str]:
        """{"RCC/malignancy": "0.812", ...} of what is listed (for tests and copy/paste)."""
        out = {}
        for i in range(self.scores.topLevelItemCount()):
            top = self.scores.topLevelItem(i)
            for j in range(top.childCount()):
                child = top.child(j)
                out[f"{top.text(0)}/{child.text(0)}"] = child.text(1)
        return out

    # -- internals -------------------------------------------------------------------------------
    def _heatmap_combo_changed(self, name: str) -> None:
        self.heatmap_chosen.emit(name)

    def _heat_style(self, *_args) -> None:
        self.threshold_label.setText(f"{self.heatmap_threshold:.2f}")
        self.heatmap_style_changed.emit()
