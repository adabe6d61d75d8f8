"""BUSI Viewer: an explainable AI review workstation for breast ultrasound and mammography.

For research use only — not for diagnostic use.
"""

__version__ = "0.1.0"

RESEARCH_USE_BANNER = "For research use only — not for diagnostic use"
