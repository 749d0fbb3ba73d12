"""Results of an analysis: scores per view / breast / class, and how the AI maps are shown.

Only widgets here: the controller (analysis_controller.py) fills the scores and
listens to the controls (which heatmap, opacity, threshold, colormap; label
opacity and outline).
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
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

from ..analysis.results import DISCLAIMER, AnalysisResult, SeriesResult

COLORMAPS = ("inferno", "jet", "hot", "viridis")
NO_HEATMAP = "(none)"
OUT_OF_DOMAIN = "unlike this model's training data — results not meaningful"
DOMAIN_WORDS = {"out": "out of domain", "in": "in domain", "unknown": "domain unknown"}
DOMAIN_COLOURS = {"out": "#c62828", "in": "#2e7d32", "unknown": "#888888"}


def domain_state(sr: SeriesResult) -> str:
    """'out', 'in' or 'unknown' (no check ran, or it could not decide)."""
    if sr.out_of_domain:
        return "out"
    return "in" if sr.domain.get("in_domain") is True else "unknown"


def domain_detail(sr: SeriesResult) -> str:
    """Why the check said what it said, in one line: score against threshold, the model, its reason."""
    d = sr.domain
    parts = []
    score, threshold = d.get("score"), d.get("threshold")
    if score is not None and threshold is not None:
        relation = "above" if float(score) > float(threshold) else "within"
        parts.append(f"domain score {float(score):.3g} {relation} threshold {float(threshold):.3g}")
    elif score is not None:
        parts.append(f"domain score {float(score):.3g}")
    if d.get("model"):
        parts.append(f"model {d['model']}")
    if d.get("reason"):
        parts.append(str(d["reason"]))
    if not parts:
        parts.append("no domain check for this result")
    return f"{sr.title}: " + "; ".join(parts)


TITLE_ROLE = Qt.ItemDataRole.UserRole  # a result row's title without the domain words
DOMAIN_ROLE = Qt.ItemDataRole.UserRole + 1


def _title(item: QTreeWidgetItem) -> str:
    return item.data(0, TITLE_ROLE) or item.text(0)


def _fmt_score(name: str, value: float) -> str:
    if name.endswith("mL") or name.endswith("mm2"):
        return f"{value:.1f}"
    return f"{value:.3f}"


DENSITY_TITLE = "Breast density (estimate)"
SIDE_WORDS = {"R": "Right breast", "L": "Left breast"}


def density_text(entry: dict) -> str:
    """'48 % · c (est.)' for a density entry (short: the score column of a docked panel is narrow; the
    tooltip names BI-RADS and the method), or why there is none."""
    if "percent" not in entry:
        return f"n/a: {entry.get('error', 'not measured')}"
    return f"{float(entry['percent']):.0f} % · {entry['category']} (est.)"


def density_tip(entry: dict) -> str:
    from inference.density import METHOD

    if "percent" not in entry:
        return str(entry.get("error", ""))
    return (f"BI-RADS density category {entry.get('category')} (estimate): "
            f"{entry.get('category_words', '')}; dense {entry.get('dense_area_mm2')} of "
            f"{entry.get('breast_area_mm2')} mm² breast. An estimate, not a reading: {METHOD}")


def _slider(lo: int, hi: int, value: int, tip: str) -> QSlider:
    s = QSlider(Qt.Orientation.Horizontal)
    s.setRange(lo, hi)
    s.setValue(value)
    s.setToolTip(tip)
    return s


DEFAULT_THRESHOLD = 30  # percent: a map kind never adjusted starts here


class AnalysisPanel(QWidget):
    heatmap_chosen = Signal(str)  # overlay name, or NO_HEATMAP
    heatmap_style_changed = Signal()  # opacity / threshold / colormap
    labels_style_changed = Signal()  # opacity / outline

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = QLabel("No analysis yet. Press Analyze (A) on a CT series or a mammography exam.")
        self.title.setWordWrap(True)
        self.domain_warning = QLabel("")  # shown only when a result is out of its model's domain
        self.domain_warning.setWordWrap(True)
        self.domain_warning.setStyleSheet("background: #c62828; color: white; font-weight: bold; "
                                          "padding: 6px; border-radius: 3px;")
        self.domain_warning.hide()
        self.scores = QTreeWidget(self)
        self.scores.setHeaderLabels(["Result", "Score"])
        self.scores.setRootIsDecorated(True)
        self.scores.setColumnWidth(0, 190)

        heat_box = QGroupBox("Heatmap (H)")
        self.heatmap_combo = QComboBox()
        self.heatmap_combo.setToolTip("Which probability map to show on the images")
        self.heatmap_combo.currentTextChanged.connect(self._heatmap_combo_changed)
        self.opacity = _slider(0, 100, 50, "Heatmap opacity")
        self.threshold = _slider(0, 100, DEFAULT_THRESHOLD, "Hide probabilities below this value")
        self._thresholds: dict[str, int] = {}  # heatmap name -> its slider value, once the user moved it
        self._threshold_of = ""  # the heatmap whose threshold the slider shows
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
        layout.addWidget(self.domain_warning)
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
        self._show_threshold_of(self.heatmap_combo.currentText())

    def threshold_for(self, name: str) -> float:
        """The threshold kept for heatmap ``name`` (the default for a map never adjusted)."""
        return self._thresholds.get(name, DEFAULT_THRESHOLD) / 100.0

    def _show_threshold_of(self, name: str) -> None:
        """Another map kind is shown: the slider shows the threshold chosen for it, not the last map's
        (0.53 set on the mammograms' mass map is no threshold for a CT lesion map)."""
        if name == self._threshold_of:
            return
        self._threshold_of = name
        value = self._thresholds.get(name, DEFAULT_THRESHOLD)
        if self.threshold.value() != value:
            self.threshold.setValue(value)  # -> _heat_style: the layers follow

    def show_result(self, result: AnalysisResult | None, cached: bool = False) -> None:
        self.scores.clear()
        self._show_domain(result)
        if result is None:
            self.title.setText("No analysis yet. Press Analyze (A) on a CT series or a mammography exam.")
            self.models.setText("")
            return
        what = ("4-view mammography exam" if result.kind == "mammo-exam"
                else f"{result.kind.upper()} segmentation" if result.kind in ("ct", "mr")
                else f"{result.kind} analysis")
        when = "from the cache" if cached else f"in {result.seconds:.1f} s on {result.device}"
        self.title.setText(f"{what}, {when}")
        if result.exam_scores:
            exam = QTreeWidgetItem(["Exam score per breast", ""])
            for side, p in result.exam_scores.items():
                exam.addChild(QTreeWidgetItem([{"R": "Right breast", "L": "Left breast"}.get(side, side),
                                               f"{p:.3f}"]))
            self.scores.addTopLevelItem(exam)
            exam.setExpanded(True)
        self._show_breast_density(result)
        for sr in result.series.values():
            state = domain_state(sr)  # said on the image's own row, across both columns
            no_model = not sr.domain and not result.models  # density only: there is no model to judge by
            words = "" if no_model else f"  ·  {'⚠ ' if state == 'out' else ''}{DOMAIN_WORDS[state]}"
            item = QTreeWidgetItem([f"{sr.title}{words}"])
            item.setData(0, TITLE_ROLE, sr.title)
            item.setData(0, DOMAIN_ROLE, "" if no_model else DOMAIN_WORDS[state])
            if not no_model:
                item.setToolTip(0, domain_detail(sr))
            if state != "in" and not no_model:
                item.setForeground(0, QColor(DOMAIN_COLOURS[state]))
            if state == "out":
                font = item.font(0)
                font.setBold(True)
                item.setFont(0, font)
            for name, value in sr.scores.items():
                item.addChild(QTreeWidgetItem([name, _fmt_score(name, value)]))
            if isinstance(sr.notes.get("density"), dict):
                row = QTreeWidgetItem(["density", density_text(sr.notes["density"])])
                row.setToolTip(1, density_tip(sr.notes["density"]))
                item.addChild(row)
            self.scores.addTopLevelItem(item)
            item.setFirstColumnSpanned(True)
            item.setExpanded(True)
        self.models.setText("Models: " + "; ".join(f"{role}: {m}" for role, m in result.models.items()))
        if result.warnings:
            self.models.setText(self.models.text() + "\n" + "\n".join(result.warnings))

    def _show_breast_density(self, result: AnalysisResult) -> None:
        """Per-breast density (mean of its CC and MLO) with the category, worded as an estimate."""
        breasts = result.breast_density()
        if not breasts:
            return
        top = QTreeWidgetItem([DENSITY_TITLE, ""])
        top.setToolTip(0, "Area-based percent density, training-free; BI-RADS 4th ed. quartiles. "
                          "An estimate, not a reading.")
        for side, entry in breasts.items():
            row = QTreeWidgetItem([SIDE_WORDS.get(side, side), density_text(entry)])
            row.setToolTip(1, density_tip(entry))
            top.addChild(row)
        self.scores.addTopLevelItem(top)
        top.setExpanded(True)

    def _show_domain(self, result: AnalysisResult | None) -> None:
        """The red line over the scores when any analysed image is out of its model's domain."""
        out = [sr for sr in result.series.values() if sr.out_of_domain] if result is not None else []
        if not out:
            self.domain_warning.hide()
            self.domain_warning.setText("")
            self.domain_warning.setToolTip("")
            return
        which = "" if len(out) == len(result.series) else ", ".join(sr.title for sr in out) + ": "
        self.domain_warning.setText(f"⚠ {which}{OUT_OF_DOMAIN}")
        self.domain_warning.setToolTip("\n".join(domain_detail(sr) for sr in out))
        self.domain_warning.show()

    def domain_texts(self) -> dict[str, str]:
        """{"RCC": "out of domain", ...}: the domain word listed on each analysed image's row."""
        tops = [self.scores.topLevelItem(i) for i in range(self.scores.topLevelItemCount())]
        return {_title(top): top.data(0, DOMAIN_ROLE) for top in tops if top.data(0, DOMAIN_ROLE)}

    def score_texts(self) -> dict[str, str]:
        """{"RCC/malignancy": "0.812", ...} of what is listed (for tests and copy/paste)."""
        out = {}
        for i in range(self.scores.topLevelItemCount()):
            top = self.scores.topLevelItem(i)
            for j in range(top.childCount()):
                child = top.child(j)
                out[f"{_title(top)}/{child.text(0)}"] = child.text(1)
        return out

    # -- internals -------------------------------------------------------------------------------
    def _heatmap_combo_changed(self, name: str) -> None:
        self._show_threshold_of(name)
        self.heatmap_chosen.emit(name)

    def _heat_style(self, *_args) -> None:
        if self._threshold_of and self.threshold.value() != self._thresholds.get(self._threshold_of,
                                                                                 DEFAULT_THRESHOLD):
            self._thresholds[self._threshold_of] = self.threshold.value()
        self.threshold_label.setText(f"{self.heatmap_threshold:.2f}")
        self.heatmap_style_changed.emit()
