"""The viewer's inference thread: ordering, coalescing, caching, failures, prefetch, model states."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QThread  # noqa: E402

from busi_viewer.core.agreement import agreement  # noqa: E402
from busi_viewer.core.phantoms import write_phantom_dataset  # noqa: E402
from busi_viewer.gui.worker import (  # noqa: E402
    AgreementDone,
    ImageLoaded,
    InferenceDone,
    InferenceService,
    ModelState,
    WorkerFailure,
)

SIZE = (64, 80)  # (H, W): tiny, the model resizes to its input anyway
WAIT_MS = 60_000  # generous: the CPU is shared with a training job


def _png(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, SIZE, dtype=np.uint8)
    ok, data = cv2.imencode(".png", image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


class Recorder:
    """Collects every event the service emits, and the thread each was delivered in."""

    def __init__(self, service: InferenceService):
        self.loaded: list[ImageLoaded] = []
        self.done: list[InferenceDone] = []
        self.agreements: list[AgreementDone] = []
        self.order: list[tuple[str, int]] = []  # (event type, request id) of results and agreements
        self.models: list[ModelState] = []
        self.failures: list[WorkerFailure] = []
        self.threads: set = set()
        service.imageLoaded.connect(lambda e: self._add(self.loaded, e))
        service.inferenceDone.connect(lambda e: self._add(self.done, e))
        service.agreementDone.connect(lambda e: self._add(self.agreements, e))
        service.modelChanged.connect(lambda e: self._add(self.models, e))
        service.failed.connect(lambda e: self._add(self.failures, e))

    def _add(self, bucket: list, event) -> None:
        self.threads.add(QThread.currentThread())
        bucket.append(event)
        if isinstance(event, (InferenceDone, AgreementDone)):
            self.order.append((type(event).__name__, event.request_id))


@pytest.fixture
def make_service(qtbot):
    services: list[InferenceService] = []

    def make(model_dir, start: bool = True, **kwargs) -> tuple[InferenceService, Recorder]:
        service = InferenceService(model_dir, device="cpu", **kwargs)
        services.append(service)
        recorder = Recorder(service)
        if start:
            service.start()
        return service, recorder

    yield make
    for service in services:
        assert service.stop(), "the worker thread did not finish"


@pytest.fixture
def ready(make_service, tiny_bundle, qtbot):
    """A started service whose model has loaded."""
    service, rec = make_service(tiny_bundle)
    qtbot.waitUntil(lambda: bool(rec.models), timeout=WAIT_MS)
    assert rec.models[0].loaded, rec.models[0].error
    return service, rec


def _wait_done(qtbot, rec: Recorder, request_id: int) -> InferenceDone:
    qtbot.waitUntil(lambda: any(e.request_id == request_id for e in rec.done), timeout=WAIT_MS)
    return next(e for e in rec.done if e.request_id == request_id)


def _wait_agreement(qtbot, rec: Recorder, request_id: int) -> AgreementDone:
    qtbot.waitUntil(lambda: any(e.request_id == request_id for e in rec.agreements), timeout=WAIT_MS)
    return next(e for e in rec.agreements if e.request_id == request_id)


def _wait_loaded(qtbot, rec: Recorder, request_id: int) -> ImageLoaded:
    qtbot.waitUntil(lambda: any(e.request_id == request_id for e in rec.loaded), timeout=WAIT_MS)
    return next(e for e in rec.loaded if e.request_id == request_id)


def test_importing_the_worker_does_not_import_torch():
    code = "import sys, busi_viewer.gui.worker; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_model_loads_on_cpu(ready, tiny_bundle):
    _service, rec = ready
    state = rec.models[0]
    assert state.loaded and state.error is None
    assert state.device.lower().startswith("cpu")
    assert state.card is not None and state.card.name == "test-random"
    assert state.model_dir == tiny_bundle
    assert state.seconds > 0


def test_first_image_shows_before_the_model_has_loaded(make_service, tiny_bundle, qtbot, tmp_path):
    service, rec = make_service(tiny_bundle, start=False)
    order = []
    for signal in (service.imageLoaded, service.modelChanged, service.inferenceDone):
        signal.connect(lambda event: order.append(type(event).__name__))
    rid = service.request(_png(tmp_path / "a.png", 16))  # queued before start, as the window does at launch
    service.start()
    _wait_done(qtbot, rec, rid)
    assert order == ["ImageLoaded", "ModelState", "InferenceDone"]


def test_request_gives_image_then_result_in_the_gui_thread(ready, qtbot, tmp_path):
    service, rec = ready
    path = _png(tmp_path / "a.png", 1)
    rid = service.request(path)
    assert rid == service.latest_request_id
    done = _wait_done(qtbot, rec, rid)
    loaded = _wait_loaded(qtbot, rec, rid)
    assert rec.loaded.index(loaded) == 0 and loaded.error is None
    assert loaded.record.shape == SIZE and loaded.sha256 and loaded.mask is None and loaded.mask_error is None
    assert done.path == path and done.sha256 == loaded.sha256 and done.frame == 0 and not done.cached
    probabilities = done.prediction.probabilities
    assert probabilities.shape == (len(rec.models[0].card.class_names),)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert done.prediction.heatmap.shape == SIZE
    assert _wait_agreement(qtbot, rec, rid).agreement is None  # no mask beside the image
    assert rec.threads == {QThread.currentThread()}  # every signal fired in the GUI thread
    assert not rec.failures


def test_a_burst_of_requests_runs_only_a_few_inferences(ready, qtbot, tmp_path):
    service, rec = ready
    paths = [_png(tmp_path / f"img{i:02d}.png", i) for i in range(30)]
    ids = [service.request(path) for path in paths]
    assert ids == sorted(ids) and len(set(ids)) == 30
    _wait_done(qtbot, rec, ids[-1])
    qtbot.wait(200)  # anything else in flight would arrive now
    assert [e.request_id for e in rec.done] == [ids[-1]]
    assert rec.done[-1].path == paths[-1]
    assert len(rec.loaded) <= 2 and rec.loaded[-1].request_id == ids[-1]
    assert service.cache_stats()["misses"] <= 3


def test_same_file_again_is_cached(ready, qtbot, tmp_path):
    service, rec = ready
    path = _png(tmp_path / "a.png", 2)
    first = _wait_done(qtbot, rec, service.request(path))
    second = _wait_done(qtbot, rec, service.request(path))
    assert not first.cached and second.cached
    assert second.prediction is first.prediction and second.seconds < first.seconds
    stats = service.cache_stats()
    assert stats == {"records": 1, "results": 1, "result_bytes": stats["result_bytes"], "hits": 1, "misses": 1}
    assert stats["result_bytes"] == 64 * 80 * 4  # one float32 map of the 64 x 80 image; the normalised one is made on read
    with pytest.raises(ValueError):  # shared with the cache: in-place edits must fail
        second.prediction.heatmap_raw[0, 0] = 0.5


def test_a_rewritten_file_is_decoded_and_classified_again(ready, qtbot, tmp_path):
    service, rec = ready
    path = _png(tmp_path / "a.png", 3)
    first = _wait_done(qtbot, rec, service.request(path))
    _png(path, 4)  # same name, new content
    second = _wait_done(qtbot, rec, service.request(path))
    assert second.sha256 != first.sha256 and not second.cached


def test_unreadable_file_reports_the_reason_and_navigation_continues(ready, qtbot, tmp_path):
    service, rec = ready
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not an image at all" * 10)
    bad_id = service.request(bad)
    loaded = _wait_loaded(qtbot, rec, bad_id)
    assert loaded.record is None and loaded.sha256 is None and loaded.mask is None
    assert loaded.error and "PNG" in loaded.error
    good_id = service.request(_png(tmp_path / "good.png", 5))
    assert _wait_done(qtbot, rec, good_id).prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert not any(e.request_id == bad_id for e in rec.done)
    assert not rec.failures  # an unreadable file is a normal outcome, not a worker failure


def test_missing_model_gives_a_plain_viewer(make_service, qtbot, tmp_path):
    service, rec = make_service(tmp_path / "no-such-model")
    qtbot.waitUntil(lambda: bool(rec.models), timeout=WAIT_MS)
    state = rec.models[0]
    assert not state.loaded and state.card is None
    assert "does not exist" in state.error and "no-such-model" in state.error
    rid = service.request(_png(tmp_path / "a.png", 6))
    loaded = _wait_loaded(qtbot, rec, rid)
    assert loaded.error is None and loaded.record.shape == SIZE
    qtbot.wait(200)
    assert not rec.done and service.cache_stats()["misses"] == 0


def test_corrupt_model_bundle_is_reported(make_service, qtbot, tmp_path, tiny_bundle):
    broken = tmp_path / "broken-bundle"
    shutil.copytree(tiny_bundle, broken)
    weights = broken / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    service, rec = make_service(broken)
    qtbot.waitUntil(lambda: bool(rec.models), timeout=WAIT_MS)
    assert not rec.models[0].loaded and "does not match" in rec.models[0].error
    assert _wait_loaded(qtbot, rec, service.request(_png(tmp_path / "a.png", 7))).record is not None


def test_an_exception_in_inference_is_reported_and_the_thread_survives(ready, qtbot, tmp_path, monkeypatch):
    from busi_viewer.inference.prediction import PredictorBase as Predictor

    service, rec = ready

    def explode(self, rgb, explain=True):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(Predictor, "predict", explode)
    bad_id = service.request(_png(tmp_path / "a.png", 8))
    qtbot.waitUntil(lambda: bool(rec.failures), timeout=WAIT_MS)
    failure = rec.failures[0]
    assert failure.request_id == bad_id and failure.stage == "inference"
    assert failure.message == "RuntimeError: injected failure" and failure.path.name == "a.png"
    monkeypatch.undo()
    good_id = service.request(_png(tmp_path / "b.png", 9))
    assert not _wait_done(qtbot, rec, good_id).cached


def test_prefetch_fills_the_cache(ready, qtbot, tmp_path):
    service, rec = ready
    current, following, previous = (_png(tmp_path / f"{n}.png", 10 + i) for i, n in enumerate("abc"))
    _wait_done(qtbot, rec, service.request(current, prefetch=[following, previous]))
    qtbot.waitUntil(lambda: service.cache_stats()["results"] == 3, timeout=WAIT_MS)
    assert len(rec.loaded) == 1 and len(rec.done) == 1  # prefetches emit nothing
    done = _wait_done(qtbot, rec, service.request(following))
    assert done.cached and done.path == following
    assert service.cache_stats()["misses"] == 3


def test_mask_beside_the_image_gives_agreement(ready, qtbot, tmp_path):
    service, rec = ready
    dataset = write_phantom_dataset(tmp_path / "phantoms", {"benign": 1}, size=SIZE)
    path = dataset["root"] / dataset["files"][0]
    rid = service.request(path)
    done = _wait_done(qtbot, rec, rid)
    loaded = _wait_loaded(qtbot, rec, rid)
    assert loaded.mask is not None and loaded.mask.dtype == bool and loaded.mask.shape == SIZE and loaded.mask.any()
    scored = _wait_agreement(qtbot, rec, rid)
    assert scored.path == path and scored.frame == done.frame == 0
    assert scored.agreement == agreement(done.prediction.heatmap, loaded.mask)
    assert scored.agreement.baseline is not None
    # the result does not wait for the scores: it comes first, then its agreement, once each
    assert rec.order == [("InferenceDone", rid), ("AgreementDone", rid)]
    # a revisit takes both from the caches, in the same order
    again = service.request(path)
    assert _wait_done(qtbot, rec, again).cached
    assert _wait_agreement(qtbot, rec, again).agreement == scored.agreement
    assert rec.order[2:] == [("InferenceDone", again), ("AgreementDone", again)]


def test_the_result_does_not_wait_for_its_agreement(ready, qtbot, tmp_path, monkeypatch):
    """Scoring against the mask costs about a forward pass: the result must be on its way before it starts."""
    import busi_viewer.gui.worker as worker

    service, rec = ready
    released = threading.Event()

    def gated_agreement(heatmap, mask):
        released.wait(30)  # held until the GUI thread has the result (a worker scoring first would stall here)
        return agreement(heatmap, mask)

    monkeypatch.setattr(worker, "agreement", gated_agreement)
    dataset = write_phantom_dataset(tmp_path / "phantoms", {"malignant": 1}, size=SIZE)
    rid = service.request(dataset["root"] / dataset["files"][0])
    done = _wait_done(qtbot, rec, rid)
    assert not rec.agreements
    released.set()
    assert _wait_agreement(qtbot, rec, rid).agreement == agreement(done.prediction.heatmap,
                                                                   _wait_loaded(qtbot, rec, rid).mask)


def test_mask_of_the_wrong_size_is_reported_with_the_image(ready, qtbot, tmp_path):
    service, rec = ready
    path = _png(tmp_path / "a.png", 11)
    cv2.imwrite(str(tmp_path / "a_mask.png"), np.full((10, 10), 255, np.uint8))
    rid = service.request(path)
    loaded = _wait_loaded(qtbot, rec, rid)
    assert loaded.error is None and loaded.mask is None and "a_mask.png" in loaded.mask_error
    _wait_done(qtbot, rec, rid)
    assert _wait_agreement(qtbot, rec, rid).agreement is None


def test_request_without_inference_only_decodes(ready, qtbot, tmp_path):
    service, rec = ready
    rid = service.request(_png(tmp_path / "a.png", 12), infer=False)
    _wait_loaded(qtbot, rec, rid)
    qtbot.wait(200)
    assert not rec.done and service.cache_stats()["misses"] == 0


def test_set_model_reloads_and_clears_results(ready, qtbot, tmp_path, tiny_bundle):
    service, rec = ready
    _wait_done(qtbot, rec, service.request(_png(tmp_path / "a.png", 13)))
    assert service.cache_stats()["results"] == 1
    service.set_model(tmp_path / "missing")
    qtbot.waitUntil(lambda: len(rec.models) == 2, timeout=WAIT_MS)
    assert not rec.models[1].loaded and service.cache_stats()["results"] == 0
    service.set_model(tiny_bundle)
    qtbot.waitUntil(lambda: len(rec.models) == 3, timeout=WAIT_MS)
    assert rec.models[2].loaded


def test_stop_joins_and_is_idempotent(make_service, tiny_bundle, qtbot, tmp_path):
    service, rec = make_service(tiny_bundle)
    service.request(_png(tmp_path / "a.png", 14))
    assert service.stop()
    assert service.stop()
    service.request(_png(tmp_path / "b.png", 15))  # after stop: accepted, ignored, no crash
    qtbot.wait(100)
    assert not rec.done


def test_a_service_that_never_started_stops_at_once():
    service = InferenceService(Path("unused"))
    assert service.stop()
    assert service.cache_stats()["misses"] == 0


def test_result_cache_is_bounded_in_bytes(make_service, tiny_bundle, qtbot, tmp_path):
    """Each 64 x 80 result caches one float32 heatmap, 64 x 80 x 4 = 20 480 bytes: a 50 000-byte bound holds
    two results (40 960 bytes), and a third evicts the least recently used."""
    service, rec = make_service(tiny_bundle, result_cache_bytes=50_000)
    qtbot.waitUntil(lambda: bool(rec.models), timeout=WAIT_MS)
    first, second, third = (_png(tmp_path / f"{n}.png", 60 + i) for i, n in enumerate("abc"))
    for path in (first, second, third):
        assert not _wait_done(qtbot, rec, service.request(path)).cached
    stats = service.cache_stats()
    assert stats["results"] == 2 and stats["result_bytes"] == 40_960
    assert _wait_done(qtbot, rec, service.request(third)).cached
    assert _wait_done(qtbot, rec, service.request(second)).cached
    assert not _wait_done(qtbot, rec, service.request(first)).cached  # the oldest went first
