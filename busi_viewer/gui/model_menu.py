"""The Model menu: the installed bundles, and picking the one that matches each image's modality."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu

from busi_viewer.core.errors import BundleError
from busi_viewer.inference.bundle_files import read_card
from busi_viewer.inference.catalogue import InstalledModel, image_modality, model_for


def _same(a: Path | None, b: Path | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


class ModelChooser(QObject):
    """Owns the Model menu. Emits ``modelChosen(Path)`` when another bundle should be loaded: chosen by hand
    (which turns the automatic choice off) or, while "Choose the model by image modality" is on, because the
    image shown is of a modality (DICOM US / MG) that another installed model was trained on. A bundle that
    failed to load is not chosen automatically again."""

    modelChosen = Signal(object)  # Path of the bundle folder

    def __init__(self, menu: QMenu, models: list[InstalledModel], current: Path | None = None):
        super().__init__(menu)
        self.models = models
        self.current: Path | None = current  # the bundle loaded or being loaded
        # Its modality: an image of that modality keeps it, even when another installed model shares the modality
        # (e.g. a bundle given with --model that is not installed).
        self.current_modality: str | None = self._modality_of(current)
        self._failed: set[Path] = set()
        self.auto_action = QAction("Choose the model by image &modality", menu)
        self.auto_action.setCheckable(True)
        self.auto_action.setChecked(True)
        menu.addAction(self.auto_action)
        menu.addSeparator()
        self._group = QActionGroup(menu)
        self._group.setExclusive(True)
        self.model_actions: list[QAction] = []
        for model in models:
            action = QAction(model.label, menu)
            action.setCheckable(True)
            action.setData(str(model.folder))
            action.triggered.connect(lambda _=False, m=model: self._chosen_by_hand(m))
            self._group.addAction(action)
            menu.addAction(action)
            self.model_actions.append(action)
        if not models:
            empty = menu.addAction("No model installed")
            empty.setEnabled(False)

    @property
    def automatic(self) -> bool:
        return self.auto_action.isChecked()

    def model_loaded(self, folder: Path | None, loaded: bool, modality: str | None = None) -> None:
        """The worker reports the bundle at ``folder`` (now loaded, with its card's ``modality``, or failed)."""
        if folder is not None and not loaded:
            self._failed.add(Path(folder).resolve())
        self.current = Path(folder) if folder is not None else None
        self.current_modality = modality if loaded else None
        for action in self.model_actions:
            action.setChecked(loaded and _same(Path(action.data()), folder))

    def image_shown(self, modality: str) -> None:
        """An image with DICOM modality ``modality`` is shown: ask for the matching model when needed."""
        if not self.automatic:
            return
        kind = image_modality(modality)
        if kind is None or kind == self.current_modality:
            return
        wanted = model_for(self.models, kind)
        if wanted is None or _same(wanted.folder, self.current) or wanted.folder.resolve() in self._failed:
            return
        self._choose(wanted)

    def _chosen_by_hand(self, model: InstalledModel) -> None:
        self.auto_action.setChecked(False)
        self._failed.discard(model.folder.resolve())
        if not _same(model.folder, self.current):
            self._choose(model)

    def _choose(self, model: InstalledModel) -> None:
        self.current, self.current_modality = model.folder, model.card.modality
        self.modelChosen.emit(model.folder)

    def _modality_of(self, folder: Path | None) -> str | None:
        """The modality on the card of the bundle at ``folder`` (None when there is none or it cannot be read)."""
        if folder is None:
            return None
        installed = next((m for m in self.models if _same(m.folder, folder)), None)
        if installed is not None:
            return installed.card.modality
        try:
            return read_card(Path(folder)).modality
        except (BundleError, OSError):
            return None
