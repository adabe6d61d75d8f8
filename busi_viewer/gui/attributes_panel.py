"""DICOM attributes of the shown image, with patient-identifying fields hidden until the user asks.

Identifiers are re-hidden for every new image, so a screenshot or screen share of the next image does not
leak them by accident. Ultrasound frames often carry the patient's name in the pixels themselves, which no
hiding of attributes can help: the panel says so.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

# One rule for this panel and the reports.
from busi_viewer.core.report_data import burned_in_risk

__all__ = ["BURNED_IN_WARNING", "NO_ATTRIBUTES", "AttributesPanel", "burned_in_risk"]

BURNED_IN_WARNING = "⚠ Image pixels may contain burned-in identifying text"
NO_ATTRIBUTES = "No DICOM attributes (plain image file)"


class AttributesPanel(QWidget):
    """Two-column table (``attributes_table``) of attributes; identifiers behind ``reveal_identifiers``.

    Other objectNames: ``burned_in_warning``, ``no_attributes``, ``identifiers_hidden_note``.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("attributes_panel")
        self._attributes: dict[str, str] = {}
        self._identifiers: dict[str, str] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)

        self._warning = QLabel(BURNED_IN_WARNING, self)
        self._warning.setObjectName("burned_in_warning")
        self._warning.setWordWrap(True)
        # Amber with its own dark text: legible on light and dark palettes.
        self._warning.setStyleSheet(
            "QLabel { background-color: #f0a800; color: #111111; font-weight: bold;"
            " border-radius: 3px; padding: 3px 6px; }"
        )
        layout.addWidget(self._warning)

        self._empty = QLabel(NO_ATTRIBUTES, self)
        self._empty.setObjectName("no_attributes")
        self._empty.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        layout.addWidget(self._empty)

        self._reveal = QCheckBox("Show identifying fields", self)
        self._reveal.setObjectName("reveal_identifiers")
        self._reveal.toggled.connect(self._fill_table)
        layout.addWidget(self._reveal)

        self._hidden_note = QLabel(self)
        self._hidden_note.setObjectName("identifiers_hidden_note")
        self._hidden_note.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        layout.addWidget(self._hidden_note)

        self._table = QTableWidget(0, 2, self)
        self._table.setObjectName("attributes_table")
        self._table.setHorizontalHeaderLabels(["Attribute", "Value"])
        self._table.verticalHeader().setVisible(False)
        self._table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self._table.horizontalHeader().setStretchLastSection(True)
        self._table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self._table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self._table.setAlternatingRowColors(True)
        self._table.setWordWrap(True)
        layout.addWidget(self._table, 1)
        self.set_attributes({}, {}, None, "")

    # --- public API ---
    def set_attributes(
        self,
        attributes: dict[str, str],
        identifiers: dict[str, str],
        burned_in_annotation: str | None,
        modality: str,
    ) -> None:
        """Show a new image's attributes; identifying fields are hidden again whatever the checkbox said."""
        self._attributes = dict(attributes)
        self._identifiers = dict(identifiers)
        self._reveal.blockSignals(True)
        self._reveal.setChecked(False)
        self._reveal.blockSignals(False)
        empty = not self._attributes and not self._identifiers
        self._empty.setVisible(empty)
        self._table.setVisible(not empty)
        self._reveal.setVisible(bool(self._identifiers))
        self._warning.setVisible(burned_in_risk(burned_in_annotation, modality))
        self._fill_table()

    def identifiers_shown(self) -> bool:
        return self._reveal.isChecked() and bool(self._identifiers)

    def table_rows(self) -> list[tuple[str, str]]:
        """(attribute, value) of every row the table shows now, top to bottom (section headers excluded)."""
        rows = []
        for r in range(self._table.rowCount()):
            key, value = self._table.item(r, 0), self._table.item(r, 1)
            if key is not None and value is not None:
                rows.append((key.text(), value.text()))
        return rows

    # --- internals ---
    def _fill_table(self, *_args) -> None:
        show_ids = self.identifiers_shown()
        n_ids = len(self._identifiers)
        self._hidden_note.setText(f"{n_ids} identifying field{'s' if n_ids != 1 else ''} hidden")
        self._hidden_note.setVisible(n_ids > 0 and not show_ids)
        table = self._table
        table.setRowCount(0)
        sections: list[tuple[str | None, dict[str, str]]] = []
        if show_ids:
            sections.append(("Identifying fields", self._identifiers))
            sections.append(("Attributes", self._attributes))
        else:
            sections.append((None, self._attributes))
        bold = QFont(table.font())
        bold.setBold(True)
        for title, fields in sections:
            if title is not None and fields:
                row = table.rowCount()
                table.insertRow(row)
                header = QTableWidgetItem(title)
                header.setFont(bold)
                header.setFlags(Qt.ItemFlag.ItemIsEnabled)
                table.setItem(row, 0, header)
                table.setSpan(row, 0, 1, 2)
            for key, value in fields.items():
                row = table.rowCount()
                table.insertRow(row)
                for col, text in enumerate((str(key), str(value))):
                    item = QTableWidgetItem(text)
                    item.setToolTip(text)
                    item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                    table.setItem(row, col, item)
        table.resizeRowsToContents()
