"""The model's answer for the current image, readable at a glance: one bar per class, the predicted class in
bold, an explicit low-confidence badge, how the decision was made, and the heatmap-vs-mask agreement check.

Colours come from the palette (dark themes work); only the class colours and the amber badge are fixed, and
both carry their own contrasting text.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPalette, QPen
from PySide6.QtWidgets import (
    QGraphicsOpacityEffect,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from .state import AgreementState, ResultState
from .thumbnails import CLASS_COLOURS, FALLBACK_COLOUR

__all__ = ["AGREEMENT_CAPTION", "OUT_OF_SCOPE_TEXT", "ResultPanel", "format_timing"]

AGREEMENT_CAPTION = "Heatmap vs lesion mask — an explanation check, not a detection"
_BAR_STEPS = 1000  # QProgressBar is integer-valued: 0..1000 keeps three decimals of the probability
_BADGE_STYLE = (
    "QLabel { background-color: #f0a800; color: #111111; font-weight: bold; border-radius: 3px; padding: 3px 6px; }"
)
_WARNING_STYLE = "QLabel { color: #fbe9e7; background-color: #b3261e; font-weight: bold; padding: 3px 6px; }"
_OUT_OF_SCOPE_STYLE = "QLabel { color: #b3261e; }"
_COMPUTING_STYLE = "QLabel { color: gray; }"
_OVERRIDE_STYLE = "QLabel { border-left: 4px solid #f0a800; padding-left: 6px; font-weight: bold; }"
_OUT_OF_SCOPE_OPACITY = 0.35
OUT_OF_SCOPE_TEXT = "Out of scope"


def format_timing(device: str, seconds: float | None, cached: bool) -> str:
    """'CPU · 21 ms', 'CUDA · 1.3 s', 'CPU · cached', '' when nothing is known."""
    if cached:
        when = "cached"
    elif seconds is None:
        when = ""
    elif seconds < 1.0:
        when = f"{seconds * 1000:.0f} ms"
    else:
        when = f"{seconds:.1f} s"
    return " · ".join(part for part in (device, when) if part)


def _fmt_fraction(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.0f} %" if percent else f"{value:.2f}"


def _fmt_hit(value: bool | None) -> str:
    return "—" if value is None else ("hit" if value else "miss")


def _mute(label: QLabel) -> QLabel:
    """Secondary text: the palette's PlaceholderText role, so it follows light/dark theme changes live."""
    label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
    return label


class _ProbabilityBar(QProgressBar):
    """A QProgressBar (value API, accessibility) painted by hand: the class colour on the palette's Base.

    Painting it ourselves keeps it identical on every platform style and lets it follow palette changes
    (a stylesheet would freeze the palette colours at the moment it is applied).
    """

    def __init__(self, colour: str, parent: QWidget):
        super().__init__(parent)
        self._colour = QColor(colour)
        self._value = 0
        self._tick: float | None = None  # the operating threshold on this class, as a fraction of the bar

    # QProgressBar.setValue repaints synchronously (about 2 ms per bar); a scheduled update keeps image
    # flipping cheap, and the panel paints once per event-loop pass.
    def setValue(self, value: int) -> None:  # noqa: N802 - Qt naming
        if value != self._value:
            self._value = value
            self.update()

    def value(self) -> int:
        return self._value

    def set_tick(self, fraction: float | None) -> None:
        """Mark the decision threshold on this bar (None: no mark)."""
        if fraction != self._tick:
            self._tick = fraction
            self.setToolTip("" if fraction is None else f"decision threshold {fraction:.2f}")
            self.update()

    def tick(self) -> float | None:
        return self._tick

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        palette = self.palette()
        frame = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        painter.setPen(QPen(palette.color(QPalette.ColorRole.Mid), 1))
        painter.setBrush(palette.color(QPalette.ColorRole.Base))
        painter.drawRoundedRect(frame, 3, 3)
        span = self.maximum() - self.minimum()
        fraction = (self.value() - self.minimum()) / span if span > 0 else 0.0
        if fraction > 0:
            inner = frame.adjusted(1.5, 1.5, -1.5, -1.5)
            inner.setWidth(max(2.0, inner.width() * fraction))
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(self._colour)
            painter.drawRoundedRect(inner, 2, 2)
        if self._tick is not None:  # a dark-rimmed light line: visible on the filled and the empty part
            x = frame.left() + 1.5 + (frame.width() - 3) * min(max(self._tick, 0.0), 1.0)
            for colour, width in ((palette.color(QPalette.ColorRole.WindowText), 4.0),
                                  (palette.color(QPalette.ColorRole.Window), 1.6)):
                painter.setPen(QPen(colour, width))
                painter.drawLine(QPointF(x, frame.top() - 2), QPointF(x, frame.bottom() + 2))
        painter.end()


