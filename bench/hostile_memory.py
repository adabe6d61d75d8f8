"""Peak memory and wall time of ``busi-predict`` on the hostile corpus (tests/hostile_corpus.py); prints JSON.

    python bench/hostile_memory.py [--huge-pngs 3] [--model busi-us]

Runs ``busi-predict`` in a child process once per option set (plain, --heatmaps, --pdf --pdf-per-image) and reads
the child's peak resident set size from the kernel (``wait4``). Issue #17's goal: at most 1.5 GB, and every file
either predicted or listed in errors.csv with its reason.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.hostile_corpus, runnable from a checkout

from tests.hostile_corpus import build  # noqa: E402

OPTION_SETS = {"plain": [], "heatmaps": ["--heatmaps"], "pdf": ["--pdf", "--pdf-per-image"]}


def _run(folder: Path, out: Path, model: str | None, options: list[str]) -> dict:
    command = [sys.executable, "-m", "busi_viewer.cli.predict", str(folder), "--out", str(out), "--no-progress",
               *(["--model", model] if model else []), *options]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    with (out / "errors.csv").open(newline="", encoding="utf-8") as handle:
        errors = list(csv.DictReader(handle))
    with (out / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        predicted = [row["file"] for row in csv.DictReader(handle)]
    return {"exit_status": child.returncode, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "seconds": round(seconds, 1), "predicted": predicted, "errors": len(errors),
            "stderr_tail": stderr.strip().splitlines()[-1:] if child.returncode else []}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--huge-pngs", type=int, default=3, help="10 900-pixel black PNGs in the corpus (default 3)")
    parser.add_argument("--model", default=None, help="model bundle (default: the installed default)")
    parser.add_argument("--only", choices=sorted(OPTION_SETS), action="append", help="run only these option sets")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="busi-hostile-") as temp:
        folder = Path(temp) / "corpus"
        cases = build(folder, args.huge_pngs)
        results = {}
        for name in args.only or OPTION_SETS:
            results[name] = _run(folder, Path(temp) / f"out-{name}", args.model, OPTION_SETS[name])
    print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.python_version()}",
                      "cases": len(cases), "huge_pngs": args.huge_pngs, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
