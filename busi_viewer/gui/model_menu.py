"""The Model menu: the installed bundles, and picking the one that matches each image's modality."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu

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

    def model_loaded(self, folder: Path | None, loaded: bool) -> None:
        """The worker reports the bundle at ``folder`` (now loaded, or failed)."""
        if folder is not None and not loaded:
            self._failed.add(Path(folder).resolve())
        self.current = Path(folder) if folder is not None else None
        for action in self.model_actions:
            action.setChecked(loaded and _same(Path(action.data()), folder))

    def image_shown(self, modality: str) -> None:
        """An image with DICOM modality ``modality`` is shown: ask for the matching model when needed."""
        if not self.automatic:
            return
        wanted = model_for(self.models, image_modality(modality))
        if wanted is None or _same(wanted.folder, self.current) or wanted.folder.resolve() in self._failed:
            return
        self._choose(wanted.folder)

    def _chosen_by_hand(self, model: InstalledModel) -> None:
        self.auto_action.setChecked(False)
        self._failed.discard(model.folder.resolve())
        if not _same(model.folder, self.current):
            self._choose(model.folder)

    def _choose(self, folder: Path) -> None:
        self.current = folder
        self.modelChosen.emit(folder)