class _ClassRow:
    """Name, bar and value for one class."""

    def __init__(self, parent: QWidget, grid: QGridLayout, row: int, name: str):
        self.name = QLabel(name, parent)
        self.name.setObjectName(f"prob_name_{name}")
        plain, bold = self.name.font(), QFont(self.name.font())
        bold.setBold(True)
        self.name.setFont(bold)
        self.name.setMinimumWidth(self.name.sizeHint().width())  # the bars stay put when the name turns bold
        self.name.setFont(plain)
        self.bar = _ProbabilityBar(CLASS_COLOURS.get(name, FALLBACK_COLOUR), parent)
        self.bar.setObjectName(f"prob_bar_{name}")
        self.bar.setRange(0, _BAR_STEPS)
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(14)
        self.bar.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.value = QLabel("—", parent)
        self.value.setObjectName(f"prob_value_{name}")
        self.value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.value.setMinimumWidth(self.value.fontMetrics().horizontalAdvance("0.000"))
        grid.addWidget(self.name, row, 0)
        grid.addWidget(self.bar, row, 1)
        grid.addWidget(self.value, row, 2)
        for widget in (self.name, self.bar, self.value):
            widget.show()  # rows may be created while the panel is visible; layouts only show them later

    def set(self, probability: float | None, predicted: bool) -> None:
        """Show ``probability`` (None: not known yet, an empty bar and "—")."""
        known = probability is not None
        self.bar.setValue(round(min(max(float(probability), 0.0), 1.0) * _BAR_STEPS) if known else 0)
        self.value.setText(f"{probability:.2f}" if known else "—")
        for label in (self.name, self.value):
            if label.font().bold() != predicted:  # a font change relayouts the panel: only when it changes
                font = QFont(label.font())
                font.setBold(predicted)
                label.setFont(font)

    def remove(self) -> None:
        for widget in (self.name, self.bar, self.value):
            widget.setParent(None)
            widget.deleteLater()


