"""Model bundles: exact round trip, tamper detection (card, weights, listed files), clear errors, atomic writes,
no unpickling."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from pathlib import Path

import pytest
import safetensors.torch
import torch

from busi_viewer.core.errors import BundleError
from busi_viewer.core.labels import CLASS_NAMES
from busi_viewer.inference.architectures import ImageClassifier
from busi_viewer.inference.bundle import (
    CARD_FILENAME,
    WEIGHTS_FILENAME,
    load_bundle,
    save_bundle,
    sha256_file,
)
from busi_viewer.inference.bundle_files import (
    CHECKSUMS_FILENAME,
    file_digests,
    read_checksums,
    verify_checksums,
    write_bundle_checksums,
    write_checksums,
)
from busi_viewer.inference.model_card import ModelCard

ARCH = "tf_efficientnet_lite0"


def _model(seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    model = ImageClassifier(ARCH, num_classes=len(CLASS_NAMES))
    # Non-trivial batch-norm statistics, so a round trip that dropped buffers would show in the outputs.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _card(**overrides) -> ModelCard:
    fields = {"name": "test-model", "version": "0.0.1", "architecture": ARCH, "class_names": CLASS_NAMES}
    return ModelCard(**{**fields, **overrides})


@pytest.fixture(scope="module")
def model() -> ImageClassifier:
    return _model()


@pytest.fixture
def bundle(tmp_path, model) -> Path:
    folder = tmp_path / "models" / "busi-us"
    save_bundle(folder, model, _card())
    return folder


def _rewrite_card(folder: Path, *, resign: bool = True, **changes) -> None:
    """Edit the card; ``resign``: list it anew in SHA256SUMS, as a bundle written that way would have it."""
    card_path = folder / CARD_FILENAME
    data = json.loads(card_path.read_text())
    data.update(changes)
    card_path.write_text(json.dumps(data))
    if resign:
        write_checksums(folder, {**read_checksums(folder), CARD_FILENAME: sha256_file(card_path)})


def _replace_weights(folder: Path, state: dict[str, torch.Tensor]) -> None:
    """Swap in other weights and re-sign them, as a careless manual edit would."""
    safetensors.torch.save_file(state, folder / WEIGHTS_FILENAME)
    _rewrite_card(folder, weights_sha256=sha256_file(folder / WEIGHTS_FILENAME))


def test_round_trip_is_exact(tmp_path, model):
    folder = tmp_path / "bundle"
    saved = save_bundle(folder, model, _card(metrics={"auc": 0.9}))
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS_FILENAME, CARD_FILENAME, CHECKSUMS_FILENAME])
    assert saved.weights_sha256 == sha256_file(folder / WEIGHTS_FILENAME)
    assert read_checksums(folder) == file_digests(folder) and len(file_digests(folder)) == 2

    loaded = load_bundle(folder)
    assert loaded.card == saved
    assert loaded.folder == folder
    assert not loaded.model.training
    assert next(loaded.model.parameters()).device == torch.device("cpu")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))


def test_sha256_file_streams_large_files(tmp_path):
    payload = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB: several chunks plus a partial one
    path = tmp_path / "blob"
    path.write_bytes(payload)
    assert sha256_file(path) == hashlib.sha256(payload).hexdigest()


def test_flipped_byte_is_detected(bundle):
    weights = bundle / WEIGHTS_FILENAME
    expected = sha256_file(weights)
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    weights.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=rf"expected SHA-256 {expected[:12]}.*modified or corrupted"):
        load_bundle(bundle)


def test_missing_folder(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")


def test_a_file_is_not_a_bundle(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(BundleError, match="is a file, not a model bundle folder"):
        load_bundle(tmp_path / "model.safetensors")


def test_missing_default_bundle_says_no_model_is_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("BUSI_VIEWER_RESOURCES", str(tmp_path / "resources"))
    with pytest.raises(BundleError, match="no trained model is installed at"):
        load_bundle()
    with pytest.raises(BundleError, match="no trained model is installed at"):
        load_bundle(tmp_path / "resources" / "models" / "busi-us")


@pytest.mark.parametrize(("missing", "message"), [(CARD_FILENAME, "model_card.json is missing"),
                                                  (WEIGHTS_FILENAME, "weights.safetensors is missing")])
def test_missing_files(bundle, missing, message):
    (bundle / missing).unlink()
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_invalid_json_card(bundle):
    (bundle / CARD_FILENAME).write_text('{"name": "x", ')
    write_checksums(bundle, {**read_checksums(bundle), CARD_FILENAME: sha256_file(bundle / CARD_FILENAME)})
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle)


def test_card_without_checksum_is_refused(bundle):
    _rewrite_card(bundle, weights_sha256="")
    with pytest.raises(BundleError, match="no weights_sha256"):
        load_bundle(bundle)


def test_unknown_architecture(bundle):
    _rewrite_card(bundle, architecture="convnext_giant")
    with pytest.raises(BundleError, match="unknown architecture 'convnext_giant'"):
        load_bundle(bundle)


def test_class_count_mismatch(bundle):
    _rewrite_card(bundle, class_names=["benign", "malignant"])
    with pytest.raises(BundleError, match="lists 2 classes .* weights have 3 outputs"):
        load_bundle(bundle)


def test_missing_and_unexpected_keys(bundle, model):
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "backbone.bn2.running_var"}
    state["backbone.extra.weight"] = torch.zeros(2)
    _replace_weights(bundle, state)
    with pytest.raises(BundleError, match=r"missing tensors: backbone\.bn2\.running_var.*"
                                          r"unexpected tensors: backbone\.extra\.weight"):
        load_bundle(bundle)


def test_save_refuses_a_card_that_does_not_fit_the_model(tmp_path, model):
    with pytest.raises(BundleError, match="lists 2 classes"):
        save_bundle(tmp_path / "b", model, _card(class_names=("benign", "malignant")))
    assert not (tmp_path / "b").exists()


def test_overwrite_needs_consent(bundle):
    other = _model(seed=1)
    with pytest.raises(BundleError, match="already exists.*overwrite=True"):
        save_bundle(bundle, other, _card())
    saved = save_bundle(bundle, other, _card(version="0.0.2"), overwrite=True)
    loaded = load_bundle(bundle)
    assert loaded.card == saved and loaded.card.version == "0.0.2"
    assert torch.equal(loaded.model.head.fc.weight, other.head.fc.weight)
    assert [p.name for p in bundle.parent.iterdir()] == [bundle.name]


def test_overwrite_never_replaces_a_folder_that_is_not_a_bundle(tmp_path, model):
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "thesis.docx").write_bytes(b"years of work")
    (precious / CARD_FILENAME).write_text("{}")  # a stray card does not make it a bundle
    with pytest.raises(BundleError, match="not a model bundle"):
        save_bundle(precious, model, _card(), overwrite=True)
    assert (precious / "thesis.docx").read_bytes() == b"years of work"


def _crash_mid_write(tensors, filename, metadata=None):
    Path(filename).write_bytes(b"\x00" * 1000)
    raise OSError(28, "No space left on device")


def test_failed_save_leaves_no_bundle_and_no_leftovers(tmp_path, model, monkeypatch):
    monkeypatch.setattr(safetensors.torch, "save_file", _crash_mid_write)
    parent = tmp_path / "models"
    with pytest.raises(OSError, match="No space left"):
        save_bundle(parent / "busi-us", model, _card())
    assert list(parent.iterdir()) == []


def test_failed_overwrite_keeps_the_old_bundle(bundle, monkeypatch):
    before = (bundle / WEIGHTS_FILENAME).read_bytes()
    monkeypatch.setattr(safetensors.torch, "save_file", _crash_mid_write)
    with pytest.raises(OSError):
        save_bundle(bundle, _model(seed=2), _card(), overwrite=True)
    assert (bundle / WEIGHTS_FILENAME).read_bytes() == before
    assert [p.name for p in bundle.parent.iterdir()] == [bundle.name]
    load_bundle(bundle)


class _Payload:
    """Unpickling this creates ``path``: proof that a loader ran code from the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_pickle_disguised_as_safetensors_is_never_unpickled(bundle, tmp_path, monkeypatch):
    pickle.loads(pickle.dumps(_Payload(tmp_path / "payload-is-live")))
    assert (tmp_path / "payload-is-live").exists()  # the payload does run when unpickled

    marker = tmp_path / "pwned"
    (bundle / WEIGHTS_FILENAME).write_bytes(pickle.dumps({"head.fc.weight": _Payload(marker)}))
    _rewrite_card(bundle, weights_sha256=sha256_file(bundle / WEIGHTS_FILENAME))

    def no_torch_load(*args, **kwargs):
        raise AssertionError("load_bundle must never call torch.load")

    monkeypatch.setattr(torch, "load", no_torch_load)
    with pytest.raises(BundleError, match="not a valid safetensors file"):
        load_bundle(bundle)
    assert not marker.exists()


