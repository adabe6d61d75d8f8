"""The reviewer's decision on the shown image: Agree / Disagree / Unsure, the class they believe, a note.

Every user change emits ``reviewChanged(ReviewEdit)`` with the full new state (the window persists it);
programmatic :meth:`ReviewPanel.set_state` never emits, so loading an image cannot write a review.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPalette, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .state import ReviewEdit, ReviewState

__all__ = ["DECISIONS", "ReviewPanel"]

DECISIONS: tuple[str, ...] = ("agree", "disagree", "unsure")
# Checked colours carry their own text colour, so they read on light and dark palettes alike.
_CHECKED = {"agree": ("#2e9e44", "#ffffff"), "disagree": ("#d62728", "#ffffff"), "unsure": ("#f0a800", "#111111")}


class _DecisionButton(QPushButton):
    """Checkable button that fills with its decision colour when checked, the platform look otherwise.

    Painted by hand rather than by stylesheet: a stylesheet freezes the palette at the time it is applied,
    so unchecked buttons would stay light after switching to a dark theme.
    """

    def __init__(self, text: str, colours: tuple[str, str], parent: QWidget):
        super().__init__(text, parent)
        self._fill, self._ink = QColor(colours[0]), QColor(colours[1])
        self.setCheckable(True)

    def paintEvent(self, event) -> None:
        if not self.isChecked():
            super().paintEvent(event)
            return
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        fill = self._fill if self.isEnabled() else self.palette().color(QPalette.ColorRole.Mid)
        painter.setPen(QPen(QColor(0, 0, 0, 140), 1))
        painter.setBrush(fill.darker(115) if self.isDown() else fill)
        painter.drawRoundedRect(self.rect().toRectF().adjusted(0.5, 0.5, -0.5, -0.5), 3, 3)
        font = QFont(self.font())
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(self._ink)
        painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.text())
        if self.hasFocus():  # keyboard users must still see where they are
            painter.setPen(QPen(self._ink, 1, Qt.PenStyle.DotLine))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRoundedRect(self.rect().toRectF().adjusted(3.5, 3.5, -3.5, -3.5), 2, 2)
        painter.end()


class ReviewPanel(QWidget):
    """Review controls for one image.

    objectNames: ``review_agree``/``review_disagree``/``review_unsure`` (checkable buttons, at most one
    checked), ``review_class`` (combo, enabled only for Disagree), ``review_note``, ``review_model_version``,
    ``review_placeholder`` (shown while there is nothing to review).
    """

    reviewChanged = Signal(object)  # ReviewEdit

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("review_panel")
        self._updating = False  # True while set_state writes to the controls: no signal then
        self._state: ReviewState | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)

        self._placeholder = QLabel("No image to review", self)
        self._placeholder.setObjectName("review_placeholder")
        self._placeholder.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        layout.addWidget(self._placeholder)

        self._body = QWidget(self)
        body = QVBoxLayout(self._body)
        body.setContentsMargins(0, 0, 0, 0)
        buttons = QHBoxLayout()
        self._buttons: dict[str, QPushButton] = {}
        for decision in DECISIONS:
            button = _DecisionButton(decision.capitalize(), _CHECKED[decision], self._body)
            button.setObjectName(f"review_{decision}")
            button.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            button.clicked.connect(lambda checked, d=decision: self._on_button(d, checked))
            buttons.addWidget(button)
            self._buttons[decision] = button
        body.addLayout(buttons)

        class_row = QHBoxLayout()
        self._class_caption = QLabel("Reviewer's class:", self._body)
        self._combo = QComboBox(self._body)
        self._combo.setObjectName("review_class")
        self._combo.currentIndexChanged.connect(self._on_user_edit)
        class_row.addWidget(self._class_caption)
        class_row.addWidget(self._combo, 1)
        body.addLayout(class_row)

        self._note = QPlainTextEdit(self._body)
        self._note.setObjectName("review_note")
        self._note.setPlaceholderText("Note (optional)")
        self._note.setTabChangesFocus(True)
        self._note.setFixedHeight(self._note.fontMetrics().lineSpacing() * 4 + 12)
        self._note.textChanged.connect(self._on_user_edit)
        body.addWidget(self._note)

        self._model_version = QLabel(self._body)
        self._model_version.setObjectName("review_model_version")
        self._model_version.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        small = self._model_version.font()
        small.setPointSizeF(small.pointSizeF() * 0.85)
        self._model_version.setFont(small)
        body.addWidget(self._model_version)
        layout.addWidget(self._body)
        layout.addStretch(1)
        self.set_state(None)

    # --- public API ---
    def set_state(self, state: ReviewState | None) -> None:
        """Show ``state`` (None: nothing to review, controls disabled and hidden). Never emits."""
        self._updating = True
        try:
            self._state = state
            self._placeholder.setVisible(state is None)
            self._body.setVisible(state is not None)
            self.setEnabled(state is not None)
            if state is None:
                for button in self._buttons.values():
                    button.setChecked(False)
                self._combo.clear()
                self._note.setPlainText("")
                self._model_version.setText("")
                self._sync_combo_enabled()
                return
            if state.decision is not None and state.decision not in DECISIONS:
                raise ValueError(f"unknown review decision {state.decision!r}; expected one of {DECISIONS}")
            names = [self._combo.itemText(i) for i in range(self._combo.count())]
            if names != list(state.class_names):
                self._combo.clear()
                self._combo.addItems(list(state.class_names))
            chosen = state.chosen_class if state.chosen_class in state.class_names else None
            self._combo.setCurrentIndex(state.class_names.index(chosen) if chosen else 0)
            for decision, button in self._buttons.items():
                button.setChecked(decision == state.decision)
            if self._note.toPlainText() != state.note:
                self._note.setPlainText(state.note)
            version = state.model_version
            self._model_version.setText(f"Reviewed against model {version}" if version else "")
            self._model_version.setVisible(bool(version))
            self._sync_combo_enabled()
        finally:
            self._updating = False

    def apply_decision(self, decision: str | None) -> None:
        """Set the decision as if the user chose it (keyboard shortcuts) and emit; None clears it.

        Unlike a second click on a checked button, applying the current decision again keeps it (pressing a
        shortcut twice must not silently un-review). Ignored while there is nothing to review.
        """
        if decision is not None and decision not in DECISIONS:
            raise ValueError(f"unknown review decision {decision!r}; expected one of {DECISIONS}")
        if self._state is None:
            return
        self._updating = True
        try:
            for name, button in self._buttons.items():
                button.setChecked(name == decision)
            self._sync_combo_enabled()
        finally:
            self._updating = False
        self._emit()

    def edit(self) -> ReviewEdit:
        """The review as the controls show it now."""
        decision = self.decision()
        chosen = (self._combo.currentText() or None) if decision == "disagree" else None
        return ReviewEdit(decision=decision, chosen_class=chosen, note=self._note.toPlainText())

    def decision(self) -> str | None:
        return next((name for name, button in self._buttons.items() if button.isChecked()), None)

    # --- internals ---
    def _on_button(self, decision: str, checked: bool) -> None:
        if self._updating:
            return
        if checked:  # exclusive, yet clicking the checked button again leaves none checked
            self._updating = True
            try:
                for name, button in self._buttons.items():
                    if name != decision:
                        button.setChecked(False)
            finally:
                self._updating = False
        self._sync_combo_enabled()
        self._emit()

    def _on_user_edit(self, *_args) -> None:
        if not self._updating:
            self._emit()

    def _sync_combo_enabled(self) -> None:
        disagree = self.decision() == "disagree"
        self._combo.setEnabled(disagree)
        self._class_caption.setEnabled(disagree)

    def _emit(self) -> None:
        if self._state is not None:
            self.reviewChanged.emit(self.edit())
