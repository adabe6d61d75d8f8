"""Real mouse drags for pyqtgraph views in tests (QTest.mouseMove cannot carry keyboard modifiers)."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication, QGraphicsView, QWidget


def drag(qtbot, widget: QWidget, start: QPointF, end: QPointF, *, steps: int = 8,
         modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    """Press, move in ``steps`` and release the left button on the QGraphicsView inside ``widget``; points
    are in ``widget`` coordinates and every event carries ``modifiers``."""
    viewport = widget.findChild(QGraphicsView).viewport()
    left = Qt.MouseButton.LeftButton

    def send(kind: QEvent.Type, point: QPointF, button: Qt.MouseButton, buttons: Qt.MouseButton) -> None:
        local = QPointF(viewport.mapFrom(widget, QPointF(point).toPoint()))
        global_ = QPointF(viewport.mapToGlobal(local.toPoint()))
        QApplication.sendEvent(viewport, QMouseEvent(kind, local, global_, button, buttons, modifiers))

    send(QEvent.Type.MouseButtonPress, start, left, left)
    for i in range(1, steps + 1):
        qtbot.wait(15)  # pyqtgraph drops mouse moves closer than 10 ms apart
        send(QEvent.Type.MouseMove, start + (end - start) * (i / steps), Qt.MouseButton.NoButton, left)
    qtbot.wait(15)
    send(QEvent.Type.MouseButtonRelease, end, left, Qt.MouseButton.NoButton)
