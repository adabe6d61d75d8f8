"""Viewer benchmarks (issue #4): launch to window shown, next-image latency, event-loop stalls, memory.

    QT_QPA_PLATFORM=offscreen python bench/viewer_bench.py [--images DIR] [--model BUNDLE] [--json OUT]

Uses the bundled model (or ``--model``, e.g. a candidate backbone's bundle) on the CPU (or ``--device``). Images:
``--images`` (e.g. the BUSI folder, read in place), else generated phantoms of BUSI-like size. Prints one JSON
object; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

STARTUP_CHILD = """
import sys, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
app = QApplication([])
from busi_viewer.gui.app import build_window
from pathlib import Path
window = build_window(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
window.show()
def shown():
    print(json.dumps({"shown_at": time.time(), "torch_imported": "torch" in sys.modules}), flush=True)
    window.close()
    app.quit()
import json
QTimer.singleShot(0, shown)
app.exec()
"""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(values: list[float]) -> dict:
    array = np.asarray(values, dtype=float) * 1000
    return {"n": int(array.size), "p50_ms": round(float(np.percentile(array, 50)), 1),
            "p95_ms": round(float(np.percentile(array, 95)), 1), "max_ms": round(float(array.max()), 1)}


def bench_startup(runs: int, home: Path, model_dir: Path | None = None) -> dict:
    env = dict(os.environ, BUSI_VIEWER_HOME=str(home))
    times, torch_flags = [], []
    for _ in range(runs):
        start = time.time()
        child = [sys.executable, "-c", STARTUP_CHILD, *([str(model_dir)] if model_dir else [])]
        done = subprocess.run(child, env=env, capture_output=True, text=True, timeout=120, check=True)
        line = [ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1]
        info = json.loads(line)
        times.append(info["shown_at"] - start)
        torch_flags.append(info["torch_imported"])
    return {"runs": runs, "median_s": round(float(np.median(times)), 3), "max_s": round(max(times), 3),
            "torch_imported_before_window": any(torch_flags)}


class Session:
    """One window with the bundled model (or ``model_dir``), driven from code with its event loop spinning."""

    def __init__(self, app, device: str, model_dir: Path | None = None):
        from busi_viewer.gui.app import build_window

        from PySide6.QtCore import QEventLoop, QTimer

        self.app = app
        self._wait_for_events = QEventLoop.ProcessEventsFlag.WaitForMoreEvents
        self._tick = QTimer()  # wakes the waiting loop now and then, so a deadline is seen without events
        self._tick.start(20)
        self.window = build_window(model_dir, device=device)
        self.window.resize(1400, 900)
        self.window.show()
        self.window.service.start()
        self.wait(lambda: self.window.model is not None, 300)

    def wait(self, condition, timeout_s: float = 120) -> None:
        """Run the event loop until ``condition()`` holds. The thread sleeps between events, as an application's
        event loop does: polling (processEvents and a 1 ms sleep, this benchmark until 2026-12-03) kept the GUI
        thread busy and delayed the worker's result by about 10 ms (p95) on the 2-core VM."""
        deadline = time.perf_counter() + timeout_s
        while not condition():
            if time.perf_counter() > deadline:
                raise TimeoutError("viewer did not reach the expected state")
            self.app.processEvents(self._wait_for_events)

    def result_for(self, index: int) -> bool:
        w = self.window
        return w.index == index and w.result is not None and w.result.path == w.paths[index]

    def show_and_time(self, index: int) -> tuple[float, float]:
        """Seconds from the request until the image is on screen, and until its result is."""
        shown: list[float] = []
        record = lambda i: shown.append(time.perf_counter()) if i == index else None  # noqa: E731
        self.window.imageShown.connect(record)
        start = time.perf_counter()
        self.window.go_to(index)
        self.wait(lambda: self.result_for(index))
        done = time.perf_counter()
        self.window.imageShown.disconnect(record)
        return (shown[0] if shown else done) - start, done - start

    def idle(self, seconds: float) -> None:
        end = time.perf_counter() + seconds
        self.wait(lambda: time.perf_counter() >= end, seconds + 60)


def bench_latency(session: Session, rng: random.Random) -> dict:
    """Each request starts with the worker idle (a reader looks at each image for a moment): uncached is a
    fresh decode + inference, cached a revisit, prefetched the next image after a pause. Bursts are
    :func:`bench_stall`'s business."""
    w = session.window
    n = len(w.paths)
    far = list(range(2, n, 3))[:30]  # never neighbours of each other: nothing prefetched, nothing cached
    rng.shuffle(far)
    uncached, cached = [], []
    for k, index in enumerate(far):
        session.idle(0.5)  # let any prefetch of the previous image finish, as at reading pace
        uncached.append(session.show_and_time(index))
        if k:
            session.idle(0.5)
            cached.append(session.show_and_time(far[k - 1]))  # back to the image seen just before
            session.idle(0.5)
            session.show_and_time(index)
    start = max(far) + 2 if max(far) + 32 < n else 0
    session.show_and_time(start)
    reading = []
    for index in range(start + 1, min(start + 31, n)):
        session.idle(0.4)  # a reader looks at each image; the next one is prefetched meanwhile
        reading.append(session.show_and_time(index))
    table = {}
    for name, pairs in (("uncached", uncached), ("cached", cached), ("next_at_reading_pace_prefetched", reading)):
        table[name] = {"image_shown": percentiles([p[0] for p in pairs]),
                       "result_shown": percentiles([p[1] for p in pairs])}
    return table


def bench_stall(session: Session, images: int = 200, repeat_hz: float = 30.0) -> dict:
    from PySide6.QtCore import QElapsedTimer, Qt, QTimer
    from PySide6.QtTest import QTest

    w = session.window
    w.go_to(0)
    session.wait(lambda: session.result_for(0))
    gaps: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]

    def beat():
        now = clock.nsecsElapsed()
        gaps.append((now - last[0]) / 1e9)
        last[0] = now

    heartbeat = QTimer()
    heartbeat.setInterval(5)
    heartbeat.timeout.connect(beat)
    heartbeat.start()
    presses = [0]

    def press():
        QTest.keyClick(w, Qt.Key.Key_Down)
        presses[0] += 1

    keys = QTimer()
    keys.setInterval(int(1000 / repeat_hz))
    keys.timeout.connect(press)
    keys.start()
    session.wait(lambda: presses[0] >= images - 1, 120)
    keys.stop()
    final = w.index
    session.wait(lambda: session.result_for(final))
    heartbeat.stop()
    # a 5 ms timer: the gap beyond 5 ms is how long the event loop could not run
    stalls = np.maximum(np.asarray(gaps) - 0.005, 0)
    return {"images": images, "key_repeat_hz": repeat_hz, "landed_on": final,
            "longest_stall_ms": round(float(stalls.max()) * 1000, 1),
            "p99_stall_ms": round(float(np.percentile(stalls, 99)) * 1000, 1)}


