"""The PySide6 + pyqtgraph desktop viewer (the only layer that imports Qt)."""
