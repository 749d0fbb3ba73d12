"""The Qt user interface (the only package that imports Qt).

``viewer.ui.app.run`` opens the main window; see main_window.py for the
window, slice_view.py for the image display and workers.py for background
work.
"""
