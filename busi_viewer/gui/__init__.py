"""The PySide6 + pyqtgraph desktop viewer (the only layer that imports Qt)."""

import pyqtgraph

# numpy images are (H, W[, 3]) everywhere in this project; pyqtgraph's default is column-major.
pyqtgraph.setConfigOptions(imageAxisOrder="row-major", antialias=True)