class ResultPanel(QWidget):
    """Shows a :class:`ResultState` and an optional :class:`AgreementState` (read-only, emits nothing).

    Children have objectNames for tests and stylesheets: ``prob_bar_<class>``, ``prob_value_<class>``,
    ``prob_name_<class>``, ``predicted_label``, ``low_confidence_badge``, ``result_message``, ``scope_warning``,
    ``decision_override``,
    ``decision_rule``, ``calibration_label``, ``model_label``, ``timing_label``, ``agreement_box``,
    ``agreement_iou``/``agreement_pointing``/``agreement_energy`` (+ ``_baseline``), ``agreement_note``.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("result_panel")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(6)

        self._model_label = self._label("model_label", muted=True, wrap=True)
        self._timing_label = self._label("timing_label", muted=True)
        layout.addWidget(self._model_label)
        layout.addWidget(self._timing_label)

        self._message = self._label("result_message", wrap=True)
        layout.addWidget(self._message)
        self._scope_warning = self._label("scope_warning", wrap=True)
        self._scope_warning.setStyleSheet(_WARNING_STYLE)
        layout.addWidget(self._scope_warning)

        self._predicted_row = QWidget(self)
        row = QHBoxLayout(self._predicted_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(_mute(QLabel("Prediction", self._predicted_row)), 0, Qt.AlignmentFlag.AlignBaseline)
        self._predicted = self._label("predicted_label")
        font = QFont(self._predicted.font())
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.35)
        self._predicted.setFont(font)
        row.addWidget(self._predicted, 1, Qt.AlignmentFlag.AlignBaseline)
        layout.addWidget(self._predicted_row)

        self._badge = QLabel(self)
        self._badge.setObjectName("low_confidence_badge")
        self._badge.setStyleSheet(_BADGE_STYLE)
        self._badge.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
        layout.addWidget(self._badge)

        self._bars = QWidget(self)
        self._bars.setObjectName("prob_bars")
        self._bars_grid = QGridLayout(self._bars)
        self._bars_grid.setContentsMargins(0, 0, 0, 0)
        self._bars_grid.setHorizontalSpacing(8)
        self._bars_grid.setColumnStretch(1, 1)
        layout.addWidget(self._bars)
        self._bars_faded = QGraphicsOpacityEffect(self._bars)  # out of scope: the numbers stay, de-emphasised
        self._bars_faded.setOpacity(_OUT_OF_SCOPE_OPACITY)
        self._bars_faded.setEnabled(False)
        self._bars.setGraphicsEffect(self._bars_faded)
        self._rows: dict[str, _ClassRow] = {}
        self._row_order: tuple[str, ...] = ()

        self._override = self._label("decision_override", wrap=True)
        self._override.setStyleSheet(_OVERRIDE_STYLE)
        self._rule = self._label("decision_rule", wrap=True)
        self._calibration = self._label("calibration_label", muted=True)
        layout.addWidget(self._override)
        layout.addWidget(self._rule)
        layout.addWidget(self._calibration)

        self._agreement = self._build_agreement_box()
        layout.addWidget(self._agreement)
        layout.addStretch(1)

        self.set_state(ResultState(class_names=(), message="No image"))
        self.set_agreement(None)

    # --- public API ---
    def set_state(self, state: ResultState) -> None:
        """Show the model result, or ``state.message`` when ``state.probabilities`` is None (in the prediction's
        place, with empty bars, while ``state.computing``)."""
        has_result = state.probabilities is not None
        # While computing, the result's layout stays: showing and hiding its widgets for every image re-laid the
        # panel out twice per image, which delayed the result by 16-18 ms (p50/p95, 2-core VM).
        laid_out = has_result or state.computing
        self._model_label.setText(state.model_label)
        self._model_label.setVisible(bool(state.model_label))
        timing = format_timing(state.device, state.seconds, state.cached)
        self._timing_label.setText(timing)
        self._timing_label.setVisible(bool(timing) and laid_out)

        self._scope_warning.setText(state.scope_warning)
        self._scope_warning.setVisible(bool(state.scope_warning))
        self._message.setText(state.message or "")
        self._message.setVisible(not laid_out and bool(state.message))
        self._bars.setVisible(laid_out)
        self._predicted_row.setVisible(laid_out)
        self._rule.setVisible(laid_out and (bool(state.decision_rule) or state.out_of_scope))
        self._calibration.setVisible(laid_out)
        self._badge.setVisible(has_result and state.low_confidence and not state.out_of_scope)
        self._bars_faded.setEnabled(state.out_of_scope)
        self._override.setVisible(has_result and bool(state.decision_override) and not state.out_of_scope)
        if not laid_out:
            return

        probabilities = tuple(state.probabilities) if has_result else (None,) * len(state.class_names)
        if len(probabilities) != len(state.class_names):
            raise ValueError(f"{len(probabilities)} probabilities for {len(state.class_names)} classes")
        self._ensure_rows(state.class_names)
        tick_class, tick = state.operating_point or (None, None)
        for name, p in zip(state.class_names, probabilities):
            self._rows[name].set(p, name == state.predicted and not state.out_of_scope)
            self._rows[name].bar.set_tick(tick if name == tick_class else None)
        self._override.setText(state.decision_override)
        if not has_result:
            self._predicted.setText(state.message or "")
            style = _COMPUTING_STYLE
        else:
            self._predicted.setText(OUT_OF_SCOPE_TEXT if state.out_of_scope else state.predicted or "—")
            style = _OUT_OF_SCOPE_STYLE if state.out_of_scope else ""
        if self._predicted.styleSheet() != style:  # a new style sheet re-polishes the label: only on change
            self._predicted.setStyleSheet(style)
        if state.low_confidence_below is not None:
            self._badge.setText(f"LOW CONFIDENCE — max probability < {state.low_confidence_below:.2f}")
        else:
            self._badge.setText("LOW CONFIDENCE")
        self._rule.setText(f"Most probable class: {state.predicted} (not a finding)"
                           if state.out_of_scope and has_result else state.decision_rule)
        self._calibration.setText("calibrated (temperature scaling)" if state.calibrated else "uncalibrated")

    def set_agreement(self, agreement: AgreementState | None) -> None:
        """Show the heatmap-vs-mask scores next to the centre-prior baseline; None hides the section."""
        self._agreement.setVisible(agreement is not None)
        if agreement is None:
            return
        a = agreement
        self._cells["iou"][0].setText(_fmt_fraction(a.iou))
        self._cells["iou"][1].setText(_fmt_fraction(a.baseline_iou))
        self._cells["pointing"][0].setText(_fmt_hit(a.pointing_hit))
        self._cells["pointing"][1].setText(_fmt_hit(a.baseline_pointing_hit))
        self._cells["energy"][0].setText(_fmt_fraction(a.energy_in_mask, percent=True))
        self._cells["energy"][1].setText(_fmt_fraction(a.baseline_energy_in_mask, percent=True))
        self._agreement_note.setText(a.note or "")
        self._agreement_note.setVisible(bool(a.note))

    # --- internals ---
    def _label(self, name: str, *, muted: bool = False, wrap: bool = False) -> QLabel:
        label = QLabel(self)
        label.setObjectName(name)
        label.setWordWrap(wrap)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        return _mute(label) if muted else label

    def _ensure_rows(self, class_names: tuple[str, ...]) -> None:
        if class_names == self._row_order:
            return
        for row in self._rows.values():
            row.remove()
        self._rows = {name: _ClassRow(self._bars, self._bars_grid, i, name) for i, name in enumerate(class_names)}
        self._row_order = tuple(class_names)

    def _build_agreement_box(self) -> QGroupBox:
        box = QGroupBox("Explanation check", self)
        box.setObjectName("agreement_box")
        layout = QVBoxLayout(box)
        caption = QLabel(AGREEMENT_CAPTION, box)
        caption.setObjectName("agreement_caption")
        caption.setWordWrap(True)
        _mute(caption)
        layout.addWidget(caption)
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        header_font = QFont(box.font())
        header_font.setBold(True)
        for col, text in ((1, "heatmap"), (2, "centre prior")):
            header = QLabel(text, box)
            header.setFont(header_font)
            header.setAlignment(Qt.AlignmentFlag.AlignRight)
            grid.addWidget(header, 0, col)
        self._cells: dict[str, tuple[QLabel, QLabel]] = {}
        rows = (("iou", "IoU"), ("pointing", "Pointing game"), ("energy", "Energy in mask"))
        for r, (key, title) in enumerate(rows, start=1):
            grid.addWidget(QLabel(title, box), r, 0)
            value = QLabel("—", box)
            value.setObjectName(f"agreement_{key}")
            value.setFont(header_font)
            baseline = QLabel("—", box)
            baseline.setObjectName(f"agreement_{key}_baseline")
            _mute(baseline)
            for col, label in ((1, value), (2, baseline)):
                label.setAlignment(Qt.AlignmentFlag.AlignRight)
                grid.addWidget(label, r, col)
            self._cells[key] = (value, baseline)
        grid.setColumnStretch(0, 1)
        layout.addLayout(grid)
        self._agreement_note = QLabel(box)
        self._agreement_note.setObjectName("agreement_note")
        self._agreement_note.setWordWrap(True)
        layout.addWidget(self._agreement_note)
        return box
