"""The viewer's one long-lived inference thread and the service the window talks to.

:class:`InferenceService` lives in the GUI thread; it owns one :class:`QThread` that decodes images, reads
lesion masks, hashes files and runs the model. The model (and torch itself) is loaded inside that thread, so
importing this module never imports torch and the window can show before it is loaded.

Flow control, because a held arrow key fires ~30 requests a second and one CPU inference takes far longer:

* one pending slot: a new request replaces a request that has not started yet (no queue builds up);
* between stages (decode -> hash/mask -> inference -> agreement with the mask) a running request checks
  whether a newer one is waiting and, if so, is abandoned without emitting anything more;
* the result is emitted before its agreement with the mask is scored, which follows as its own event;
* the service re-checks the request id in the GUI thread, so a result for an image the user has already left
  is dropped even when it was emitted just before the user moved on;
* when nothing is pending the thread prefetches the neighbours the last request named (decode + inference
  into the caches, emitting nothing).

Caches: decoded images (with their SHA-256 and mask) LRU by (path, mtime_ns, size), bounded by count;
predictions LRU by (image SHA-256, frame, model weights SHA-256), bounded by heatmap bytes. Cached arrays are
marked read-only because the same objects are handed out again.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal, Slot

from busi_viewer.core.agreement import AgreementResult, agreement
from busi_viewer.core.errors import BusiViewerError, ImageLoadError, MaskLoadError
from busi_viewer.core.hashing import file_identity, sha256_file_cached
from busi_viewer.core.image_record import ImageRecord
from busi_viewer.core.loader import load_image
from busi_viewer.core.masks import mask_for_image
from busi_viewer.core.paths import default_model_dir

if TYPE_CHECKING:  # torch stays out of the import graph until the worker thread loads the model
    from busi_viewer.inference.model_card import ModelCard
    from busi_viewer.inference.prediction import Prediction, PredictorBase

__all__ = ["AgreementDone", "ImageLoaded", "InferenceDone", "InferenceService", "ModelState", "WorkerFailure"]

log = logging.getLogger(__name__)

_SCORES_CACHE_ITEMS = 1024  # agreement results: a few hundred bytes each
# A forward pass is thousands of short Python calls between torch kernels, each needing the GIL; with the
# default 5 ms switch interval every hand-over from a busy GUI thread can cost up to 5 ms. On the 2-core VM,
# 30 never-seen images after a pause (bench/viewer_bench.py's uncached case), one run each: result p50/p95
# 71/92 ms at 5 ms, 66/84 ms at 1 ms; the benchmark's longest event-loop stall: 35 ms before, 25-36 ms after.
GIL_SWITCH_INTERVAL_S = 0.001


# --------------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class ImageLoaded:
    """A requested image is decoded (emitted before inference, so the pixels can be shown at once).

    ``error`` is the loader's reason when the file could not be read (then ``record``, ``sha256`` and ``mask``
    are None). ``mask`` is bool (H, W) (True = lesion) when a ``<stem>_mask*.png`` lies beside the image;
    ``mask_error`` says why an existing mask could not be used. ``seconds``: wall time of decode + hash + mask
    (≈0 when the record came from the cache).
    """

    request_id: int
    path: Path
    record: ImageRecord | None
    sha256: str | None
    mask: np.ndarray | None
    mask_error: str | None
    error: str | None
    seconds: float


@dataclass(frozen=True)
class InferenceDone:
    """The model's result for frame ``frame`` of a requested image; an :class:`AgreementDone` follows it.

    ``prediction`` arrays are shared with the cache and read-only. ``seconds``: wall time of this request's
    inference (≈0 when ``cached``).
    """

    request_id: int
    path: Path
    sha256: str
    frame: int
    prediction: Prediction
    seconds: float
    cached: bool


@dataclass(frozen=True)
class AgreementDone:
    """How the heatmap of the :class:`InferenceDone` just emitted for ``request_id`` agrees with the lesion mask.

    Emitted after the result, so that scoring (about as long as a forward pass) does not delay it. ``agreement``
    is None without a mask beside the image or when scoring failed (then a :class:`WorkerFailure` says why).
    """

    request_id: int
    path: Path
    frame: int
    agreement: AgreementResult | None


@dataclass(frozen=True)
class ModelState:
    """The outcome of (re)loading the model; ``loaded=False`` with ``error`` means a plain viewer.

    ``device`` describes where and with what inference runs, for the status bar (e.g. "CPU (2 threads),
    ONNX Runtime", "CUDA: NVIDIA ..., PyTorch", "" when the model did not load); ``seconds`` is the load time;
    ``model_dir`` the bundle folder that was tried.
    """

    loaded: bool
    card: ModelCard | None
    device: str
    error: str | None
    seconds: float
    model_dir: Path | None


@dataclass(frozen=True)
class WorkerFailure:
    """An unexpected exception inside the worker; the thread survives it.

    ``stage``: "load" | "mask" | "inference" | "model"; ``message``: ``f"{type(exc).__name__}: {exc}"``.
    """

    request_id: int | None
    path: Path | None
    stage: str
    message: str


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------------- caches


class _LRU:
    """An ordered dict evicting least recently used items beyond ``max_items`` and/or ``max_bytes``."""

    def __init__(self, max_items: int | None = None, max_bytes: int | None = None,
                 size_of: Callable[[Any], int] = lambda _value: 0):
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size_of = size_of
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Any | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        size = int(self._size_of(value))
        if self.max_bytes is not None and size > self.max_bytes:
            return  # would evict everything and still not fit
        if self.max_items is not None and self.max_items <= 0:
            return
        self.pop(key)
        self._items[key] = value
        self._sizes[key] = size
        self.bytes += size
        while (self.max_items is not None and len(self._items) > self.max_items) or (
            self.max_bytes is not None and self.bytes > self.max_bytes
        ):
            self.pop(next(iter(self._items)))

    def pop(self, key: Hashable) -> None:
        if key in self._items:
            del self._items[key]
            self.bytes -= self._sizes.pop(key)

    def clear(self) -> None:
        self._items.clear()
        self._sizes.clear()
        self.bytes = 0


def _prediction_bytes(prediction: Prediction) -> int:
    # The normalised heatmap is computed when read, so the raw map is the one large array a result holds.
    return 0 if prediction.heatmap_raw is None else prediction.heatmap_raw.nbytes


def _freeze(*arrays: np.ndarray | None) -> None:
    # Cached objects are handed to the GUI again and again: an in-place edit must fail, not corrupt the cache.
    for array in arrays:
        if array is not None:
            array.flags.writeable = False


@dataclass(frozen=True)
class _Entry:
    """A decoded image as cached: record, content hash, lesion mask (or why it could not be read)."""

    record: ImageRecord
    sha256: str
    mask: np.ndarray | None
    mask_error: str | None


# --------------------------------------------------------------------------------------------------- thread


@dataclass(frozen=True)
class _Job:
    """One unit of work. ``request_id`` None = a prefetch (emits nothing)."""

    request_id: int | None
    path: Path
    frame: int
    infer: bool


@dataclass(frozen=True)
class _ModelCommand:
    model_dir: Path


class _WorkerThread(QThread):
    """The thread. Shared state is guarded by ``_cond`` (work slots) and ``_cache_lock`` (caches, counters).

    Priority of work: a pending request, then a model (re)load, then prefetches. A request that reaches its
    inference stage while a model command is outstanding loads the model first, so the first image is shown
    before torch is even imported and is then classified by the model just loaded.
    """

    event = Signal(object)

    def __init__(self, device: str | None, backend: str | None, record_cache_items: int, result_cache_bytes: int):
        super().__init__()
        self._device_preference = device
        self._backend = backend
        self._cond = threading.Condition()
        self._pending: _Job | None = None
        self._latest_id = 0
        self._prefetch: deque[_Job] = deque()
        self._model_command: _ModelCommand | None = None
        self._stopping = False

        self._cache_lock = threading.Lock()
        self._records = _LRU(max_items=record_cache_items)
        self._results = _LRU(max_bytes=result_cache_bytes, size_of=_prediction_bytes)
        self._scores = _LRU(max_items=_SCORES_CACHE_ITEMS)  # agreement costs as much as a forward pass
        self._hits = 0
        self._misses = 0

        # Touched only by the thread itself.
        self._predictor: PredictorBase | None = None
        self._card: ModelCard | None = None

    # ---- called from the GUI thread

    def submit(self, job: _Job, prefetch: Sequence[Path]) -> None:
        with self._cond:
            self._pending = job
            self._latest_id = job.request_id
            self._prefetch = deque(
                _Job(None, path, 0, job.infer) for path in dict.fromkeys(prefetch) if path != job.path
            )
            self._cond.notify()

    def submit_model(self, model_dir: Path) -> None:
        with self._cond:
            self._model_command = _ModelCommand(model_dir)
            self._cond.notify()

    def request_stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._pending = None
            self._prefetch.clear()
            self._cond.notify()

    def stats(self) -> dict:
        with self._cache_lock:
            return {"records": len(self._records), "results": len(self._results),
                    "result_bytes": self._results.bytes, "hits": self._hits, "misses": self._misses}

    # ---- the thread

    def run(self) -> None:  # noqa: D401 - QThread API
        while True:
            with self._cond:
                while not (self._stopping or self._pending or self._model_command or self._prefetch):
                    self._cond.wait()
                if self._stopping:
                    return
                command = job = None
                if self._pending is not None:
                    job, self._pending = self._pending, None
                elif self._model_command is not None:
                    command, self._model_command = self._model_command, None
                else:
                    job = self._prefetch.popleft()
            try:
                if command is not None:
                    self._load_model(command)
                else:
                    self._process(job)
            except Exception as exc:  # last resort: whatever happens, the thread keeps serving
                log.exception("worker failure")
                stage = "model" if command is not None else "inference"
                self._emit(WorkerFailure(job.request_id if job else None, job.path if job else None,
                                         stage, _describe(exc)))

    def _emit(self, event: object) -> None:
        self.event.emit(event)

    def _stale(self, job: _Job) -> bool:
        """True when ``job`` should be abandoned: stopping, a newer request exists, or (prefetch) one waits."""
        with self._cond:
            if self._stopping:
                return True
            if job.request_id is None:
                return self._pending is not None
            return job.request_id != self._latest_id

    def _fail(self, job: _Job, stage: str, exc: BaseException) -> None:
        log.error("worker %s failure on %s: %s", stage, job.path, _describe(exc), exc_info=exc)
        if job.request_id is not None:  # a prefetch's failure recurs, and is reported, when the image is opened
            self._emit(WorkerFailure(job.request_id, job.path, stage, _describe(exc)))

    # ---- model

    def _take_model_command(self) -> None:
        with self._cond:
            command, self._model_command = self._model_command, None
        if command is not None:
            self._load_model(command)

    def _load_model(self, command: _ModelCommand) -> None:
        started = time.perf_counter()
        self._predictor = self._card = None
        with self._cache_lock:
            self._results.clear()  # a new model makes every cached prediction someone else's
            self._scores.clear()
        # Importing torch and building the model create hundreds of thousands of long-lived objects: collecting
        # meanwhile cost 12-160 ms gen-2 pauses (measured) that the GUI thread felt through the GIL.
        gc.disable()
        try:
            from busi_viewer.inference.backend import load_predictor

            predictor, folder = load_predictor(command.model_dir, self._device_preference, self._backend)
        except Exception as exc:
            expected = isinstance(exc, BusiViewerError)  # BundleError, DeviceError: their text is for users
            if not expected:
                log.exception("model load failed")
                self._emit(WorkerFailure(None, None, "model", _describe(exc)))
            error = str(exc) if expected else f"the model could not be loaded ({_describe(exc)})"
            self._emit(ModelState(False, None, "", error, time.perf_counter() - started, command.model_dir))
            return
        finally:
            gc.enable()
        gc.freeze()  # and later collections need not walk them again
        self._predictor, self._card = predictor, predictor.card
        self._emit(ModelState(True, predictor.card, predictor.description, None, time.perf_counter() - started,
                              folder))

    # ---- one image

    def _process(self, job: _Job) -> None:
        started = time.perf_counter()
        entry = self._decode(job)
        if entry is None:
            return
        if job.request_id is not None:
            if self._stale(job):
                return
            self._emit(ImageLoaded(job.request_id, job.path, entry.record, entry.sha256, entry.mask,
                                   entry.mask_error, None, time.perf_counter() - started))
        if not job.infer:
            return
        self._take_model_command()
        if self._predictor is None or self._stale(job):
            return
        self._infer(job, entry)

    def _load_error(self, job: _Job, reason: str, started: float) -> None:
        if job.request_id is not None:
            self._emit(ImageLoaded(job.request_id, job.path, None, None, None, None, reason,
                                   time.perf_counter() - started))

    def _decode(self, job: _Job) -> _Entry | None:
        """The cached or freshly decoded entry; None when the job failed (already reported) or went stale."""
        started = time.perf_counter()
        key = file_identity(job.path)
        if key is not None:
            with self._cache_lock:
                entry = self._records.get(key)
            if entry is not None:
                return entry
        try:
            record = load_image(job.path)
        except ImageLoadError as exc:
            self._load_error(job, exc.reason, started)
            return None
        except Exception as exc:  # load_image promises ImageLoadError only; be safe anyway
            self._fail(job, "load", exc)
            self._load_error(job, _describe(exc), started)
            return None
        if self._stale(job):
            return None
        try:
            sha256 = sha256_file_cached(job.path)
        except OSError as exc:
            self._load_error(job, f"the file could not be read ({exc.strerror or exc})", started)
            return None
        mask, mask_error = self._read_mask(job, record)
        _freeze(mask)
        entry = _Entry(record, sha256, mask, mask_error)
        if key is not None:
            with self._cache_lock:
                self._records.put(key, entry)
        return entry

    def _read_mask(self, job: _Job, record: ImageRecord) -> tuple[np.ndarray | None, str | None]:
        try:
            return mask_for_image(job.path, record.shape), None
        except MaskLoadError as exc:
            return None, str(exc)  # names the mask file, which is not the image the user looks at
        except Exception as exc:
            self._fail(job, "mask", exc)
            return None, _describe(exc)

    def _infer(self, job: _Job, entry: _Entry) -> None:
        assert self._predictor is not None and self._card is not None
        started = time.perf_counter()
        key = (entry.sha256, job.frame, self._card.weights_sha256)
        with self._cache_lock:
            prediction = self._results.get(key)
            if prediction is not None:
                self._hits += 1
        cached = prediction is not None
        if prediction is None:
            try:
                prediction = self._predictor.predict(entry.record.rgb_frame(job.frame), explain=True)
            except Exception as exc:
                self._fail(job, "inference", exc)
                return
            _freeze(prediction.logits, prediction.probabilities, prediction.heatmap_raw)
            with self._cache_lock:
                self._misses += 1
                self._results.put(key, prediction)
        if job.request_id is None:  # a prefetch: result and scores wait in the caches
            if not self._stale(job):
                self._agreement(job, key, entry, prediction)
            return
        if self._stale(job):
            return  # the user has moved on: the result waits in the cache
        self._emit(InferenceDone(job.request_id, job.path, entry.sha256, job.frame, prediction,
                                 time.perf_counter() - started, cached))
        scores = self._agreement(job, key, entry, prediction)
        if not self._stale(job):
            self._emit(AgreementDone(job.request_id, job.path, job.frame, scores))

    def _agreement(self, job: _Job, key: tuple, entry: _Entry, prediction: Prediction) -> AgreementResult | None:
        """Heatmap-vs-mask scores, cached per result and mask content; None without a mask or on failure."""
        if entry.mask is None or prediction.heatmap is None:
            return None
        scores_key = (key, hashlib.blake2b(np.packbits(entry.mask).tobytes(), digest_size=16).hexdigest())
        with self._cache_lock:
            scores = self._scores.get(scores_key)
        if scores is not None:
            return scores
        try:
            scores = agreement(prediction.heatmap, entry.mask)
        except Exception as exc:  # e.g. a mask whose shape disagrees: report it, still show the result
            self._fail(job, "mask", exc)
            return None
        with self._cache_lock:
            self._scores.put(scores_key, scores)
        return scores


# --------------------------------------------------------------------------------------------------- service


class InferenceService(QObject):
    """The window's handle on the inference thread. Create, connect, :meth:`start`, :meth:`request`,
    :meth:`stop` (the service also stops itself when the application quits).

    Every signal carries one event object and fires in the thread the service lives in (the GUI thread):
    ``imageLoaded(ImageLoaded)``, ``inferenceDone(InferenceDone)``, ``agreementDone(AgreementDone)`` (these three
    only for the latest request id),
    ``modelChanged(ModelState)``, ``failed(WorkerFailure)``.
    """

    imageLoaded = Signal(object)
    inferenceDone = Signal(object)
    agreementDone = Signal(object)
    modelChanged = Signal(object)
    failed = Signal(object)

    def __init__(self, model_dir: Path | None = None, device: str | None = None, *, backend: str | None = None,
                 record_cache_items: int = 8, result_cache_bytes: int = 128 * 2**20, parent: QObject | None = None):
        super().__init__(parent)
        self._model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self._latest_id = 0
        self._started = False
        self._stopped = False
        self._thread = _WorkerThread(device, backend, record_cache_items, result_cache_bytes)
        # Queued: the thread emits from its own context; the relay runs (and re-emits) in ours.
        self._thread.event.connect(self._relay, Qt.ConnectionType.QueuedConnection)

    def start(self) -> None:
        """Start the thread; it loads the model (``modelChanged`` follows) unless a request needs decoding first."""
        if self._started:
            return
        self._started = True
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
        self._thread.submit_model(self._model_dir)
        self._thread.start()
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.stop)

    def request(self, path: Path, frame: int = 0, *, prefetch: Sequence[Path] = (), infer: bool = True) -> int:
        """Ask for ``path`` (frame ``frame``); returns the new request id. Supersedes any pending request.

        ``prefetch``: images to decode and classify into the caches once the thread is idle (typically the
        next and previous image). ``infer=False`` only decodes.
        """
        self._latest_id += 1
        if not self._stopped:
            self._thread.submit(_Job(self._latest_id, Path(path), int(frame), bool(infer)),
                                [Path(p) for p in prefetch])
        return self._latest_id

    @property
    def latest_request_id(self) -> int:
        return self._latest_id

    def set_model(self, model_dir: Path | None) -> None:
        """Load another bundle (None = the default one) inside the thread; ``modelChanged`` follows.

        The result cache is cleared. The current image is not re-classified automatically: request it again
        when ``modelChanged`` arrives.
        """
        self._model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        if self._started and not self._stopped:
            self._thread.submit_model(self._model_dir)

    @property
    def model_dir(self) -> Path:
        """The bundle folder the service loads (or has loaded, or failed to load)."""
        return self._model_dir

    def stop(self, timeout_ms: int = 10000) -> bool:
        """Ask the thread to finish (an inference already running completes first) and join it.

        Returns True when the thread has ended (or never started). Idempotent; nothing is emitted afterwards.
        """
        self._stopped = True
        if not self._started:
            return True
        self._thread.request_stop()
        return bool(self._thread.wait(timeout_ms))

    def cache_stats(self) -> dict:
        """``{"records", "results", "result_bytes", "hits", "misses"}``; misses = inferences actually run."""
        return self._thread.stats()

    @Slot(object)
    def _relay(self, event: object) -> None:
        if self._stopped:
            return
        if isinstance(event, ImageLoaded):
            if event.request_id == self._latest_id:
                self.imageLoaded.emit(event)
        elif isinstance(event, InferenceDone):
            if event.request_id == self._latest_id:
                self.inferenceDone.emit(event)
        elif isinstance(event, AgreementDone):
            if event.request_id == self._latest_id:
                self.agreementDone.emit(event)
        elif isinstance(event, ModelState):
            self.modelChanged.emit(event)
        elif isinstance(event, WorkerFailure):
            self.failed.emit(event)
