"""Tree of what a scan found: patient -> study -> series, plus the files it could not use."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTreeWidget,
    QTreeWidgetItem,
    QWidget,
)

from ..core.mammo import estimate_spacing
from ..core.mammo_exams import group_exams
from ..core.mammo_views import identify_series
from ..core.study import ScanResult, Series
from .mime import SERIES_MIME, series_mime

KEY_ROLE = Qt.ItemDataRole.UserRole
EXAM_ROLE = Qt.ItemDataRole.UserRole + 7  # an exam row: index of its Exam
COL_NAME, COL_MODALITY, COL_IMAGES = range(3)
PROBLEMS_TEXT = "Problems"
EXAMS_TEXT = "Mammography exams"
THUMBNAIL_SIZE = 48


def image_count(series: Series) -> int:
    if series.kind == "file":
        return 1
    return len(series.frames)


def _date(d: str) -> str:
    d = (d or "").strip()
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


def thumbnail_icon(gray: np.ndarray, size: int = THUMBNAIL_SIZE) -> QIcon:
    """A square icon with the uint8 preview centred on black (keeps rows aligned in the tree)."""
    canvas = np.zeros((size, size), np.uint8)
    h, w = min(gray.shape[0], size), min(gray.shape[1], size)
    y0, x0 = (size - h) // 2, (size - w) // 2
    canvas[y0:y0 + h, x0:x0 + w] = gray[:h, :w]
    image = QImage(canvas.data, size, size, size, QImage.Format.Format_Grayscale8).copy()
    return QIcon(QPixmap.fromImage(image))


class SeriesBrowser(QTreeWidget):
    """Selecting (or double-clicking) an image series emits ``series_selected``; series can be dragged
    onto a viewport (see mime.py) and show a thumbnail once ``set_thumbnail`` gives one."""

    series_selected = Signal(object)  # Series
    exam_selected = Signal(object)  # Study: a grouped mammography exam's hung views, to hang together

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setColumnCount(3)
        self.setHeaderLabels(["Series", "Mod.", "Images"])
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setAlternatingRowColors(True)
        self.setIconSize(QSize(THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        header = self.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(COL_MODALITY, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL_IMAGES, QHeaderView.ResizeMode.ResizeToContents)
        self._series: dict[str, Series] = {}
        self._items: dict[str, QTreeWidgetItem] = {}
        self.problems_item: QTreeWidgetItem | None = None
        self.exams_item: QTreeWidgetItem | None = None
        self.currentItemChanged.connect(self._on_current_changed)
        self.itemActivated.connect(self._on_activated)
        self.itemClicked.connect(lambda item, _col: self._exam_chosen(item))
        self._exams: list = []  # the grouped exams; an exam row holds its index under EXAM_ROLE

    # -- filling ------------------------------------------------------------------
    def set_result(self, result: ScanResult) -> None:
        """Replace the tree with a scan result (no series is selected yet)."""
        self.blockSignals(True)
        try:
            self.clear()
            self._series.clear()
            self._items.clear()
            self.problems_item = None
            self.exams_item = None
            self._exams = []
            for patient in result.patients:
                who = patient.name.replace("^", " ").strip() or "(no name)"
                p_item = QTreeWidgetItem([f"{who}  [{patient.id or 'no ID'}]", "", ""])
                p_item.setFlags(Qt.ItemFlag.ItemIsEnabled)
                self.addTopLevelItem(p_item)
                for study in patient.studies:
                    label = " ".join(b for b in (_date(study.date), study.description) if b) or "(study)"
                    n_img = sum(image_count(s) for s in study.series)
                    st_item = QTreeWidgetItem([label, " ".join(study.modalities), str(n_img)])
                    st_item.setFlags(Qt.ItemFlag.ItemIsEnabled)
                    st_item.setToolTip(COL_NAME, f"Study {study.uid}")
                    p_item.addChild(st_item)
                    for series in study.series:
                        st_item.addChild(self._series_item(series))
                p_item.setExpanded(True)
                for i in range(p_item.childCount()):
                    p_item.child(i).setExpanded(True)
            self._add_exams(result)
            if result.problems:
                self.problems_item = QTreeWidgetItem([f"{PROBLEMS_TEXT} ({len(result.problems)} files)", "", ""])
                self.problems_item.setFlags(Qt.ItemFlag.ItemIsEnabled)
                self.problems_item.setForeground(COL_NAME, QBrush(QColor("#c0392b")))
                for prob in result.problems:
                    child = QTreeWidgetItem([f"{Path(prob.path).name}: {prob.reason}", "", ""])
                    child.setFlags(Qt.ItemFlag.ItemIsEnabled)
                    child.setToolTip(COL_NAME, str(prob))
                    self.problems_item.addChild(child)
                self.addTopLevelItem(self.problems_item)
                self.problems_item.setExpanded(True)
        finally:
            self.blockSignals(False)

    def _add_exams(self, result: ScanResult) -> None:
        """'Mammography exams': how the mammograms were grouped into exams and why, each hung view
        (selecting it opens that series) and the images kept beside the exam with why."""
        try:
            exams = group_exams(result)
        except Exception:  # noqa: BLE001 - the grouping is a help; the tree above is what matters
            return
        if not exams:
            return
        self.exams_item = top = QTreeWidgetItem([EXAMS_TEXT, "MG", str(len(exams))])
        top.setFlags(Qt.ItemFlag.ItemIsEnabled)
        self.addTopLevelItem(top)
        for exam in exams:
            hung = " ".join(exam.hung) or "no view hung"
            who = " ".join(x for x in (exam.patient, _date(exam.date)) if x)
            e_item = QTreeWidgetItem([f"{exam.id} ({exam.role}): {hung}", "", str(len(exam.members))])
            e_item.setFlags(Qt.ItemFlag.ItemIsEnabled)
            e_item.setToolTip(COL_NAME, f"{who}\ngrouped by {exam.reason}\nclick to hang the exam's views together")
            top.addChild(e_item)
            if exam.hung:
                e_item.setData(COL_NAME, EXAM_ROLE, len(self._exams))
                self._exams.append(exam)
            for slot, ev in exam.hung.items():
                e_item.addChild(self._exam_row(f"{slot}: {ev.series.label()}", ev.series, ev.view.why()))
            for ev in exam.extra:
                e_item.addChild(self._exam_row(f"kept: {ev.view.label}: {ev.why}", ev.series, ev.view.why()))
            e_item.setExpanded(True)
        top.setExpanded(True)

    def _exam_row(self, text: str, series: Series, why: str) -> QTreeWidgetItem:
        item = QTreeWidgetItem([text, series.info.modality or "?", str(image_count(series))])
        item.setData(COL_NAME, KEY_ROLE, series.key)
        item.setToolTip(COL_NAME, "\n".join(x for x in (series.label(), why) if x))
        return item

    def exam_texts(self) -> list[str]:
        """Each exam row's text, then its views' rows (for tests and the status line)."""
        top = getattr(self, "exams_item", None)
        if top is None:
            return []
        out = []
        for i in range(top.childCount()):
            e = top.child(i)
            out.append(e.text(COL_NAME))
            out += [e.child(j).text(COL_NAME) for j in range(e.childCount())]
        return out

    def _series_item(self, series: Series) -> QTreeWidgetItem:
        number = f"{series.info.series_number}: " if series.info.series_number is not None else ""
        desc = series.info.series_description or "(no description)"
        extra = []
        view = f"{series.info.laterality}{series.info.view_position}".strip()
        why_view = ""
        if (series.info.modality or "").upper() == "MG" and series.kind == "dicom":
            vid = identify_series(series)  # the view from whatever the file carries, not only its tags
            view, why_view = (vid.label if vid.laterality or vid.view else view), vid.why()
            first = series.instances[0] if series.instances else None
            estimate = estimate_spacing(series, (first.rows, first.columns)) if first is not None else None
            if estimate is not None:  # what Analyze will use instead of the loader's 1 mm
                why_view = "; ".join(x for x in (why_view, f"{estimate.note} for analysis") if x)
        if view and view not in desc.upper().replace(" ", ""):  # 'R CC' already says RCC
            extra.append(view)
        if series.part:
            extra.append(f"[{series.part}]")
        text = " ".join([f"{number}{desc}", *extra])
        item = QTreeWidgetItem([text, series.info.modality or "?", str(image_count(series))])
        item.setData(COL_NAME, KEY_ROLE, series.key)
        tip = [series.label(), f"UID {series.uid}"] + ([why_view] if why_view else []) + \
            [f"⚠ {p}" for p in series.problems]
        item.setToolTip(COL_NAME, "\n".join(tip))
        if series.kind == "non-image":
            item.setFlags(Qt.ItemFlag.ItemIsEnabled)  # listed, not selectable
            item.setForeground(COL_NAME, QBrush(QColor("gray")))
        self._series[series.key] = series
        self._items[series.key] = item
        return item

    def set_thumbnail(self, key: str, gray: np.ndarray) -> bool:
        """Show a uint8 preview beside the series ``key`` (False if it is not listed any more)."""
        item = self._items.get(key)
        if item is None:
            return False
        item.setIcon(COL_NAME, thumbnail_icon(gray))
        return True

    def set_thumbnail_problem(self, key: str, why: str) -> None:
        """No preview could be made: say why in the row's tooltip."""
        item = self._items.get(key)
        if item is not None:
            item.setToolTip(COL_NAME, f"{item.toolTip(COL_NAME)}\n{why}")

    def has_thumbnail(self, key: str) -> bool:
        item = self._items.get(key)
        return item is not None and not item.icon(COL_NAME).isNull()

    def series_for_key(self, key: str) -> Series | None:
        return self._series.get(key)

    # -- dragging a series onto a viewport --------------------------------------------------
    def mimeData(self, items):
        series = self._series_of(items[0]) if items else None
        return series_mime(series.key) if series is not None else None

    def mimeTypes(self):
        return [SERIES_MIME]

    # -- queries / selection ------------------------------------------------------------
    def image_series(self) -> list[Series]:
        return [s for s in self._series.values() if s.kind in ("dicom", "file")]

    def item_for(self, series: Series) -> QTreeWidgetItem | None:
        return self._items.get(series.key)

    def problem_texts(self) -> list[str]:
        if self.problems_item is None:
            return []
        return [self.problems_item.child(i).text(COL_NAME) for i in range(self.problems_item.childCount())]

    def select_series(self, series: Series) -> None:
        """Make ``series`` current (emits ``series_selected``)."""
        item = self._items.get(series.key)
        if item is not None:
            self.setCurrentItem(item)

    def mark_current(self, series: Series | None) -> None:
        """Highlight ``series`` (what the active viewport shows) without loading it again."""
        item = self._items.get(series.key) if series is not None else None
        self.blockSignals(True)
        try:
            if item is None:
                self.clearSelection()
            self.setCurrentItem(item)
        finally:
            self.blockSignals(False)

    def select_first_image_series(self, among: list[Series] | None = None) -> Series | None:
        """The study opens on an acquired image, not on a result (a Parametric Map) stored beside it;
        ``among``: only these (the series a scan just added), in listing order."""
        images = self.image_series()
        if among is not None:
            keys = {s.key for s in among}
            images = [s for s in images if s.key in keys]
        first = next((s for s in images if not s.is_result), None) or next(iter(images), None)
        if first is not None:
            self.select_series(first)
        return first

    def _series_of(self, item: QTreeWidgetItem | None) -> Series | None:
        if item is None:
            return None
        key = item.data(COL_NAME, KEY_ROLE)
        series = self._series.get(key) if key else None
        return series if series is not None and series.kind in ("dicom", "file") else None

    def _on_current_changed(self, current, _previous) -> None:
        series = self._series_of(current)
        if series is not None:
            self.series_selected.emit(series)

    def _on_activated(self, item, _column) -> None:
        series = self._series_of(item)
        if series is not None:
            self.series_selected.emit(series)
        else:
            self._exam_chosen(item)

    def _exam_chosen(self, item) -> None:
        index = item.data(COL_NAME, EXAM_ROLE) if item is not None else None
        if index is not None and 0 <= int(index) < len(self._exams):
            self.exam_selected.emit(self._exams[int(index)].as_study())
