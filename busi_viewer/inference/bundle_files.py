"""What a model bundle folder holds, and how its card and weights are verified, without torch.

Shared by the torch loader (:mod:`busi_viewer.inference.bundle`) and the ONNX Runtime backend of the frozen
app (:mod:`busi_viewer.inference.onnx_predictor`), which must refuse exactly the same broken bundles.

The chain of checksums: ``SHA256SUMS`` (``sha256sum`` format, so ``sha256sum -c SHA256SUMS`` works in the
folder) lists every file of the bundle as it was written; the card it covers holds the SHA-256 of the weights and
of the scope guard, which are checked against the card; an ONNX export in the bundle is checked against
``SHA256SUMS`` when it is used. Every other listed file is checked at every load, so a card (class order,
temperature, thresholds, preprocessing) or a document edited after the bundle was written is refused, naming the
file. A listed file that is absent is not an error here: whoever needs it refuses its absence (the installer's
bundles drop their weights for the export).

What this protects against: edits, corruption and partial copies of any file after the bundle was written. What
it does not: someone who rewrites a file *and* ``SHA256SUMS`` consistently (a checksum file in the folder is no
signature); the bundle folder is as trustworthy as whoever can write it, so installed bundles belong in a folder
only their administrator can write. ``busi-train write-checksums`` re-lists a bundle and refuses to bless changed
files unless told to (:func:`write_bundle_checksums`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path

from busi_viewer.core.atomic import atomic_write
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
CHECKSUMS_FILENAME = "SHA256SUMS"
# Checked elsewhere than at every load: the weights and the scope guard against the card (which holds their
# SHA-256, and whose messages name it), the export only when it is used; so a broken export never stops torch.
_CHECKED_ELSEWHERE = (WEIGHTS_FILENAME, SCOPE_FILENAME, ONNX_FILENAME, ONNX_RECORD_FILENAME)
_CHECKSUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *]([^/\\]+)")
# What a bundle may carry beside its weights and card, for people to read: the split, the report, its
# figures. Never a picture of dataset images (training's gradcam_test.png stays in the run folder).
BUNDLE_DOCUMENTS = ("split_manifest.csv", "report.md", "metrics.json", "config.toml", "epochs.csv",
                    "learning_curves.png", "confusion_matrix.png", "roc.png", "reliability.png",
                    "reliability_by_source.png")


def looks_like_bundle(folder: Path) -> bool:
    """True for an empty folder or one holding only a bundle's own files (safe to replace)."""
    allowed = {WEIGHTS_FILENAME, CARD_FILENAME, SCOPE_FILENAME, ONNX_FILENAME, ONNX_RECORD_FILENAME,
               CHECKSUMS_FILENAME, *BUNDLE_DOCUMENTS}
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


def read_verified_card(folder: Path, architectures: Collection[str] | None = None, *,
                       weights_required: bool = True) -> ModelCard:
    """The card of the bundle at ``folder``, once it and the bundle's other files match ``SHA256SUMS`` and the
    weights file (required unless ``weights_required`` is False) matches the card's SHA-256.

    ``architectures``: when given, a card naming any other architecture is refused.
    """
    verify_checksums(folder)
    card = _read_card(folder / CARD_FILENAME)
    if architectures is not None and card.architecture not in architectures:
        raise BundleError(f"{folder.name}: unknown architecture {card.architecture!r} in the model card; "
                          f"this app supports {', '.join(architectures)}")
    weights_path = folder / WEIGHTS_FILENAME
    if weights_path.is_file():
        _verify_checksum(weights_path, card)
    elif weights_required:
        raise BundleError(f"{folder.name}: {WEIGHTS_FILENAME} is missing from the bundle at {folder}")
    return card


def read_checksums(folder: Path) -> dict[str, str]:
    """``SHA256SUMS`` of the bundle at ``folder``: file name -> lower-case SHA-256 (not yet checked)."""
    path = folder / CHECKSUMS_FILENAME
    if not path.is_file():
        raise BundleError(f"{folder.name}: {CHECKSUMS_FILENAME} is missing, so {CARD_FILENAME} cannot be verified; "
                          f"a bundle written before cards were covered can be listed, once checked, with "
                          f"busi-train write-checksums {folder}")
    listing = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{folder.name}: {CHECKSUMS_FILENAME} cannot be read ({exc})") from exc
    for number, line in enumerate(lines, 1):
        match = _CHECKSUM_LINE.fullmatch(line)
        if match is None or match[2] in listing:
            raise BundleError(f"{folder.name}: line {number} of {CHECKSUMS_FILENAME} is not '<sha256>  <file>' "
                              f"for a new file of the bundle")
        listing[match[2]] = match[1].lower()
    return listing


