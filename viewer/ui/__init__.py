"""The Qt user interface (the only package that imports Qt).

``viewer.ui.app.run`` opens the main window; see main_window.py for the
window, slice_view.py for the image display and workers.py for background
work.
"""

import pyqtgraph as _pg

# Our arrays are (row, column): every widget here assumes row-major images, so set it once for
# whoever builds them (the app, tests, scripts), not in each caller.
_pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)
