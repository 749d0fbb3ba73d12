"""Showing a widget under pytest-qt the same way in every UI test."""


def shown(qtbot, widget, size=(1000, 700)):
    """Register, size, show and wait until the widget is exposed; returns it."""
    qtbot.addWidget(widget)
    widget.resize(*size)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def open_and_wait(qtbot, w, path):
    """Open ``path`` in the main window ``w`` and wait until it is shown and every task is done."""
    with qtbot.waitSignal(w.image_shown, timeout=30000):
        w.open_path(path)
    qtbot.waitUntil(lambda: not w.busy, timeout=30000)


def editor_window(qtbot, size=(1300, 850)):
    """A main window, shown but not registered with qtbot: pytest-qt would close it before our
    teardown, and a window with unsaved edits asks before closing (a modal question)."""
    from viewer.ui.main_window import MainWindow

    w = MainWindow()
    w.resize(*size)
    w.show()
    qtbot.waitExposed(w)
    return w


def close_quietly(w) -> None:
    w.shutdown()  # after shutdown, closing does not ask
    w.close()
    w.deleteLater()
