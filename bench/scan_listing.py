"""Time scan_folder on a synthetic folder of 10 000 images (+ masks); prints JSON."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing
from busi_viewer.cli.bench_listing import main  # noqa: E402

if __name__ == "__main__":
    main()
