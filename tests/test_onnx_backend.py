"""The ONNX Runtime backend: export, parity with torch, verification (of an export in the bundle and of one in the
user's cache, against the bundle's weights), and running with no torch at all."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from busi_viewer.core.errors import BundleError, DeviceError
from busi_viewer.inference.backend import load_predictor
from busi_viewer.inference.bundle_files import (
    CARD_FILENAME,
    ONNX_FILENAME,
    ONNX_RECORD_FILENAME,
    read_checksums,
    write_checksums,
)
from busi_viewer.inference.onnx_export import PARITY_TOLERANCE, export_onnx
from busi_viewer.inference.onnx_predictor import (
    OnnxExportError,
    import_onnxruntime,
    load_onnx_predictor,
    onnx_providers,
)

# Runs before anything else in a child interpreter: torch (and what needs it) cannot be imported, as in the
# frozen app, which is built without it.
NO_TORCH = "import sys\nfor name in ('torch', 'torchvision', 'timm'):\n    sys.modules[name] = None\n"


@pytest.fixture(scope="module")
def exported(tiny_bundle, tmp_path_factory):
    """A copy of the tiny random-weight bundle, exported to ONNX anew."""
    folder = tmp_path_factory.mktemp("onnx") / "tiny"
    shutil.copytree(tiny_bundle, folder, ignore=shutil.ignore_patterns(ONNX_FILENAME, ONNX_RECORD_FILENAME))
    record = export_onnx(folder)
    return folder, record


def _images(count: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    shapes = [(300, 400), (128, 128), (517, 233), (90, 700)]
    return [(rng.random((*shapes[i % 4], 3)) * 255).astype(np.uint8) for i in range(count)]


def test_export_records_its_sources_and_parity(exported):
    folder, record = exported
    saved = json.loads((folder / ONNX_RECORD_FILENAME).read_text(encoding="utf-8"))
    card = json.loads((folder / "model_card.json").read_text(encoding="utf-8"))
    assert saved["weights_sha256"] == card["weights_sha256"] == record.weights_sha256
    assert saved["onnx_sha256"] == record.onnx_sha256 and len(record.onnx_sha256) == 64
    assert record.max_abs_difference_probabilities <= PARITY_TOLERANCE
    assert record.max_abs_difference_maps <= PARITY_TOLERANCE


def test_onnx_and_torch_agree_on_probabilities_decisions_and_maps(exported):
    folder, _ = exported
    onnx, _ = load_predictor(folder, "cpu", "onnx")
    torch_predictor, _ = load_predictor(folder, "cpu", "torch")
    assert "ONNX Runtime" in onnx.description and "PyTorch" in torch_predictor.description
    images = _images()
    for ours, theirs in zip(onnx.predict_batch(images), torch_predictor.predict_batch(images)):
        assert np.abs(ours.probabilities - theirs.probabilities).max() <= PARITY_TOLERANCE
        assert ours.predicted_index == theirs.predicted_index
        assert ours.heatmap_raw.shape == theirs.heatmap_raw.shape
        assert np.abs(ours.heatmap_raw - theirs.heatmap_raw).max() <= PARITY_TOLERANCE
        assert np.abs(ours.heatmap - theirs.heatmap).max() <= 1e-3  # per-image scaling divides by a small peak
    for k in range(3):
        ours = onnx.explain_class(images[0], k)
        assert np.abs(ours - torch_predictor.explain_class(images[0], k)).max() <= PARITY_TOLERANCE
    single = onnx.predict(images[2], explain=False)
    assert single.heatmap is None and np.isclose(single.probabilities.sum(), 1.0)


def _copy(exported, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(exported[0], folder)
    return folder


def test_a_modified_export_is_refused(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    data = bytearray((folder / ONNX_FILENAME).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / ONNX_FILENAME).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.onnx does not match the bundle's SHA256SUMS"):
        load_onnx_predictor(folder, "cpu")
    _resign(folder, ONNX_FILENAME)  # the listing agrees now, the record does not
    with pytest.raises(BundleError, match="does not match its export record"):
        load_onnx_predictor(folder, "cpu")


def test_an_export_of_other_weights_is_refused(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    record = json.loads((folder / ONNX_RECORD_FILENAME).read_text(encoding="utf-8"))
    record["weights_sha256"] = "0" * 64
    (folder / ONNX_RECORD_FILENAME).write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(BundleError, match="made from other weights"):
        load_onnx_predictor(folder, "cpu")


def test_tampered_weights_are_refused_before_the_export_is_used(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match its model card"):
        load_onnx_predictor(folder, "cpu")


def test_a_bundle_without_export_says_how_to_make_one(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    (folder / ONNX_FILENAME).unlink()
    with pytest.raises(BundleError, match="no ONNX export.*busi-train export-onnx"):
        load_onnx_predictor(folder, "cpu")


def test_a_source_install_exports_once_into_the_cache_and_remakes_a_broken_export(exported, tmp_path):
    from busi_viewer.core.paths import onnx_export_cache_dir

    folder = _copy(exported, tmp_path)
    for name in (ONNX_FILENAME, ONNX_RECORD_FILENAME):
        (folder / name).unlink()
    predictor, _ = load_predictor(folder, "cpu", None)  # auto on the CPU: ONNX Runtime
    assert "ONNX Runtime" in predictor.description
    (cached,) = [p for p in onnx_export_cache_dir().iterdir() if p.is_dir()]
    stamp = (cached / ONNX_FILENAME).stat().st_mtime_ns
    load_predictor(folder, "cpu", None)
    assert (cached / ONNX_FILENAME).stat().st_mtime_ns == stamp  # reused, not made again
    (cached / ONNX_FILENAME).write_bytes(b"garbage")
    predictor, _ = load_predictor(folder, "cpu", None)
    assert "ONNX Runtime" in predictor.description and (cached / ONNX_FILENAME).stat().st_size > 1000
    assert not (folder / ONNX_FILENAME).exists()  # the bundle itself is never written to


def test_a_garbled_record_is_a_bundle_error(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    (folder / ONNX_RECORD_FILENAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError, match="not a valid export record"):
        load_onnx_predictor(folder, "cpu")


def test_an_installed_bundle_may_carry_its_export_instead_of_its_weights(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    with_weights = load_onnx_predictor(folder, "cpu")
    (folder / "weights.safetensors").unlink()
    without = load_onnx_predictor(folder, "cpu")
    image = _images(1)[0]
    a, b = with_weights.predict(image), without.predict(image)
    assert np.array_equal(a.probabilities, b.probabilities) and np.array_equal(a.heatmap_raw, b.heatmap_raw)
    assert np.array_equal(with_weights.classifier_weight, without.classifier_weight)
    card = json.loads((folder / "model_card.json").read_text(encoding="utf-8"))
    card["weights_sha256"] = "f" * 64  # a card that names other weights than the export was made from
    (folder / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(BundleError, match="model_card.json does not match the bundle's SHA256SUMS"):
        load_onnx_predictor(folder, "cpu")
    _resign(folder, CARD_FILENAME)
    with pytest.raises(BundleError, match="made from other weights"):
        load_onnx_predictor(folder, "cpu")
    (folder / ONNX_FILENAME).unlink()
    with pytest.raises(BundleError, match="weights.safetensors is missing"):
        load_onnx_predictor(folder, "cpu")


def test_an_export_of_an_older_format_is_refused(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    record = json.loads((folder / ONNX_RECORD_FILENAME).read_text(encoding="utf-8"))
    record["format"] = 1
    (folder / ONNX_RECORD_FILENAME).write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(BundleError, match="export format 1"):
        load_onnx_predictor(folder, "cpu")


def test_devices_and_backends_are_checked():
    onnxruntime = import_onnxruntime()
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert onnx_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(DeviceError, match="unknown device"):
        onnx_providers("tpu")
    with pytest.raises(DeviceError, match="unknown inference backend 'tensorflow'"):
        load_predictor(None, "cpu", "tensorflow")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(DeviceError, match="no CUDA provider.*onnxruntime-gpu"):
            onnx_providers("cuda")


def test_an_exported_bundle_can_be_replaced(exported, tmp_path):
    """The export's files count as the bundle's own: re-saving the bundle over them is allowed."""
    import torch

    from busi_viewer.inference.bundle import load_bundle, save_bundle

    folder = _copy(exported, tmp_path)
    bundle = load_bundle(folder)
    torch.nn.init.zeros_(bundle.model.get_classifier().bias)
    save_bundle(folder, bundle.model, bundle.card, overwrite=True)
    assert not (folder / ONNX_FILENAME).exists()  # the new bundle has no export of the old weights


def test_the_torch_backend_can_be_asked_for(exported, monkeypatch):
    folder, _ = exported
    assert "PyTorch" in load_predictor(folder, "cpu", "torch")[0].description
    monkeypatch.setenv("BUSI_VIEWER_BACKEND", "torch")
    assert "PyTorch" in load_predictor(folder, "cpu")[0].description


def _resign(folder, name: str) -> None:
    """List ``name`` as it is now in the bundle's SHA256SUMS, as someone who can write the bundle could."""
    write_checksums(folder, {**read_checksums(folder), name: hashlib.sha256((folder / name).read_bytes()).hexdigest()})


