"""The window's menus, toolbars and actions, built in one place.

Each builder creates its actions on the window (``window.open_folder_action`` …, the names the
rest of the app and the tests use) and connects them to the window's or a controller's methods;
no behaviour lives here. Help ▸ Keyboard shortcuts reads these actions back (shortcuts.py).
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QDockWidget, QMenu, QToolBar

from .settings import link_scroll_enabled


def action(window, text: str, slot=None, key: str | QKeySequence.StandardKey | None = None,
           tip: str | None = None, checkable: bool = False, checked: bool = False) -> QAction:
    """One QAction of the window with its shortcut and tooltip."""
    act = QAction(text, window)
    if key is not None:
        act.setShortcut(QKeySequence(key))
    if tip:
        act.setToolTip(tip)
    if checkable:
        act.setCheckable(True)
        act.setChecked(checked)
    if slot is not None:
        (act.toggled if checkable else act.triggered).connect(slot)
    return act


def toolbar(window, title: str, name: str) -> QToolBar:
    bar = QToolBar(title, window)
    bar.setObjectName(name)
    return bar


def build_file_menu(w) -> None:
    w.file_menu = w.menuBar().addMenu("&File")
    w.open_folder_action = action(w, "Open &Folder…", lambda _checked=False: w.study.choose_folder(), "Ctrl+O")
    w.open_file_action = action(w, "Open F&ile…", lambda _checked=False: w.study.choose_file(), "Ctrl+Shift+O")
    w.quit_action = action(w, "&Quit", w.close, QKeySequence.StandardKey.Quit)
    w.file_menu.addAction(w.open_folder_action)
    w.file_menu.addAction(w.open_file_action)
    w.recent_menu = w.file_menu.addMenu("Open &Recent")
    w.file_menu.addAction(w.study.close_all_action)  # File ▸ Open adds; this starts fresh
    w.recent_menu.aboutToShow.connect(lambda: w.study.rebuild_recent_menu())
    w.file_menu.addSeparator()
    w.file_menu.addAction(w.quit_action)


def build_layout_menu(w) -> None:
    menu = w.menuBar().addMenu("&Layout")
    group = QActionGroup(w)
    w.layout_1x1_action = action(w, "1×1", key="Ctrl+1",  # digits alone choose the active label
                                 tip="One view of the series as acquired (Ctrl+1)")
    w.layout_1x2_action = action(w, "1×2", key="Ctrl+2",
                                 tip="Two viewports side by side, each with its own series (Ctrl+2)")
    w.layout_2x2_action = action(w, "2×2", key="Ctrl+3", tip="Four viewports, each with its own series (Ctrl+3)")
    w.layout_mpr_action = action(w, "MPR", key="M",
                                 tip="Axial, coronal and sagittal views with a shared crosshair (M)")
    w.compare_prior_action = action(w, "Compare with &prior", lambda _checked=False: w.compare_with_prior(),
                                    "Ctrl+Shift+P", tip="Current exam beside the patient's newest prior: 8-cell "
                                    "mammography hanging, or CT/MR 1×2 scrolling together (Ctrl+Shift+P)")
    w.layout_toolbar = toolbar(w, "Layout", "layout-toolbar")
    w.layout_actions = {"1x1": w.layout_1x1_action, "1x2": w.layout_1x2_action,
                        "2x2": w.layout_2x2_action, "mpr": w.layout_mpr_action}
    for mode, act in w.layout_actions.items():
        act.setCheckable(True)
        act.triggered.connect(lambda _checked=False, m=mode: w.set_layout(m))
        group.addAction(act)
        menu.addAction(act)
        w.layout_toolbar.addAction(act)
    menu.addSeparator()
    menu.addAction(w.compare_prior_action)
    w.layout_1x1_action.setChecked(True)
    w.layout_mpr_action.setEnabled(False)
    w.addToolBar(w.layout_toolbar)


def build_tools_menu(w) -> None:
    """Measurement tools (viewer.ui.measure_tools.TOOLS): one exclusive choice for every view."""
    from .measure_tools import TOOLS
    from .measurement_store import MeasurementStore

    menu = w.menuBar().addMenu("&Tools")
    w.tools_toolbar = toolbar(w, "Tools", "tools-toolbar")
    w.tool_group = QActionGroup(w)
    w.tool_group.setExclusive(True)
    w.tool_actions = {}
    for name, text, short, tip in [("navigate", "Navigate", "", "Left-drag pans (Esc)")] + [
            (n, t.title, t.short, t.tip) for n, t in TOOLS.items()]:
        act = action(w, text, tip=tip, checkable=True)
        if short:
            act.setIconText(short)  # the toolbar's text; the menu keeps the full title
        act.triggered.connect(lambda _checked=False, n=name: w.set_tool(n))
        w.tool_group.addAction(act)
        menu.addAction(act)
        w.tools_toolbar.addAction(act)
        w.tool_actions[name] = act
    w.tool_actions["navigate"].setChecked(True)
    menu.addSeparator()
    w.clear_measurements_action = action(w, "&Clear measurements", w.clear_measurements)
    menu.addAction(w.clear_measurements_action)
    w.tools_toolbar.addAction(w.clear_measurements_action)
    w.measurement_store = MeasurementStore(w)  # rulers/ROIs autosaved as a DICOM SR per study, restored
    menu.addAction(w.measurement_store.save_action)
    w.file_menu.insertAction(w.recent_menu.menuAction(), w.measurement_store.save_action)
    w.addToolBar(w.tools_toolbar)
    for view in w.all_views():
        view.tool_changed.connect(w.view_tool_changed)


def build_view_menu(w) -> None:
    menu = w.menuBar().addMenu("&View")
    w.overlay_action = action(w, "Show &overlay text", w.set_overlay_text_visible, "T", checkable=True, checked=True)
    menu.addAction(w.overlay_action)
    w.heatmap_action = action(w, "Show &heatmaps", key="H", checkable=True, checked=True,
                              tip="Show or hide the probability heatmaps on every view (H)")
    w.segmentation_action = action(w, "Show &segmentation", key="S", checkable=True, checked=True,
                                   tip="Show or hide the segmentation label maps on every view (S)")
    for act in (w.heatmap_action, w.segmentation_action):
        act.toggled.connect(lambda _on: w.apply_layer_visibility())
        menu.addAction(act)
    menu.addSeparator()
    menu.addAction(w.play_action)
    menu.addSeparator()
    w.link_scroll_action = action(w, "&Link scroll", checkable=True, checked=link_scroll_enabled(),
                                  tip="Scroll the 1×2 / 2×2 viewports of one frame of reference together, "
                                      "slice by slice at the same patient position")
    w.grid.set_link_scroll(w.link_scroll_action.isChecked())
    w.link_scroll_action.toggled.connect(w.set_link_scroll)
    menu.addAction(w.link_scroll_action)
    w.layout_toolbar.addSeparator()
    w.layout_toolbar.addAction(w.link_scroll_action)


def add_key_image_actions(w) -> None:
    """Mark key image (K) and the key image list under View; their exports in the File menu."""
    view_menu = next(a.menu() for a in w.menuBar().actions() if a.text() == "&View")
    view_menu.addSeparator()
    view_menu.addAction(w.key_images.mark_action)
    view_menu.addAction(w.key_images.dock.toggleViewAction())
    for act in (w.key_images.export_action, w.key_images.kos_action):
        w.file_menu.insertAction(w.recent_menu.menuAction(), act)


def build_help_menu(w) -> None:
    from .shortcuts import show_shortcut_sheet

    w.help_menu = w.menuBar().addMenu("&Help")
    w.shortcuts_action = action(w, "&Keyboard shortcuts", lambda _checked=False: show_shortcut_sheet(w), "Ctrl+/",
                                tip="Every action with a shortcut, read from the menus themselves (Ctrl+/)")
    w.about_action = action(w, "&About Lightbox", w.show_about)
    w.help_menu.addAction(w.shortcuts_action)
    w.help_menu.addAction(w.about_action)


def build_ai_menu(w) -> QMenu:
    """AI ▸ Analyze, the results dock, models, training, DICOM results; the AI toolbar."""
    from .dicom_results import DicomResults

    menu = QMenu("&AI", w)
    w.menuBar().insertMenu(w.help_menu.menuAction(), menu)
    for act in (w.analysis.action, w.analysis.dock.toggleViewAction(), w.analysis.models_action,
                w.analysis.import_action, w.analysis.train_action, w.analysis.clear_cache_action,
                w.analysis.warm_action):
        menu.addAction(act)
    menu.insertSeparator(w.analysis.warm_action)  # a setting, not a command
    w.dicom_results = DicomResults(w)  # Parametric Maps / AI report SRs of the opened folder, shown
    menu.addAction(w.dicom_results.report_action)
    w.ai_toolbar = toolbar(w, "AI", "ai-toolbar")
    w.ai_toolbar.addAction(w.analysis.action)
    w.addToolBar(w.ai_toolbar)
    return menu


def build_segment_menu(w, ai_menu: QMenu) -> None:
    """Segment ▸ the editor's tools and commands; File ▸ Open labels…; the Segment toolbar."""
    w.segment_toolbar = toolbar(w, "Segment", "segment-toolbar")
    menu = QMenu("&Segment", w)
    w.menuBar().insertMenu(ai_menu.menuAction(), menu)
    for act in w.editor.tool_actions.values():
        w.segment_toolbar.addAction(act)
        menu.addAction(act)
    menu.addSeparator()
    # File ▸ Open labels…: segmentations other tools made (SEG, RTSTRUCT, NIfTI/NRRD), to edit
    w.file_menu.insertAction(w.recent_menu.menuAction(), w.editor.open_labels_action)
    for act in (w.editor.undo_action, w.editor.redo_action, w.editor.save_action, w.editor.open_labels_action,
                w.editor.load_action, w.editor.export_action, w.editor.dock.toggleViewAction()):
        menu.addAction(act)
    w.addToolBar(w.segment_toolbar)
    w.tabifyDockWidget(w.analysis.dock, w.editor.dock)  # one column on the right, two tabs


def build_remote(w, ai_menu: QMenu) -> None:
    """The Remote dock (search/retrieve, left, beside Series), File ▸ Remote… and AI ▸ Send results to PACS…."""
    from .remote_panel import RemotePanel

    w.remote = RemotePanel(w)
    w.remote_dock = QDockWidget("Remote", w)
    w.remote_dock.setObjectName("remote-dock")
    w.remote_dock.setWidget(w.remote)
    w.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, w.remote_dock)
    w.tabifyDockWidget(w.browser_dock, w.remote_dock)
    w.remote_dock.hide()
    w.browser_dock.raise_()
    w.remote_action = action(w, "&Remote (PACS)…", w.show_remote, "Ctrl+Shift+R",
                             tip="Search a PACS and retrieve studies (Remote panel)")
    w.file_menu.insertAction(w.recent_menu.menuAction(), w.remote_action)
    w.send_results_action = action(w, "Send results to &PACS…", w.show_send_results,
                                   tip="Store the shown AI results, with your segmentation edits, on a PACS as "
                                       "DICOM SEG, Parametric Maps and SR")
    ai_menu.addAction(w.send_results_action)
    w.send_dialog = None
