"""Smoke test of the frozen one-folder app; exit status 0 only when everything below holds.

Usage: python smoke_frozen.py dist/busi-viewer

1. ``busi-viewer --smoke-test`` (offscreen) loads the bundled model, opens the demo, runs one inference, exits 0;
2. ``busi-viewer predict --demo --pdf`` writes predictions and a summary PDF (the headless path, also what the
   viewer's folder summary runs);
3. neither wrote, changed or removed anything inside the app folder (user files go to platformdirs
   locations, here a throw-away HOME), and ONNX Runtime's telemetry client left nothing in that HOME;
4. no torch library was bundled.
Prints the measured sizes and times.
"""

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def _run(args: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    return result, time.perf_counter() - started


def main(app: Path) -> int:
    executable = app / ("busi-viewer.exe" if os.name == "nt" else "busi-viewer")
    failures = []
    torch_files = [p.name for p in app.rglob("*") if "libtorch" in p.name or p.name.startswith("torch")]
    if torch_files:
        failures.append(f"torch files in the build: {torch_files[:5]}")
    before = _snapshot(app)
    with tempfile.TemporaryDirectory(prefix="busi-frozen-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BUSI_VIEWER_", "XDG_"))}
        env.update(HOME=home, USERPROFILE=home, QT_QPA_PLATFORM="offscreen")
        for attempt in ("first", "second"):  # the first one also writes the demo folder into the user cache
            launched = time.time()
            smoke, smoke_s = _run([str(executable), "--smoke-test"], env)
            print(f"busi-viewer --smoke-test ({attempt} start): exit {smoke.returncode} in {smoke_s:.2f} s\n"
                  f"{smoke.stdout.strip()}")
            clock = re.search(r"\(clock ([0-9.]+)\)", smoke.stdout)
            if clock:
                print(f"launch -> window shown: {float(clock.group(1)) - launched:.2f} s")
            if smoke.returncode != 0 or "smoke test OK" not in smoke.stdout:
                failures.append(f"smoke test failed: {smoke.stderr.strip()[-2000:]}")
        out = Path(home) / "predictions"
        predict, predict_s = _run([str(executable), "predict", "--demo", "--pdf", "--out", str(out),
                                   "--no-progress"], env)
        rows = (out / "predictions.csv").read_text(encoding="utf-8").splitlines() if (out / "predictions.csv").is_file() else []
        print(f"busi-viewer predict --demo --pdf: exit {predict.returncode} in {predict_s:.2f} s, "
              f"{max(len(rows) - 1, 0)} images classified, summary.pdf {'written' if (out / 'summary.pdf').is_file() else 'MISSING'}")
        if predict.returncode != 0 or len(rows) < 2 or not (out / "summary.pdf").is_file():
            failures.append(f"predict failed: {predict.stderr.strip()[-2000:]}")
        telemetry = [str(p) for p in Path(home).rglob("*") if "Microsoft" in p.parts]
        if telemetry:  # ONNX Runtime's telemetry client leaves a device id here unless switched off
            failures.append(f"ONNX Runtime telemetry files written: {telemetry[:3]}")
    after = _snapshot(app)
    changed = sorted(set(before) ^ set(after) | {k for k in before.keys() & after.keys() if before[k] != after[k]})
    if changed:
        failures.append(f"the app wrote inside its own folder: {changed[:10]}")
    size = sum(size for size, _ in after.values())
    print(f"app folder: {size / 2**20:.0f} MiB in {len(after)} files")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
