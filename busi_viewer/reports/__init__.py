"""PDF reports (QtGui's PDF writer, no widgets): used by the viewer and by the headless ``busi-predict``."""