def bench_memory(session: Session, count: int) -> dict:
    w = session.window
    samples = {}
    for index in range(min(count, len(w.paths))):
        session.show_and_time(index)
        if (index + 1) % 100 == 0 or index == 0:
            samples[index + 1] = round(rss_mb(), 1)
    return {"rss_mb_after_n_images": samples, "cache": w.service.cache_stats()}


def phantom_folder(root: Path, count: int) -> Path:
    from busi_viewer.core.phantoms import write_phantom_dataset

    per_class = {"benign": count // 2, "malignant": count // 4, "normal": count - count // 2 - count // 4}
    write_phantom_dataset(root, per_class, seed=11, size=(500, 600))
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=None, help="folder to review (default: generated phantoms)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", type=Path, default=None, help="model bundle (default: the bundled one)")
    parser.add_argument("--memory-images", type=int, default=1000)
    parser.add_argument("--startup-runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        os.environ["BUSI_VIEWER_HOME"] = str(home)
        results = {"machine": {"cpus": os.cpu_count(), "platform": sys.platform}}
        results["startup"] = bench_startup(args.startup_runs, home, args.model)

        from PySide6.QtWidgets import QApplication

        from busi_viewer.gui import presenters

        app = QApplication.instance() or QApplication([])
        session = Session(app, args.device, args.model)
        results["model"] = {"label": presenters.model_label(session.window.model), "device": session.window.model.device}
        folder = args.images or phantom_folder(Path(tmp) / "images", max(args.memory_images, 240))
        session.window.open_folder(folder)
        session.wait(lambda: session.result_for(0))
        results["folder"] = {"images": len(session.window.paths), "source": "given" if args.images else "phantoms"}
        results["latency"] = bench_latency(session, random.Random(0))
        results["stall"] = bench_stall(session)
        if args.memory_images:
            results["memory"] = bench_memory(session, args.memory_images)
        session.window.close()
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
