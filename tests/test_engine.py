"""The fit loop: log, best-weights copy, early stopping, exact resume, and DDP with two CPU processes."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from training.engine import BEST_WEIGHTS, LAST_CHECKPOINT, LOG_CSV, FitSettings, ShardedSampler, fit, seed_everything

REPO = Path(__file__).resolve().parents[1]


def _data(n: int = 96, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


class _NoisyNet(torch.nn.Module):
    """Dropout makes the run depend on the global RNG, so resume must restore it to match exactly."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                        torch.nn.Linear(16, 2))

    def forward(self, x):
        return self.body(x)


def _run(out_dir: Path, max_epochs: int, patience=None, val=None):
    seed_everything(0)
    model = _NoisyNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    settings = FitSettings(max_epochs=max_epochs, batch_size=16, out_dir=out_dir, patience=patience, progress=False)
    result = fit(model, _data(), val or _data(48, seed=1), optimizer, torch.nn.functional.cross_entropy, settings,
                 scheduler=scheduler)
    return model, result


def _log(out_dir: Path) -> list[dict]:
    with (out_dir / LOG_CSV).open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_fit_learns_logs_every_epoch_and_keeps_a_true_copy_of_the_best_weights(tmp_path):
    model, result = _run(tmp_path, max_epochs=6)
    rows = _log(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert float(rows[-1]["val_accuracy"]) > 0.8
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025])
    best_val = min(float(r["val_loss"]) for r in rows)
    assert result.best_val_loss == pytest.approx(best_val, rel=1e-4)
    saved = torch.load(tmp_path / BEST_WEIGHTS, weights_only=True)
    snapshot = {k: v.clone() for k, v in result.best_state.items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)  # the live model moves on; the best copy must not
    for name, tensor in result.best_state.items():
        assert torch.equal(tensor, snapshot[name])
        assert torch.equal(tensor, saved[name])


def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(tmp_path):
    full_model, full = _run(tmp_path / "full", max_epochs=5)
    _run(tmp_path / "split", max_epochs=2)  # "interrupted" after two epochs
    resumed_model, resumed = _run(tmp_path / "split", max_epochs=5)
    assert resumed.epochs_run == 5 and len(resumed.history) == 5
    assert [int(r["epoch"]) for r in _log(tmp_path / "split")] == [1, 2, 3, 4, 5]
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert resumed.best_epoch == full.best_epoch


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path):
    # labels of the validation set are random noise: validation loss stops improving quickly
    generator = torch.Generator().manual_seed(5)
    val = TensorDataset(torch.randn(48, 6, generator=generator), torch.randint(0, 2, (48,), generator=generator))
    _, result = _run(tmp_path, max_epochs=30, patience=2, val=val)
    assert result.stopped_early
    assert result.epochs_run == result.best_epoch + 2
    assert result.epochs_run < 30
    assert (tmp_path / LAST_CHECKPOINT).is_file()


def test_sharded_sampler_deals_disjoint_equal_shares_and_reshuffles_per_epoch():
    shares = [list(ShardedSampler(10, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 5
    assert sorted(shares[0] + shares[1]) == list(range(10))
    sampler = ShardedSampler(10, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(list(sampler)) == list(range(10))
    weighted = list(ShardedSampler(4, seed=0, weights=[0, 0, 0, 1], num_samples=20))
    assert weighted == [3] * 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_ddp_with_gloo_keeps_ranks_in_sync(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", str(REPO / "tests" / "helpers" / "ddp_fit.py"), str(tmp_path)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name])
    world_size, epochs, accuracy = (tmp_path / "summary.txt").read_text().split()
    assert world_size == "2" and epochs == "3" and float(accuracy) > 0.7
    assert len(_log(tmp_path / "run")) == 3