def _rerecord(export_dir) -> None:
    """Make the export record agree with the (tampered) export, as the probe did."""
    record = json.loads((export_dir / ONNX_RECORD_FILENAME).read_text(encoding="utf-8"))
    record["onnx_sha256"] = hashlib.sha256((export_dir / ONNX_FILENAME).read_bytes()).hexdigest()
    (export_dir / ONNX_RECORD_FILENAME).write_text(json.dumps(record), encoding="utf-8")


def _edit_graph(export_dir, edit) -> None:
    """Apply ``edit(graph)`` to the export in ``export_dir`` with the onnx package, and update its record."""
    import onnx

    model = onnx.load(str(export_dir / ONNX_FILENAME))
    edit(model.graph)
    onnx.save(model, str(export_dir / ONNX_FILENAME))
    _rerecord(export_dir)


def _raise_bias(graph, by: float = 3.0) -> None:
    """The probe's attack: a larger malignant bias (p(malignant) 0.73 -> 1.00 on the shipped model)."""
    from onnx import numpy_helper

    (index,) = [i for i, t in enumerate(graph.initializer) if t.name == "model.head.fc.bias"]
    bias = numpy_helper.to_array(graph.initializer[index]).copy()
    bias[1] += by
    graph.initializer[index].CopyFrom(numpy_helper.from_array(bias, "model.head.fc.bias"))


