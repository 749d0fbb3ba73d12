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

Issue 17: an Augmentation choice (None / Classic / cGAN infill, with a count) adds synthetic positives
to the training split of the mammography lesion models. "Preview" makes a few of them from the chosen
dataset on a worker and shows them beside real positives (``inference.augment.grid_image``), so the
user sees what the generator makes before spending a training run on it; after training, the version's
saved ``augment_grid.png`` is shown and the summary names the augmentation its card records. Imported
models are listed too; those that cannot be fine-tuned are greyed out with the reason as tooltip.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import Cancelled, LightboxError
from .augment_preview import GridPreview
from .train_options import (
    AUGMENT_NAMES,
    augment_reason,
    augment_tooltips,
    augmentation_summary,
    grid_path,
    infill_card,
    model_entries,
)
from .workers import Committed, TaskRunner

METRIC_COLORS = ((220, 60, 60), (40, 160, 40), (60, 110, 230), (200, 150, 0))
PREVIEW_COUNT = 8  # synthetic patches a preview makes (one row of the grid)
PREVIEW_HINT = ("Preview shows real positives of the dataset (top row) beside synthetic ones the chosen "
                "augmentation makes from it (bottom row), before any training.")
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
    stage_progress = Signal(str, int, int)  # (stage, done, total) of work before the epochs ("augment")
    finished_training = Signal(object)  # the new ModelCard, or None (failed / cancelled)
    preview_finished = Signal(bool)  # True: a grid is shown; False: failed or cancelled

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Train (fine-tune) a model")
        self.resize(720, 760)
        self.runner = TaskRunner(self)
        self.task = None
        self.records: list[dict] = []
        self.result_card = None
        self._augment_tips: dict[str, str] = {}
        self._preview_of = None  # (dataset, model, method) the grid shown was made for

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
        form.addRow("Augmentation", self._augment_row())
        self.rule = QLabel(RULE_TEXT)
        self.rule.setWordWrap(True)
        self.plan_label = QLabel("")  # the split and the label mismatches, before training
        self.plan_label.setWordWrap(True)
        self.plan_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.plan = None
        self.dataset.editingFinished.connect(self.check)
        self.model.activated.connect(lambda _i: self.check())
        self.preview = GridPreview(PREVIEW_HINT)

        self.plot = pg.PlotWidget(background="w")
        self.plot.setMinimumHeight(200)
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
        self.progress_bar = QProgressBar()  # synthesis, then the epochs
        self.progress_bar.hide()
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
        layout.addWidget(self.preview, 3)
        layout.addWidget(self.plot, 4)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.epoch_done.connect(self._epoch, Qt.ConnectionType.QueuedConnection)
        self.stage_progress.connect(self._stage, Qt.ConnectionType.QueuedConnection)
        self.reload_models()

    def _augment_row(self) -> QHBoxLayout:
        """Augmentation method, how many synthetic positives, and Preview."""
        self.augment = QComboBox()
        for method, words in AUGMENT_NAMES.items():
            self.augment.addItem(words, method)
        self.augment_count = QSpinBox()
        self.augment_count.setRange(0, 10000)
        self.augment_count.setSpecialValueText("automatic")  # 0: finetune's own rule
        self.augment_count.setToolTip("Synthetic positives to add to the training split; automatic brings the "
                                      "positives to about a third of the training items")
        self.preview_button = QPushButton("Preview")
        self.preview_button.setToolTip("Make a few synthetic positives from this dataset now and show them beside "
                                       "real ones (nothing is trained or written)")
        self.preview_button.clicked.connect(self.start_preview)
        self.augment.currentIndexChanged.connect(lambda _i: self._augment_changed())
        row = QHBoxLayout()
        row.addWidget(self.augment, 1)
        row.addWidget(QLabel("count"))
        row.addWidget(self.augment_count)
        row.addWidget(self.preview_button)
        return row

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
        """Automatic first, then every fine-tunable model by name (the item data is the name), then the
        imported ones; one that cannot be trained is greyed out with the reason as its tooltip."""
        from inference.registry import available_models

        current = self.model.currentData()
        self.model.clear()
        self.model.addItem(AUTOMATIC, None)
        items: QStandardItemModel = self.model.model()
        for entry in model_entries(available_models()):
            self.model.addItem(entry.text, entry.name)
            if entry.reason is not None:
                item = items.item(self.model.count() - 1)
                item.setEnabled(False)
                item.setToolTip(entry.reason)
        index = self.model.findData(current)
        self.model.setCurrentIndex(index if index > 0 and self.model_reason(current) is None else 0)
        self._augment_state()

    def model_reason(self, name: str | None) -> str | None:
        """Why model ``name`` cannot be chosen (its greyed item's tooltip); None when it can."""
        index = self.model.findData(name)
        if index <= 0 or self.model.model().item(index).isEnabled():
            return None
        return self.model.itemData(index, Qt.ItemDataRole.ToolTipRole)

    def model_names(self) -> list[str]:
        """The models offered, by name (Automatic excluded)."""
        return [self.model.itemData(i) for i in range(1, self.model.count())]

    def select_model(self, name: str | None) -> None:
        self.model.setCurrentIndex(max(0, self.model.findData(name)))
        self._augment_state()

    # -- augmentation -------------------------------------------------------------
    def chosen_card(self):
        """The card training would start from: the plan's, else the version in use of the chosen model;
        None for Automatic before a dataset says which."""
        from inference import activation
        from inference.registry import available_models

        if self.plan is not None:
            return self.plan.card
        name = self.model.currentData()
        if name is None:
            return None
        cards = available_models()
        return activation.active_version(name, cards)[0] or next((c for c in cards if c.name == name), None)

    def augment_method(self) -> str:
        """The augmentation a run would use: "none" while the choice does not apply to the model."""
        return self.augment.currentData() if self.augment.isEnabled() else "none"

    def _augment_state(self) -> None:
        """Enable the choice for the models it applies to (else greyed out with the reason), and the cGAN
        item only when a version of the infill model is in use; tooltips name what each method does."""
        reason = augment_reason(self.chosen_card())
        infill = infill_card()
        tips = self._augment_tips = augment_tooltips(infill)
        items: QStandardItemModel = self.augment.model()
        for i in range(self.augment.count()):
            method = self.augment.itemData(i)
            items.item(i).setToolTip(tips[method])
            items.item(i).setEnabled(method != "cgan" or infill is not None)
        if self.augment.currentData() == "cgan" and infill is None:
            self.augment.setCurrentIndex(0)
        usable = reason is None
        for widget in (self.augment, self.augment_count):
            widget.setEnabled(usable)
        self.augment.setToolTip(tips[self.augment.currentData()] if usable else f"Not available: {reason}")
        self._augment_changed()
        self.preview.setVisible(usable or self.preview.image is not None)  # no preview hint for a CT model

    def _preview_key(self) -> tuple:
        return self.dataset.text().strip(), self.model.currentData(), self.augment_method()

    def _augment_changed(self) -> None:
        """Preview only for a method that makes something; a grid made for other settings is taken away."""
        if self.preview.image is not None and self._preview_of != self._preview_key():
            self.preview.clear()
        self.preview_button.setEnabled(not self.running and self.augment_method() != "none")
        if self.augment.isEnabled():
            self.augment.setToolTip(self._augment_tips[self.augment.currentData()])

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
            self._augment_state()
            return None
        try:
            self.plan = preflight(dataset, self.model.currentData())
        except (FinetuneError, ModelError) as exc:
            self.plan_label.setText(f"Cannot train on this dataset: {exc}")
            self._augment_state()
            return None
        self._augment_state()
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

        if self.running:
            return
        dataset, model = self.dataset.text().strip(), self.model.currentData()
        if self.model_reason(model) is not None:
            self.status.setText(f"{model} cannot be fine-tuned: {self.model_reason(model)}")
            self.finished_training.emit(None)
            return
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
        augment, count = self.augment_method(), self.augment_count.value() or None
        self.records = []
        for curve in self.metric_curves.values():  # a new run may report another metric
            self.metric_view.removeItem(curve)
            self.legend.removeItem(curve)
        self.metric_curves.clear()
        self._redraw()

        def job(progress, should_stop):
            def epoch(record: dict) -> None:
                if record.get("stage") is not None:  # work before the epochs: synthesis of positives
                    self.stage_progress.emit(str(record["stage"]), int(record["done"]), int(record["total"]))
                    return
                self.epoch_done.emit(record)
                progress(record["epoch"], epochs)

            try:
                # the version is written when finetune returns: a Cancel pressed now comes too late
                return Committed(finetune(dataset, model, epochs, steps, progress=epoch, should_stop=should_stop,
                                          allow_no_validation=allow_unvalidated,
                                          ignore_extra_labels=ignore_labels, augment=augment,
                                          augment_count=count))
            except Stopped as exc:
                raise Cancelled(str(exc)) from exc
            except (FinetuneError, ModelError) as exc:  # the dataset or the model's files: say why
                raise LightboxError(str(exc)) from exc

        with_augment = "" if augment == "none" else f" with {AUGMENT_NAMES[augment]} augmentation"
        self.status.setText(f"Fine-tuning {model} {checked.card.version}{how} on {Path(dataset).name}"
                            f"{with_augment}…")
        self._show_progress("epoch %v/%m", 0, epochs)
        self.task = self.runner.start(job, "training", on_finished=self._done, on_failed=self._failed,
                                      on_cancelled=self._cancelled)
        self._busy()

    # -- preview ------------------------------------------------------------------
    def start_preview(self) -> None:
        """Make a few synthetic positives of the chosen dataset on a worker and show them beside real ones."""
        from inference.finetune import FinetuneError
        from inference.registry import ModelError

        from .augment_sample import preview_grid

        if self.running:
            return
        method = self.augment_method()
        checked = self.check()
        if checked is None:
            self.status.setText(self.plan_label.text() or "Choose a dataset folder first.")
            self.preview_finished.emit(False)
            return
        if method == "none":
            self.status.setText("Choose Classic or cGAN infill to preview synthetic positives.")
            self.preview_finished.emit(False)
            return
        dataset, n = self.dataset.text().strip(), min(self.augment_count.value() or PREVIEW_COUNT, PREVIEW_COUNT)

        def job(progress, should_stop):
            def step(stage: str, done: int, total: int) -> None:
                self.stage_progress.emit(stage, done, total)
                progress(done, total)

            try:
                return preview_grid(dataset, checked, method, n, progress=step, should_stop=should_stop)
            except (FinetuneError, ModelError, ValueError) as exc:  # the dataset or the generator: say why
                raise LightboxError(str(exc)) from exc

        self.status.setText(f"Making {n} synthetic positives ({AUGMENT_NAMES[method]}) from "
                            f"{Path(dataset).name} for a preview…")
        self._show_progress("synthesizing %v/%m", 0, n)
        self.task = self.runner.start(job, "augmentation preview", on_finished=self._previewed,
                                      on_failed=self._preview_failed, on_cancelled=self._preview_cancelled)
        self._busy()

    def _previewed(self, result) -> None:
        grid, caption = result
        self._end()
        self._preview_of = self._preview_key()
        self.preview.show_grid(grid, caption)
        self.status.setText("Preview ready (nothing was trained or written); Start trains with this augmentation.")
        self.preview_finished.emit(True)

    def _preview_failed(self, message: str) -> None:
        self._ended(f"Preview failed: {message}", self.preview_finished, False)

    def _preview_cancelled(self) -> None:
        self._ended("Preview cancelled.", self.preview_finished, False)

    def _ended(self, text: str, signal, value) -> None:
        """A task that leaves nothing to show: buttons back, the reason in the status line, then the signal."""
        self._end()
        self.status.setText(text)
        signal.emit(value)

    # -- progress -----------------------------------------------------------------
    def _busy(self) -> None:
        for button in (self.start_button, self.preview_button):
            button.setEnabled(False)
        self.cancel_button.setEnabled(True)

    def _show_progress(self, text: str, done: int, total: int) -> None:
        self.progress_bar.setFormat(text)
        self.progress_bar.setRange(0, max(1, total))
        self.progress_bar.setValue(done)
        self.progress_bar.show()

    def _stage(self, stage: str, done: int, total: int) -> None:
        """Progress of the work before the epochs; ``augment``: synthetic positives made so far."""
        if self.task is None:
            return
        words = {"augment": "synthesizing", "reading": "reading views"}.get(stage, stage)
        self._show_progress(f"{words} %v/%m", done, total)
        if stage == "augment" and self.records == []:
            self.status.setText(f"Making synthetic positives: {done}/{total}")

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.status.setText("Cancelling after the current step…")

    def _epoch(self, record: dict) -> None:
        self.records.append(record)
        self._redraw()
        self._show_progress("epoch %v/%m", int(record["epoch"]), self.epochs.value())
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
        self.progress_bar.hide()
        self._augment_changed()

    def _done(self, card) -> None:
        from inference.activation import outcome

        self._end()
        self.result_card = card
        last = f" (last epoch: {self._describe(self.records[-1])})" if self.records else ""
        augmentation = "; " + augmentation_summary(card) if augmentation_summary(card) else ""
        self.status.setText(f"Wrote {card.name} {card.version}{last}{augmentation} to {card.path}: {outcome(card)}. "
                            "AI ▸ Models… shows every version and lets you choose.")
        grid = grid_path(card)
        self._preview_of = self._preview_key()
        if grid is not None:
            self.preview.show_png(grid, f"{card.name} {card.version}: real positives (top) and the synthetic ones it "
                                        f"trained on (bottom), saved as {grid}")
        self.finished_training.emit(card)

    def _failed(self, message: str) -> None:
        self._ended(f"Training failed: {message}", self.finished_training, None)

    def _cancelled(self) -> None:
        self._ended("Training cancelled; no model was written.", self.finished_training, None)

    def shutdown(self) -> None:
        self.runner.shutdown()