def verify_checksums(folder: Path) -> dict[str, str]:
    """Check the card and every other listed file of the bundle at ``folder`` against ``SHA256SUMS`` (see the
    module docstring for those checked elsewhere); returns the listing. Raises :class:`BundleError` naming the
    first file that changed."""
    listing = read_checksums(folder)
    if CARD_FILENAME not in listing:
        raise BundleError(f"{folder.name}: {CHECKSUMS_FILENAME} does not list {CARD_FILENAME}, so the card cannot "
                          f"be verified")
    for name in sorted(listing, key=lambda n: n != CARD_FILENAME):  # the card first: it matters most
        if name not in _CHECKED_ELSEWHERE and (name == CARD_FILENAME or (folder / name).is_file()):
            check_listed_file(folder, name, listing)
    return listing


def check_listed_file(folder: Path, name: str, listing: Mapping[str, str]) -> str:
    """The SHA-256 of ``folder``/``name`` once it matches its entry in ``listing`` (``SHA256SUMS``)."""
    path = folder / name
    expected = listing.get(name)
    if expected is None:
        raise BundleError(f"{folder.name}: {name} is not covered by the bundle's {CHECKSUMS_FILENAME}")
    if not path.is_file():
        raise BundleError(f"{folder.name}: {name} is missing from the bundle at {folder}")
    actual = sha256_file(path)
    if actual != expected:
        raise BundleError(f"{folder.name}: {name} does not match the bundle's {CHECKSUMS_FILENAME} (expected "
                          f"SHA-256 {expected[:12]}…, found {actual[:12]}…); the file was modified or corrupted "
                          f"after the bundle was written")
    return actual


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of ``folder`` but ``SHA256SUMS`` itself, by name."""
    return {path.name: sha256_file(path) for path in sorted(folder.iterdir())
            if path.is_file() and path.name != CHECKSUMS_FILENAME}


def write_checksums(folder: Path, listing: Mapping[str, str]) -> None:
    """Write ``listing`` (file name -> SHA-256) as ``folder``/``SHA256SUMS``, atomically."""
    with atomic_write(folder / CHECKSUMS_FILENAME, encoding="utf-8", newline="\n") as handle:
        handle.writelines(f"{digest}  {name}\n" for name, digest in sorted(listing.items()))


def write_bundle_checksums(folder: str | Path, *, accept_changes: bool = False) -> dict[str, str]:
    """List every file of the bundle at ``folder`` in its ``SHA256SUMS`` (``busi-train write-checksums``).

    For a bundle without one (written before cards were covered), or after adding files. A file that no longer
    matches the old listing is only blessed with ``accept_changes``; the weights and the scope guard must match
    the card in any case. Returns the new listing.
    """
    folder = bundle_folder(folder)
    current = file_digests(folder)
    if (folder / CHECKSUMS_FILENAME).exists():
        listed = read_checksums(folder)
        changed = sorted(name for name, digest in listed.items() if current.get(name, digest) != digest)
        if changed and not accept_changes:
            raise BundleError(f"{folder.name}: {', '.join(changed)} changed since {CHECKSUMS_FILENAME} was "
                              f"written; check them, then pass --accept-changes to list them as they are now")
    card = _read_card(folder / CARD_FILENAME)
    if (folder / WEIGHTS_FILENAME).is_file():
        _verify_checksum(folder / WEIGHTS_FILENAME, card)
    scope_sha256 = str(card.scope_guard.get("file_sha256", "")).lower() if card.scope_guard else ""
    if scope_sha256 and current.get(SCOPE_FILENAME) != scope_sha256:
        raise BundleError(f"{folder.name}: {SCOPE_FILENAME} is missing or does not match its model card")
    write_checksums(folder, current)
    return current


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
