"""The Segment editor panel: label table with statistics, tools, options, effects, undo/redo.

Widgets only; editor_controller.py connects them to the label maps and the views.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

COL_COLOR, COL_NAME, COL_SHOW, COL_LOCK, COL_VOXELS, COL_SIZE, COL_MEAN = range(7)
HEADERS = ["", "Label", "Show", "Lock", "Voxels", "Size", "Mean"]


def _swatch(rgb) -> QIcon:
    pm = QPixmap(14, 14)
    pm.fill(QColor(*rgb))
    return QIcon(pm)


def _spin(lo, hi, value, step, suffix="", decimals=1) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setDecimals(decimals)
    s.setSingleStep(step)
    s.setValue(value)
    s.setSuffix(suffix)
    s.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
    return s


class SegmentPanel(QWidget):
    label_chosen = Signal(int)  # label value made active
    label_renamed = Signal(int, str)
    label_shown = Signal(int, bool)
    label_locked = Signal(int, bool)
    label_color_clicked = Signal(int)
    add_clicked = Signal()
    delete_clicked = Signal(int)
    label_opacity_changed = Signal(int, float)  # value, 0..1
    open_found_clicked = Signal(str)  # a label file found beside the shown series, to open

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._filling = False
        self.values: list[int] = []  # label value per table row
        self.title = QLabel("Choose a tool (Brush B, Erase E, Fill F, Lasso L) to start editing the shown image.")
        self.title.setWordWrap(True)
        self.table = QTableWidget(0, len(HEADERS), self)
        self.table.setHorizontalHeaderLabels(HEADERS)
        self.table.verticalHeader().hide()
        self.table.setMinimumHeight(120)  # a few labels stay visible when the panel above them grows
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Stretch)
        self.table.itemChanged.connect(self._item_changed)
        self.table.currentCellChanged.connect(lambda row, *_: self._row_chosen(row))
        self.table.cellDoubleClicked.connect(self._cell_double_clicked)
        self.add_button = QPushButton("Add")
        self.delete_button = QPushButton("Delete")
        self.add_button.clicked.connect(self.add_clicked.emit)
        self.delete_button.clicked.connect(self._delete)
        self.label_opacity = QSlider(Qt.Orientation.Horizontal)
        self.label_opacity.setRange(0, 100)
        self.label_opacity.setValue(100)
        self.label_opacity.setToolTip("Opacity of the selected label")
        self.label_opacity.valueChanged.connect(self._opacity_moved)
        row = QHBoxLayout()
        row.addWidget(self.add_button)
        row.addWidget(self.delete_button)
        row.addWidget(QLabel("Opacity"))
        row.addWidget(self.label_opacity, 1)

        # segmentations other tools left beside the shown series (SEG / RTSTRUCT referencing it)
        self.found_box = QGroupBox("Segmentations found beside this series")
        self.found_combo = QComboBox()
        self.found_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.open_found_button = QPushButton("Open for editing")
        self.open_found_button.setToolTip("Open the chosen segmentation over the shown image (its names and "
                                          "colours kept); it replaces the segmentation being edited")
        self.open_found_button.clicked.connect(self._open_found)
        found = QHBoxLayout(self.found_box)
        found.addWidget(self.found_combo, 1)
        found.addWidget(self.open_found_button)
        self.found_box.hide()

        # tools: filled in by the controller with the window's tool actions
        self.tools_box = QGroupBox("Tools")
        self.tools_grid = QGridLayout(self.tools_box)

        options = QGroupBox("Options")
        form = QFormLayout(options)
        self.radius = _spin(0.2, 100.0, 3.0, 0.5, " mm")
        self.radius.setToolTip("Brush radius ([ and ] change it)")
        self.sphere = QCheckBox("3D sphere brush")
        self.threshold_lo = _spin(-100000, 100000, -100.0, 10.0)
        self.threshold_hi = _spin(-100000, 100000, 300.0, 10.0)
        self.threshold_always = QCheckBox("Limit every brush to this range")
        self.tolerance = _spin(0, 100000, 50.0, 5.0)
        self.tolerance.setToolTip("Flood fill: voxels within ± this of the clicked value")
        self.fill_3d = QCheckBox("Fill in 3D")
        self.fill_unlabelled = QCheckBox("Fill only unlabelled voxels")
        self.fill_unlabelled.setChecked(True)
        thr = QHBoxLayout()
        thr.addWidget(self.threshold_lo)
        thr.addWidget(QLabel("to"))
        thr.addWidget(self.threshold_hi)
        form.addRow("Brush", self.radius)
        form.addRow("", self.sphere)
        form.addRow("Threshold", thr)
        form.addRow("", self.threshold_always)
        form.addRow("Fill tolerance", self.tolerance)
        form.addRow("", self.fill_3d)
        form.addRow("", self.fill_unlabelled)

        effects = QGroupBox("Clean up (active label)")
        grid = QGridLayout(effects)
        self.min_island = QSpinBox()
        self.min_island.setRange(1, 10_000_000)
        self.min_island.setValue(50)
        self.min_island.setSuffix(" voxels")
        self.remove_islands = QPushButton("Remove islands smaller than")
        self.keep_largest = QPushButton("Keep largest island")
        self.smooth_radius = _spin(0.2, 50.0, 2.0, 0.5, " mm")
        self.opening = QPushButton("Smooth: open")
        self.closing = QPushButton("Smooth: close")
        self.fill_between = QPushButton("Fill between slices")
        self.fill_between.setToolTip("Interpolate the label between the slices it is drawn on (in the active view's plane)")
        grid.addWidget(self.remove_islands, 0, 0)
        grid.addWidget(self.min_island, 0, 1)
        grid.addWidget(self.keep_largest, 1, 0, 1, 2)
        grid.addWidget(self.opening, 2, 0)
        grid.addWidget(self.closing, 2, 1)
        grid.addWidget(QLabel("radius"), 3, 0)
        grid.addWidget(self.smooth_radius, 3, 1)
        grid.addWidget(self.fill_between, 4, 0, 1, 2)

        self.undo_button = QPushButton("Undo")
        self.redo_button = QPushButton("Redo")
        self.save_button = QPushButton("Save…")
        self.load_button = QPushButton("Load…")
        bottom = QHBoxLayout()
        for b in (self.undo_button, self.redo_button, self.save_button, self.load_button):
            bottom.addWidget(b)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color: #777;")

        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.found_box)
        layout.addWidget(self.table, 1)
        layout.addLayout(row)
        layout.addWidget(self.tools_box)
        layout.addWidget(options)
        layout.addWidget(effects)
        layout.addLayout(bottom)
        layout.addWidget(self.status)

    # -- filling the table ---------------------------------------------------------------------
    @property
    def effect_buttons(self) -> tuple[QPushButton, ...]:
        """The clean-up effects (disabled while one computes on the shown map)."""
        return (self.remove_islands, self.keep_largest, self.opening, self.closing, self.fill_between)

    def set_labels(self, labelmap, stats: dict | None = None) -> None:
        """Rows for the label table of ``labelmap`` (None: empty), with statistics when given."""
        self._filling = True
        try:
            self.table.setRowCount(0)
            self.values = []
            if labelmap is None:
                return
            for value, lb in sorted(labelmap.labels.items()):
                r = self.table.rowCount()
                self.table.insertRow(r)
                self.values.append(value)
                swatch = QTableWidgetItem(_swatch(lb.color), "")
                swatch.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                swatch.setToolTip("Double-click to change the colour")
                name = QTableWidgetItem(f"{lb.name}")
                name.setToolTip(f"value {value}" + (f" — key {value}" if value <= 9 else ""))
                show = QTableWidgetItem()
                show.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsSelectable)
                show.setCheckState(Qt.CheckState.Checked if lb.visible else Qt.CheckState.Unchecked)
                lock = QTableWidgetItem()
                lock.setFlags(show.flags())
                lock.setCheckState(Qt.CheckState.Checked if lb.locked else Qt.CheckState.Unchecked)
                st = (stats or {}).get(value, {})
                size = st.get("volume_ml")
                size_text = f"{size:.2f} mL" if size is not None else (
                    f"{st['area_mm2']:.1f} mm²" if st.get("area_mm2") is not None else "")
                mean = st.get("mean")
                cells = [swatch, name, show, lock, QTableWidgetItem(str(st.get("voxels", ""))),
                         QTableWidgetItem(size_text), QTableWidgetItem("" if mean is None else f"{mean:.1f}")]
                for c in (COL_VOXELS, COL_SIZE, COL_MEAN):
                    cells[c].setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                for c, item in enumerate(cells):
                    self.table.setItem(r, c, item)
                if value == labelmap.active:
                    self.table.selectRow(r)
                    self.label_opacity.setValue(round(lb.opacity * 100))
        finally:
            self._filling = False

    def set_found(self, paths) -> None:
        """List label files found beside the shown series (hidden when there are none)."""
        self.found_combo.clear()
        for p in paths:
            self.found_combo.addItem(p.name, str(p))
            self.found_combo.setItemData(self.found_combo.count() - 1, str(p), Qt.ItemDataRole.ToolTipRole)
        self.found_box.setVisible(bool(paths))

    def _open_found(self) -> None:
        path = self.found_combo.currentData()
        if path:
            self.open_found_clicked.emit(str(path))

    def stats_texts(self) -> dict[str, dict[str, str]]:
        """{label name: {"voxels": ..., "size": ..., "mean": ...}} as shown."""
        out = {}
        for r in range(self.table.rowCount()):
            out[self.table.item(r, COL_NAME).text()] = {
                "voxels": self.table.item(r, COL_VOXELS).text(), "size": self.table.item(r, COL_SIZE).text(),
                "mean": self.table.item(r, COL_MEAN).text()}
        return out

    # -- internals -------------------------------------------------------------------------------
    def _value(self, row: int) -> int | None:
        return self.values[row] if 0 <= row < len(self.values) else None

    def _row_chosen(self, row: int) -> None:
        value = self._value(row)
        if value is not None and not self._filling:
            self.label_chosen.emit(value)

    def _item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling:
            return
        value = self._value(item.row())
        if value is None:
            return
        if item.column() == COL_NAME:
            self.label_renamed.emit(value, item.text().strip())
        elif item.column() == COL_SHOW:
            self.label_shown.emit(value, item.checkState() == Qt.CheckState.Checked)
        elif item.column() == COL_LOCK:
            self.label_locked.emit(value, item.checkState() == Qt.CheckState.Checked)

    def _cell_double_clicked(self, row: int, column: int) -> None:
        value = self._value(row)
        if value is not None and column == COL_COLOR:
            self.label_color_clicked.emit(value)

    def _opacity_moved(self, percent: int) -> None:
        value = self._value(self.table.currentRow())
        if value is not None and not self._filling:
            self.label_opacity_changed.emit(value, percent / 100.0)

    def _delete(self) -> None:
        value = self._value(self.table.currentRow())
        if value is not None:
            self.delete_clicked.emit(value)
