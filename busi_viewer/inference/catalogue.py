"""The installed model bundles and which one suits an image, from their cards alone (no weights read, no torch).

A card states the modality its model was trained on (DICOM Modality codes: "US" ultrasound, "MG" mammography).
The viewer picks the bundle whose modality matches the image's, lets the user switch, and warns when a model
sees an image of another modality; loading (with the checksum verified) happens only when a bundle is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from busi_viewer.core.paths import models_dir
from busi_viewer.core.report_data import MODALITY_MEANINGS
from busi_viewer.inference.bundle_files import CARD_FILENAME, ONNX_FILENAME, WEIGHTS_FILENAME
from busi_viewer.inference.model_card import ModelCard
from busi_viewer.inference.prediction import Prediction

# The modalities bundles are made for, in words (one table of words: core.report_data).
MODALITY_NAMES = {code: MODALITY_MEANINGS[code] for code in ("US", "MG")}


@dataclass(frozen=True)
class InstalledModel:
    """A bundle folder and what its card says (not yet verified: that happens when it is loaded)."""

    folder: Path
    card: ModelCard

    @property
    def label(self) -> str:
        """"busi-us 0.2.0 — ultrasound (benign, malignant, normal)"."""
        modality = MODALITY_NAMES.get(self.card.modality, self.card.modality)
        return f"{self.card.name} {self.card.version} — {modality} ({', '.join(self.card.class_names)})"


def installed_models(folder: Path | None = None) -> list[InstalledModel]:
    """Every sub-folder of ``folder`` (default: :func:`paths.models_dir`) with a readable card and weights (or the
    ONNX export the installer carries instead), by folder name.

    Folders whose card cannot be read are left out here; loading one by hand reports why.
    """
    root = Path(folder) if folder is not None else models_dir()
    found = []
    for bundle in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else ():
        card_path = bundle / CARD_FILENAME
        if not (card_path.is_file() and ((bundle / WEIGHTS_FILENAME).is_file() or (bundle / ONNX_FILENAME).is_file())):
            continue
        try:
            card = ModelCard.from_json(card_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        found.append(InstalledModel(bundle, card))
    return found


def image_modality(modality: str) -> str | None:
    """The modality code a model can be chosen by ("US", "MG"), or None when the image does not say (rasters
    are "OT"; a mammogram stored as "RG", computed radiography, is not assumed to be one)."""
    code = (modality or "").strip().upper()
    return code if code in MODALITY_NAMES else None


def model_for(models: list[InstalledModel], modality: str | None) -> InstalledModel | None:
    """The first installed model trained on ``modality``; None when the modality is unknown or none matches."""
    if modality is None:
        return None
    return next((m for m in models if m.card.modality == modality), None)


def scope_warning(card: ModelCard | None, modality: str | None, prediction: Prediction | None) -> str:
    """Why an image is outside the model's scope, in one sentence for the screen, the reports and busi-predict:
    its DICOM modality (:func:`modality_warning`), else the bundle's scope guard when it flagged ``prediction``;
    "" when neither says so."""
    text = modality_warning(card, modality)
    if text or card is None or prediction is None or prediction.in_scope is not False:
        return text
    return (f"Outside this model's scope: this image is unlike the {MODALITY_NAMES.get(card.modality, card.modality)} "
            f"images it was trained on (scope score {prediction.scope_score:.2f}; above 1 is outside); its "
            f"classification here means little.")


def in_scope_cell(warning: str, prediction: Prediction | None) -> str:
    """busi-predict's ``in_scope`` column: "no" when :func:`scope_warning` said something (``warning``), "yes"
    when the scope check passed the image, "" when nothing is known (a bundle without a check)."""
    if warning:
        return "no"
    return "yes" if prediction is not None and prediction.in_scope else ""


def modality_warning(card: ModelCard | None, modality: str | None) -> str:
    """A sentence for the result panel, reports and busi-predict when ``card``'s model sees an image of another
    known modality (``modality``: the image's DICOM Modality, e.g. "MG"; "OT" or None say nothing), else ""."""
    modality = image_modality(modality) if modality else None
    if card is None or modality is None or card.modality == modality:
        return ""
    trained = MODALITY_NAMES.get(card.modality, card.modality)
    seen = MODALITY_NAMES.get(modality, modality)
    return (f"Out of scope: this model was trained on {trained} images and this image is {seen}; "
            f"its output here means nothing.")
