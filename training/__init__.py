"""Training and evaluation recipes. Imports from ``busi_viewer``; ``busi_viewer`` never imports from here."""
