"""The Qt binding must not leak or steal references: a long review session makes millions of Qt calls."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QApplication, QGraphicsRectItem, QGraphicsScene, QLabel


def test_calls_that_return_nothing_keep_the_reference_count_of_none(qtbot):
    # PySide6 6.12.0 on Python 3.11 decrements None once per such call; the interpreter aborts
    # ("none_dealloc") when the count reaches zero, i.e. after a few minutes of flipping images.
    label, timer, obj = QLabel(), QTimer(), QObject()
    qtbot.addWidget(label)
    scene = QGraphicsScene()
    item = QGraphicsRectItem(0, 0, 5, 5)
    scene.addItem(item)
    calls = 500
    before = sys.getrefcount(None)
    for i in range(calls):
        label.setText(str(i))
        timer.setInterval(5)
        obj.setObjectName("x")
        item.setPos(i, i)
        QApplication.processEvents()
    lost = before - sys.getrefcount(None)
    assert lost < calls, f"{lost} references to None lost in {5 * calls} Qt calls"
