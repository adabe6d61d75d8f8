"""What a model bundle folder holds, and how its card and weights are verified, without torch.

Shared by the torch loader (:mod:`busi_viewer.inference.bundle`) and the ONNX Runtime backend of the frozen
app (:mod:`busi_viewer.inference.onnx_predictor`), which must refuse exactly the same broken bundles.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from busi_viewer.core.errors import BundleError
from busi_viewer.core.hashing import sha256_file
from busi_viewer.core.paths import default_model_dir, models_dir
from busi_viewer.inference.model_card import ModelCard

WEIGHTS_FILENAME = "weights.safetensors"
CARD_FILENAME = "model_card.json"
# The scope guard (busi_viewer.inference.scope): plain arrays, its SHA-256 in the card.
SCOPE_FILENAME = "scope_guard.npz"
# Made from the weights at build time for the frozen app (never committed), with a record binding it to them.
ONNX_FILENAME = "model.onnx"
ONNX_RECORD_FILENAME = "model.onnx.json"
# What a bundle may carry beside its weights and card, for people to read: the split, the report, its
# figures. Never a picture of dataset images (training's gradcam_test.png stays in the run folder).
BUNDLE_DOCUMENTS = ("split_manifest.csv", "report.md", "metrics.json", "config.toml", "epochs.csv",
                    "learning_curves.png", "confusion_matrix.png", "roc.png", "reliability.png",
                    "reliability_by_source.png")


def looks_like_bundle(folder: Path) -> bool:
    """True for an empty folder or one holding only a bundle's own files (safe to replace)."""
    allowed = {WEIGHTS_FILENAME, CARD_FILENAME, SCOPE_FILENAME, ONNX_FILENAME, ONNX_RECORD_FILENAME,
               *BUNDLE_DOCUMENTS}
    return {entry.name for entry in folder.iterdir()} <= allowed


def bundle_folder(folder: str | Path | None) -> Path:
    """``folder`` (default: :func:`paths.default_model_dir`) once it is known to be a directory; a bare name that
    is no folder here (``mias-mg``) names an installed bundle in :func:`paths.models_dir`.

    Raises :class:`BundleError` saying what to do when it is a file or does not exist.
    """
    folder = Path(folder) if folder is not None else default_model_dir()
    if not folder.exists() and len(folder.parts) == 1 and (models_dir() / folder).is_dir():
        folder = models_dir() / folder
    if folder.exists() and not folder.is_dir():
        raise BundleError(f"{folder} is a file, not a model bundle folder")
    if not folder.is_dir():
        if _is_default_location(folder):
            raise BundleError(f"no trained model is installed at {folder}; train one with busi-train "
                              f"or copy a model bundle (weights.safetensors + model_card.json) there")
        installed = sorted(p.name for p in models_dir().iterdir() if p.is_dir()) if models_dir().is_dir() else []
        hint = f" (installed models: {', '.join(installed)})" if installed else ""
        raise BundleError(f"model bundle folder {folder} does not exist{hint}")
    return folder


def read_card(folder: Path) -> ModelCard:
    """The card of the bundle at ``folder``, read and validated but not checked against any weights."""
    return _read_card(folder / CARD_FILENAME)


def read_verified_card(folder: Path, architectures: Collection[str] | None = None) -> ModelCard:
    """The card of the bundle at ``folder``, once its weights file is there and matches the card's SHA-256.

    ``architectures``: when given, a card naming any other architecture is refused.
    """
    card = _read_card(folder / CARD_FILENAME)
    if architectures is not None and card.architecture not in architectures:
        raise BundleError(f"{folder.name}: unknown architecture {card.architecture!r} in the model card; "
                          f"this app supports {', '.join(architectures)}")
    weights_path = folder / WEIGHTS_FILENAME
    if not weights_path.is_file():
        raise BundleError(f"{folder.name}: {WEIGHTS_FILENAME} is missing from the bundle at {folder}")
    _verify_checksum(weights_path, card)
    return card


def _is_default_location(folder: Path) -> bool:
    try:
        return folder.resolve() == default_model_dir().resolve()
    except OSError:
        return False


def _read_card(card_path: Path) -> ModelCard:
    bundle = card_path.parent.name
    if not card_path.is_file():
        raise BundleError(f"{bundle}: {CARD_FILENAME} is missing from the bundle at {card_path.parent}")
    try:
        return ModelCard.from_json(card_path.read_text(encoding="utf-8"))
    except BundleError as exc:
        raise BundleError(f"{bundle}: {exc}") from exc
    except (OSError, UnicodeDecodeError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise BundleError(f"{bundle}: {CARD_FILENAME} is not a valid model card: {exc}") from exc


def _verify_checksum(weights_path: Path, card: ModelCard) -> None:
    expected = card.weights_sha256.strip().lower()
    if not expected:
        raise BundleError(f"{weights_path.parent.name}: the model card has no weights_sha256, "
                          f"so {WEIGHTS_FILENAME} cannot be verified; re-export the bundle")
    actual = sha256_file(weights_path)
    if actual != expected:
        raise BundleError(
            f"{weights_path.parent.name}: {WEIGHTS_FILENAME} does not match its model card "
            f"(expected SHA-256 {expected[:12]}…, found {actual[:12]}…); "
            f"the file was modified or corrupted after the bundle was written"
        )
