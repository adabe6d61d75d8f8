"""The fit loop: epochs, per-epoch CSV log, resumable checkpoints, early stopping, best-weights copy, DDP.

Runs on CPU or CUDA, single process or under ``torchrun`` (DistributedDataParallel; gloo on CPU, NCCL on CUDA).
Only rank 0 writes files. Checkpoints are our own files, read back with ``torch.load(weights_only=True)``, which
refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

LAST_CHECKPOINT = "last.pt"
BEST_WEIGHTS = "best.pt"
LOG_CSV = "epochs.csv"
LOG_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "best")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> Distributed:
    """Join the process group that ``torchrun`` describes in the environment; a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class ShardedSampler(Sampler[int]):
    """Per-epoch sample order for one rank: shuffled (or drawn by weight, with replacement) from a seed and
    the epoch, then dealt round-robin across ranks so each sees a disjoint, equal-sized share."""

    def __init__(self, size: int, seed: int, shuffle: bool = True, weights: Sequence[float] | None = None,
                 num_samples: int | None = None, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.total = num_samples if num_samples is not None else size
        self.rank, self.world_size = rank, world_size
        self.per_rank = math.ceil(self.total / world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.total, replacement=True, generator=generator)
        elif self.shuffle:
            order = torch.randperm(self.size, generator=generator)[: self.total]
        else:
            order = torch.arange(self.size)[: self.total]
        padded = order.tolist()
        padded += padded[: self.per_rank * self.world_size - len(padded)]  # equal shares keep DDP in step
        return iter(padded[self.rank :: self.world_size])

    def __len__(self) -> int:
        return self.per_rank


@dataclass
class FitSettings:
    """What the loop needs beyond model, data and optimiser."""

    max_epochs: int
    batch_size: int
    out_dir: Path
    patience: int | None = None  # early stopping on validation loss; None: never stop early
    min_delta: float = 0.0
    seed: int = 0
    num_workers: int = 0
    sample_weights: Sequence[float] | None = None  # draw training samples by weight (class balancing)
    samples_per_epoch: int | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = True
    grad_clip_norm: float | None = None
    channels_last: bool = True  # NHWC: ~1.5x faster convolutions on CPU (oneDNN) and on CUDA tensor cores
    scheduler_per_batch: bool = False  # step the scheduler after every optimiser step (cyclic schedules)


@dataclass
class FitResult:
    """``best_state``: a true copy of the weights at the best validation loss (CPU tensors)."""

    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    best_state: dict[str, torch.Tensor]
    history: list[dict[str, float]]


def _bare(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in _bare(model).state_dict().items()}


def _run_epoch(model, loader, loss_fn, device, optimizer=None, grad_clip_norm=None, progress=None,
               memory_format=torch.contiguous_format, batch_scheduler=None) -> tuple[float, float]:
    """One pass; trains when an optimiser is given (stepping ``batch_scheduler`` after each of its steps).
    Returns (mean loss, accuracy) over all ranks."""
    training = optimizer is not None
    model.train(training)
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    with torch.set_grad_enabled(training):
        for inputs, targets in loader:
            inputs = inputs.to(device, non_blocking=True)
            if inputs.ndim == 4:
                inputs = inputs.contiguous(memory_format=memory_format)
            # Targets are labels, or (labels, lesion masks) for a loss that also uses masks (training.evidence).
            if isinstance(targets, (list, tuple)):
                targets = [t.to(device, non_blocking=True) for t in targets]
                labels = targets[0]
            else:
                labels = targets = targets.to(device, non_blocking=True)
            logits = model(inputs)
            loss = loss_fn(logits, targets)
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip_norm:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
                optimizer.step()
                if batch_scheduler is not None:
                    batch_scheduler.step()
            n = labels.shape[0]
            # A label may carry its source's label set (training.partial_labels): its class is label % K.
            correct = (logits.argmax(1) == labels % logits.shape[1]).sum().item()
            totals += torch.tensor([loss.item() * n, correct, n], dtype=torch.float64)
            if progress is not None:
                progress.update(n)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    return float(totals[0] / max(totals[2], 1)), float(totals[1] / max(totals[2], 1))


def _loader(dataset: Dataset, sampler: Sampler, settings: FitSettings, seed_offset: int) -> DataLoader:
    def init_worker(worker_id: int) -> None:  # different, reproducible augmentation streams per worker
        seed_everything(settings.seed + seed_offset + worker_id)

    return DataLoader(dataset, batch_size=settings.batch_size, sampler=sampler, num_workers=settings.num_workers,
                      worker_init_fn=init_worker if settings.num_workers else None,
                      pin_memory=settings.device.type == "cuda", persistent_workers=settings.num_workers > 0)


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    settings: FitSettings,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    distributed: Distributed = Distributed(),
    on_epoch_start: Callable[[int], None] | None = None,
) -> FitResult:
    """Train ``model`` for up to ``settings.max_epochs`` epochs, resuming from ``out_dir/last.pt`` if present.

    The scheduler steps once per epoch, or after every batch with ``settings.scheduler_per_batch``. Each epoch
    appends a row to ``out_dir/epochs.csv`` and rewrites ``last.pt`` atomically (model, optimiser, scheduler,
    RNG states, best-so-far); the best weights by validation loss are also written to ``best.pt``.
    ``on_epoch_start(epoch)`` lets datasets reseed their augmentation per epoch.
    """
    out_dir = Path(settings.out_dir)
    if distributed.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    device = settings.device
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    state = _resume(out_dir, model, optimizer, scheduler, device)
    wrapped = model
    if distributed.enabled:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    train_sampler = ShardedSampler(len(train_set), settings.seed, True, settings.sample_weights,
                                   settings.samples_per_epoch, distributed.rank, distributed.world_size)
    val_sampler = ShardedSampler(len(val_set), settings.seed, False, rank=distributed.rank,
                                 world_size=distributed.world_size)
    train_loader = _loader(train_set, train_sampler, settings, 0)
    val_loader = _loader(val_set, val_sampler, settings, 10_000)

    history, best_state = state["history"], state["best_state"]
    best_loss, best_epoch, bad_epochs = state["best_val_loss"], state["best_epoch"], state["bad_epochs"]
    stopped_early = state["stopped_early"]
    epoch = state["epoch"]
    while epoch < settings.max_epochs and not stopped_early:
        start = time.perf_counter()
        train_sampler.set_epoch(epoch)
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        lr = optimizer.param_groups[0]["lr"]
        progress = _progress(epoch, settings, train_sampler, distributed)
        train_loss, train_acc = _run_epoch(wrapped, train_loader, loss_fn, device, optimizer,
                                           settings.grad_clip_norm, progress, memory_format,
                                           scheduler if settings.scheduler_per_batch else None)
        if progress is not None:
            progress.close()
        val_loss, val_acc = _run_epoch(wrapped, val_loader, loss_fn, device, memory_format=memory_format)
        if scheduler is not None and not settings.scheduler_per_batch:
            scheduler.step()
        epoch += 1
        improved = val_loss < best_loss - settings.min_delta
        if improved:
            best_loss, best_epoch, bad_epochs = val_loss, epoch, 0
            best_state = _state_copy(model)
        else:
            bad_epochs += 1
        stopped_early = settings.patience is not None and bad_epochs >= settings.patience
        row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc, "val_loss": val_loss,
               "val_accuracy": val_acc, "lr": lr, "seconds": time.perf_counter() - start, "best": int(improved)}
        history.append(row)
        if distributed.is_main:
            if improved:
                _atomic_torch_save(best_state, out_dir / BEST_WEIGHTS)
            _atomic_torch_save({
                "epoch": epoch, "model": _state_copy(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "best_state": best_state, "best_val_loss": best_loss, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "stopped_early": stopped_early, "history": history,
                "rng": _rng_state(),
            }, out_dir / LAST_CHECKPOINT)
            _write_log(out_dir / LOG_CSV, history)
        if distributed.enabled:
            dist.barrier()
    if not best_state:
        best_state = _state_copy(model)
    return FitResult(best_epoch, best_loss, epoch, stopped_early, best_state, history)


def _progress(epoch: int, settings: FitSettings, sampler: ShardedSampler, distributed: Distributed):
    if not (settings.progress and distributed.is_main):
        return None
    from tqdm import tqdm

    return tqdm(total=len(sampler) * distributed.world_size, unit="img", desc=f"epoch {epoch + 1}/{settings.max_epochs}",
                leave=False)


def _resume(out_dir: Path, model, optimizer, scheduler, device) -> dict:
    fresh = {"epoch": 0, "history": [], "best_state": {}, "best_val_loss": math.inf, "best_epoch": 0,
             "bad_epochs": 0, "stopped_early": False}
    path = out_dir / LAST_CHECKPOINT
    if not path.is_file():
        return fresh
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["model"])
    model.to(device)
    optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler is not None and checkpoint["scheduler"] is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
    _restore_rng(checkpoint["rng"])
    return {key: checkpoint[key] for key in fresh}


def _rng_state() -> dict:
    """Python, NumPy and torch RNG states as tensors (what ``weights_only`` loading accepts)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_rest": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_cached": torch.tensor(cached, dtype=torch.float64),
        "python": torch.tensor(internal, dtype=torch.int64),
        "python_version": version,
        "python_gauss": gauss_next,
    }


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss = (int(v) for v in state["numpy_rest"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                         float(state["numpy_cached"])))
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"]), state["python_gauss"]))


def _write_log(path: Path, history: list[dict]) -> None:
    """Rewrite the whole per-epoch log from the checkpointed history, so a resumed run never repeats a row."""
    temp = path.with_name(f".{path.name}.partial")
    with temp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        for row in history:
            writer.writerow({key: (f"{value:.6g}" if isinstance(value, float) else value) for key, value in row.items()})
    os.replace(temp, path)


def _atomic_torch_save(obj, path: Path) -> None:
    temp = path.with_name(f".{path.name}.partial")
    torch.save(obj, temp)
    os.replace(temp, path)