def _insert_after(graph, output: str, make_nodes) -> None:
    """Rename ``output`` of its producer to "raw_" + it, and insert ``make_nodes(raw_name)`` (which make
    ``output`` again) right after it, so the graph stays in order."""
    nodes = list(graph.node)
    (index,) = [i for i, n in enumerate(nodes) if output in n.output]
    producer = nodes[index]
    producer.output[list(producer.output).index(output)] = "raw_" + output
    nodes[index + 1:index + 1] = make_nodes("raw_" + output)
    del graph.node[:]
    graph.node.extend(nodes)


def _shift_logits(graph) -> None:
    """Every parameter left alone; a node added after the head shifts the malignant logit."""
    from onnx import helper, numpy_helper

    _insert_after(graph, "logits", lambda raw: [
        helper.make_node("Constant", [], ["shift"], value=numpy_helper.from_array(np.array([0, 3, 0], np.float32))),
        helper.make_node("Add", [raw, "shift"], ["logits"])])


def _add_a_table(graph) -> None:
    """A constant table of the graph's own added to the feature map."""
    from onnx import helper, numpy_helper

    channels = numpy_helper.to_array([t for t in graph.initializer if t.name == "model.head.fc.weight"][0]).shape[1]
    table = numpy_helper.from_array(np.full((1, channels, 1, 1), 0.5, np.float32))
    _insert_after(graph, "features", lambda raw: [
        helper.make_node("Constant", [], ["table"], value=table),
        helper.make_node("Add", [raw, "table"], ["features"])])


def _cached_export(folder):
    from busi_viewer.core.paths import onnx_export_cache_dir

    (cached,) = [p for p in onnx_export_cache_dir().iterdir() if p.is_dir()]
    return cached


