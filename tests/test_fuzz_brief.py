"""A short, fixed-seed session of the loader fuzzer (bench/fuzz_loaders.py; long runs are opt-in there)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from fuzz_loaders import fuzz, mutate  # noqa: E402


def test_mutated_files_give_an_image_or_a_reasoned_load_error(tmp_path):
    report = fuzz(cases=400, seed=20261203, case_timeout=30, keep=tmp_path / "findings")
    assert report.cases == 400 and report.loaded + report.refused + len(report.findings) == 400
    assert report.findings == []
    # the mutations must reach both outcomes, or the session tests nothing
    assert report.loaded > 20 and report.refused > 100


def test_mutations_change_the_file_and_are_reproducible():
    import numpy as np

    data = bytes(range(256)) * 4
    first = [mutate(data, np.random.default_rng(7)) for _ in range(2)]
    assert first[0] == first[1], "the same seed gives the same case (a finding can be replayed)"
    changed = sum(mutate(data, np.random.default_rng(seed)) != data for seed in range(50))
    assert changed >= 45
