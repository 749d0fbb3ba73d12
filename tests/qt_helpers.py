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
