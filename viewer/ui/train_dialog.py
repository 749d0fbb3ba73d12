"""AI ▸ Train…: fine-tune a segmentation model on an exported dataset, with a live loss/Dice plot.

Training runs on its own worker (it can take minutes; loading and viewing go on), reports each
epoch to the plot, stops on Cancel, and leaves a new model version in the user's model folder,
which Analyze then uses (AI ▸ Models… can switch back).
"""
from __future__ import annotations

from pathlib import Path

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
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import Cancelled, LightboxError
from .workers import TaskRunner

DICE_COLORS = ((255, 80, 80), (80, 220, 80), (90, 150, 255), (240, 200, 60))


class TrainDialog(QDialog):
    epoch_done = Signal(object)  # {"epoch", "loss", "val_dice": {class: dice}}, from the worker thread
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
        self.dataset.setPlaceholderText("nnU-Net v2 raw dataset folder (imagesTr, labelsTr, dataset.json)")
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

        self.plot = pg.PlotWidget(background="w")
        self.plot.setLabel("bottom", "epoch")
        self.plot.addLegend(offset=(-10, 10))
        self.loss_curve = self.plot.plot([], [], pen=pg.mkPen((40, 40, 40), width=2), symbol="o", symbolSize=5,
                                         name="loss")
        self.dice_curves: dict[str, pg.PlotDataItem] = {}
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
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.epoch_done.connect(self._epoch, Qt.ConnectionType.QueuedConnection)
        self.reload_models()

    def reload_models(self) -> None:
        from inference.registry import available_models

        self.model.clear()
        names = sorted({c.name for c in available_models(task="segmentation-3d")})
        self.model.addItems(names)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder", self.dataset.text() or str(Path.home()))
        if folder:
            self.dataset.setText(folder)

    @property
    def running(self) -> bool:
        return self.task is not None

    def start(self) -> None:
        from inference.finetune import FinetuneError, Stopped, finetune

        dataset, model = self.dataset.text().strip(), self.model.currentText()
        if not dataset or not Path(dataset).is_dir():
            self.status.setText(f"{dataset or '(no folder)'}: not a dataset folder")
            return
        epochs, steps = self.epochs.value(), self.steps.value()
        self.records = []
        self._redraw()

        def job(progress, should_stop):
            def epoch(record: dict) -> None:
                self.epoch_done.emit(record)
                progress(record["epoch"], epochs)

            try:
                return finetune(dataset, model, epochs, steps, progress=epoch, should_stop=should_stop)
            except Stopped as exc:
                raise Cancelled(str(exc)) from exc
            except FinetuneError as exc:
                raise LightboxError(str(exc)) from exc

        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"Fine-tuning {model} on {Path(dataset).name}…")
        self.task = self.runner.start(job, "training", on_finished=self._done, on_failed=self._failed,
                                      on_cancelled=self._cancelled)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.status.setText("Cancelling after the current step…")

    def _epoch(self, record: dict) -> None:
        self.records.append(record)
        self._redraw()
        dice = ", ".join(f"{k} {v:.3f}" for k, v in record["val_dice"].items())
        self.status.setText(f"epoch {record['epoch']}/{self.epochs.value()}: loss {record['loss']:.4f}"
                            + (f"; validation Dice {dice}" if dice else ""))

    def _redraw(self) -> None:
        epochs = [r["epoch"] for r in self.records]
        self.loss_curve.setData(epochs, [r["loss"] for r in self.records])
        names = sorted({k for r in self.records for k in r["val_dice"]})
        for i, name in enumerate(names):
            if name not in self.dice_curves:
                self.dice_curves[name] = self.plot.plot([], [], pen=pg.mkPen(DICE_COLORS[i % 4], width=2),
                                                        symbol="t", symbolSize=6, name=f"Dice {name}")
            pts = [(r["epoch"], r["val_dice"][name]) for r in self.records if name in r["val_dice"]]
            self.dice_curves[name].setData([p[0] for p in pts], [p[1] for p in pts])

    def _end(self) -> None:
        self.task = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _done(self, card) -> None:
        self._end()
        self.result_card = card
        self.status.setText(f"Wrote {card.name} {card.version} to {card.path}. Analyze uses it from now on "
                            "(AI ▸ Models… switches versions).")
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