def _without_its_export(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    for name in (ONNX_FILENAME, ONNX_RECORD_FILENAME):
        (folder / name).unlink()
    return folder


def test_the_probes_attack_on_the_cached_export_is_refused_and_the_export_made_again(exported, tmp_path):
    folder = _without_its_export(exported, tmp_path)
    image = _images(1)[0]
    honest = load_predictor(folder, "cpu", None)[0].predict(image)
    cached = _cached_export(folder)
    _edit_graph(cached, _raise_bias)  # the bias edited inside the cached .onnx, the record updated to match
    with pytest.raises(OnnxExportError, match="not made of this bundle's weights: tensor model.head.fc.bias differs"):
        load_onnx_predictor(folder, "cpu", export_dir=cached)
    predictor, _ = load_predictor(folder, "cpu", None)
    assert "ONNX Runtime" in predictor.description
    assert np.abs(predictor.predict(image).probabilities - honest.probabilities).max() <= 1e-6
    load_onnx_predictor(folder, "cpu", export_dir=cached)  # made again, from the bundle's weights


@pytest.mark.parametrize(("edit", "message"), [
    (_shift_logits, "logits are not the bundle's linear head applied to its feature map"),
    (_add_a_table, "carries a table of numbers of its own"),
])
def test_a_cached_export_rewired_around_unchanged_parameters_is_refused(exported, tmp_path, edit, message):
    folder = _without_its_export(exported, tmp_path)
    load_predictor(folder, "cpu", None)
    cached = _cached_export(folder)
    _edit_graph(cached, edit)
    with pytest.raises(OnnxExportError, match=message):
        load_onnx_predictor(folder, "cpu", export_dir=cached)


def test_an_export_in_the_bundle_is_held_to_its_checksums_and_to_its_weights(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    _edit_graph(folder, _raise_bias)
    with pytest.raises(OnnxExportError, match="model.onnx does not match the bundle's SHA256SUMS"):
        load_onnx_predictor(folder, "cpu")
    for name in (ONNX_FILENAME, ONNX_RECORD_FILENAME):
        _resign(folder, name)  # consistent everywhere but in the weights, which the card holds
    with pytest.raises(OnnxExportError, match="tensor model.head.fc.bias differs"):
        load_onnx_predictor(folder, "cpu")
    write_checksums(folder, {k: v for k, v in read_checksums(folder).items() if k != ONNX_FILENAME})
    with pytest.raises(OnnxExportError, match="model.onnx is not covered by the bundle's SHA256SUMS"):
        load_onnx_predictor(folder, "cpu")


def test_an_edited_card_is_refused_by_the_onnx_backend_too(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    (folder / "weights.safetensors").unlink()  # as the installer's bundles: the export alone
    card = json.loads((folder / CARD_FILENAME).read_text(encoding="utf-8"))
    card["class_names"] = [card["class_names"][1], card["class_names"][0], card["class_names"][2]]
    (folder / CARD_FILENAME).write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(BundleError, match="model_card.json does not match the bundle's SHA256SUMS"):
        load_predictor(folder, "cpu", "onnx")


def test_the_export_is_listed_in_the_bundle_and_keeps_the_weights_as_they_are(exported):
    import onnx
    from onnx import numpy_helper

    from busi_viewer.inference.export_check import read_weights

    folder, record = exported
    listing = read_checksums(folder)
    assert listing[ONNX_FILENAME] == record.onnx_sha256
    assert listing[ONNX_RECORD_FILENAME] == hashlib.sha256((folder / ONNX_RECORD_FILENAME).read_bytes()).hexdigest()
    weights = read_weights(folder / "weights.safetensors")
    graph = onnx.load(str(folder / ONNX_FILENAME)).graph
    assert {t.name for t in graph.initializer} <= {"model." + k for k in weights}
    bias = [numpy_helper.to_array(t) for t in graph.initializer if t.name == "model.head.fc.bias"][0]
    assert bias.tobytes() == weights["head.fc.bias"].tobytes()


def _run_without_torch(code: str, home) -> subprocess.CompletedProcess:
    """Run ``code`` with torch blocked and ``home`` as HOME (user folders there too, none elsewhere)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "BUSI_VIEWER_", "ORT_"))}
    env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-c", NO_TORCH + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_without_torch_the_auto_backend_runs_the_export(exported, tmp_path):
    folder, _ = exported
    result = _run_without_torch(f"""
        import numpy as np
        from busi_viewer.inference.backend import load_predictor, torch_installed
        assert not torch_installed()
        predictor, _ = load_predictor({str(folder)!r}, None, None)
        prediction = predictor.predict(np.full((200, 300, 3), 90, np.uint8))
        assert prediction.heatmap.shape == (200, 300)
        print(predictor.description, prediction.predicted_class)
        assert sys.modules.get('torch') is None
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ONNX Runtime" in result.stdout
    # ONNX Runtime's telemetry client writes a device id under ~/.cache/Microsoft unless it is switched off.
    assert not [p for p in tmp_path.rglob("*") if "Microsoft" in p.parts], "ONNX Runtime telemetry left files"


@pytest.mark.slow
def test_viewer_smoke_test_passes_without_torch(exported, tmp_path):
    """What the frozen app does: the window, the demo, one inference, through ONNX Runtime only."""
    folder, _ = exported
    result = _run_without_torch(f"""
        from busi_viewer.gui.app import main
        status = main(['--smoke-test', '--model', {str(folder)!r}])
        loaded = [name for name in ('torch', 'timm', 'torchvision') if sys.modules.get(name) is not None]
        assert not loaded, loaded
        sys.exit(status)
    """, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke test OK" in result.stdout and "ONNX Runtime" in result.stdout


def test_onnx_and_torch_agree_when_the_card_averages_with_the_mirror_image(exported):
    folder, _ = exported
    onnx, _ = load_predictor(folder, "cpu", "onnx")
    torch_predictor, _ = load_predictor(folder, "cpu", "torch")
    for predictor in (onnx, torch_predictor):
        predictor.card = dataclasses.replace(predictor.card, test_time_flip=True)
    images = _images()
    for ours, theirs in zip(onnx.predict_batch(images), torch_predictor.predict_batch(images)):
        assert np.abs(ours.probabilities - theirs.probabilities).max() <= PARITY_TOLERANCE
        assert ours.predicted_index == theirs.predicted_index
        assert np.abs(ours.heatmap_raw - theirs.heatmap_raw).max() <= PARITY_TOLERANCE
    assert np.abs(onnx.explain_class(images[1], 2) - torch_predictor.explain_class(images[1], 2)).max() \
        <= PARITY_TOLERANCE