def test_a_bundle_with_its_documents_can_be_replaced_and_carries_only_allowed_ones(tmp_path, model):
    from busi_viewer.inference.bundle import BUNDLE_DOCUMENTS

    run = tmp_path / "run"
    run.mkdir()
    (run / "report.md").write_text("# report v1")
    (run / "gradcam_test.png").write_bytes(b"dataset images")
    bundle = tmp_path / "models" / "busi-us"
    save_bundle(bundle, model, _card(), documents=[run / "report.md"])
    assert (bundle / "report.md").read_text() == "# report v1"
    (run / "report.md").write_text("# report v2")
    save_bundle(bundle, model, _card(), overwrite=True, documents=[run / "report.md"])  # a re-export
    assert (bundle / "report.md").read_text() == "# report v2"
    with pytest.raises(BundleError, match="cannot travel in a model bundle"):
        save_bundle(bundle, model, _card(), overwrite=True, documents=[run / "gradcam_test.png"])
    assert "gradcam_test.png" not in BUNDLE_DOCUMENTS and not (bundle / "gradcam_test.png").exists()
    assert load_bundle(bundle).card.name == _card().name


# The card decides what every output means: an edit after the bundle was written must never load.
@pytest.mark.parametrize("edit", [
    {"class_names": ["malignant", "benign", "normal"]},  # swapped: every benign prediction would read malignant
    {"calibration_temperature": 2.0},
    {"thresholds": {"malignant": 0.9}},
])
def test_a_card_edited_after_the_bundle_was_written_is_refused(bundle, edit):
    _rewrite_card(bundle, resign=False, **edit)
    with pytest.raises(BundleError, match=r"busi-us: model_card\.json does not match the bundle's SHA256SUMS "
                                          r"\(expected SHA-256 .*modified or corrupted"):
        load_bundle(bundle)


