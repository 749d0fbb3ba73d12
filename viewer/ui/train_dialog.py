"""AI ▸ Train…: fine-tune a model on an exported dataset, with a live plot of the loss and the
validation metric (Dice per class for segmentation models, AUC for the exam classifier).

The model list holds every fine-tunable model (3D and 2D segmentation, exam classifier) after
"Automatic (by dataset)", which lets ``inference.finetune.default_model`` choose from the dataset's
contents (CT masks, MG masks, or view classes only). Before training the dialog shows the plan
(``inference.finetune.preflight``: the split, labels the model lacks, classes the data lacks) and asks
before training without validation or ignoring labels. Training runs on its own worker (it can take
minutes; loading and viewing go on), reports each epoch to the plot, stops on Cancel, and leaves a
new model version in the user's model folder. Analyze uses it only if it is not worse than the
version in use on the same validation cases (``inference.activation``); the last message says which.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import Cancelled, LightboxError
from .workers import Committed, TaskRunner

METRIC_COLORS = ((220, 60, 60), (40, 160, 40), (60, 110, 230), (200, 150, 0))
FINETUNABLE = {"segmentation-3d": "3D segmentation", "segmentation-2d": "2D segmentation",
               "exam-classifier": "exam classifier"}  # task -> words for the model list
AUTOMATIC = "Automatic (by dataset)"
RULE_TEXT = ("Analyze uses the new version only if it scores at least as well as the version in use on the same "
             "validation cases (held out from training); otherwise it is kept as \"not better\" and Analyze keeps "
             "the old one. AI ▸ Models… shows both and lets you choose.")
METRICS = (("val_dice", "Dice"), ("val_auc", "AUC"))  # record key -> what the plot calls it


def validation_points(record: dict) -> dict[str, float]:
    """{"Dice lungs": 0.97, ...} or {"AUC suspicious": 0.91, "accuracy": 0.85}: what one epoch adds to the plot."""
    points = {f"{title} {name}": float(v) for key, title in METRICS for name, v in record.get(key, {}).items()}
    if record.get("val_accuracy") is not None:
        points["accuracy"] = float(record["val_accuracy"])
    return points


def loss_axis_range(losses) -> tuple[float, float] | None:
    """The loss axis's (low, high): the points with a margin, never narrower than a fifth of the values'
    size, and not below 0 for a loss that is not. Two epochs at 0.07114 and 0.07129 otherwise filled the
    axis as '71.14 .. 71.29 (x0.001)', which reads like a large change (issue 14)."""
    values = [float(v) for v in losses if v is not None and np.isfinite(v)]
    if not values:
        return None
    lo, hi = min(values), max(values)
    span = max(hi - lo, 0.2 * max(abs(lo), abs(hi)), 1e-3) * 1.1
    low, high = (lo + hi - span) / 2, (lo + hi + span) / 2
    if lo >= 0 > low:
        low, high = 0.0, max(high, span)
    return low, high


class TrainDialog(QDialog):
    epoch_done = Signal(object)  # {"epoch", "loss", "val_dice" or "val_auc": {class: value}}, from the worker
    finished_training = Signal(object)  # the new ModelCard, or None (failed / cancelled)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Train (fine-tune) a model")
        self.resize(640, 520)
        self.runner = TaskRunner(self)
        self.task = None
        self.records: list[dict] = []
        self.result_card = None

        self.dataset = QLineEdit()
        self.dataset.setPlaceholderText("exported dataset folder (imagesTr + labelsTr, or classification.json)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.dataset, 1)
        row.addWidget(browse)
        self.model = QComboBox()
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(5)
        self.steps = QSpinBox()
        self.steps.setRange(1, 100000)
        self.steps.setValue(20)
        form = QFormLayout()
        form.addRow("Dataset", row)
        form.addRow("Model", self.model)
        form.addRow("Epochs", self.epochs)
        form.addRow("Steps per epoch", self.steps)
        self.rule = QLabel(RULE_TEXT)
        self.rule.setWordWrap(True)
        self.plan_label = QLabel("")  # the split and the label mismatches, before training
        self.plan_label.setWordWrap(True)
        self.plan_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.plan = None
        self.dataset.editingFinished.connect(self.check)
        self.model.activated.connect(lambda _i: self.check())

        self.plot = pg.PlotWidget(background="w")
        self.plot.setLabel("bottom", "epoch")
        self.plot.setLabel("left", "training loss")
        for side in ("left", "bottom"):
            self.plot.getPlotItem().getAxis(side).enableAutoSIPrefix(False)  # no '(x0.001)' on a loss axis
        self.legend = self.plot.addLegend(offset=(-10, 30))
        self.loss_curve = self.plot.plot([], [], pen=pg.mkPen((40, 40, 40), width=2), symbol="o", symbolSize=5,
                                         name="loss")
        self.metric_view = self._metric_axis()
        self.metric_curves: dict[str, pg.PlotDataItem] = {}  # "Dice lungs" / "AUC suspicious" -> curve
        self.status = QLabel("Choose a dataset exported for retraining, then Start.")
        self.status.setWordWrap(True)
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.rule)
        layout.addWidget(self.plan_label)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.epoch_done.connect(self._epoch, Qt.ConnectionType.QueuedConnection)
        self.reload_models()

    def _metric_axis(self) -> pg.ViewBox:
        """A second view box on the right axis, 0..1: validation metrics keep their scale whatever the loss."""
        item = self.plot.getPlotItem()
        view = pg.ViewBox()
        item.showAxis("right")
        item.scene().addItem(view)
        item.getAxis("right").linkToView(view)
        item.getAxis("right").setLabel("validation")
        item.getAxis("right").enableAutoSIPrefix(False)
        view.setXLink(item)
        view.setYRange(0, 1.05, padding=0)  # room above 1 for markers at a perfect score
        view.setMouseEnabled(x=False, y=False)

        def follow() -> None:
            view.setGeometry(item.vb.sceneBoundingRect())
            view.linkedViewChanged(item.vb, view.XAxis)

        item.vb.sigResized.connect(follow)
        follow()
        return view

    def reload_models(self) -> None:
        """Automatic first, then every fine-tunable model by name (the item data is the name)."""
        from inference.registry import available_models

        current = self.model.currentData()
        self.model.clear()
        self.model.addItem(AUTOMATIC, None)
        tasks = {}
        for card in available_models():
            if card.task in FINETUNABLE:
                tasks.setdefault(card.name, card.task)
        for name in sorted(tasks):
            self.model.addItem(f"{name} ({FINETUNABLE[tasks[name]]})", name)
        self.model.setCurrentIndex(max(0, self.model.findData(current)))

    def model_names(self) -> list[str]:
        """The models offered, by name (Automatic excluded)."""
        return [self.model.itemData(i) for i in range(1, self.model.count())]

    def select_model(self, name: str | None) -> None:
        self.model.setCurrentIndex(max(0, self.model.findData(name)))

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder", self.dataset.text() or str(Path.home()))
        if folder:
            self.dataset.setText(folder)
            self.check()

    def check(self):
        """Show what a run would train on (split, label mismatches) and return the plan; None, with the
        reason shown, when the dataset cannot train the chosen model at all."""
        from inference.finetune import FinetuneError, preflight
        from inference.registry import ModelError

        dataset = self.dataset.text().strip()
        self.plan = None
        if not dataset or not Path(dataset).is_dir():
            self.plan_label.setText("")
            return None
        try:
            self.plan = preflight(dataset, self.model.currentData())
        except (FinetuneError, ModelError) as exc:
            self.plan_label.setText(f"Cannot train on this dataset: {exc}")
            return None
        card = self.plan.card
        lines = [f"Starts from {card.name} {card.version} (the version Analyze uses): "
                 + "; ".join(self.plan.messages())]
        if not self.plan.validation_cases:
            lines.append("No validation case: the new version could not be compared with the one in use.")
        self.plan_label.setText("\n".join(lines))
        return self.plan

    def confirm(self, title: str, text: str) -> bool:
        """Ask the user (Yes / No, No by default)."""
        answer = QMessageBox.question(self, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _consent(self, checked) -> tuple[bool, bool] | None:
        """(ignore extra labels, train without validation) the user agreed to; None: not started."""
        ignore = allow = False
        refusals = checked.labels.refusals()
        if refusals:
            if not self.confirm("Labels the model lacks", "\n".join(refusals) + "\n\nTrain anyway, ignoring them "
                                "(they are trained as background)?"):
                self.status.setText("Not started: the dataset has labels the model lacks; rename them as the "
                                    "model's classes, or confirm to ignore them.")
                return None
            ignore = True
        if not checked.validation_cases:
            if not self.confirm("Train without validation?",
                                f"{'; '.join(checked.messages()[:1])}: no case is left to validate on, so the new "
                                "version cannot be compared with the one in use. It will be written as "
                                "\"unvalidated\" and Analyze will not use it unless you choose it in AI ▸ "
                                "Models….\n\nTrain without validation?"):
                self.status.setText("Not started: no validation case (export at least 2 cases).")
                return None
            allow = True
        return ignore, allow

    @property
    def running(self) -> bool:
        return self.task is not None

    def start(self) -> None:
        from inference.finetune import FinetuneError, Stopped, default_model, finetune
        from inference.registry import ModelError

        dataset, model = self.dataset.text().strip(), self.model.currentData()
        if not dataset or not Path(dataset).is_dir():
            self.status.setText(f"{dataset or '(no folder)'}: not a dataset folder")
            return
        how = ""
        if model is None:
            model, how = default_model(dataset), " (chosen by the dataset)"
        checked = self.check()
        if checked is None:  # the reason is in the plan line; said here too, where the outcome goes
            self.status.setText(self.plan_label.text())
            self.finished_training.emit(None)
            return
        consent = self._consent(checked)
        if consent is None:
            return
        ignore_labels, allow_unvalidated = consent
        epochs, steps = self.epochs.value(), self.steps.value()
        self.records = []
        for curve in self.metric_curves.values():  # a new run may report another metric
            self.metric_view.removeItem(curve)
            self.legend.removeItem(curve)
        self.metric_curves.clear()
        self._redraw()

        def job(progress, should_stop):
            def epoch(record: dict) -> None:
                self.epoch_done.emit(record)
                progress(record["epoch"], epochs)

            try:
                # the version is written when finetune returns: a Cancel pressed now comes too late
                return Committed(finetune(dataset, model, epochs, steps, progress=epoch, should_stop=should_stop,
                                          allow_no_validation=allow_unvalidated,
                                          ignore_extra_labels=ignore_labels))
            except Stopped as exc:
                raise Cancelled(str(exc)) from exc
            except (FinetuneError, ModelError) as exc:  # the dataset or the model's files: say why
                raise LightboxError(str(exc)) from exc

        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"Fine-tuning {model} {checked.card.version}{how} on {Path(dataset).name}…")
        self.task = self.runner.start(job, "training", on_finished=self._done, on_failed=self._failed,
                                      on_cancelled=self._cancelled)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.status.setText("Cancelling after the current step…")

    def _epoch(self, record: dict) -> None:
        self.records.append(record)
        self._redraw()
        self.status.setText(f"epoch {record['epoch']}/{self.epochs.value()}: loss {record['loss']:.4f}; "
                            f"{self._describe(record)}")

    @staticmethod
    def _describe(record: dict) -> str:
        """inference.finetune.describe_metrics, plus the classifier's accuracy when it does not say it."""
        from inference.finetune import describe_metrics

        text = describe_metrics(record)
        if record.get("val_accuracy") is not None and "accuracy" not in text:
            text += f", accuracy {record['val_accuracy']:.3f}"
        return text

    def _redraw(self) -> None:
        epochs = [r["epoch"] for r in self.records]
        self.loss_curve.setData(epochs, [r["loss"] for r in self.records])
        y_range = loss_axis_range(r["loss"] for r in self.records)
        if y_range is not None:
            self.plot.setYRange(*y_range, padding=0)
        bottom = self.plot.getPlotItem().getAxis("bottom")
        if epochs and max(epochs) - min(epochs) <= 12:
            bottom.setTickSpacing(1, 1)  # whole epochs, not 1.2, 1.4, ...
        else:
            bottom.setTickSpacing()
        titles = [title for key, title in METRICS if any(key in r for r in self.records)]
        if any(r.get("val_accuracy") is not None for r in self.records):
            titles.append("accuracy")
        self.plot.getPlotItem().getAxis("right").setLabel("validation " + " / ".join(titles) if titles
                                                          else "validation")
        points = [validation_points(r) for r in self.records]
        for label in sorted({k for p in points for k in p}, key=lambda k: (k == "accuracy", k)):
            if label not in self.metric_curves:
                color = METRIC_COLORS[len(self.metric_curves) % len(METRIC_COLORS)]
                style = Qt.PenStyle.DashLine if label == "accuracy" else Qt.PenStyle.SolidLine
                curve = pg.PlotDataItem([], [], pen=pg.mkPen(color, width=2, style=style), symbol="t", symbolSize=7,
                                        symbolBrush=color, symbolPen=color)
                self.metric_view.addItem(curve)
                self.legend.addItem(curve, label)
                self.metric_curves[label] = curve
            pts = [(r["epoch"], p[label]) for r, p in zip(self.records, points) if label in p]
            self.metric_curves[label].setData([e for e, _ in pts], [v for _, v in pts])

    def _end(self) -> None:
        self.task = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _done(self, card) -> None:
        from inference.activation import outcome

        self._end()
        self.result_card = card
        last = f" (last epoch: {self._describe(self.records[-1])})" if self.records else ""
        self.status.setText(f"Wrote {card.name} {card.version}{last} to {card.path}: {outcome(card)}. "
                            "AI ▸ Models… shows every version and lets you choose.")
        self.finished_training.emit(card)

    def _failed(self, message: str) -> None:
        self._end()
        self.status.setText(f"Training failed: {message}")
        self.finished_training.emit(None)

    def _cancelled(self) -> None:
        self._end()
        self.status.setText("Training cancelled; no model was written.")
        self.finished_training.emit(None)

    def shutdown(self) -> None:
        self.runner.shutdown()
