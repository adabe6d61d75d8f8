"""Model bundles: a folder holding ``weights.safetensors`` and the ``model_card.json`` that describes them.

Bundles are written atomically (a temporary sibling folder renamed into place) with a ``SHA256SUMS`` that covers
the card and every other file, and read defensively: the listing and the card's SHA-256 of the weights are checked
before the weights are parsed (:mod:`busi_viewer.inference.bundle_files`), and the weights are only ever read as
safetensors, never unpickled, so a tampered bundle cannot run code.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from busi_viewer.core.errors import BundleError
from busi_viewer.core.hashing import sha256_file
from busi_viewer.inference.architectures import SUPPORTED_ARCHITECTURES, ImageClassifier
from busi_viewer.inference.bundle_files import (
    BUNDLE_DOCUMENTS,
    CARD_FILENAME,
    WEIGHTS_FILENAME,
    bundle_folder,
    file_digests,
    looks_like_bundle,
    read_checksums,
    read_verified_card,
    write_checksums,
)
from busi_viewer.inference.device import select_device
from busi_viewer.inference.model_card import ModelCard

__all__ = ["BUNDLE_DOCUMENTS", "CARD_FILENAME", "WEIGHTS_FILENAME", "LoadedBundle", "load_bundle", "save_bundle",
           "update_bundle"]


@dataclass(frozen=True)
class LoadedBundle:
    """A verified bundle: its card, the model (eval mode, on the requested device) and where it came from."""

    card: ModelCard
    model: ImageClassifier
    folder: Path


def save_bundle(folder: str | Path, model: ImageClassifier, card: ModelCard, *, overwrite: bool = False,
                documents: Iterable[Path] = ()) -> ModelCard:
    """Write ``model``'s weights and ``card`` as a bundle at ``folder``; returns the card with ``weights_sha256``.

    ``documents``: files copied in beside them, each named as one of :data:`BUNDLE_DOCUMENTS`.
    Atomic: everything is written into a temporary sibling folder that is renamed into place, so ``folder`` is
    either absent, the previous bundle, or the complete new one. An existing bundle is replaced only with
    ``overwrite=True``; a folder that holds anything but a bundle is never replaced.
    """
    folder = Path(folder)
    documents = [Path(d) for d in documents]
    unknown = [d.name for d in documents if d.name not in BUNDLE_DOCUMENTS]
    if unknown:
        raise BundleError(f"{', '.join(unknown)} cannot travel in a model bundle (allowed: "
                          f"{', '.join(BUNDLE_DOCUMENTS)})")
    if card.architecture != model.architecture:
        raise BundleError(f"model card says {card.architecture!r} but the model is {model.architecture!r}")
    if card.num_classes != model.num_classes:
        raise BundleError(f"model card lists {card.num_classes} classes but the model has {model.num_classes} outputs")
    if folder.exists() or folder.is_symlink():
        if not overwrite:
            raise BundleError(f"a model bundle already exists at {folder}; pass overwrite=True to replace it")
        if not folder.is_dir() or not looks_like_bundle(folder):
            raise BundleError(f"{folder} exists and is not a model bundle; refusing to replace it")

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(folder, "partial")
    staging.mkdir()  # not mkdtemp: its 0700 mode would stick to the bundle and hide it from other users
    try:
        weights_path = staging / WEIGHTS_FILENAME
        state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
        safetensors.torch.save_file(state, weights_path, metadata={"architecture": model.architecture})
        weights_path.chmod(0o644)  # readable by every user of a shared workstation, like the card
        _fsync(weights_path)
        saved_card = dataclasses.replace(card, weights_sha256=sha256_file(weights_path))
        card_path = staging / CARD_FILENAME
        card_path.write_text(saved_card.to_json(), encoding="utf-8")
        _fsync(card_path)
        for document in documents:
            shutil.copy2(document, staging / document.name)
        write_checksums(staging, file_digests(staging))
        _swap_into_place(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return saved_card


def load_bundle(folder: str | Path | None = None, device: str | torch.device = "cpu") -> LoadedBundle:
    """Read, verify and instantiate the bundle at ``folder`` (default: :func:`paths.default_model_dir`).

    ``device``: a torch device, or a name for :func:`device.select_device` ("cpu", "cuda", "auto", ...).
    The returned model is in eval mode on that device and expects (B, 3, S, S) float32 input preprocessed as
    ``card.preprocess`` says; it outputs (B, card.num_classes) logits in ``card.class_names`` order.
    Raises :class:`BundleError` with a message a user can act on for anything missing or inconsistent.
    """
    folder = bundle_folder(folder)
    target = select_device(device) if isinstance(device, str) else torch.device(device)
    card = read_verified_card(folder, SUPPORTED_ARCHITECTURES)
    state = _read_weights(folder / WEIGHTS_FILENAME)
    try:
        model = ImageClassifier(card.architecture, card.num_classes, output_stride=card.output_stride)
    except ValueError as exc:
        raise BundleError(f"{folder.name}: {exc}") from exc
    _check_state_fits(state, model, card, folder.name)
    model.load_state_dict(state, strict=True)
    return LoadedBundle(card=card, model=model.to(target).eval(), folder=folder)


def update_bundle(folder: str | Path, change: Callable[[Path, ModelCard], ModelCard]) -> ModelCard:
    """Change the verified bundle at ``folder`` atomically: ``change(staged_copy, card)`` may write files into a
    staged copy of the folder and returns the new card, which is written there before the copy replaces the
    bundle. Returns the new card. The weights cannot change this way (the card keeps their SHA-256).

    ``SHA256SUMS`` then lists what ``change`` wrote as it is; every other file keeps its old entry, so an
    unlisted or modified file is not blessed on the way."""
    folder = bundle_folder(folder)
    card = read_verified_card(folder, SUPPORTED_ARCHITECTURES)
    listed = read_checksums(folder)
    staging = _sibling(folder, "partial")
    shutil.copytree(folder, staging)
    try:
        before = file_digests(staging)
        new_card = dataclasses.replace(change(staging, card), weights_sha256=card.weights_sha256)
        card_path = staging / CARD_FILENAME
        card_path.write_text(new_card.to_json(), encoding="utf-8")
        _fsync(card_path)
        written = {name: digest for name, digest in file_digests(staging).items() if before.get(name) != digest}
        write_checksums(staging, {**listed, **written})
        _swap_into_place(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return new_card


def _sibling(folder: Path, tag: str) -> Path:
    # Hidden and in the same directory, so renames stay on one file system and stay atomic.
    return folder.parent / f".{folder.name}.{tag}-{uuid.uuid4().hex[:12]}"


def _fsync(path: Path) -> None:
    # Without it a crash shortly after the rename can leave a complete-looking folder of empty files.
    with path.open("r+b") as stream:
        os.fsync(stream.fileno())


def _swap_into_place(staging: Path, folder: Path) -> None:
    if not (folder.exists() or folder.is_symlink()):
        staging.rename(folder)
        return
    # A directory cannot be renamed over a non-empty one: move the old bundle aside first, restore it on failure.
    retired = _sibling(folder, "old")
    folder.rename(retired)
    try:
        staging.rename(folder)
    except BaseException:
        retired.rename(folder)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _read_weights(weights_path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(weights_path, device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{weights_path.parent.name}: {WEIGHTS_FILENAME} is not a valid safetensors file "
                          f"({exc})") from exc


def _check_state_fits(state: dict[str, torch.Tensor], model: ImageClassifier, card: ModelCard, bundle: str) -> None:
    head = state.get("head.fc.weight")
    if head is not None and head.ndim == 2 and head.shape[0] != card.num_classes:
        raise BundleError(f"{bundle}: the model card lists {card.num_classes} classes "
                          f"({', '.join(card.class_names)}) but the weights have {head.shape[0]} outputs")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
                        for k, v in state.items() if k in expected and v.shape != expected[k].shape)
    problems = [f"{label}: {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}"
                for label, keys in (("missing tensors", missing), ("unexpected tensors", unexpected),
                                    ("shape mismatches (file vs model)", mismatched)) if keys]
    if problems:
        raise BundleError(f"{bundle}: the weights do not fit a {card.architecture} classifier "
                          f"with {card.num_classes} classes; " + "; ".join(problems))