def test_a_bundle_without_checksums_for_its_card_is_refused(bundle):
    write_checksums(bundle, {WEIGHTS_FILENAME: sha256_file(bundle / WEIGHTS_FILENAME)})
    with pytest.raises(BundleError, match="SHA256SUMS does not list model_card.json"):
        load_bundle(bundle)
    (bundle / CHECKSUMS_FILENAME).write_text("not a checksum\n")
    with pytest.raises(BundleError, match="line 1 of SHA256SUMS"):
        load_bundle(bundle)
    (bundle / CHECKSUMS_FILENAME).unlink()
    with pytest.raises(BundleError, match="SHA256SUMS is missing.*busi-train write-checksums"):
        load_bundle(bundle)


def test_every_listed_file_is_checked_and_absent_ones_are_left_to_whoever_needs_them(tmp_path, model):
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.md").write_text("# report")
    bundle = tmp_path / "bundle"
    save_bundle(bundle, model, _card(), documents=[run / "report.md"])
    assert set(read_checksums(bundle)) == {CARD_FILENAME, WEIGHTS_FILENAME, "report.md"}
    (bundle / "report.md").write_text("# a better report")
    with pytest.raises(BundleError, match="report.md does not match the bundle's SHA256SUMS"):
        load_bundle(bundle)
    (bundle / "report.md").unlink()
    load_bundle(bundle)
    (bundle / CARD_FILENAME).unlink()
    with pytest.raises(BundleError, match="model_card.json is missing"):
        load_bundle(bundle)


def test_write_checksums_lists_a_bundle_but_never_blesses_a_change_unasked(bundle):
    card_sha256 = sha256_file(bundle / CARD_FILENAME)
    (bundle / CHECKSUMS_FILENAME).unlink()  # as a bundle written before cards were covered
    assert write_bundle_checksums(bundle) == read_checksums(bundle) == file_digests(bundle)
    load_bundle(bundle)
    _rewrite_card(bundle, resign=False, calibration_temperature=3.0)
    with pytest.raises(BundleError, match="model_card.json changed since SHA256SUMS was written.*--accept-changes"):
        write_bundle_checksums(bundle)
    assert read_checksums(bundle)[CARD_FILENAME] == card_sha256
    write_bundle_checksums(bundle, accept_changes=True)
    assert load_bundle(bundle).card.calibration_temperature == 3.0
    (bundle / WEIGHTS_FILENAME).write_bytes(b"other weights")
    with pytest.raises(BundleError, match="weights.safetensors does not match its model card"):
        write_bundle_checksums(bundle, accept_changes=True)


def test_update_bundle_lists_what_it_wrote_and_keeps_every_other_entry(bundle):
    from busi_viewer.inference.bundle import update_bundle

    (bundle / "roc.png").write_bytes(b"dropped in, never listed")
    listed = read_checksums(bundle)

    def change(staged, card):
        (staged / "report.md").write_text("# fitted")
        return dataclasses.replace(card, low_confidence_below=0.4)

    update_bundle(bundle, change)
    after = read_checksums(bundle)
    assert after["report.md"] == sha256_file(bundle / "report.md")
    assert after[CARD_FILENAME] == sha256_file(bundle / CARD_FILENAME) != listed[CARD_FILENAME]
    assert after[WEIGHTS_FILENAME] == listed[WEIGHTS_FILENAME] and "roc.png" not in after
    assert load_bundle(bundle).card.low_confidence_below == 0.4


@pytest.mark.parametrize("name", ["busi-us", "mias-mg"])
def test_the_shipped_bundles_verify(name):
    folder = Path(__file__).resolve().parents[1] / "resources" / "models" / name
    if not (folder / WEIGHTS_FILENAME).is_file():
        pytest.skip(f"the shipped bundle {name} is not present")
    listing = verify_checksums(folder)
    assert listing == file_digests(folder), "SHA256SUMS must list every file of the shipped bundle as it is"
    assert load_bundle(folder).card.name == name
