"""Showing a widget under pytest-qt the same way in every UI test."""


def shown(qtbot, widget, size=(1000, 700)):
    """Register, size, show and wait until the widget is exposed; returns it."""
    qtbot.addWidget(widget)
    widget.resize(*size)
    widget.show()
    qtbot.waitExposed(widget)
    return widget
