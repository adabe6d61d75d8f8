"""Run by tests under torchrun: two CPU processes (gloo) fit a tiny model; each rank saves its final weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from training.engine import FitSettings, fit, init_distributed, seed_everything


def main(out_dir: str) -> None:
    distributed = init_distributed("cpu")
    seed_everything(0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    settings = FitSettings(max_epochs=3, batch_size=8, out_dir=Path(out_dir) / "run", progress=False)
    result = fit(model, TensorDataset(x, y), TensorDataset(x, y), optimizer, torch.nn.functional.cross_entropy,
                 settings, distributed=distributed)
    torch.save({k: v.clone() for k, v in model.state_dict().items()},
               Path(out_dir) / f"rank{distributed.rank}.pt")
    if distributed.is_main:
        (Path(out_dir) / "summary.txt").write_text(f"{distributed.world_size} {result.epochs_run} "
                                                    f"{result.history[-1]['train_accuracy']}")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
