"""Smoke test of the frozen one-folder app; exit status 0 only when everything below holds.

Usage: python smoke_frozen.py dist/busi-viewer [--repeat N]

1. ``busi-viewer --smoke-test`` (offscreen) loads the bundled model, opens the demo, runs one inference, exits 0,
   and writes nothing to stderr but the offscreen platform's known notices (QT_NOISE);
2. ``busi-viewer predict --demo --pdf`` writes predictions and a summary PDF (the headless path, also what the
   viewer's folder summary runs), and its stderr (where it reports progress) holds no traceback, warning or error;
3. neither wrote, changed or removed anything inside the app folder (user files go to platformdirs
   locations, here a throw-away HOME), and ONNX Runtime's telemetry client left nothing in that HOME;
4. no torch library was bundled.
Prints the measured sizes and times. ``--repeat N`` then starts the viewer's smoke test N more times and counts
the runs that failed or wrote anything unexpected to stderr (a race at exit shows up there, not in the status).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# What Qt's offscreen platform plugin prints on every start (it cannot size windows like a window manager does).
# Nothing else may reach the viewer's stderr.
QT_NOISE = (re.compile(r"This plugin does not support propagateSizeHints\(\)"),)
# Lines of `predict`'s stderr (its progress and summary go there) that mean something went wrong.
ERROR_LINE = re.compile(
    r"Traceback \(most recent call last\)|^\s*File \".*\", line \d+|^[\w.]*(Error|Exception|Warning)\b.*:|"
    r"Fatal Python error|Segmentation fault|Aborted|core dumped|^qt\.[\w.]+:|^Q\w+::|QThread: Destroyed",
    re.MULTILINE)


def unexpected_stderr(stderr: str) -> list[str]:
    """The viewer's stderr lines that are not known offscreen-Qt noise."""
    return [line for line in stderr.splitlines() if line.strip() and not any(p.fullmatch(line.strip())
                                                                            for p in QT_NOISE)]


def error_lines(stderr: str) -> list[str]:
    """Lines of a headless run's stderr that look like a traceback, warning or error."""
    return [line for line in stderr.splitlines() if ERROR_LINE.search(line)]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def _run(args: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    return result, time.perf_counter() - started


def main(app: Path, repeat: int = 0) -> int:
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
            elif unexpected := unexpected_stderr(smoke.stderr):
                failures.append("smoke test wrote to stderr:\n" + "\n".join(unexpected[-40:]))
        out = Path(home) / "predictions"
        predict, predict_s = _run([str(executable), "predict", "--demo", "--pdf", "--out", str(out),
                                   "--no-progress"], env)
        csv = out / "predictions.csv"
        rows = csv.read_text(encoding="utf-8").splitlines() if csv.is_file() else []
        pdf = "written" if (out / "summary.pdf").is_file() else "MISSING"
        print(f"busi-viewer predict --demo --pdf: exit {predict.returncode} in {predict_s:.2f} s, "
              f"{max(len(rows) - 1, 0)} images classified, summary.pdf {pdf}")
        if predict.returncode != 0 or len(rows) < 2 or not (out / "summary.pdf").is_file():
            failures.append(f"predict failed: {predict.stderr.strip()[-2000:]}")
        elif errors := error_lines(predict.stderr):
            failures.append("predict wrote errors to stderr:\n" + "\n".join(errors[-40:]))
        if repeat:
            failures += _repeat(executable, env, repeat)
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


def _repeat(executable: Path, env: dict, runs: int) -> list[str]:
    """Start the viewer's smoke test ``runs`` times; one failure line per bad run, and a count."""
    bad, seconds, tracebacks = [], [], 0
    for run in range(1, runs + 1):
        smoke, smoke_s = _run([str(executable), "--smoke-test"], env)
        seconds.append(smoke_s)
        unexpected = unexpected_stderr(smoke.stderr)
        tracebacks += "Traceback" in smoke.stderr
        if smoke.returncode != 0 or "smoke test OK" not in smoke.stdout or unexpected:
            bad.append(f"run {run}: exit {smoke.returncode}; stderr: {' | '.join(unexpected[-10:])}")
    print(f"repeated smoke test: {runs - len(bad)}/{runs} clean runs, {len(bad)} failed "
          f"({tracebacks} with a traceback); {min(seconds):.2f}-{max(seconds):.2f} s each")
    return bad


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("app", type=Path)
    parser.add_argument("--repeat", type=int, default=0, help="start the viewer's smoke test this many more times")
    args = parser.parse_args()
    raise SystemExit(main(args.app, args.repeat))
